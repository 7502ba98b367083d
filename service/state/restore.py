"""Restoring the dedupe state of assigned partitions: the changelog read into digests, and the
markers of records a crash cut short kept in flight.

`Restore` is pure (records in, state out) and tested on lists of records; `read_changelog` is
the Kafka reader that feeds it.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from service.pipeline.seams import Source
from service.state.awaited import Loading, PartitionResults, Results, collector_paused
from service.state.digests import DIGEST_SIZE, DigestSet, digest_key, digest_of
from service.state.markers import (
    MarkerKind,
    awaits_field,
    marker_early,
    marker_final,
    marker_head,
    marker_is_early,
    marker_outcomes,
    marker_source,
)

InFlight = dict[Source, tuple[str, list[bytes]]]


class Restore:
    """What the changelog of `partitions` says, fed record by record.

    Markers older than `horizon_ms` are forgotten (retention). A marker at or past its
    partition's `tails` offset (the last offsets of the changelog partition, where a crash
    leaves them) whose input record is at or past `floors` (the group's committed offsets, by
    topic and partition) is kept in flight, at most `room` of them; `beyond_limit` counts the
    others. With `results` (delivery results on), what the partitions' fallbacks await is read
    too (`service.state.awaited`); early results are never requested fallbacks.
    """

    def __init__(
        self,
        partitions: Iterable[int],
        *,
        horizon_ms: float,
        floors: Mapping[tuple[str, int], int],
        tails: Mapping[int, int],
        room: int,
        results: Results | None = None,
        now_ms: int = 0,
        ends: Mapping[int, int] | None = None,
    ) -> None:
        self.digests = {p: bytearray() for p in partitions}
        # Compact buffers: a restore may read millions of markers.
        self.stamps = {p: array("I") for p in self.digests}
        self.horizon_ms = horizon_ms
        self.floors = floors
        self.tails = tails
        self.room = room
        self.in_flight: InFlight = {}
        self.beyond_limit = 0
        self.ends = dict(ends or {})
        self.results = results
        self.loading: dict[int, Loading] = (
            {} if results is None else {p: results.loading(now_ms) for p in self.digests}
        )

    def feed(self, partition: int, records: Iterable[Any]) -> None:
        """Take in records of changelog partition `partition` (key, value, offset, timestamp)."""
        loading = self.loading.get(partition)
        if loading is None:
            self._feed_requested(partition, records)
            return
        into, times = self.digests[partition], self.stamps[partition]
        since = self.tails.get(partition, 0)
        horizon = self.horizon_ms
        window = self.results.early_window_ms if self.results is not None else 0
        for r in records:
            if r.key is None or r.value is None or r.timestamp < horizon:
                continue
            kind, at = marker_head(r.value)
            if kind is MarkerKind.EARLY:
                # A result kept for its request: the fallback is not requested by it.
                if loading is not None:
                    until = r.timestamp + window
                    loading.early_result(digest_of(digest_key(r.key)), marker_early(r.value), until)
            else:
                raw = digest_key(r.key)
                into += raw
                times.append(r.timestamp // 1000)
                if loading is None:
                    pass
                elif kind is MarkerKind.AWAITING:
                    loading.awaiting(raw, r.offset, awaits_field(r.value, at))
                elif kind is MarkerKind.FINAL:
                    loading.final(digest_of(raw), raw, marker_final(r.value), r.timestamp // 1000)
                else:
                    loading.requested(raw)
            if r.offset >= since:
                self._note_in_flight(r)

    def _feed_requested(self, partition: int, records: Iterable[Any]) -> None:
        """`feed` with delivery results off: every marker but an early result is a requested
        fallback. The restore's own hot loop (a million records in seconds), so the digest is
        written out here rather than called, and the kind is one bounded search
        (`marker_is_early`)."""
        into, stamp = self.digests[partition], self.stamps[partition].append
        since = self.tails.get(partition, 0)
        horizon = self.horizon_ms
        blake2b = hashlib.blake2b
        for r in records:
            key, value, ts = r.key, r.value, r.timestamp
            if key is None or value is None or ts < horizon or marker_is_early(value):
                continue
            into += blake2b(key, digest_size=DIGEST_SIZE).digest()
            stamp(ts // 1000)
            if r.offset >= since:
                self._note_in_flight(r)

    def _note_in_flight(self, record: Any) -> None:
        source = marker_source(record.value)
        if source is None:
            return  # written before markers named their input record
        floor = self.floors.get((source[0], source[1]))
        if floor is None or source[2] < floor:
            return
        if len(self.in_flight) >= self.room:
            self.beyond_limit += 1
            return
        outcomes = marker_outcomes(record.value)
        if outcomes is None:
            return  # not a marker this service wrote: the record counts as a duplicate
        self.in_flight[source] = (record.key.decode(), outcomes)

    def states(self) -> dict[int, DigestSet]:
        """The digest set of each partition (the buffers are released)."""
        states = {}
        for p in list(self.digests):
            states[p] = DigestSet()
            states[p].load(bytes(self.digests[p]), np.frombuffer(self.stamps[p], dtype=np.uint32))
            self.digests[p] = bytearray()
        return states

    def results_states(self) -> dict[int, PartitionResults]:
        """What each partition's fallbacks await (empty with results off)."""
        return {p: loading.state(self.ends.get(p, 0)) for p, loading in self.loading.items()}


async def read_changelog(
    options: Mapping[str, Any],
    topic: str,
    partitions: list[int],
    make: Any,
) -> Restore:
    """Read changelog `partitions` of `topic` up to their end offsets now into the `Restore`
    that `make(ends)` builds from the end offsets (by partition)."""
    consumer = AIOKafkaConsumer(
        **options,
        group_id=None,
        enable_auto_commit=False,
        # Large fetches: restoring is reading a lot of small records once.
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        restore: Restore = make({tp.partition: end for tp, end in ends.items()})
        pending = {tp for tp, end in ends.items() if end > 0}
        # A restore is most of a rebalance's time, and the fetched records its garbage; the
        # service does nothing else meanwhile.
        with collector_paused():
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=100_000)
                for tp, records in batches.items():
                    restore.feed(tp.partition, records)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
    finally:
        await consumer.stop()
    return restore
