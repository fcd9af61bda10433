"""Property-based fuzzing of every decoder through the router.

Whatever arrives, a decoder either returns readings or raises DecodeError (which the stream turns
into a dead letter); nothing else escapes, and nothing is silently dropped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.errors import DecodeError
from wattlake.schema import COLUMNS, MEASUREMENT_COLUMNS, READING_SCHEMA, readings_to_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "shelly"
NOW = 1_767_225_600_000
# FUZZ_EXAMPLES=5000 for a deeper run; the default keeps the suite fast.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TOPICS = [
    "wattlake/dev-1/readings",
    "shellies/announce",
    "shellies/em-1/announce",
    "shellies/em-1/online",
    "shellies/em-1/relay/0",
    *(f"shellies/em-1/emeter/{ch}/{q}" for ch in (0, 2) for q in ("power", "energy", "total")),
    "shellies/em-1/emeter/0/pf",
    "pro-1/events/rpc",
    "pro-1/status/em1:0",
    "pro-1/status/em:0",
    "pro-1/status/emdata:0",
    "pro-1/online",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


def check(decoded: Any) -> None:
    """Assert that a decode result is a valid list of readings or a canonical table."""
    if isinstance(decoded, pa.Table):
        assert decoded.schema == READING_SCHEMA
        return
    assert isinstance(decoded, list)
    readings_to_table(decoded)  # every value fits its column
    for reading in decoded:
        assert set(reading) <= set(COLUMNS)
        for column in MEASUREMENT_COLUMNS:
            assert column not in reading or math.isfinite(reading[column])


def decode_or_refuse(router: DecoderRouter, topic: str, payload: bytes) -> Any:
    try:
        decoded = router.decode(RawMessage(topic, payload, NOW))
    except DecodeError as exc:
        assert exc.reason
        return None
    check(decoded)
    return decoded


@FUZZ
@given(topic=st.sampled_from(TOPICS) | st.text(max_size=40), payload=st.binary(max_size=200))
def test_random_bytes(topic: str, payload: bytes) -> None:
    router = DecoderRouter()
    decode_or_refuse(router, topic, payload)
    check(router.drain())


@FUZZ
@given(topic=st.sampled_from(TOPICS), doc=json_values)
def test_random_json(topic: str, doc: Any) -> None:
    router = DecoderRouter()
    decode_or_refuse(router, topic, json.dumps(doc).encode())
    check(router.drain())


def fixture_documents() -> list[tuple[str, Any]]:
    docs: list[tuple[str, Any]] = []
    for path in sorted(FIXTURES.glob("gen2-*.json")):
        doc = json.loads(path.read_text())
        docs.append((f"{doc['src']}/events/rpc", doc))
    event = {
        "src": "pro-1",
        "method": "NotifyEvent",
        "params": {
            "ts": 1767225500.0,
            "events": [
                {
                    "component": "em1data:0",
                    "event": "data",
                    "data": {
                        "ts": 1767225000,
                        "period": 60,
                        "keys": ["total_act_energy", "total_act_ret_energy", "avg_voltage"],
                        "values": [[1.0, 0.0, 230.0], [2.0, 0.5, 231.0]],
                    },
                }
            ],
        },
    }
    docs.append(("pro-1/events/rpc", event))
    docs.append(("wattlake/dev-1/readings", [{"ts": 1767225000, "power_w": 1.0}] * 20))
    docs.append(("wattlake/dev-1/readings", {"ts": "2026-01-01T00:00:00Z", "power_w": 1.0}))
    return docs


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the path of every value inside a JSON document."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += paths(value, (*prefix, index))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = replaced(doc[path[0]], path[1:], value)
    return copy


@FUZZ
@given(data=st.data())
def test_mutated_fixtures(data: st.DataObject) -> None:
    topic, doc = data.draw(st.sampled_from(fixture_documents()))
    path = data.draw(st.sampled_from(paths(doc)))
    mutant = replaced(doc, path, data.draw(json_values))
    router = DecoderRouter()
    decode_or_refuse(router, topic, json.dumps(mutant).encode())


reading_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.none(),
    st.sampled_from(["1", True, [1.0], {"x": 1}]),  # wrong types: the message must be refused
)
generic_rows = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "ts": st.one_of(
                st.floats(min_value=9.4e8, max_value=1.8e9),
                st.sampled_from(["2026-01-01T00:00:00+00:00", "2026-01-01", "x", None]),
            ),
            "channel": st.integers(min_value=-1, max_value=40_000),
            "device_id": st.sampled_from(["dev-1", "dev-2"]),
            "power_w": reading_values,
            "energy_wh": reading_values,
            "pf": reading_values,
            "bogus": st.just(1),
        },
    ),
    max_size=40,
)


def generic_payload(rows: list[Any], layout: str) -> bytes:
    """Encode readings as one JSON array or as newline-delimited objects."""
    if layout == "ndjson":
        return b"\n".join(json.dumps(row).encode() for row in rows)
    return json.dumps(rows).encode()


@FUZZ
@given(rows=generic_rows, layout=st.sampled_from(["array", "ndjson"]))
def test_generic_messages_keep_every_reading_or_refuse_the_message(
    rows: list[Any], layout: str
) -> None:
    payload = generic_payload(rows, layout)
    decoded = decode_or_refuse(DecoderRouter(), "wattlake/dev-1/readings", payload)
    if decoded is None or (layout == "ndjson" and len(rows) < 2):
        return  # one line is one object; none is not JSON at all
    count = decoded.num_rows if isinstance(decoded, pa.Table) else len(decoded)
    assert count == len(rows)
    table = decoded if isinstance(decoded, pa.Table) else readings_to_table(decoded)
    expected = [row.get("power_w") for row in rows]
    assert table.column("power_w").to_pylist() == [
        None if v is None else float(v) for v in expected
    ]


def refused_alone(message: RawMessage) -> bool:
    try:
        DecoderRouter().decode(message)
    except DecodeError:
        return True
    return False


def row_count(decoded: Any) -> int:
    return int(decoded.num_rows) if isinstance(decoded, pa.Table) else len(decoded)


@FUZZ
@given(
    batch=st.lists(
        st.tuples(generic_rows, st.sampled_from(["array", "ndjson"]), st.booleans()), max_size=6
    )
)
def test_decode_many_accounts_for_every_message_and_reading(
    batch: list[tuple[list[Any], str, bool]],
) -> None:
    """A batch decode returns every message's readings, or the message with its reason."""
    messages = [
        RawMessage(
            f"wattlake/dev-{i % 2}/readings",
            generic_payload(rows, layout) if valid else b"\x00garbage",
            NOW + i,
        )
        for i, (rows, layout, valid) in enumerate(batch)
    ]
    decoded, failed = DecoderRouter().decode_many(messages)
    assert all(isinstance(error, DecodeError) and error.reason for _, error in failed)
    refused = {id(message) for message, _ in failed}
    assert len(refused) == len(failed)
    assert refused == {id(m) for m in messages if refused_alone(m)}
    for item in decoded:
        check(item)
    kept = [m for m in messages if id(m) not in refused]
    assert sum(map(row_count, decoded)) == sum(row_count(DecoderRouter().decode(m)) for m in kept)


gen1_messages = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),
        st.sampled_from(["power", "voltage", "total", "energy", "pf", "current"]),
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
            st.sampled_from(["-1", "0", "nan", "x", "", "1e999"]),
        ),
        st.integers(min_value=0, max_value=8_000),
    ),
    max_size=40,
)


@FUZZ
@given(messages=gen1_messages)
def test_gen1_cycles_keep_every_power_value(messages: list[tuple[int, str, str, int]]) -> None:
    router = DecoderRouter()
    at_ms = NOW
    accepted: dict[int, list[float]] = {0: [], 1: [], 2: []}
    out: list[dict[str, Any]] = []
    for channel, quantity, text, gap_ms in messages:
        at_ms += gap_ms
        decoded = decode_or_refuse(
            router, f"shellies/em-1/emeter/{channel}/{quantity}", text.encode()
        )
        if decoded is None:
            continue
        out += decoded
        if quantity == "power":
            accepted[channel].append(float(text))
        out += router.drain(at_ms)
    out += router.drain()
    check(out)
    for channel, powers in accepted.items():
        seen = [r["power_w"] for r in out if r["channel"] == channel and "power_w" in r]
        assert seen == powers
    assert router.drain() == []
