"""A decoder with a bug: the message it fails on is a dead letter naming the exception, the rest
of the batch is decoded, and the stream goes on (never a crash loop of the writer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattlake.devices.base import Decoded, RawMessage
from wattlake.devices.generic import GenericDecoder
from wattlake.devices.router import DECODER_ERROR, DecoderRouter
from wattlake.devices.shelly_gen2 import ShellyGen2Decoder
from wattlake.lake.storage import Lake
from wattlake.stream.delivery import DeliveryStream

NOW = 1_767_225_600_000
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Buggy:
    """Wrap a real decoder; fail with RuntimeError on payloads that contain ``b"boom"``."""

    def __init__(self, inner: GenericDecoder | ShellyGen2Decoder) -> None:
        self.inner = inner
        self.source = inner.source
        self.calls = 0

    def decode(self, message: RawMessage) -> Decoded:
        self.calls += 1
        if b"boom" in message.payload:
            raise RuntimeError("boom\nsecond line")
        return self.inner.decode(message)


def buggy_router() -> DecoderRouter:
    return DecoderRouter(
        decoders={
            "generic": lambda status: Buggy(GenericDecoder(status)),
            "shelly-gen2": lambda status: Buggy(ShellyGen2Decoder(status)),
        }
    )


def generic(device: str, ts: int, power: float, boom: bool) -> RawMessage:
    doc = {"ts": ts, "power_w": power, **({"note": "boom"} if boom else {})}
    return RawMessage(f"wattlake/{device}/readings", json.dumps(doc).encode(), NOW)


def gen2(device: str, ts: int, power: float, boom: bool) -> RawMessage:
    doc = {
        "src": device,
        "method": "NotifyStatus",
        "params": {"ts": ts, "em1:0": {"act_power": power}, **({"x": "boom"} if boom else {})},
    }
    return RawMessage(f"{device}/events/rpc", json.dumps(doc).encode(), NOW)


message_specs = st.lists(
    st.tuples(
        st.sampled_from([generic, gen2]),
        st.sampled_from(["m1", "m2", "pro-7"]),
        st.integers(min_value=1_767_225_600, max_value=1_767_229_200),
        st.floats(min_value=-1e4, max_value=1e4, allow_nan=False),
        st.booleans(),
    ),
    max_size=40,
)


@FUZZ
@given(specs=message_specs, noise=st.lists(st.binary(max_size=60), max_size=5))
def test_every_message_is_decoded_or_refused_whatever_the_decoder_raises(
    specs: list[tuple[object, str, int, float, bool]], noise: list[bytes]
) -> None:
    router = buggy_router()
    messages = [make(device, ts, power, boom) for make, device, ts, power, boom in specs]  # type: ignore[operator]
    messages += [RawMessage("wattlake/m9/readings", b"boom" + n, NOW) for n in noise]
    decoded, failed = router.decode_many(messages)
    crashed = [m for m in messages if b"boom" in m.payload]
    refused_for_bug = [m for m, exc in failed if exc.reason == DECODER_ERROR]
    assert sorted(refused_for_bug, key=id) == sorted(crashed, key=id)
    for _, exc in failed:
        if exc.reason == DECODER_ERROR:
            assert "RuntimeError: boom" in str(exc)
            assert "\n" not in str(exc)
    readings = sum(len(d) if isinstance(d, list) else d.num_rows for d in decoded)
    assert readings == len(messages) - len(crashed) - (len(failed) - len(refused_for_bug))


def test_a_failing_batch_decoder_falls_back_to_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    router = DecoderRouter()

    def broken(messages: list[RawMessage]) -> object:
        raise RuntimeError("batch decoder bug")

    monkeypatch.setattr(router._generic, "decode_arrays", broken)
    good = RawMessage("wattlake/m1/readings", b'[{"ts": 1767225600, "power_w": 5}]', NOW)
    bad = RawMessage("wattlake/m1/readings", b'[{"ts": "not a time"}]', NOW)
    decoded, failed = router.decode_many([good, bad])
    assert sum(len(d) if isinstance(d, list) else d.num_rows for d in decoded) == 1
    assert [(m, exc.reason) for m, exc in failed] == [(bad, failed[0][1].reason)]
    assert failed[0][1].reason != DECODER_ERROR


def test_the_stream_keeps_going_and_the_dead_letter_names_the_exception(tmp_path: Path) -> None:
    stream = DeliveryStream(Lake.open(str(tmp_path / "lake")), router=buggy_router())
    letters = []
    for round_ in range(3):  # a crash loop would stop at the first round
        stream.accept(
            [
                gen2("pro-1", 1_767_225_600 + round_, 10.0, False),
                gen2("pro-1", 1_767_225_700 + round_, 20.0, True),
                generic("m1", 1_767_225_600 + round_, 1.0, True),
                generic("m1", 1_767_225_800 + round_, 2.0, False),
            ]
        )
        batch = stream.detach()  # what a flush would write
        assert batch.rows == 2
        letters += batch.dead
    assert stream.stats.readings == 6
    assert stream.stats.dead_letters_by_reason == {DECODER_ERROR: 6}
    assert [letter.error_code for letter in letters] == [DECODER_ERROR] * 6
    assert all("RuntimeError: boom" in letter.error_message for letter in letters)
    assert all(b"boom" in letter.message.payload for letter in letters)


def test_a_value_too_large_for_the_lake_is_a_dead_letter_and_the_rest_is_written(
    tmp_path: Path,
) -> None:
    """Before, a reading whose value did not fit its lake decimal failed the whole flush, and
    the writer started again on the same WAL: a crash loop."""
    from wattlake.lake import tables
    from wattlake.query.engine import connect

    lake = Lake.open(str(tmp_path / "lake"))
    stream = DeliveryStream(lake)
    big = RawMessage(
        "wattlake/m1/readings",
        b'[{"ts": 1767225600, "power_w": 12.5}, {"ts": 1767225610, "power_w": 12345678.9},'
        b' {"ts": 1767225620, "power_w": 0, "energy_wh": 1e20}]',
        NOW,
    )
    stream.accept([big, generic("m2", 1_767_225_600, 9_999_999.99, False)])
    assert stream.stats.dead_letters_by_reason == {"out-of-range": 2}
    assert stream.flush()  # written: no exception
    con = connect(lake)
    assert con.sql("SELECT device_id, power_w FROM readings ORDER BY ALL").fetchall() == [
        ("m1", 12.5),
        ("m2", 9_999_999.99),
    ]
    letters = con.sql(
        "SELECT error_code, error_message, raw_text FROM dead_letters ORDER BY error_message"
    ).fetchall()
    assert [code for code, _, _ in letters] == ["out-of-range"] * 2
    assert "energy_wh 1e+20 does not fit the lake" in letters[0][1]
    assert "power_w 12345678.9 does not fit the lake" in letters[1][1]
    assert '"power_w": 12345678.9' in letters[1][2]  # the reading itself is kept
    assert tables.unstorable(tables.from_stored(tables.read_table(lake, "readings"))) == {}
