"""The dedupe state (§9): owner partitions, the compact digest set, retention and pruning."""

from __future__ import annotations

import random

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner

from service.state.dedupe import PartitionedDedupe, owner_partition
from service.state.digests import DigestSet, digest_key

DAY = 86_400


@pytest.mark.parametrize("partitions", [1, 3, 6, 7, 64])
def test_the_owner_is_where_kafkas_default_partitioner_puts_the_fallback_id(
    partitions: int,
) -> None:
    # A producer that keys by fallbackId (Java clients, aiokafka, librdkafka's murmur2_random)
    # lands every event on its owner: nothing is routed.
    rng = random.Random(7)
    everything = list(range(partitions))
    for _ in range(500):
        fid = f"{rng.getrandbits(64):x}:{rng.randint(1, 1000)}"
        chosen = DefaultPartitioner()(fid.encode(), everything, everything)
        assert owner_partition(fid, partitions) == chosen


def test_digest_set_remembers_and_forgets() -> None:
    state = DigestSet()
    state.add("R1:1", 1000)
    assert "R1:1" in state and "R1:2" not in state and len(state) == 1
    state.add("R1:1", 2000)  # again: one entry, the later time
    assert len(state) == 1
    state.add("R1:2", 5000)
    assert state.prune(horizon_seconds=3000) == 1
    assert "R1:1" not in state and "R1:2" in state and len(state) == 1
    assert state.prune(horizon_seconds=3000) == 0


def test_digest_set_stays_within_40_bytes_a_fallback() -> None:
    state = DigestSet()
    ids = [f"REQ{i}:{i % 7 + 1}" for i in range(50_000)]
    for i, fid in enumerate(ids):
        state.add(fid, 1_700_000_000 + i)
    assert len(state) == 50_000
    assert all(fid in state for fid in ids)
    assert not any(f"OTHER{i}:1" in state for i in range(5_000))
    assert state.nbytes / len(state) <= 40


def test_bulk_load_keeps_the_latest_time_of_a_repeated_id() -> None:
    state = DigestSet()
    state.add("kept:1", 500)
    ids = [b"a:1", b"b:1", b"a:1", b"kept:1"]
    digests = b"".join(digest_key(k) for k in ids)
    state.load(digests, np.array([100, 200, 300, 50]))
    assert len(state) == 3
    assert all(k in state for k in ("a:1", "b:1", "kept:1"))
    assert state.prune(horizon_seconds=250) == 1  # b (200) goes; a (300) and kept (500) stay
    assert "b:1" not in state and "a:1" in state and "kept:1" in state


def test_pruning_shrinks_the_table() -> None:
    state = DigestSet()
    for i in range(20_000):
        state.add(f"R{i}:1", 1000 if i < 19_000 else 9000)
    big = state.nbytes
    assert state.prune(horizon_seconds=5000) == 19_000
    assert len(state) == 1000 and state.nbytes < big / 4
    assert all(f"R{i}:1" in state for i in range(19_000, 20_000))


class Clocks:
    def __init__(self) -> None:
        self.wall = 100.0 * DAY
        self.mono = 0.0


def dedupe(clocks: Clocks, partitions: int = 3, days: float = 7) -> PartitionedDedupe:
    d = PartitionedDedupe(
        "dedupe",
        {},
        retention_seconds=days * DAY,
        wall_clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )
    d.start(partitions)
    d.states = {p: DigestSet() for p in range(partitions)}
    return d


def test_remember_per_owner_partition_and_drop_on_revocation() -> None:
    d = dedupe(Clocks())
    fids = [f"R{i}:1" for i in range(30)]
    d.remember([(d.owner(f.encode()), f) for f in fids], int(Clocks().wall * 1000))
    assert all(f in d for f in fids)
    assert sum(len(s) for s in d.states.values()) == 30
    gone = d.owner(fids[0].encode())
    d.drop([gone])
    assert gone not in d.states
    assert all((f in d) == (d.owner(f.encode()) != gone) for f in fids)


def test_remember_prunes_at_most_once_an_hour() -> None:
    clocks = Clocks()
    d = dedupe(clocks, partitions=1, days=1)
    now_ms = int(clocks.wall * 1000)
    d.remember([(0, "old")], now_ms - 2 * DAY * 1000)
    clocks.mono = 1800
    d.remember([(0, "x")], now_ms)
    assert "old" in d  # too soon to walk every entry again
    clocks.mono = 3601
    d.remember([(0, "y")], now_ms)
    assert "old" not in d and "x" in d and "y" in d


def test_a_fallback_of_a_partition_not_owned_here_is_not_known_here() -> None:
    d = dedupe(Clocks())
    fid = "R1:1"
    d.drop([d.owner(fid.encode())])
    d.remember([(d.owner(fid.encode()), fid)], 0)  # its owner's state is elsewhere: nothing to do
    assert fid not in d


def test_marker_value() -> None:
    import orjson

    outcome = b'{"fallbackId":"R1:1","status":"REQUESTED","reason":null}'
    value = PartitionedDedupe.marker(
        "R1:1", "2026-11-25T12:00:00.000+09:00", ("in", 2, 41), [outcome]
    )
    assert orjson.loads(value) == {
        "source": "in/2/41",
        "fallbackId": "R1:1",
        "requestedAt": "2026-11-25T12:00:00.000+09:00",
        "outcomes": [{"status": "REQUESTED", "reason": None}],  # less the event's fields
    }
    assert value.startswith(b'{"source":"in/2/41"')  # a restore reads it without parsing
