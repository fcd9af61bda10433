// wattlake pages: charts with uPlot from the API, live power over server-sent events.
"use strict";
(function () {
  // Channel colours stay clear of the role colours (export green, solar amber, battery purple).
  const PALETTE = ["#1f6fd1", "#16a2b8", "#c0392b", "#5b6576", "#0b3d91", "#e84393", "#d35400", "#2c3e50", "#7fb3e6", "#8d6e63"];
  const COLORS = { import: "#1f6fd1", export: "#1e9e4a", solar: "#e0a000", battery: "#8e44ad" };
  const page = document.body.dataset.page;
  const TZ = document.body.dataset.tz || "UTC";

  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  function q(params) { return new URLSearchParams(params).toString(); }
  function downloads(el, path, params) {
    if (!el) return;
    const base = path + "?" + q(params);
    el.innerHTML = 'Download: <a href="' + base + '&format=csv">CSV</a> · <a href="' + base + '&format=parquet">Parquet</a>';
  }
  function width(el) { return Math.max(300, el.clientWidth || 600); }
  function isoLocal(d) { // a Date as an ISO time with the offset of the page's zone
    const f = new Intl.DateTimeFormat("en-CA", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "longOffset" });
    const p = Object.fromEntries(f.formatToParts(d).map((x) => [x.type, x.value]));
    let off = (p.timeZoneName || "GMT").replace("GMT", "") || "+00:00";
    return p.year + "-" + p.month + "-" + p.day + "T" + p.hour + ":" + p.minute + ":" + p.second + off;
  }
  function dateLocal(d) { return isoLocal(d).slice(0, 10); }
  const axisFont = "12px system-ui, sans-serif";
  function opts(el, series, yLabel, extra) {
    return Object.assign({
      width: width(el), height: el.classList.contains("tall") ? 380 : 260, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), TZ),
      series: [{}].concat(series), legend: { live: false },
      axes: [{ font: axisFont, label: "time (" + TZ + ")", labelFont: axisFont, space: 80 }, { font: axisFont, label: yLabel, labelFont: axisFont, size: 60 }],
      cursor: { drag: { x: true, y: false } },
    }, extra || {});
  }
  function draw(el, o, data) {
    el.innerHTML = "";
    if (!data[0].length) {
      const note = document.createElement("p");
      note.className = "empty"; note.textContent = "No readings in this range.";
      el.appendChild(note);
    }
    // When the chart was first drawn [ms since navigation] (read by bench/bench_web.py).
    delete el.dataset.drawnAt;
    o.hooks = Object.assign({}, o.hooks);
    o.hooks.draw = (o.hooks.draw || []).concat([() => { if (!el.dataset.drawnAt) el.dataset.drawnAt = Math.round(performance.now()); }]);
    const plot = new uPlot(o, data, el);
    el.dataset.drawn = data[0].length;
    window.addEventListener("resize", () => plot.setSize({ width: width(el), height: o.height }));
    return plot;
  }
  function table(el, rows, columns, fmt) {
    const title = (c) => c.replace(/_wh$/, " [kWh]").replace(/_w$/, " [W]").replace(/_/g, " ");
    const head = "<thead><tr>" + columns.map((c) => '<th class="' + (rows.length && typeof rows[0][c] === "number" ? "num" : "") + '">' + title(c) + "</th>").join("") + "</tr></thead>";
    const body = rows.map((r) => "<tr>" + columns.map((c) => {
      const v = r[c]; const n = typeof v === "number";
      return '<td class="' + (n ? "num" : "") + '">' + (v == null ? "" : n && fmt ? fmt(c, v) : String(v).replace(/</g, "&lt;")) + "</td>";
    }).join("") + "</tr>").join("");
    el.innerHTML = head + "<tbody>" + body + "</tbody>";
  }

  // Power series per device channel: mean line with a min–max band.
  function powerChart(el, dlEl, params, onZoom) {
    const path = "/api/readings";
    const full = Object.assign({ points: Math.min(2000, width(el)) }, params);
    downloads(dlEl, path, full);
    return api(path + "?" + q(full)).then((body) => {
      const keys = [...new Set(body.rows.map((r) => r.device_id + " ch" + r.channel))];
      const xs = [...new Set(body.rows.map((r) => r.ts_ms))].sort((a, b) => a - b);
      const index = new Map(xs.map((x, i) => [x, i]));
      const data = [xs.map((x) => x / 1000)];
      const series = []; const bands = [];
      keys.forEach((k, i) => {
        const mean = new Array(xs.length).fill(null), lo = mean.slice(), hi = mean.slice();
        body.rows.forEach((r) => { if (r.device_id + " ch" + r.channel === k) { const j = index.get(r.ts_ms); mean[j] = r.mean_w; lo[j] = r.min_w; hi[j] = r.max_w; } });
        const c = PALETTE[i % PALETTE.length];
        const base = data.length;
        data.push(hi, mean, lo);
        series.push({ label: k + " max", stroke: c + "55", width: 1 }, { label: k, stroke: c, width: 1.5 }, { label: k + " min", stroke: c + "55", width: 1 });
        bands.push({ series: [base, base + 2], fill: c + "22" });
      });
      const o = opts(el, series, "power [W]", { bands: bands });
      if (onZoom) o.hooks = { setSelect: [(u) => { if (u.select.width > 5) { const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x"); onZoom(a * 1000, b * 1000); } }] };
      draw(el, o, data);
      return body;
    });
  }

  function overview() {
    const el = document.getElementById("chart-recent");
    const end = new Date(), start = new Date(end - 3600e3);
    powerChart(el, document.getElementById("dl-recent"), { start: isoLocal(start), end: isoLocal(end) }).catch(console.error);
    const state = document.getElementById("live-state");
    const cards = document.getElementById("power-now");
    const max = {};
    const src = new EventSource("/api/live");
    // Connected but no value yet: say so (a count of "0 channels" read like a fault).
    const waiting = "live · waiting for the first values from the broker";
    src.onopen = () => { if (!cards.querySelector(".card")) state.textContent = waiting; else state.textContent = "live"; };
    src.onerror = () => { state.textContent = "reconnecting…"; };
    src.onmessage = (ev) => {
      const values = JSON.parse(ev.data);
      values.forEach((v) => {
        const key = v.device_id + "/" + v.channel;
        let card = cards.querySelector('[data-key="' + CSS.escape(key) + '"]');
        if (!card) {
          card = document.createElement("div"); card.className = "card"; card.dataset.key = key;
          card.innerHTML = '<div class="label"></div><div class="value"><span class="w"></span> W</div><div class="seen"></div><svg class="gauge" viewBox="0 0 100 8" aria-hidden="true"><rect x="0" y="0" width="100" height="8" class="track"/><rect x="0" y="0" height="8" class="bar" width="0"/></svg>';
          card.querySelector(".label").textContent = v.device_id + " · ch " + v.channel;
          cards.appendChild(card);
        }
        const w = card.querySelector(".w");
        const text = Math.round(v.power_w).toString();
        if (w.textContent !== text) { w.textContent = text; card.dataset.updated = Date.now(); }
        card.classList.remove("stale");
        card.querySelector(".seen").textContent = "live " + new Date(v.ts_ms).toLocaleTimeString("en-GB", { timeZone: TZ });
        max[key] = Math.max(max[key] || 1, Math.abs(v.power_w));
        const bar = card.querySelector(".bar");
        bar.setAttribute("width", (100 * Math.abs(v.power_w) / max[key]).toFixed(1));
        bar.classList.toggle("export", v.power_w < 0);
      });
      state.textContent = values.length ? "live · " + values.length + (values.length === 1 ? " channel" : " channels") : waiting;
    };
  }

  function periodRange(kind, startText, endText) {
    const now = new Date();
    const today = dateLocal(now);
    const d = (s) => new Date(s + "T12:00:00Z");
    const fmt = (x) => x.toISOString().slice(0, 10);
    const add = (s, days) => { const x = d(s); x.setUTCDate(x.getUTCDate() + days); return fmt(x); };
    if (kind === "day") return { start: today, end: add(today, 1), every: "hour" };
    if (kind === "week") return { start: add(today, -6), end: add(today, 1), every: "day" };
    if (kind === "year") return { start: add(today, -364), end: add(today, 1), every: "month" };
    if (kind === "custom" && startText && endText) {
      const days = (d(endText) - d(startText)) / 864e5;
      return { start: startText, end: endText, every: days <= 2 ? "hour" : days <= 120 ? "day" : "month" };
    }
    return { start: add(today, -29), end: add(today, 1), every: "day" };
  }
  function shift(range, how) {
    const d = (s) => new Date(s + "T12:00:00Z");
    const fmt = (x) => x.toISOString().slice(0, 10);
    if (how === "lastyear") {
      const m = (s) => { const x = d(s); x.setUTCFullYear(x.getUTCFullYear() - 1); return fmt(x); };
      return Object.assign({}, range, { start: m(range.start), end: m(range.end) });
    }
    const days = Math.round((d(range.end) - d(range.start)) / 864e5);
    const m = (s) => { const x = d(s); x.setUTCDate(x.getUTCDate() - days); return fmt(x); };
    return Object.assign({}, range, { start: m(range.start), end: m(range.end) });
  }
  function totals(rows) {
    return rows.reduce((t, r) => ({ import_kwh: t.import_kwh + r.import_wh / 1000, export_kwh: t.export_kwh + r.export_wh / 1000 }), { import_kwh: 0, export_kwh: 0 });
  }

  function stackedBars(el, xs, up, down) {
    // Stack by drawing running totals, tallest first, so each layer shows its own share.
    const bars = uPlot.paths.bars({ size: [0.7, 60] });
    const series = [], data = [xs];
    function layer(parts, sign) {
      const acc = xs.map(() => 0);
      const out = parts.map((p) => { p.values.forEach((v, i) => { acc[i] += sign * Math.abs(v || 0); }); return { label: p.label, color: p.color, values: acc.slice() }; });
      return out.reverse();
    }
    layer(up, 1).concat(layer(down, -1)).forEach((p) => { series.push({ label: p.label, stroke: p.color, fill: p.color + "dd", paths: bars, points: { show: false } }); data.push(p.values); });
    draw(el, opts(el, series, "energy [kWh]"), data);
  }

  function energy() {
    const form = document.getElementById("period");
    const el = document.getElementById("chart-energy");
    const kwh = (c, v) => (c.endsWith("_wh") ? (v / 1000).toFixed(2) : v.toFixed(2));
    // A slower answer to an earlier pick (e.g. the first page load's) must not overwrite the
    // figures of a later one: each pick has a number, and only the latest one draws.
    let pick = 0;
    async function show() {
      const mine = ++pick;
      const f = new FormData(form);
      const site = f.get("site");
      const range = Object.assign(periodRange(f.get("period"), f.get("start"), f.get("end")), { tz: TZ });
      form.elements.start.value = range.start; form.elements.end.value = range.end;
      const other = shift(range, f.get("compare"));
      const label = f.get("compare") === "lastyear" ? "same period last year" : "previous period";
      const path = site ? "/api/sites/" + encodeURIComponent(site) + "/energy" : "/api/energy";
      downloads(document.getElementById("dl-energy"), path, range);
      const [body, prev] = await Promise.all([api(path + "?" + q(range)), api(path + "?" + q(other))]);
      if (mine !== pick) return;
      const starts = [...new Set(body.rows.map((r) => r.start))];
      const xs = starts.map((s) => Date.parse(s) / 1000);
      const sum = (rows, s, col) => rows.filter((r) => r.start === s).reduce((a, r) => a + (r[col] || 0) / 1000, 0);
      const total = (rows, col) => rows.reduce((a, r) => a + (r[col] || 0) / 1000, 0);
      if (site) {
        const col = (c) => starts.map((s) => sum(body.rows, s, c));
        stackedBars(el, xs, [
          { label: "grid import [kWh]", color: COLORS.import, values: col("grid_import_wh") },
          { label: "solar [kWh]", color: COLORS.solar, values: col("solar_wh") },
          { label: "battery discharge [kWh]", color: COLORS.battery, values: col("battery_discharge_wh") },
        ], [
          { label: "grid export [kWh]", color: COLORS.export, values: col("grid_export_wh") },
          { label: "battery charge [kWh]", color: "#b784d1", values: col("battery_charge_wh") },
        ]);
        const cols = body.columns.filter((c) => c.endsWith("_wh") && c !== "interpolated_wh");
        table(document.getElementById("sources"), cols.map((c) => ({ source: c.replace(/_wh$/, "").replace(/_/g, " "), "this period [kWh]": total(body.rows, c), [label + " [kWh]"]: total(prev.rows, c) })), ["source", "this period [kWh]", label + " [kWh]"], (c, v) => v.toFixed(2));
        const cons = total(body.rows, "consumption_wh"), solar = total(body.rows, "solar_wh"), exp = total(body.rows, "grid_export_wh"), imp = total(body.rows, "grid_import_wh");
        table(document.getElementById("totals"), [
          { "": "self-consumption", value: solar > 0 ? ((solar - Math.min(exp, solar)) / solar * 100).toFixed(1) + " %" : "–" },
          { "": "self-sufficiency", value: cons > 0 ? ((cons - imp) / cons * 100).toFixed(1) + " %" : "–" },
        ], ["", "value"]);
        downloads(document.getElementById("dl-sources"), path, range);
      } else {
        const keys = [...new Set(body.rows.map((r) => r.device_id + (r.channel != null ? " ch" + r.channel : "")))];
        const of = (k, c) => starts.map((s) => body.rows.filter((r) => r.start === s && r.device_id + (r.channel != null ? " ch" + r.channel : "") === k).reduce((a, r) => a + r[c] / 1000, 0));
        stackedBars(el, xs,
          keys.map((k, i) => ({ label: k + " import [kWh]", color: PALETTE[i % PALETTE.length], values: of(k, "import_wh") })),
          [{ label: "export [kWh]", color: COLORS.export, values: starts.map((s) => sum(body.rows, s, "export_wh")) }]);
        // Without a site nothing says what the channels measure: one total per channel, never summed.
        const keyOf = (r) => r.device_id + (r.channel != null ? " ch" + r.channel : "");
        const per = (rows, k, c) => rows.filter((r) => keyOf(r) === k).reduce((a, r) => a + (r[c] || 0) / 1000, 0);
        table(document.getElementById("totals"), keys.map((k) => ({
          channel: k, "import [kWh]": per(body.rows, k, "import_wh"), "export [kWh]": per(body.rows, k, "export_wh"),
          "net [kWh]": per(body.rows, k, "import_wh") - per(body.rows, k, "export_wh"),
          ["import, " + label + " [kWh]"]: per(prev.rows, k, "import_wh"),
        })), ["channel", "import [kWh]", "export [kWh]", "net [kWh]", "import, " + label + " [kWh]"], (c, v) => c === "channel" ? v : v.toFixed(2));
        table(document.getElementById("sources"), keys.map((k) => ({ channel: k, "import [kWh]": of(k, "import_wh").reduce((x, y) => x + y, 0), "export [kWh]": of(k, "export_wh").reduce((x, y) => x + y, 0) })), ["channel", "import [kWh]", "export [kWh]"], (c, v) => v.toFixed(2));
        downloads(document.getElementById("dl-sources"), path, range);
      }
      const costParams = Object.assign({ start: range.start, end: range.end, tz: TZ }, site ? { site: site } : {});
      downloads(document.getElementById("dl-cost"), "/api/cost", costParams);
      api("/api/cost?" + q(costParams)).then((c) => mine === pick && table(document.getElementById("cost"), c.rows, (c.columns.includes("channel") ? ["device_id", "channel"] : []).concat(["zone", "import_wh", "export_wh", "cost", "currency"]), (k, v) => k === "channel" ? v : k.endsWith("_wh") ? (v / 1000).toFixed(2) : v.toFixed(2)))
        .catch((e) => { if (mine === pick) document.getElementById("cost").innerHTML = "<tr><td>" + e.message + "</td></tr>"; });
    }
    form.addEventListener("submit", (e) => { e.preventDefault(); show(); });
    show().catch(console.error);
  }

  function history() {
    const form = document.getElementById("range");
    const el = document.getElementById("chart-history");
    function load(startMs, endMs) {
      const f = new FormData(form);
      return powerChart(el, document.getElementById("dl-history"), { device: f.get("device"), start: isoLocal(new Date(startMs)), end: isoLocal(new Date(endMs)) }, load);
    }
    function show() { const hours = Number(new FormData(form).get("span")); const end = Date.now(); return load(end - hours * 3600e3, end); }
    form.addEventListener("submit", (e) => { e.preventDefault(); show(); });
    el.addEventListener("dblclick", () => show());
    show().catch(console.error);
  }

  function patterns() {
    const form = document.getElementById("pattern-range");
    const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    async function show() {
      const f = new FormData(form);
      const end = new Date(), start = new Date(end - Number(f.get("days")) * 864e5);
      const params = { device: f.get("device"), channel: f.get("channel"), start: isoLocal(start), end: isoLocal(end) };
      downloads(document.getElementById("dl-heatmap"), "/api/patterns/heatmap", params);
      downloads(document.getElementById("dl-profile"), "/api/patterns/profile", params);
      const tariffParams = params;
      downloads(document.getElementById("dl-tariffs"), "/api/tariffs/compare", tariffParams);
      const [heat, prof] = await Promise.all([api("/api/patterns/heatmap?" + q(params)), api("/api/patterns/profile?" + q(params))]);
      const vals = heat.rows.map((r) => r.mean_w).filter((v) => v != null);
      const lo = Math.min(...vals), hi = Math.max(...vals);
      let svg = '<svg viewBox="0 0 520 170" role="img" aria-label="mean power by weekday and hour">';
      heat.rows.forEach((r) => {
        const t = r.mean_w == null ? null : (r.mean_w - lo) / ((hi - lo) || 1);
        const fill = t == null ? "#eee" : "hsl(" + (220 - 200 * t).toFixed(0) + ",70%," + (88 - 40 * t).toFixed(0) + "%)";
        svg += '<rect x="' + (30 + r.hour * 20) + '" y="' + (r.weekday * 20) + '" width="19" height="19" fill="' + fill + '"><title>' + DAYS[r.weekday] + " " + r.hour + ":00 " + (r.mean_w == null ? "no data" : r.mean_w.toFixed(0) + " W") + "</title></rect>";
      });
      DAYS.forEach((d, i) => { svg += '<text x="0" y="' + (i * 20 + 13) + '">' + d + "</text>"; });
      for (let h = 0; h < 24; h += 3) svg += '<text x="' + (32 + h * 20) + '" y="155">' + h + ":00</text>";
      svg += '<text x="30" y="168">hour of day (' + TZ + "); colour: " + lo.toFixed(0) + " W (blue) to " + hi.toFixed(0) + " W (red)</text></svg>";
      document.getElementById("heatmap").innerHTML = svg;
      const seasons = [...new Set(prof.rows.map((r) => r.season))];
      const xs = [...Array(24).keys()];
      const data = [xs].concat(seasons.map((s) => xs.map((h) => { const r = prof.rows.find((x) => x.season === s && x.hour === h); return r ? r.mean_w : null; })));
      const el = document.getElementById("chart-profile");
      const o = opts(el, seasons.map((s, i) => ({ label: s, stroke: PALETTE[i], width: 2 })), "mean power [W]", { scales: { x: { time: false } } });
      o.axes[0] = { font: axisFont, label: "hour of day (" + TZ + ")", labelFont: axisFont };
      draw(el, o, data);
      api("/api/tariffs/compare?" + q(tariffParams)).catch((e) => { document.getElementById("tariffs").innerHTML = "<tr><td>" + e.message + "</td></tr>"; throw e; }).then((t) => table(document.getElementById("tariffs"), t.rows, (new Set(t.rows.map((r) => r.currency)).size > 1 ? ["currency", "rank"] : ["rank"]).concat(["tariff", "import_wh", "energy_cost", "fixed_cost", "total", "shift_savings", "currency"]).filter((c, i, all) => all.indexOf(c) === i), (c, v) => c === "rank" ? v : c.endsWith("_wh") ? (v / 1000).toFixed(2) : v.toFixed(2)));
    }
    form.addEventListener("submit", (e) => { e.preventDefault(); show(); });
    show().catch(console.error);
  }

  ({ overview, energy, history, patterns }[page] || (() => {}))();
})();
