"""The expiry sweep (§11): the owner's fallbacks past their deadline become expiry records on the
repartition topic, read back as input and turned into EXPIRED outcomes there.

Going through the input gives an expiry the guarantees of any input (a final marker before the
outcome, the offset committed after both, in one transaction in exactly-once mode) and costs
the sweep nothing to get right: it may write an expiry twice; the second finds nothing awaited.
The awaited set keeps no fallbackId, so the sweep reads the changelog, where the requested
markers are in the order they were written, from a cursor per type (SMS and LMS deadlines
differ) up to the markers whose deadline has not come: each marker is read once by each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from service.core.models import MessageKind
from service.core.results import Deadlines, Expiry
from service.pipeline.results import EXPIRY, RECORD_KIND
from service.state.awaited import KINDS, PartitionResults, Results
from service.state.digests import digest
from service.state.markers import MarkerKind, marker_awaits, marker_kind

log = logging.getLogger("fallback.results")

_NOT_YET = object()


class Sweep:
    """Writes an expiry for each awaited fallback of the owned partitions past its deadline."""

    def __init__(
        self,
        results: Results,
        *,
        changelog: str,
        repartition: str,
        consumer_options: Mapping[str, Any],
        make_producer: Callable[[], AIOKafkaProducer],
        deadlines: Deadlines,
        every: float,
        wall_clock: Callable[[], float] = time.time,
        on_never_requested: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.results = results
        self.changelog = changelog
        self.repartition = repartition
        self._options = dict(consumer_options)
        self._make_producer = make_producer
        self.deadlines = deadlines
        self.every = every
        self._clock = wall_clock
        self._on_never_requested = on_never_requested
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep every `every` seconds until `stopping`."""
        try:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.every)
                if stopping.is_set():
                    break
                try:
                    await self.sweep()
                except KafkaError as exc:
                    log.warning("expiry sweep failed (%s); trying again in %.0fs", exc, self.every)
        finally:
            await self.stop()

    async def stop(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._consumer = self._producer = None

    async def sweep(self) -> int:
        """One sweep; returns how many expiries it wrote."""
        now = self._clock()
        never = self.results.prune_early(int(now * 1000))
        if never:
            self._on_never_requested(never)
        written = 0
        for partition, state in list(self.results.partitions.items()):
            if not state.awaited.due(int(now)):
                continue
            for kind in KINDS:
                written += await self._sweep(partition, state, kind, now)
        if written:
            log.info("%d awaited fallbacks past their deadline: expiring them", written)
        return written

    async def _sweep(
        self, partition: int, state: PartitionResults, kind: MessageKind, now: float
    ) -> int:
        horizon_ms = (now - self.deadlines.of(kind).total_seconds()) * 1000
        expiries, cursor = await self._scan(partition, state, kind, now, horizon_ms)
        if expiries:
            producer = await self._producer_started()
            sent = [
                await producer.send(
                    self.repartition,
                    expiry.to_json(),
                    key=expiry.fallbackId.encode(),
                    partition=partition,
                    headers=[(RECORD_KIND, EXPIRY)],
                )
                for expiry in expiries
            ]
            await asyncio.gather(*sent)
        # Only once they are written: a sweep that failed reads the same markers again.
        if self.results.partitions.get(partition) is state:
            state.cursors[kind] = cursor
        return len(expiries)

    async def _scan(
        self,
        partition: int,
        state: PartitionResults,
        kind: MessageKind,
        now: float,
        horizon_ms: float,
    ) -> tuple[list[Expiry], int]:
        """The expiries due among the markers from the cursor on, and the cursor after them."""
        consumer = await self._consumer_started()
        tp = TopicPartition(self.changelog, partition)
        consumer.assign([tp])
        cursor = state.cursors.get(kind, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        if cursor >= end:
            return [], cursor
        consumer.seek(tp, cursor)
        expiries: list[Expiry] = []
        while cursor < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            records = batch.get(tp, [])
            if not records:
                break
            for record in records:
                if record.timestamp > horizon_ms:
                    return expiries, cursor  # this one's deadline has not come: nor the rest's
                expiry = self._due(record, state, kind, now)
                if expiry is _NOT_YET:
                    return expiries, cursor  # its clock ran behind the record's: next sweep
                cursor = record.offset + 1
                if isinstance(expiry, Expiry):
                    expiries.append(expiry)
        return expiries, cursor

    def _due(
        self, record: Any, state: PartitionResults, kind: MessageKind, now: float
    ) -> Expiry | object | None:
        if record.key is None or record.value is None:
            return None
        if marker_kind(record.value) is not MarkerKind.AWAITING:
            return None
        found, _, deadline, sender_key = marker_awaits(record.value)
        if found is not kind:
            return None
        if deadline > now:
            return _NOT_YET
        fid = record.key.decode()
        if state.awaited.get(digest(record.key)[0], fid) is None:
            return None  # its result came
        return Expiry(fid, sender_key, kind)

    async def _consumer_started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**self._options, group_id=None, enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._make_producer()
            await producer.start()
            self._producer = producer
        return self._producer
