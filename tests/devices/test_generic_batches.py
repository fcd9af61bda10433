"""Batch decoding of generic messages gives exactly what one-by-one decoding gives."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattlake.devices import generic
from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.errors import DecodeError
from wattlake.schema import COLUMNS, READING_SCHEMA, readings_to_table

RECEIVED_MS = 1_767_225_600_000
TS_S = 1_767_225_000


def as_table(decoded: list[object]) -> pa.Table:
    tables = [d if isinstance(d, pa.Table) else readings_to_table(d) for d in decoded]  # type: ignore[arg-type]
    table = pa.concat_tables([READING_SCHEMA.empty_table(), *tables])
    return table.sort_by([(c, "ascending") for c in ("device_id", "channel", "ts")])


def one_by_one(messages: list[RawMessage]) -> tuple[pa.Table, dict[bytes, str]]:
    router = DecoderRouter()
    decoded, refused = [], {}
    for message in messages:
        try:
            decoded.append(router.decode(message))
        except DecodeError as exc:
            refused[message.payload] = exc.reason
    return as_table(decoded), refused


def together(messages: list[RawMessage]) -> tuple[pa.Table, dict[bytes, str]]:
    decoded, failed = DecoderRouter().decode_many(messages)
    return as_table(decoded), {m.payload: e.reason for m, e in failed}


def rows(device: int, count: int, *, iso: bool = False, **extra: object) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for k in range(count):
        ts: object = TS_S + k
        if iso:
            ts = f"2026-01-01T00:00:{k % 60:02d}+00:00"
        out.append({"ts": ts, "channel": k % 3, "power_w": 10.0 * k, "energy_wh": k / 4, **extra})
    return out


def message(device: int, payload: bytes) -> RawMessage:
    return RawMessage(f"wattlake/dev{device}/readings", payload, RECEIVED_MS)


def ndjson(items: list[dict[str, object]]) -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in items) + b"\n"


def test_a_mixed_batch_decodes_like_one_message_at_a_time() -> None:
    messages = [
        message(1, json.dumps(rows(1, 40)).encode()),
        message(2, ndjson(rows(2, 30))),
        message(3, json.dumps(rows(3, 1)[0]).encode()),
        message(4, ndjson(rows(4, 20, iso=True))),  # ISO times: the per-message path
        message(5, json.dumps(rows(5, 20, iso=True)).encode()),
        message(6, ndjson(rows(6, 5)[:2]) + b"\n\n" + ndjson(rows(6, 5)[2:])),  # blank lines
        message(7, ndjson([*rows(7, 3), {"ts": TS_S, "volts": 1}])),  # unknown field
        message(8, ndjson([*rows(8, 3), {"ts": 1.0}])),  # 1970
        message(9, json.dumps([*rows(9, 30), {"power_w": "x"}]).encode()),
        message(10, ndjson(rows(10, 3, device_id="other"))),
        message(11, b'{"ts": 1}\n{"ts": '),
        message(12, b"[1e999]"),
        message(13, ndjson(rows(13, 3, channel=-1))),
    ]
    expected, expected_refused = one_by_one(messages)
    table, refused = together(messages)
    assert table.equals(expected)
    assert refused == expected_refused
    assert table.num_rows == 40 + 30 + 1 + 20 + 20 + 5
    assert set(expected_refused.values()) >= {
        "unknown-field",
        "bad-timestamp",
        "bad-type",
        "identity-mismatch",
        "invalid-json",
    }


def test_newline_delimited_readings_take_the_arrow_fast_path() -> None:
    messages = [message(d, ndjson(rows(d, 100))) for d in range(50)]
    decoded, failed = DecoderRouter().decode_many(messages)
    assert failed == [] and len(decoded) == 1 and isinstance(decoded[0], pa.Table)
    table = decoded[0]
    assert table.schema == READING_SCHEMA and table.num_rows == 5000
    first = table.filter(pa.compute.equal(table["device_id"], "dev3")).slice(1, 1).to_pylist()[0]
    assert first["power_w"] == 10.0 and first["energy_wh"] == 0.25 and first["channel"] == 1
    assert first["ts"].timestamp() == TS_S + 1 and first["source"] == "generic"
    assert tuple(table.column_names) == COLUMNS


reading = st.fixed_dictionaries(
    {"ts": st.integers(TS_S - 10, TS_S + 10)},
    optional={
        "power_w": st.floats(allow_nan=False, allow_infinity=False, width=32),
        "channel": st.integers(0, 3),
        "energy_wh": st.none() | st.floats(0, 1e9),
    },
)
bad_reading = st.sampled_from([{"ts": "yesterday"}, {"power_w": "x"}, {"pf": []}, {"ts": 5}])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["array", "ndjson", "object"]),
            st.lists(reading, min_size=1, max_size=20),
            st.booleans(),
            bad_reading,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_batches_never_drop_or_invent_readings(
    specs: list[tuple[str, list[dict[str, object]], bool, dict[str, object]]],
) -> None:
    messages = []
    for device, (shape, items, spoil, bad) in enumerate(specs):
        items = [*items, bad] if spoil else items
        if shape == "array":
            payload = json.dumps(items).encode()
        elif shape == "ndjson":
            payload = ndjson(items)
        else:
            payload = json.dumps(items[-1]).encode()
        messages.append(message(device, payload))
    expected, expected_refused = one_by_one(messages)
    table, refused = together(messages)
    assert refused == expected_refused
    assert table.equals(expected)


def test_json_arrays_rewritten_as_lines_decode_like_one_message_at_a_time() -> None:
    compact = json.dumps(rows(1, 30), separators=(",", ":")).encode()
    pretty = json.dumps(rows(2, 30), indent=2).encode()
    tricky = [*rows(3, 3), {"ts": TS_S + 9, "device_id": 'dev3"}, {"power_w": 1'}]
    nested = [*rows(4, 3), {"ts": TS_S + 9, "power_w": [{"a": 1}, {"b": 2}]}]
    messages = [
        message(0, json.dumps(rows(0, 30)).encode()),  # json.dumps's "}, {"
        message(1, compact),  # "},{"
        message(2, pretty),  # other spacing: not rewritten, the slow path
        message(3, json.dumps(tricky).encode()),  # a separator inside a text value
        message(4, json.dumps(nested).encode()),  # objects inside a value
        message(5, b"[]"),
    ]
    expected, expected_refused = one_by_one(messages)
    table, refused = together(messages)
    assert table.equals(expected)
    assert refused == expected_refused
    assert set(expected_refused) == {messages[3].payload, messages[4].payload}
    assert table.num_rows == 90


def test_plain_json_arrays_take_the_arrow_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_path(*_: object) -> None:
        raise AssertionError("the per-row path was taken")

    monkeypatch.setattr(generic, "_many_table", slow_path)
    messages = [message(d, json.dumps(rows(d, 100)).encode()) for d in range(20)]
    decoded, failed = DecoderRouter().decode_many(messages)
    assert failed == [] and len(decoded) == 1 and isinstance(decoded[0], pa.Table)
    assert decoded[0].num_rows == 2000
