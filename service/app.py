"""The running service: tables, the FastStream consumer, rebalances, HTTP, signals.

Built by `service.compose.build_service`; this module only runs the parts it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage

from service.config import ConfigError, ProcessingGuarantee, Settings
from service.core.models import ChannelSettings, SenderNumberStatus
from service.dedupe import PartitionedDedupe
from service.health import Health
from service.http import make_http_app
from service.kafka import (
    client_options,
    ensure_internal_topic,
    internal_topics,
    max_message_bytes,
    partition_count,
)
from service.metrics import Metrics
from service.processor import Held, Processor
from service.tables import Table
from service.transactional import PartitionsNotCommitted
from service.writer import Stopping, Unwritable

log = logging.getLogger("fallback.service")

# After a batch failed unexpectedly, wait this long before it is read again (outside the lock).
FAILED_BATCH_BACKOFF_SECONDS = 1.0


@dataclass(slots=True)
class Tables:
    """The tables the service reads before it consumes (§3, §4), and the dedupe state (§9),
    restored per partition on assignment."""

    channels: Table[ChannelSettings]
    sender_numbers: Table[SenderNumberStatus]
    requested: PartitionedDedupe

    def all(self) -> tuple[Table[Any], ...]:
        return (self.channels, self.sender_numbers)


async def _raw_records(message: StreamMessage[Any]) -> Any:
    # Hand the handler aiokafka's records as they are: no per-message decoding or injection.
    return message.raw_message


def _readable(value: object) -> bool:
    if not isinstance(value, bytes):
        return False
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


async def _tolerant_headers(
    records: tuple[ConsumerRecord, ...],
    original: Callable[[tuple[ConsumerRecord, ...]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream's parser decodes every header value as UTF-8 for its own message, and a value
    that is not UTF-8 (or null) failed the whole batch before the handler ran: records lost.
    Headers are the producer's business. Let it parse copies with the headers it can read, then
    hand the handler the records exactly as they came (a dead letter keeps every header)."""
    if all(_readable(v) for r in records for _, v in r.headers):
        return await original(records)
    readable = tuple(
        dataclasses.replace(r, headers=[(k, v) for k, v in r.headers if _readable(v)])
        for r in records
    )
    message = await original(readable)
    message.raw_message = records
    return message


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: FallbackService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        service = self.service
        # aiokafka fetches for a new assignment before on_partitions_assigned has finished:
        # close the gate now, so no batch is handled until the changelog is caught up.
        service.restored.clear()
        # The batch in flight writes its markers and commits before another member takes over.
        async with service.batch_lock:
            await service.writer.revoked(revoked)
            # The state of partitions given up goes with them; the next owner restores it.
            service.tables.requested.drop({tp.partition for tp in revoked})
            service.done = {(tp, off) for tp, off in service.done if tp not in revoked}

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        service = self.service
        # Exactly-once: fence the previous owners first, then read where they committed.
        service.floors = await service.writer.assigned(assigned)
        # The previous owner committed (or was fenced) before this: its markers are final, and
        # (at-least-once) those of records past the committed offsets were cut short by a
        # crash. Exactly-once reads no such marker: it was in an aborted transaction.
        exactly_once = service.settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
        committed = {} if exactly_once else await service.committed(assigned)
        await service.tables.requested.restore({tp.partition for tp in assigned}, committed)
        service.restored.set()
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


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
    ) -> None:
        self.settings = settings
        self.health = health or Health()
        self._monitor: asyncio.Task[None] | None = None
        self.broker = broker
        self.processor = processor
        self.writer = processor.writer
        self.sink = processor.sink
        self.tables = tables
        self.metrics = metrics
        self.stopping = stopping
        self.batch_lock = asyncio.Lock()
        self.failed = asyncio.Event()  # set when the service cannot go on (serve stops it)
        self.restored = asyncio.Event()  # open while the changelog is caught up for the assignment
        # Per partition, the offset below which fetched records are already done: committed by
        # a previous owner (exactly-once, set on assignment) or by this instance's last batch.
        # A batch fetched before a seek on assignment would otherwise come twice.
        self.floors: dict[TopicPartition, int] = {}
        # Records past a held one that were fully handled: skipped when read again (§10).
        self.done: set[tuple[TopicPartition, int]] = set()
        self._resume: asyncio.Task[None] | None = None
        self.consuming = False
        self.subscriber = broker.subscriber(
            settings.input_topic,
            # Events that arrived on a partition that does not own them come back here, to the
            # same partition number as their owner; the range assignor gives partition p of both
            # topics to the same member (co-partitioning, as Kafka Streams does).
            settings.repartition_topic_name,
            partition_assignment_strategy=(RangePartitionAssignor,),
            group_id=settings.group_id,
            batch=True,
            max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            listener=_Rebalance(self),
            parser=_tolerant_headers,
            decoder=_raw_records,
            title="AlimTalk failure events",
            description="Contract §2: one event per recipient whose AlimTalk delivery failed, "
            "key fallbackId ({requestId}:{recipientSeq}); events forwarded to the partition that "
            "owns their fallbackId arrive on the repartition topic.",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            isolation_level=(
                "read_committed"
                if settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
                else "read_uncommitted"
            ),
        )
        self.subscriber(self._handle)
        self.http_app = make_http_app(self.readiness, metrics.registry)

    @property
    def requested(self) -> PartitionedDedupe:
        return self.tables.requested

    @property
    def channels(self) -> Table[ChannelSettings]:
        return self.tables.channels

    @property
    def sender_numbers(self) -> Table[SenderNumberStatus]:
        return self.tables.sender_numbers

    async def committed(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offset of each of `partitions` (None: never committed).

        Empty when the group coordinator cannot say: the restore then keeps no marker in
        flight, and a record cut short after its marker is SKIPPED `duplicate` (as it was
        before markers named their records), never sent again.
        """
        consumer = self.subscriber.consumer
        if consumer is None:
            return {}
        ordered = sorted(partitions)
        try:
            found = await asyncio.gather(*(consumer.committed(tp) for tp in ordered))
        except KafkaError as exc:
            log.warning("committed offsets unavailable for the restore: %s", exc)
            return {}
        return dict(zip(ordered, found, strict=True))

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

    def _owned(self, records: Sequence[Any]) -> Sequence[Any]:
        """The records of `records` this instance still owns and has not handled yet.

        A batch fetched before a rebalance can hold records of partitions now owned by another
        member, or (exactly-once) below the offset the previous owner committed.
        """
        consumer = self.subscriber.consumer
        if consumer is None:
            return records
        assignment = consumer.assignment()
        floors = self.floors
        firsts: dict[tuple[str, int], int] = {}
        for r in records:
            firsts.setdefault((r.topic, r.partition), r.offset)
        done = self.done
        if not done and all(
            tp in assignment and off >= floors.get(tp, 0) for tp, off in firsts.items()
        ):
            return records  # the usual case: nothing to drop
        kept = [
            r
            for r in records
            if (tp := _tp(r)) in assignment
            and r.offset >= floors.get(tp, 0)
            and (tp, r.offset) not in done
        ]
        if done:
            self.done = {(tp, off) for tp, off in done if off >= floors.get(tp, 0)} - {
                (_tp(r), r.offset) for r in records
            }
        log.info(
            "dropped %d fetched records already done or owned elsewhere", len(records) - len(kept)
        )
        return kept

    async def _handle(self, records: tuple[Any, ...]) -> None:
        if not records or self.stopping.is_set():
            return  # left uncommitted: the next owner reads them again
        await self.restored.wait()
        if self.stopping.is_set():
            return
        failed = False
        async with self.batch_lock:
            owned = self._owned(records)
            if not owned:
                return
            try:
                await self.processor.process(owned)
                self._advance(owned)
                self.health.progressed()
            except Held as exc:
                # The SMS provider is unavailable: what was settled is committed; the rest is
                # read again once the sink may try, and nothing new is taken meanwhile.
                self._advance([r for r in owned if r.offset < exc.rewind.get(_tp(r), r.offset + 1)])
                self.done |= exc.done
                self._rewind([r for r in owned if r.offset == exc.rewind.get(_tp(r))])
                self.metrics.sink_held.inc(exc.held)
                self._pause(exc.retry_after)
                self.health.progressed()
            except Stopping as exc:
                log.warning("%s", exc)
                await self.writer.abandon()
                return
            except Unwritable as exc:
                # Retrying would stall every partition forever: stop, loudly, uncommitted.
                log.critical("%s; stopping the service (nothing of the batch is committed)", exc)
                self.metrics.unwritable.inc()
                await self.writer.abandon()
                self.failed.set()
                return
            except PartitionsNotCommitted as exc:
                log.warning("%s; they will be read again", exc)
                await self.writer.abandon()
                self._advance([r for r in owned if (r.topic, r.partition) in exc.committed])
                self._rewind([r for r in owned if (r.topic, r.partition) in exc.failed])
                failed = True
            except Exception:
                # A later commit would cover these records: read them again instead of losing
                # them. A record that fails every time stalls its partition, loudly.
                log.exception("batch failed; it will be read again")
                await self.writer.abandon()
                self._rewind(owned)
                failed = True
        if failed:
            # Back off outside the lock, so that a rebalance or a stop never waits for it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), FAILED_BATCH_BACKOFF_SECONDS)

    def _pause(self, retry_after: float) -> None:
        """Take no events until the sink may try again: the partitions stay assigned (the
        consumer keeps polling, so the group keeps them here), only their fetching stops."""
        consumer = self.subscriber.consumer
        if consumer is None:
            return
        consumer.pause(*consumer.assignment())
        if self._resume is None or self._resume.done():
            self._resume = asyncio.create_task(self._resume_after(retry_after), name="resume")

    async def _resume_after(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        if self.stopping.is_set():
            return
        consumer = self.subscriber.consumer
        if consumer is None:
            return
        # The next request is the probe: it closes the breaker, or the batch is held again.
        self.sink.probe()
        consumer.resume(*consumer.paused())

    async def _watch(self, every: float = 2.0) -> None:
        """Every few seconds: does the broker answer, do records wait? Then say it in
        `fallback_ready` (the same verdict as /readyz)."""
        admin = AIOKafkaAdminClient(
            **client_options(self.settings.kafka()), request_timeout_ms=3000
        )
        started = False
        try:
            while not self.stopping.is_set():
                try:
                    if not started:
                        await asyncio.wait_for(admin.start(), 3)
                        started = True
                    await asyncio.wait_for(admin.describe_cluster(), 3)
                    self.health.broker_answered(True)
                except Exception:
                    self.health.broker_answered(False)
                self.health.waiting(await self._records_waiting())
                self.metrics.ready.set(1 if self.readiness() is None else 0)
                await asyncio.sleep(every)
        finally:
            if started:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(admin.close(), 2)

    async def _records_waiting(self) -> bool:
        """Whether records wait on an assigned partition; sets `fallback_consumer_lag` (records
        between the consumer's position and the end of each assigned partition)."""
        consumer = self.subscriber.consumer
        if consumer is None:
            return False
        waiting = False
        lag = self.metrics.consumer_lag
        lag.clear()
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 1)
            except Exception:
                continue
            lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
            waiting = waiting or position < end
        return waiting

    def _advance(self, done: Sequence[Any]) -> None:
        floors = self.floors
        for r in done:
            floors[TopicPartition(r.topic, r.partition)] = r.offset + 1

    def _rewind(self, records: Sequence[Any]) -> None:
        consumer = self.subscriber.consumer
        if consumer is None:
            return
        first: dict[TopicPartition, int] = {}
        for record in records:
            first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        for tp, offset in first.items():
            with _logged(f"rewinding {tp.topic}[{tp.partition}]"):
                consumer.seek(tp, offset)

    async def start(self) -> None:
        """Connect, create the internal topics, load the tables, then start consuming."""
        s = self.settings
        await _retrying("producer", self.writer.start, self.stopping)
        await self.sink.start()
        partitions = await partition_count(s, s.input_topic) or 1
        for topic in internal_topics(s):
            await ensure_internal_topic(
                s, topic.variable, topic.name, partitions=partitions, config=topic.config
            )
        self.requested.start(partitions)
        self.processor.dlq_max_bytes = await max_message_bytes(s, s.dlq_topic)
        tables = self.tables.all()
        await asyncio.gather(*(t.start() for t in tables))
        await asyncio.gather(*(t.wait_loaded() for t in tables))
        await self.broker.start()
        self.writer.attach(self.subscriber.consumer)
        self.consuming = True
        self._monitor = asyncio.create_task(self._watch(), name="health")
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
        if self._resume is not None:
            self._resume.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within

        def left(share: float = 1.0) -> float:
            return max(0.1, (deadline - loop.time()) * share)

        # The consumer gets most of the time (it finishes the batch in flight and leaves the
        # group); the producer and the table readers share the rest.
        with _logged("consumer"):
            await asyncio.wait_for(self.broker.stop(), left(0.7))
        with _logged("sink"):
            await asyncio.wait_for(self.sink.stop(), left(0.3))
        with _logged("producer"):
            await asyncio.wait_for(self.writer.stop(), left(0.5))
        for table in self.tables.all():
            with _logged(f"table {table.name}"):
                await asyncio.wait_for(table.stop(), left(0.5))


def _tp(record: Any) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
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


class _HttpServer(uvicorn.Server):
    # The service owns SIGTERM/SIGINT; uvicorn would re-raise them after serving.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(service: FallbackService) -> int:
    """Run `service` with its HTTP server until SIGTERM or SIGINT; 0 after a clean stop."""
    settings = service.settings
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http = _HttpServer(
        uvicorn.Config(
            service.http_app,
            host=settings.http_host,
            port=settings.http_port,
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
    )
    http_task = asyncio.create_task(http.serve(), name="http")
    start_task = asyncio.create_task(service.start(), name="start")
    stop_task = asyncio.create_task(stop.wait(), name="signal")
    failed_task = asyncio.create_task(service.failed.wait(), name="failed")
    await asyncio.wait({start_task, stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if http_task.done():
        log.error("HTTP server on port %d stopped", settings.http_port)
        code = 1
    elif start_task.done() and isinstance(start_task.exception(), ConfigError):
        log.error("start-up refused: %s", start_task.exception())
        code = 2
    elif start_task.done() and start_task.exception() is not None:
        log.error("start-up failed", exc_info=start_task.exception())
        code = 1
    else:
        await asyncio.wait({stop_task, http_task, failed_task}, return_when=asyncio.FIRST_COMPLETED)
        if failed_task.done():
            code = 1
    log.info("stopping")
    if not start_task.done():
        start_task.cancel()
        with contextlib.suppress(BaseException):
            await start_task
    await service.stop()
    http.should_exit = True
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(http_task, 2)
    stop_task.cancel()
    failed_task.cancel()
    log.info("stopped")
    return code
