"""The requested-fallbacks memory (§9): retention when loading, pruning while running."""

from __future__ import annotations

import orjson

from service.tables import RequestedFallbacks
from tests.factories import record

DAY_MS = 86_400_000


class Clocks:
    def __init__(self) -> None:
        self.wall_ms = 100 * DAY_MS
        self.mono = 0.0


def memory(clocks: Clocks, days: float = 7) -> RequestedFallbacks:
    return RequestedFallbacks(
        "dedupe",
        {},
        retention_seconds=days * 86400,
        wall_clock_ms=lambda: clocks.wall_ms,
        monotonic=lambda: clocks.mono,
    )


def marker(fid: str, at_ms: int) -> object:
    r = record(orjson.dumps({"fallbackId": fid}), key=fid.encode())
    r.timestamp = at_ms
    return r


def test_loading_keeps_markers_within_retention_and_drops_older_ones() -> None:
    clocks = Clocks()
    requested = memory(clocks)
    decode = requested.table._decode
    assert decode(marker("new", clocks.wall_ms - DAY_MS)) == ("new", clocks.wall_ms - DAY_MS)
    assert decode(marker("edge", clocks.wall_ms - 7 * DAY_MS))[1] == clocks.wall_ms - 7 * DAY_MS
    assert decode(marker("old", clocks.wall_ms - 7 * DAY_MS - 1)) == ("old", None)


def test_tombstone_forgets() -> None:
    requested = memory(Clocks())
    tombstone = record(None, key=b"R1:1")
    assert requested.table._decode(tombstone) == ("R1:1", None)


def test_remember_then_prune_past_the_horizon() -> None:
    clocks = Clocks()
    requested = memory(clocks, days=1)
    now = clocks.wall_ms
    requested.remember(["a", "b"], now - 2 * DAY_MS)
    requested.remember(["c"], now)
    assert {"a", "b", "c"} <= set(requested.table.entries)
    requested.prune(now)
    assert "a" not in requested and "b" not in requested and "c" in requested
    assert len(requested) == 1


def test_remember_prunes_at_most_once_a_minute() -> None:
    clocks = Clocks()
    requested = memory(clocks, days=1)
    now = clocks.wall_ms
    requested.remember(["old"], now - 2 * DAY_MS)
    clocks.mono = 30
    requested.remember(["x"], now)
    assert "old" in requested  # too soon to walk every entry again
    clocks.mono = 61
    requested.remember(["y"], now)
    assert "old" not in requested and {"x", "y"} <= set(requested.table.entries)


def test_marker_value() -> None:
    value = RequestedFallbacks.marker("R1:1", "2026-11-25T12:00:00.000+09:00")
    assert orjson.loads(value) == {
        "fallbackId": "R1:1",
        "requestedAt": "2026-11-25T12:00:00.000+09:00",
    }
