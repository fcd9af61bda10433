"""Commands of the energy stage: ``wattlake energy``, ``wattlake cost`` and ``wattlake tariffs``."""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    emit_rows,
    existing_lake,
    load_settings,
    say,
)
from wattlake.errors import UsageError

if TYPE_CHECKING:
    from wattlake.energy.tariffs import Tariff


class Every(enum.StrEnum):
    """Bucket sizes of ``wattlake energy``."""

    quarter = "15min"
    hour = "hour"
    day = "day"
    month = "month"


class Method(enum.StrEnum):
    """How energy is computed."""

    auto = "auto"
    trapezoid = "trapezoid"
    left = "left"
    right = "right"


class Gaps(enum.StrEnum):
    """What an interval longer than ``energy.max_gap_s`` contributes."""

    skip = "skip"
    hold = "hold"
    linear = "linear"


DeviceOption = Annotated[
    str | None, typer.Option("--device", help="One device (default: every device).")
]
ChannelOption = Annotated[
    int | None,
    typer.Option(
        "--channel", help="One channel (default: each channel on its own, never summed).", min=0
    ),
]
StartOption = Annotated[
    str, typer.Option("--start", help="Start, inclusive: a date (local midnight) or ISO time.")
]
EndOption = Annotated[
    str, typer.Option("--end", help="End, exclusive: a date (local midnight) or ISO time.")
]
TzOption = Annotated[
    str | None, typer.Option("--tz", help="IANA time zone of local days [setting energy.tz].")
]
MethodOption = Annotated[
    Method,
    typer.Option(
        "--method",
        help="auto: counters where present, else trapezoid; or trapezoid, left, right on power.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the energy stage's commands to ``app``."""
    app.command("energy")(energy)
    app.command("cost")(cost)
    tariffs = typer.Typer(
        name="tariffs", help="Built-in and custom time-of-use tariffs.", no_args_is_help=True
    )
    tariffs.command("list")(tariffs_list)
    tariffs.command("show")(tariffs_show)
    tariffs.command("compare")(tariffs_compare)
    app.add_typer(tariffs)


def _range(settings: Any, tz_name: str | None, start: str, end: str) -> tuple[Any, int, int]:
    from wattlake.energy.buckets import parse_time_ms, zone

    tz = zone(tz_name or settings["energy.tz"])
    start_ms, end_ms = parse_time_ms(start, tz), parse_time_ms(end, tz)
    if end_ms <= start_ms:
        raise UsageError(f"--end ({end}) must be after --start ({start}).")
    return tz, start_ms, end_ms


_SOURCES = {
    "rollups": "Energy from rollups (table energy_15min).",
    "readings": "Energy from raw readings.",
    "rollups+readings": "Energy from rollups (table energy_15min); gaps from raw readings.",
}


def say_source(source: str) -> None:
    """Say on stderr where the figures were read from (see docs/lake.md, Rollups)."""
    say(_SOURCES.get(source, f"Energy from {source}."))


def _say_events(events: Any) -> None:
    kinds: dict[str, dict[str, int]] = {}
    for key, event in events:
        counts = kinds.setdefault(key, {})
        counts[event.kind] = counts.get(event.kind, 0) + 1
    for key, counts in kinds.items():
        found = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        say(f"{key}: counter {found} (see docs/energy.md).")


def _check_sites(settings: Any) -> None:
    """Refuse a wattlake.toml whose sites are invalid, whichever command reads it."""
    from wattlake.query.sites import configured_sites

    configured_sites(settings, check_devices=False)


SiteOption = Annotated[
    str | None, typer.Option("--site", help="A site of wattlake.toml ([sites.NAME]).")
]


def energy(
    start: StartOption,
    end: EndOption,
    device: DeviceOption = None,
    channel: ChannelOption = None,
    site: SiteOption = None,
    every: Annotated[Every, typer.Option("--every", help="Bucket size.")] = Every.hour,
    tz: TzOption = None,
    method: MethodOption = Method.auto,
    gaps: Annotated[
        Gaps, typer.Option("--gaps", help="Energy of a gap: skip (none), hold or linear.")
    ] = Gaps.skip,
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Energy per device channel and local bucket [Wh]; with --site, the site's balance.

    A site's rows: grid import and export, solar, battery charge and discharge, consumption,
    each circuit, the untracked rest, self-consumption and self-sufficiency.
    """
    from wattlake.query.energy import EnergyRequest, energy_for, site_energy_for, site_request
    from wattlake.query.reports import (
        ENERGY_COLUMNS,
        SITE_COLUMNS,
        series_has_data,
        series_rows,
        site_rows,
    )

    settings = load_settings(data_dir, config)
    existing_lake(settings)
    _check_sites(settings)
    if site is not None:
        if device is not None or channel is not None:
            raise UsageError("--site takes the site's channels; leave out --device and --channel.")
        request = site_request(
            settings, site, start, end, every.value, tz, method=method.value, gap_policy=gaps.value
        )
        answer = site_energy_for(settings, request)
        balance, source = answer.site, answer.source
        assert balance is not None
        rows = site_rows(balance, request.tz)
        _say_events(balance.events)
        for warning in balance.warnings:
            say(f"Warning: {warning}")
        say_source(source)
        circuits = [f"circuit_{name}_wh" for name in balance.balance.circuits_wh]
        columns = [*SITE_COLUMNS[:9], *circuits, *SITE_COLUMNS[9:]]
        emit_rows(rows, fmt, columns=columns, title=f"Site {site} [Wh]")
        return
    zone_info, start_ms, end_ms = _range(settings, tz, start, end)
    answer = energy_for(
        settings,
        EnergyRequest(
            start_ms,
            end_ms,
            zone_info,
            every.value,
            device_id=device,
            channel=channel,
            method=method.value,
            gap_policy=gaps.value,
        ),
    )
    edges, source = answer.edges, answer.source
    results = [r for r in answer.series if series_has_data(r, start_ms, end_ms)]
    if not results:
        from wattlake.query.inventory import no_data_message

        say(no_data_message(settings, device_id=device, start_ms=start_ms, end_ms=end_ms))
    rows = series_rows(results, edges, zone_info)
    _say_events(
        (f"{r.series.device_id} channel {r.series.channel}", e) for r in results for e in r.events
    )
    say_source(source)
    emit_rows(rows, fmt, columns=list(ENERGY_COLUMNS), title="Energy [Wh]")


def cost(
    start: StartOption,
    end: EndOption,
    tariff: Annotated[
        str | None,
        typer.Option(
            "--tariff",
            help="Built-in tariff name, a .toml file or a .csv/.json price file "
            "[the site's tariff, or cost.tariff].",
        ),
    ] = None,
    device: DeviceOption = None,
    channel: ChannelOption = None,
    site: SiteOption = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="IANA time zone of --start/--end [the tariff's own zone]."),
    ] = None,
    method: MethodOption = Method.auto,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare", help="Also price under these tariffs: NAME,NAME,… (cheapest first)."
        ),
    ] = None,
    shift_share: Annotated[
        float | None,
        typer.Option(
            "--shift-share",
            help="Estimate savings of moving this share (0–1) of dear-zone load within its day.",
        ),
    ] = None,
    list_gaps: Annotated[
        bool,
        typer.Option("--gaps", help="List the gaps in the readings the cost bridges."),
    ] = False,
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Energy and cost per tariff zone, fixed charges and total, with coverage and gaps.

    With --site only the site's grid channels are billed, under the site's tariff unless
    --tariff is given. Without a site each device channel is billed on its own (a row set per
    channel, led by device_id and channel), never summed; --compare then needs one channel.
    """
    from wattlake.energy.tariffs import compare_tariffs, load_tariff
    from wattlake.query.energy import cost_for, energy_over_edges_for
    from wattlake.query.reports import cost_period, cost_rows_with_data

    settings = load_settings(data_dir, config)
    existing_lake(settings)
    _check_sites(settings)
    if site is not None and (device is not None or channel is not None):
        raise UsageError("--site bills the site's grid channels; leave out --device and --channel.")
    if shift_share is not None and not 0.0 <= shift_share <= 1.0:
        raise UsageError(f"--shift-share must be between 0 and 1, not {shift_share}.")
    if compare is not None:
        if tariff is None:
            raise UsageError("Give --tariff with --compare.")
        chosen = load_tariff(tariff)
        others = [load_tariff(n.strip()) for n in compare.split(",") if n.strip()]
        _, start_ms, end_ms = cost_period(chosen, start, end, tz)
        over = energy_over_edges_for(
            settings,
            start_ms,
            end_ms,
            device_id=device,
            channel=channel,
            site_name=site,
            method=method.value,
        )
        rows = compare_tariffs([chosen, *others], over, start_ms, end_ms)
        emit_rows(rows, fmt, title="Tariffs compared")
        return
    report, source = cost_for(
        settings,
        start=start,
        end=end,
        tariff_name=tariff,
        tz_name=tz,
        device_id=device,
        channel=channel,
        site_name=site,
        method=method.value,
        shift_share=shift_share,
    )
    first = report.rows[0]
    title = f"Cost under {first['tariff']} ({first['currency']})"
    gap_columns = ["device_id", "channel", "start", "end", "length_s", "zones"]
    rows, gaps, warnings = cost_rows_with_data(report)
    if not rows:
        from wattlake.query.inventory import no_data_message

        chosen = load_tariff(tariff or str(first["tariff"]))  # a file's tariff: not by name
        _, start_ms, end_ms = cost_period(chosen, start, end, tz)
        say(no_data_message(settings, device_id=device, start_ms=start_ms, end_ms=end_ms))
        if list_gaps:
            emit_rows([], fmt, columns=gap_columns, title="Gaps bridged")
        else:
            emit_rows([], fmt, columns=list(first), title=title)
        return
    for warning in warnings:
        say(f"Warning: {warning}")
    say_source(source)
    if list_gaps:
        emit_rows(gaps, fmt, columns=gap_columns, title="Gaps bridged")
        return
    emit_rows(rows, fmt, title=title)


def tariffs_list(fmt: FormatOption = OutputFormat.table) -> None:
    """List the built-in tariffs."""
    from wattlake.energy.tariffs import builtin_tariff_names, load_tariff

    rows = []
    for name in builtin_tariff_names():
        t = load_tariff(name)
        rows.append(
            {
                "name": t.name,
                "title": t.title,
                "currency": t.currency,
                "timezone": t.timezone,
                "zones": ",".join(t.zones),
            }
        )
    emit_rows(rows, fmt, title="Built-in tariffs")


def tariffs_show(
    name: Annotated[
        str, typer.Argument(help="Built-in tariff name, a .toml file or a .csv/.json price file.")
    ],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show a tariff's zones and prices, one row per price period and zone (a dynamic
    tariff: one row per price interval)."""
    from wattlake.energy.tariffs import load_tariff

    t = load_tariff(name)
    if t.dynamic is not None:
        emit_rows(_interval_rows(t), fmt, title=t.title or t.name)
        return
    rows = []
    for period in t.prices:
        for z in t.zones:
            when = [
                f"{'/'.join(sorted(r.days))} months {_months(r.months)} "
                + " ".join(
                    f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"
                    for a, b in r.ranges_min
                )
                for r in t.rules
                if r.zone == z
            ]
            if z == t.default_zone:
                when.append("all other times")
            rows.append(
                {
                    "tariff": t.name,
                    "valid_from": period.valid_from.isoformat(),
                    "zone": z,
                    "when": "; ".join(when),
                    "import_per_kwh": period.import_per_kwh[z],
                    "export_per_kwh": period.export_per_kwh[z],
                    "fixed_per_day": period.fixed_per_day,
                    "fixed_per_month": period.fixed_per_month,
                    "currency": t.currency,
                    "timezone": t.timezone,
                    "models": "; ".join(t.models),
                    "leaves_out": "; ".join(t.leaves_out),
                }
            )
    emit_rows(rows, fmt, title=t.title or t.name)
    if fmt is OutputFormat.table and t.leaves_out:
        say(f"{t.name} leaves out of the real bill: {'; '.join(t.leaves_out)}.")


def _interval_rows(t: Tariff) -> list[dict[str, Any]]:
    """Return one row per price interval of a dynamic tariff; a gap has no prices."""
    from wattlake.energy.buckets import format_local, zone

    assert t.dynamic is not None
    d, tz = t.dynamic, zone(t.timezone)
    return [
        {
            "tariff": t.name,
            "start": format_local(int(d.edges_ms[i]), tz),
            "end": format_local(int(d.edges_ms[i + 1]), tz),
            "import_per_kwh": None if math.isnan(d.import_per_kwh[i]) else d.import_per_kwh[i],
            "export_per_kwh": None if math.isnan(d.export_per_kwh[i]) else d.export_per_kwh[i],
            "fixed_per_day": d.fixed_per_day,
            "fixed_per_month": d.fixed_per_month,
            "currency": t.currency,
        }
        for i in range(d.import_per_kwh.size)
    ]


def _months(months: frozenset[int]) -> str:
    return "all" if len(months) == 12 else ",".join(str(m) for m in sorted(months))


def tariffs_compare(
    tariffs: Annotated[str, typer.Option("--tariffs", help="Tariffs to compare: NAME,NAME,…")],
    start: StartOption,
    end: EndOption,
    device: DeviceOption = None,
    channel: ChannelOption = None,
    tz: TzOption = None,
    method: MethodOption = Method.auto,
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Which tariff would have been cheapest on the same consumption."""
    names = [n.strip() for n in tariffs.split(",") if n.strip()]
    if not names:
        raise UsageError("Give tariffs to compare, e.g. --tariffs pl-g11,pl-g12.")
    cost(
        tariff=names[0],
        start=start,
        end=end,
        device=device,
        channel=channel,
        tz=tz,
        method=method,
        compare=",".join(names[1:]),
        shift_share=None,
        fmt=fmt,
        data_dir=data_dir,
        config=config,
    )
