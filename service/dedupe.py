"""The dedupe state (§5.1 rule 1, §9), sharded like the input and compact in memory.

Every fallback has an owner partition, `murmur2(fallbackId) % partitions`: the partition Kafka's
default partitioner (Java clients, aiokafka, librdkafka with `partitioner=murmur2_random`)
puts a record keyed by its fallbackId on. Its "requested" marker lives in that partition of the
changelog topic, and is written and remembered only by whoever owns that input partition. A
replica restores the markers of the partitions it is assigned, drops them when they are
revoked, and never reads the others. An event that arrives on a partition that does not own it
(re-published under another key, or a producer with another partitioner) is routed through the
repartition topic to its owner (see `service.processor`).

In memory each partition's markers are a `DigestSet`: 128-bit digests of the fallback ids in
sorted numpy arrays, 20 bytes a fallback (and a small buffer of recent additions).
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from service.kafka import keyed_partition

log = logging.getLogger("fallback.dedupe")

_MERGE_EVERY = 4096  # recent additions kept in a dict before they join the sorted arrays


def owner_partition(fallback_id: str, partitions: int) -> int:
    """The input partition that owns `fallback_id`: Kafka's default partitioner on the id."""
    return keyed_partition(fallback_id.encode(), partitions)


def _digest(key: bytes) -> tuple[int, int]:
    raw = hashlib.blake2b(key, digest_size=16).digest()
    return int.from_bytes(raw[:8]), int.from_bytes(raw[8:])


class DigestSet:
    """Fallback ids remembered as 128-bit digests (BLAKE2b) with the second they were requested.

    Three parallel numpy arrays sorted by digest (two 64-bit halves, a 32-bit timestamp): 20
    bytes a fallback, looked up by binary search. Additions wait in a small dict and join the
    arrays in sorted batches; a restore builds the arrays in one sort.
    """

    def __init__(self) -> None:
        self._store(np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint32))
        self._recent: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._hi) + len(self._recent)

    @property
    def nbytes(self) -> int:
        """Memory of the arrays, and an estimate for the recent additions' dict."""
        return self._hi.nbytes + self._lo.nbytes + self._at.nbytes + 160 * len(self._recent)

    def __contains__(self, fallback_id: object) -> bool:
        if not isinstance(fallback_id, str):
            return False
        hi, lo = _digest(fallback_id.encode())
        return (hi, lo) in self._recent or self._index(hi, lo) >= 0

    def _index(self, hi: int, lo: int) -> int:
        # A memoryview hands out plain ints: bisecting it beats a numpy call per lookup.
        his = self._his_view
        i = bisect.bisect_left(his, hi)
        n = len(his)
        while i < n and his[i] == hi:  # the same upper half: 1 in 2**64 of the time
            if self._los_view[i] == lo:
                return i
            i += 1
        return -1

    def add(self, fallback_id: str, at_seconds: int) -> None:
        """Remember `fallback_id` as requested at `at_seconds` (keeps the latest time)."""
        hi, lo = _digest(fallback_id.encode())
        at = max(int(at_seconds), 1)
        i = self._index(hi, lo)
        if i >= 0:
            self._at[i] = max(int(self._at[i]), at)
            return
        key = (hi, lo)
        self._recent[key] = max(self._recent.get(key, 0), at)
        if len(self._recent) >= _MERGE_EVERY:
            self._merge()

    def _merge(self) -> None:
        """Insert the recent additions at their sorted places (a copy, not a re-sort)."""
        if not self._recent:
            return
        keys = np.array(list(self._recent), dtype=np.uint64).reshape(-1, 2)
        ats = np.fromiter(self._recent.values(), np.uint32, len(self._recent))
        self._recent = {}
        order = np.argsort(keys[:, 0], kind="stable")
        new_hi, new_lo, new_at = keys[order, 0], keys[order, 1], ats[order]
        at = np.searchsorted(self._hi, new_hi)
        self._store(
            np.insert(self._hi, at, new_hi),
            np.insert(self._lo, at, new_lo),
            np.insert(self._at, at, new_at),
        )

    def _store(self, his: np.ndarray, los: np.ndarray, ats: np.ndarray) -> None:
        self._hi, self._lo, self._at = his, los, ats
        self._his_view = memoryview(his.data)
        self._los_view = memoryview(los.data)

    def load(self, digests: bytes, at_seconds: np.ndarray) -> None:
        """Add many at once: `digests` is 16 bytes (a BLAKE2b digest of the id) per entry."""
        self._merge()
        halves = np.frombuffer(digests, dtype=">u8").astype(np.uint64).reshape(-1, 2)
        his = np.concatenate([self._hi, halves[:, 0]])
        los = np.concatenate([self._lo, halves[:, 1]])
        ats = np.concatenate([self._at, at_seconds.astype(np.uint32)])
        # Sort by digest, then by time, so that the last of equal digests is the latest.
        order = np.lexsort((ats, los, his))
        his, los, ats = his[order], los[order], ats[order]
        last = np.ones(len(his), dtype=bool)
        last[:-1] = (his[1:] != his[:-1]) | (los[1:] != los[:-1])
        self._store(his[last], los[last], ats[last])

    def prune(self, horizon_seconds: int) -> int:
        """Forget entries requested before `horizon_seconds`; returns how many."""
        before = len(self)
        self._merge()
        keep = self._at >= horizon_seconds
        if not keep.all():
            self._store(self._hi[keep], self._lo[keep], self._at[keep])
        return before - len(self)


def digest_key(key: bytes) -> bytes:
    """The 16-byte digest `DigestSet.load` takes for a fallbackId's UTF-8 bytes."""
    return hashlib.blake2b(key, digest_size=16).digest()


class PartitionedDedupe:
    """The requested fallbacks of the input partitions this replica owns, restored on assignment.

    Implements the processor's `Dedupe` seam. `consumer_options` are the Kafka client options
    for restoring (with `isolation_level=read_committed` in exactly-once mode).
    """

    def __init__(
        self,
        topic: str,
        consumer_options: Mapping[str, Any],
        *,
        retention_seconds: float,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[dict[int, DigestSet]], None] = lambda states: None,
    ) -> None:
        self.topic = topic
        self.partitions = 0  # the input's partition count, set by `start`
        self.states: dict[int, DigestSet] = {}
        self.retention_seconds = retention_seconds
        self._options = dict(consumer_options)
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._on_change = on_change
        self._last_prune = monotonic()

    def start(self, partitions: int) -> None:
        self.partitions = partitions

    def owner(self, fallback_id: str) -> int:
        return owner_partition(fallback_id, self.partitions)

    def contains(self, partition: int, fallback_id: str) -> bool:
        """Whether `fallback_id`, owned by `partition`, was already requested."""
        state = self.states.get(partition)
        return state is not None and fallback_id in state

    def __contains__(self, fallback_id: str) -> bool:
        return self.contains(self.owner(fallback_id), fallback_id)

    def __len__(self) -> int:
        return sum(len(s) for s in self.states.values())

    async def catch_up(self) -> None:
        # Only the owner of a partition writes its markers, and it remembers them as it
        # writes: there is nothing to read between batches.
        return None

    def remember(self, marked: list[tuple[int, str]], now_ms: int) -> None:
        """Remember fallbacks this replica requested, with their owner partitions (their
        markers are committed)."""
        at = now_ms // 1000
        for partition, fid in marked:
            state = self.states.get(partition)
            if state is not None:
                state.add(fid, at)
        # A prune walks every entry: once an hour is plenty for a retention of days.
        if self._monotonic() - self._last_prune > 3600:
            self.prune(now_ms)
        if marked:
            self._on_change(self.states)

    def prune(self, now_ms: int) -> None:
        horizon = int(now_ms / 1000 - self.retention_seconds)
        for state in self.states.values():
            state.prune(horizon)
        self._last_prune = self._monotonic()

    @staticmethod
    def marker(fallback_id: str, requested_at: str) -> bytes:
        """The changelog value of one requested fallback (its key is the fallbackId)."""
        return orjson.dumps({"fallbackId": fallback_id, "requestedAt": requested_at})

    async def restore(self, partitions: Iterable[int]) -> None:
        """Read the markers of `partitions` (changelog up to its end) into memory."""
        wanted = sorted(set(partitions) - set(self.states))
        if not wanted:
            return
        began = self._monotonic()
        consumer = AIOKafkaConsumer(
            **self._options,
            group_id=None,
            enable_auto_commit=False,
            # Large fetches: restoring is reading a lot of small records once.
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in wanted]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            digests = {p: bytearray() for p in wanted}
            # Compact buffers: a restore may read millions of markers.
            stamps = {p: array("I") for p in wanted}
            horizon_ms = (self._wall_clock() - self.retention_seconds) * 1000
            pending = {tp for tp, end in ends.items() if end > 0}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=100_000)
                for tp, records in batches.items():
                    into, times = digests[tp.partition], stamps[tp.partition]
                    for r in records:
                        if r.key is not None and r.value is not None and r.timestamp >= horizon_ms:
                            into += digest_key(r.key)
                            times.append(r.timestamp // 1000)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await consumer.stop()
        states = {}
        for p in wanted:
            states[p] = DigestSet()
            states[p].load(bytes(digests[p]), np.frombuffer(stamps[p], dtype=np.uint32))
            digests[p] = bytearray()
        self.states.update(states)
        self._on_change(self.states)
        log.info(
            "restored %d requested fallbacks of partitions %s in %.1fs",
            sum(len(states[p]) for p in wanted),
            wanted,
            self._monotonic() - began,
        )

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this replica no longer owns."""
        for p in partitions:
            self.states.pop(p, None)
        self._on_change(self.states)
