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

A marker also says which input record caused it (`source`, the value's first field, so that a
restore finds it without parsing JSON) and carries the outcomes written for it. A marker whose
input record was not committed when its partition was restored belongs to a batch a crash cut
short, perhaps before its outcomes were written: when that same record comes again, its outcomes
are written again, unchanged (§7: the event's outcome is REQUESTED, not a `duplicate` of
itself), and nothing is sent again.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from service.core.models import outcome_without_event
from service.kafka import keyed_partition

log = logging.getLogger("fallback.dedupe")

_MERGE_EVERY = 4096  # recent additions kept in a dict before they join the sorted arrays

# A marker's value begins with its input record's `topic/partition/offset` (topic names have
# no `/` and no `"`).
_SOURCE = b'{"source":"'

# An input record: topic, partition, offset.
Source = tuple[str, int, int]


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
        in_flight_limit: int = 20_000,
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
        # Markers of input records not committed at restore: their fallbackId and outcomes.
        # A crash leaves about one batch per partition, the last markers of its changelog
        # partition: a restore looks for them among the last `in_flight_limit` offsets only
        # (reading every marker's source cost a sixth of the restore). More means offsets were
        # moved back by hand; those records count as duplicates, as before this was kept.
        self.in_flight: dict[Source, tuple[str, list[bytes]]] = {}
        self.in_flight_limit = in_flight_limit
        self._beyond_limit = 0

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

    def outcomes_in_flight(self, source: Source, fallback_id: str) -> list[bytes] | None:
        """The outcomes of `fallback_id` when its marker was written for this very input
        record and the record was not committed (a crash cut its batch short), else None;
        without the event's fields (`service.core.models.outcome_with_event` adds them)."""
        found = self.in_flight.get(source)
        if found is None or found[0] != fallback_id:
            return None
        return found[1]

    def forget_in_flight(self, sources: Iterable[Source]) -> None:
        """The records at `sources` are committed now: their outcomes are written."""
        for source in sources:
            self.in_flight.pop(source, None)

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
    def marker(
        fallback_id: str, requested_at: str, source: Source, outcomes: Sequence[bytes]
    ) -> bytes:
        """The changelog value of one requested fallback (its key is the fallbackId): the
        input record that requested it, when, and the outcomes written for it."""
        topic, partition, offset = source
        return orjson.dumps(
            {
                "source": f"{topic}/{partition}/{offset}",
                "fallbackId": fallback_id,
                "requestedAt": requested_at,
                # Less what the event itself gives: markers are read on every restore.
                "outcomes": [orjson.Fragment(outcome_without_event(o)) for o in outcomes],
            }
        )

    async def restore(
        self, partitions: Iterable[int], committed: Mapping[TopicPartition, int | None] = {}
    ) -> None:
        """Read the markers of `partitions` (changelog up to its end) into memory.

        `committed` are the group's committed offsets of the input records that can have
        written those markers (partition p of the input and of the repartition topic): a
        marker of a record at or past its partition's committed offset is kept in flight. A
        partition without a committed offset (None) has committed nothing: all its markers are.
        """
        floors = {(tp.topic, tp.partition): o or 0 for tp, o in committed.items()}
        self._beyond_limit = 0
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
            # Where each partition's last `in_flight_limit` offsets begin (see `in_flight`).
            tail = {tp: end - self.in_flight_limit if floors else end for tp, end in ends.items()}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=100_000)
                for tp, records in batches.items():
                    into, times = digests[tp.partition], stamps[tp.partition]
                    since = tail[tp]
                    for r in records:
                        if r.key is not None and r.value is not None and r.timestamp >= horizon_ms:
                            into += digest_key(r.key)
                            times.append(r.timestamp // 1000)
                            if r.offset >= since:
                                self.note_in_flight(r, floors)
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
        if self._beyond_limit:
            log.warning(
                "%d markers of uncommitted input records beyond the %d kept (offsets moved back "
                "by hand?): when read again those records count as duplicates",
                self._beyond_limit,
                self.in_flight_limit,
            )
        log.info(
            "restored %d requested fallbacks of partitions %s in %.1fs",
            sum(len(states[p]) for p in wanted),
            wanted,
            self._monotonic() - began,
        )

    def note_in_flight(self, record: Any, floors: Mapping[tuple[str, int], int]) -> None:
        """Keep a restored marker's outcomes when its input record is at or past `floors`."""
        value = record.value
        if not value.startswith(_SOURCE):
            return  # written before markers named their input record
        end = value.find(b'"', len(_SOURCE))
        topic, partition, offset = value[len(_SOURCE) : end].decode().rsplit("/", 2)
        floor = floors.get((topic, int(partition)))
        if floor is None or int(offset) < floor:
            return
        if len(self.in_flight) >= self.in_flight_limit:
            self._beyond_limit += 1
            return
        try:
            outcomes = orjson.loads(value).get("outcomes") or []
        except (orjson.JSONDecodeError, AttributeError):
            return  # not a marker this service wrote: the record counts as a duplicate
        self.in_flight[(topic, int(partition), int(offset))] = (
            record.key.decode(),
            [orjson.dumps(o) for o in outcomes],
        )

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this replica no longer owns."""
        gone = set(partitions)
        for p in gone:
            self.states.pop(p, None)
        self.in_flight = {s: v for s, v in self.in_flight.items() if s[1] not in gone}
        self._on_change(self.states)
