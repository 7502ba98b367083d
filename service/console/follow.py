"""What the console reads from Kafka: the follower that feeds the index from the outcome, DLQ
and audit topics, and the bounded read of one SMS request, all within one budget of records
per second (§12), so that a wide search never slows the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from service.compat import refresh_metadata
from service.config import Settings
from service.console.index import Batch, Index, audit_row, dead_letter_row
from service.kafka.options import keyed_partition
from service.ops.records import committed_consumer

log = logging.getLogger("service.console")

# The partitions of the topics are looked up again this often (a topic grown or created).
_REFRESH_SECONDS = 30.0
_PRUNE_SECONDS = 600.0


class Budget:
    """A token bucket of records per second, shared by everything the console reads."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def take(self, count: int) -> None:
        """Wait until `count` records may be read (a debt larger than a second's worth is paid
        off before the next read)."""
        async with self._lock:
            self._refill()
            self._tokens -= count
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)
                self._refill()

    @property
    def chunk(self) -> int:
        """Records one read asks for: a tenth of a second's worth, 1 to 5,000."""
        return max(1, min(5000, int(self.rate / 10)))


@dataclass
class Progress:
    """How far the index has caught up, per topic: records behind, and the newest record."""

    behind: dict[str, int] = field(default_factory=dict)
    newest_ms: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    error: str | None = None

    @property
    def caught_up(self) -> bool:
        return self.ready and not any(self.behind.values())


class Follower:
    """Follows the outcome, DLQ and audit topics into the index, from the positions the index
    kept; rebuilds it when a topic was recreated under it (a position beyond its end)."""

    def __init__(self, settings: Settings, index: Index, budget: Budget) -> None:
        self._settings = settings
        self._index = index
        self._budget = budget
        self.progress = Progress()
        self._roles = {
            settings.events_topic: "outcomes",
            settings.dlq_topic: "dead_letters",
            settings.audit_topic: "audit",
        }
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._write = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="console-follower")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker away: say so on the pages, and try again
                self.progress.error = f"{type(exc).__name__}: {exc}"
                log.warning("console index: reading the topics failed (%s); again in 5 s", exc)
                await asyncio.sleep(5)

    async def _follow(self) -> None:
        # A position that retention overtook goes to the oldest record left, not to the end.
        consumer = committed_consumer(self._settings, auto_offset_reset="earliest")
        await consumer.start()
        # One batch is written to the index while the next is read (SQLite lets go of the
        # GIL while it works); the positions still advance in order.
        writing: asyncio.Task[None] | None = None
        try:
            assigned = await self._assign(consumer)
            refreshed = measured = time.monotonic()
            pruned = 0.0
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=self._budget.chunk)
                batch = self._batch(batches)
                await self._budget.take(len(batch))
                if writing is not None:
                    await writing
                    writing = None
                if batch.positions:
                    writing = asyncio.create_task(self._apply(batch))
                now = time.monotonic()
                if now - refreshed > _REFRESH_SECONDS:
                    refreshed = now
                    if set(await self._partitions(consumer)) != set(assigned):
                        if writing is not None:
                            await writing
                            writing = None
                        assigned = await self._assign(consumer)
                # The lag is asked for once a second, and whenever a read came back empty.
                if not batch.positions or now - measured > 1.0:
                    measured = now
                    if writing is not None:
                        await writing
                        writing = None
                    await self._measure(consumer, assigned)
                if now - pruned > _PRUNE_SECONDS:
                    pruned = now
                    retention = self._settings.console_index_retention_days * 86400
                    cutoff = int((time.time() - retention) * 1000)
                    async with self._write:
                        await asyncio.to_thread(self._index.prune, cutoff)
                self.progress.error = None
        finally:
            if writing is not None:
                with contextlib.suppress(BaseException):
                    await writing
            await consumer.stop()

    async def _apply(self, batch: Batch) -> None:
        async with self._write:
            await asyncio.to_thread(self._index.apply, batch)

    def _batch(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> Batch:
        """One read's records as the index's rows, with the positions they reach."""
        batch = Batch()
        for tp, records in batches.items():
            role = self._roles[tp.topic]
            for r in records:
                if role == "outcomes":
                    batch.outcomes.append((r.partition, r.offset, r.timestamp, r.value))
                elif role == "dead_letters":
                    batch.dead_letters.append(
                        dead_letter_row(
                            r.partition,
                            r.offset,
                            r.timestamp,
                            r.key,
                            r.value,
                            list(r.headers or ()),
                        )
                    )
                else:
                    row = audit_row(r.partition, r.offset, r.timestamp, r.value)
                    if row is not None:
                        batch.audit.append(row)
            if records:
                batch.positions[(tp.topic, tp.partition)] = records[-1].offset + 1
                newest = self.progress.newest_ms.get(tp.topic, 0)
                self.progress.newest_ms[tp.topic] = max(newest, records[-1].timestamp)
        return batch

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        await refresh_metadata(consumer)
        found = []
        for topic in self._roles:
            for p in sorted(consumer.partitions_for_topic(topic) or ()):
                found.append(TopicPartition(topic, p))
        return found

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        tps = await self._partitions(consumer)
        consumer.assign(tps)
        if not tps:
            return tps
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        kept = self._index.positions()
        if any(kept.get((tp.topic, tp.partition), 0) > ends[tp] for tp in tps):
            # A position beyond the end: the topic was deleted and made again. What the index
            # holds is of records that are gone; read everything again.
            log.warning("console index: a topic was recreated; rebuilding the index")
            async with self._write:
                await asyncio.to_thread(self._index.wipe)
            kept = {}
        for tp in tps:
            consumer.seek(tp, max(kept.get((tp.topic, tp.partition), 0), starts[tp]))
        return tps

    async def _measure(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        if not tps:
            self.progress.ready = True
            return
        ends = await consumer.end_offsets(tps)
        behind: dict[str, int] = dict.fromkeys(self._roles, 0)
        for tp in tps:
            behind[tp.topic] += max(0, ends[tp] - await consumer.position(tp))
        self.progress.behind = behind
        self.progress.ready = True


async def read_request(
    settings: Settings, budget: Budget, fid: str, near_ms: int, *, window_ms: int = 60_000
) -> dict[str, Any] | None:
    """The SMS request of `fid` from the output topic, looked for only in its key's partition
    and only from a little before `near_ms` (its REQUESTED outcome's time) to `window_ms` after:
    a few hundred records, never the topic."""
    consumer = committed_consumer(settings)
    await consumer.start()
    try:
        await refresh_metadata(consumer)
        partitions = consumer.partitions_for_topic(settings.output_topic)
        if not partitions:
            return None
        tp = TopicPartition(settings.output_topic, keyed_partition(fid.encode(), len(partitions)))
        consumer.assign([tp])
        start = (await consumer.offsets_for_times({tp: max(0, near_ms - 5000)}))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if start is None:
            return None
        consumer.seek(tp, start.offset)
        key = fid.encode()
        while await consumer.position(tp) < end:
            await budget.take(budget.chunk)
            records = (await consumer.getmany(tp, timeout_ms=500, max_records=budget.chunk)).get(
                tp, []
            )
            for record in records:
                if record.key == key:
                    found = orjson.loads(record.value or b"{}")
                    return found if isinstance(found, dict) else None
                if record.timestamp > near_ms + window_ms:
                    return None
        return None
    finally:
        await consumer.stop()
