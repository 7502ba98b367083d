"""The dedupe state (§5.1 rule 1, §9), sharded like the input and compact in memory.

Every fallback has an owner partition, `murmur2(fallbackId) % partitions`: the partition Kafka's
default partitioner (Java clients, aiokafka, librdkafka with `partitioner=murmur2_random`)
puts a record keyed by its fallbackId on. Its "requested" marker lives in that partition of the
changelog topic, and is written and remembered only by whoever owns that input partition. A
replica restores the markers of the partitions it is assigned, drops them when they are
revoked, and never reads the others. An event that arrives on a partition that does not own it
(re-published under another key, or a producer with another partitioner) is routed through the
repartition topic to its owner (see `service.pipeline.processor`).

In memory each partition's markers are a `DigestSet` (`service.state.digests`): 20 bytes a
fallback. The marker format is `service.state.markers`; the restore, `service.state.restore`.

A marker also says which input record caused it (`source`, the value's first field, so that a
restore finds it without parsing JSON) and carries the outcomes written for it. A marker whose
input record was not committed when its partition was restored belongs to a batch a crash cut
short, perhaps before its outcomes were written: when that same record comes again, its outcomes
are written again, unchanged (§7: the event's outcome is REQUESTED, not a `duplicate` of
itself), and nothing is sent again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from service.core.results import Awaited
from service.kafka.options import keyed_partition
from service.pipeline.seams import Source
from service.state import markers
from service.state.awaited import Results
from service.state.digests import Digest, DigestSet, digest
from service.state.restore import InFlight, Restore, read_changelog

log = logging.getLogger("fallback.dedupe")


def owner_partition(fallback_id: str, partitions: int) -> int:
    """The input partition that owns `fallback_id`: Kafka's default partitioner on the id."""
    return keyed_partition(fallback_id.encode(), partitions)


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
        results: Results | None = None,
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
        self.in_flight: InFlight = {}
        self.in_flight_limit = in_flight_limit
        # With delivery results on (§11): what the owned fallbacks await, restored with them.
        self.results = results

    def start(self, partitions: int) -> None:
        self.partitions = partitions

    def owner(self, key: bytes) -> int:
        """The input partition that owns the fallback whose id's UTF-8 bytes are `key`."""
        return keyed_partition(key, self.partitions)

    @staticmethod
    def digest(key: bytes) -> Digest:
        """The digest the state keeps for the fallbackId whose UTF-8 bytes are `key`."""
        return digest(key)

    def contains(self, partition: int, fallback_id: str | Digest) -> bool:
        """Whether `fallback_id` (or its digest), owned by `partition`, was already requested."""
        state = self.states.get(partition)
        return state is not None and fallback_id in state

    def __contains__(self, fallback_id: str) -> bool:
        return self.contains(self.owner(fallback_id.encode()), fallback_id)

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

    def remember(self, marked: Sequence[tuple[int, str | Digest]], now_ms: int) -> None:
        """Remember fallbacks (ids or digests) this replica requested, with their owner
        partitions (their markers are committed)."""
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
        fallback_id: str,
        requested_at: str,
        source: Source,
        outcomes: Sequence[bytes],
        awaits: Awaited | None = None,
        final: str | None = None,
    ) -> bytes:
        """The changelog value of one requested fallback (`service.state.markers`)."""
        return markers.marker(fallback_id, requested_at, source, outcomes, awaits, final)

    async def restore(
        self, partitions: Iterable[int], committed: Mapping[Any, int | None] = {}
    ) -> None:
        """Read the markers of `partitions` (changelog up to its end) into memory.

        `committed` are the group's committed offsets of the input records that can have
        written those markers (partition p of the input and of the repartition topic): a
        marker of a record at or past its partition's committed offset is kept in flight. A
        partition without a committed offset (None) has committed nothing: all its markers are.
        """
        floors = {(tp[0], tp[1]): o or 0 for tp, o in committed.items()}
        wanted = sorted(set(partitions) - set(self.states))
        if not wanted:
            return
        began = self._monotonic()

        def make(ends: Mapping[int, int]) -> Restore:
            limit = self.in_flight_limit
            return Restore(
                wanted,
                horizon_ms=(self._wall_clock() - self.retention_seconds) * 1000,
                floors=floors,
                # Where each partition's last `in_flight_limit` offsets begin (see `in_flight`).
                tails={p: end - limit if floors else end for p, end in ends.items()},
                room=limit - len(self.in_flight),
                results=self.results,
                now_ms=int(self._wall_clock() * 1000),
                ends=ends,
            )

        restored = await read_changelog(self._options, self.topic, wanted, make)
        states = restored.states()
        self.in_flight.update(restored.in_flight)
        self.states.update(states)
        if self.results is not None:
            self.results.install(restored.results_states())
        self._on_change(self.states)
        if restored.beyond_limit:
            log.warning(
                "%d markers of uncommitted input records beyond the %d kept (offsets moved back "
                "by hand?): when read again those records count as duplicates",
                restored.beyond_limit,
                self.in_flight_limit,
            )
        log.info(
            "restored %d requested fallbacks of partitions %s in %.1fs",
            sum(len(states[p]) for p in wanted),
            wanted,
            self._monotonic() - began,
        )

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this replica no longer owns."""
        gone = set(partitions)
        for p in gone:
            self.states.pop(p, None)
        if self.results is not None:
            self.results.drop(gone)
        self.in_flight = {s: v for s, v in self.in_flight.items() if s[1] not in gone}
        self._on_change(self.states)
