"""The running service: start (topics, tables, consumer), readiness, stop within the budget.

Built by `service.runtime.compose.build_service`; it only runs the parts it is given. The batch
handler (`handler`), the rebalance listener (`rebalance`), flow control (`flow`) and the health
watch (`watch`) are its parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from service.config import ProcessingGuarantee, Settings
from service.core.models import ChannelSettings, SenderNumberStatus
from service.kafka.admin import (
    ensure_internal_topic,
    internal_topics,
    max_message_bytes,
    partition_count,
    wait_for_leaders,
)
from service.kafka.consumer import GroupConsumer, subscribe
from service.metrics import Metrics
from service.pipeline.processor import Processor
from service.runtime.flow import Flow
from service.runtime.handler import BatchHandler
from service.runtime.health import Health
from service.runtime.http import make_http_app
from service.runtime.positions import Positions
from service.runtime.rebalance import Rebalance
from service.runtime.sweep import Sweep
from service.runtime.watch import watch
from service.state.dedupe import PartitionedDedupe
from service.state.tables import Table

log = logging.getLogger("fallback.service")


class Collector(Protocol):
    """A provider's result collector (§11; `service.sinks.collector.ResultCollector`)."""

    webhook_path: str

    async def start(self) -> None: ...

    async def run(self, stopping: asyncio.Event) -> None: ...

    async def stop(self) -> None: ...

    async def webhook(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]: ...


@dataclass(slots=True)
class Tables:
    """The tables the service reads before it consumes (§3, §4), and the dedupe state (§9),
    restored per partition on assignment."""

    channels: Table[ChannelSettings]
    sender_numbers: Table[SenderNumberStatus]
    requested: PartitionedDedupe

    def all(self) -> tuple[Table[Any], ...]:
        return (self.channels, self.sender_numbers)


class FallbackService:
    """One instance of the service. `start()` loads the tables, then consumes; `stop()` drains."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: KafkaBroker,
        processor: Processor,
        tables: Tables,
        metrics: Metrics,
        stopping: asyncio.Event,
        health: Health | None = None,
        sweep: Sweep | None = None,
        collectors: Sequence[Collector] = (),
    ) -> None:
        self.settings = settings
        self.sweep = sweep
        self.collectors = list(collectors)
        self._collecting: list[asyncio.Task[None]] = []
        self._sweeping: asyncio.Task[None] | None = None
        self.health = health or Health()
        self.broker = broker
        self.processor = processor
        self.writer = processor.writer
        self.sink = processor.sink
        self.tables = tables
        self.metrics = metrics
        self.stopping = stopping
        self.restored = asyncio.Event()  # open while the changelog is caught up for the assignment
        self.positions = Positions()
        self.consuming = False
        self._monitor: asyncio.Task[None] | None = None
        self.consumer = GroupConsumer(lambda: self.subscriber.consumer)
        self.flow = Flow(self.consumer, self.sink, stopping)
        self.handler = BatchHandler(
            processor=processor,
            writer=self.writer,
            consumer=self.consumer,
            positions=self.positions,
            stopping=stopping,
            restored=self.restored,
            pause=self.flow.pause,
            on_progress=self.health.progressed,
            on_held=metrics.sink_held.inc,
            on_unwritable=metrics.unwritable.inc,
        )
        self.failed = self.handler.failed
        exactly_once = settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
        listener = Rebalance(
            lock=self.handler.lock,
            writer=self.writer,
            requested=tables.requested,
            positions=self.positions,
            restored=self.restored,
            committed=self.consumer.committed,
            reads_in_flight_markers=not exactly_once,
        )
        self.subscriber = subscribe(broker, settings, listener, self.handler)
        webhooks = {c.webhook_path: c.webhook for c in self.collectors}
        self.http_app = make_http_app(self.readiness, metrics.registry, webhooks)

    @property
    def requested(self) -> PartitionedDedupe:
        return self.tables.requested

    @property
    def channels(self) -> Table[ChannelSettings]:
        return self.tables.channels

    @property
    def sender_numbers(self) -> Table[SenderNumberStatus]:
        return self.tables.sender_numbers

    def readiness(self) -> str | None:
        """None when ready (§10); otherwise what is still missing."""
        waiting = [t.name for t in self.tables.all() if not t.loaded.is_set()]
        if waiting:
            return "loading " + ", ".join(waiting)
        if not self.consuming:
            return "consumer not running"
        if not self.restored.is_set():
            return "restoring the dedupe state of assigned partitions"
        return self.sink.unavailable() or self.health.problem()

    async def start(self) -> None:
        """Connect, create the internal topics, load the tables, then start consuming."""
        s = self.settings
        await _retrying("producer", self.writer.start, self.stopping)
        await self.sink.start()
        partitions = await partition_count(s, s.input_topic)
        if partitions is None:
            log.warning(
                "input topic %s does not exist yet (FALLBACK_INPUT_TOPIC): the service waits "
                "for it; create it with `fallback-service topics create`",
                s.input_topic,
            )
            partitions = 1
        internal = internal_topics(s)
        for topic in internal:
            await ensure_internal_topic(
                s,
                topic.variable,
                topic.name,
                partitions=topic.partitions or partitions,
                config=topic.config,
            )
        # A topic created a moment ago has no leader yet for a while: the first write would
        # wait for its request timeout and fail (NotLeaderForPartition). Wait here instead.
        await wait_for_leaders(
            s, [s.output_topic, s.events_topic, s.dlq_topic, *(t.name for t in internal)]
        )
        self.requested.start(partitions)
        self.processor.dlq_max_bytes = await max_message_bytes(s, s.dlq_topic)
        if self.processor.results is not None:
            self.processor.results.dlq_max_bytes = self.processor.dlq_max_bytes
            if await partition_count(s, s.results_topic) is None:
                log.warning(
                    "results topic %s does not exist yet (FALLBACK_RESULTS_TOPIC): results are "
                    "read once it does; create it with `fallback-service topics create`",
                    s.results_topic,
                )
        tables = self.tables.all()
        await asyncio.gather(*(t.start() for t in tables))
        await asyncio.gather(*(t.wait_loaded() for t in tables))
        await self.broker.start()
        self.writer.attach(self.subscriber.consumer)
        self.consuming = True
        if self.sweep is not None:
            self._sweeping = asyncio.create_task(self.sweep.run(self.stopping), name="sweep")
        for collector in self.collectors:
            await collector.start()
            self._collecting.append(
                asyncio.create_task(collector.run(self.stopping), name="collector")
            )
        self._monitor = asyncio.create_task(
            watch(
                s.kafka(),
                self.health,
                self.metrics,
                self.consumer.lag,
                self.readiness,
                self.stopping,
            ),
            name="health",
        )
        log.info(
            "consuming %s as group %s (%d channels, %d sender numbers)",
            s.input_topic,
            s.group_id,
            len(self.channels),
            len(self.sender_numbers),
        )

    async def stop(self) -> None:
        """Stop taking events, finish and commit the batch in flight, close everything.

        All of it within FALLBACK_SHUTDOWN_TIMEOUT_SECONDS (8 s; the contract allows 10) even
        when the broker does not answer (frozen, gone): what cannot be committed by then stays
        uncommitted and is read again after a restart.
        """
        within = self.settings.shutdown_timeout_seconds
        self.consuming = False
        self.metrics.ready.set(0)
        self.stopping.set()
        self.restored.set()  # wake a handler waiting for a restore that will not come
        if self._monitor is not None:
            self._monitor.cancel()
        background = [(self._sweeping, "expiry sweep")]
        background += [(task, "collector") for task in self._collecting]
        for task, what in background:
            if task is not None:
                task.cancel()
                with logged(what):
                    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 1)
        for collector in self.collectors:
            with logged("collector"):
                await asyncio.wait_for(collector.stop(), 1)
        self.flow.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within

        def left(share: float = 1.0) -> float:
            return max(0.1, (deadline - loop.time()) * share)

        # The consumer gets most of the time (it finishes the batch in flight and leaves the
        # group); the producer and the table readers share the rest.
        with logged("consumer"):
            await asyncio.wait_for(self.broker.stop(), left(0.7))
        with logged("sink"):
            await asyncio.wait_for(self.sink.stop(), left(0.3))
        with logged("producer"):
            await asyncio.wait_for(self.writer.stop(), left(0.5))
        for table in self.tables.all():
            with logged(f"table {table.name}"):
                await asyncio.wait_for(table.stop(), left(0.5))


@contextlib.contextmanager
def logged(what: str) -> Iterator[None]:
    """Stopping `what`: a timeout or an error is logged, never raised (the rest still stops)."""
    try:
        yield
    except TimeoutError:
        log.warning("stopping %s: gave up waiting (its work stays uncommitted)", what)
    except Exception as exc:
        log.warning("stopping %s: %s", what, exc)


async def _retrying(what: str, start: Callable[[], Any], stopping: asyncio.Event) -> None:
    delay = 0.5
    while True:
        try:
            await start()
            return
        except KafkaError as exc:
            if stopping.is_set():
                raise
            log.warning("%s cannot connect yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
