"""The dedupe restore on lists of changelog records: what is remembered, what is forgotten,
which markers are kept in flight (records a crash cut short)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from service.state.markers import marker, marker_outcomes, marker_source
from service.state.restore import Restore

OUTCOME = (
    b'{"fallbackId":"R1:1","requestId":"R1","recipientSeq":1,"senderKey":"S",'
    b'"status":"REQUESTED","reason":null}'
)


@dataclass(frozen=True)
class Rec:
    key: bytes | None
    value: bytes | None
    offset: int
    timestamp: int = 5_000_000


def mark(fid: str, offset: int, source_offset: int, topic: str = "in", partition: int = 0) -> Rec:
    value = marker(fid, "2026-12-02T10:00:00.000+09:00", (topic, partition, source_offset), [])
    return Rec(fid.encode(), value, offset)


def restore(**kw: object) -> Restore:
    options: dict[str, object] = {
        "horizon_ms": 0,
        "floors": {("in", 0): 10},
        "tails": {0: 0},
        "room": 100,
    }
    options.update(kw)
    return Restore([0], **options)  # type: ignore[arg-type]


def test_every_marker_within_retention_is_remembered() -> None:
    r = restore(floors={})
    r.feed(0, [mark(f"R{i}:1", i, i) for i in range(5)])
    state = r.states()[0]
    assert len(state) == 5 and all(f"R{i}:1" in state for i in range(5))


def test_markers_older_than_retention_and_tombstones_are_forgotten() -> None:
    r = restore(horizon_ms=5_000_000)
    r.feed(0, [Rec(b"old:1", b"{}", 0, timestamp=4_999_999), Rec(b"gone:1", None, 1)])
    r.feed(0, [Rec(None, b"{}", 2), mark("kept:1", 3, 3)])
    state = r.states()[0]
    assert "kept:1" in state and "old:1" not in state and "gone:1" not in state


def test_markers_of_records_at_or_past_the_committed_offset_are_in_flight() -> None:
    r = restore()
    r.feed(0, [mark("a:1", 0, 9), mark("b:1", 1, 10), mark("c:1", 2, 11)])
    assert set(r.in_flight) == {("in", 0, 10), ("in", 0, 11)}
    assert r.in_flight[("in", 0, 10)] == ("b:1", [])


def test_only_the_tail_of_the_changelog_is_looked_at() -> None:
    r = restore(tails={0: 2})
    r.feed(0, [mark("a:1", 0, 20), mark("b:1", 1, 21), mark("c:1", 2, 22)])
    assert set(r.in_flight) == {("in", 0, 22)}


def test_a_partition_without_a_floor_keeps_nothing_in_flight() -> None:
    r = restore(floors={("in", 1): 0})
    r.feed(0, [mark("a:1", 0, 50)])
    assert r.in_flight == {}


def test_in_flight_beyond_the_room_is_counted_not_kept() -> None:
    r = restore(room=2)
    r.feed(0, [mark(f"R{i}:1", i, 10 + i) for i in range(5)])
    assert len(r.in_flight) == 2 and r.beyond_limit == 3


def test_markers_without_a_source_or_not_json_are_never_in_flight() -> None:
    r = restore()
    legacy = orjson.dumps({"fallbackId": "a:1", "requestedAt": "x"})
    broken = b'{"source":"in/0/12", not json'
    r.feed(0, [Rec(b"a:1", legacy, 0), Rec(b"b:1", broken, 1)])
    assert r.in_flight == {}
    assert len(r.states()[0]) == 2  # both still count as requested


def test_a_marker_keeps_its_outcomes_less_the_event_fields() -> None:
    value = marker("R1:1", "t", ("in", 3, 7), [OUTCOME])
    assert marker_source(value) == ("in", 3, 7)
    (kept,) = marker_outcomes(value) or []
    assert orjson.loads(kept) == {"status": "REQUESTED", "reason": None}
    assert marker_source(b'{"fallbackId":"x"}') is None
