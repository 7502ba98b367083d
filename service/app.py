"""The running service: tables, the FastStream consumer, the producer, HTTP and signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from service import logs
from service.config import SaslMechanism, Settings, load_settings
from service.http import make_http_app
from service.kafka import connection_options, ensure_topic, make_producer, partition_count
from service.metrics import Metrics
from service.processor import Processor, Stopping
from service.tables import RequestedFallbacks, Table, decode_channel, decode_sender_number

log = logging.getLogger("fallback.service")


def _security(settings: Settings, options: dict[str, Any]) -> BaseSecurity | None:
    ssl_context = options.get("ssl_context")
    if "sasl_mechanism" not in options:
        return BaseSecurity(ssl_context=ssl_context) if ssl_context else None
    kind = {
        SaslMechanism.PLAIN: SASLPlaintext,
        SaslMechanism.SCRAM_SHA_256: SASLScram256,
        SaslMechanism.SCRAM_SHA_512: SASLScram512,
    }[settings.kafka_sasl_mechanism]
    return kind(
        options["sasl_plain_username"],
        options["sasl_plain_password"],
        ssl_context=ssl_context,
        use_ssl=ssl_context is not None,
    )


async def _raw_records(message: StreamMessage[Any]) -> Any:
    # Hand the handler aiokafka's records as they are: no per-message decoding or injection.
    return message.raw_message


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: FallbackService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # aiokafka fetches for a new assignment before on_partitions_assigned has finished:
        # close the gate now, so no batch is handled until the changelog is caught up.
        self.service.restored.clear()
        # The batch in flight writes its markers and commits before another member takes over.
        async with self.service.batch_lock:
            pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Whatever the previous owner requested is in the changelog by now: read up to it.
        await self.service.requested.table.catch_up()
        self.service.restored.set()
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class FallbackService:
    """One instance of the service. `start()` loads the tables, then consumes; `stop()` drains."""

    def __init__(
        self, settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        options = connection_options(settings)
        m = self.metrics

        def invalid(table: str, detail: str) -> None:
            m.table_invalid.labels(table).inc()

        def size(table: str, entries: int) -> None:
            m.table_entries.labels(table).set(entries)

        self.channels = Table(
            "channels",
            settings.channel_settings_topic,
            decode_channel,
            options,
            on_invalid=invalid,
            on_change=size,
        )
        self.sender_numbers = Table(
            "sender_numbers",
            settings.sender_numbers_topic,
            decode_sender_number,
            options,
            on_invalid=invalid,
            on_change=size,
        )
        self.requested = RequestedFallbacks(
            settings.dedupe_topic_name,
            options,
            retention_seconds=settings.dedupe_retention_days * 86400,
        )
        self.producer = make_producer(settings)
        self.stopping = asyncio.Event()
        self.batch_lock = asyncio.Lock()
        self.restored = asyncio.Event()  # open while the changelog is caught up for the assignment
        self.processor = Processor(
            settings,
            self.producer,
            self.channels,
            self.sender_numbers,
            self.requested,
            self.metrics,
            stopping=self.stopping,
            clock=clock,
        )
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=settings.kafka_client_id,
            security=_security(settings, options),
            graceful_timeout=settings.shutdown_timeout_seconds,
            middlewares=(KafkaPrometheusMiddleware(registry=self.metrics.registry),),
            logger=logging.getLogger("fallback.faststream"),
            # FastStream logs two lines per message at this level: keep them out of INFO.
            log_level=logging.DEBUG,
            apply_types=False,
            allow_auto_create_topics=False,
        )
        self.subscriber = self.broker.subscriber(
            settings.input_topic,
            group_id=settings.group_id,
            batch=True,
            max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            listener=_Rebalance(self),
            decoder=_raw_records,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        )
        self.subscriber(self._handle)
        self.consuming = False
        self.http_app = make_http_app(self.readiness, self.metrics.registry)

    def readiness(self) -> str | None:
        """None when ready (§10); otherwise what is still missing."""
        waiting = [
            t.name
            for t in (self.channels, self.sender_numbers, self.requested.table)
            if not t.loaded.is_set()
        ]
        if waiting:
            return "loading " + ", ".join(waiting)
        if not self.consuming:
            return "consumer not running"
        return None

    async def _handle(self, records: tuple[Any, ...]) -> None:
        if not records or self.stopping.is_set():
            return  # left uncommitted: the next owner reads them again
        await self.restored.wait()
        if self.stopping.is_set():
            return
        async with self.batch_lock:
            try:
                offsets = await self.processor.process(records)
            except Stopping as exc:
                log.warning("%s", exc)
                return
            except Exception:
                # A later commit would cover these records: read them again instead of losing
                # them. A record that fails every time stalls its partition, loudly.
                log.exception("batch failed; it will be read again")
                self._rewind(records)
                await asyncio.sleep(1)
                return
            await self._commit(offsets)

    def _rewind(self, records: tuple[Any, ...]) -> None:
        consumer = self.subscriber.consumer
        if consumer is None:
            return
        first: dict[TopicPartition, int] = {}
        for record in records:
            first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        for tp, offset in first.items():
            with _logged(f"rewinding {tp.topic}[{tp.partition}]"):
                consumer.seek(tp, offset)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self.subscriber.consumer
        if consumer is None:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved: the new owner reads these records again and skips the
            # fallbacks already requested.
            self.metrics.commit_failures.inc()
            log.warning("commit refused, records will be processed again: %s", exc)

    async def start(self) -> None:
        """Connect, create the internal topic, load the tables, then start consuming."""
        s = self.settings
        await _retrying("producer", self.producer.start, self.stopping)
        partitions = await partition_count(s, s.input_topic) or 1
        retention_ms = int(s.dedupe_retention_days * 86400 * 1000)
        await ensure_topic(
            s,
            s.dedupe_topic_name,
            partitions=partitions,
            config={"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)},
        )
        tables = (self.channels, self.sender_numbers, self.requested.table)
        await asyncio.gather(*(t.start() for t in tables))
        await asyncio.gather(*(t.wait_loaded() for t in tables))
        self.metrics.table_entries.labels("requested").set(len(self.requested))
        await self.broker.start()
        self.consuming = True
        self.metrics.ready.set(1)
        log.info(
            "consuming %s as group %s (%d channels, %d sender numbers, %d requested remembered)",
            s.input_topic,
            s.group_id,
            len(self.channels),
            len(self.sender_numbers),
            len(self.requested),
        )

    async def stop(self) -> None:
        """Stop taking events, finish and commit the batch in flight, close everything."""
        self.consuming = False
        self.metrics.ready.set(0)
        self.stopping.set()
        self.restored.set()  # wake a handler waiting for a restore that will not come
        with _logged("consumer"):
            await self.broker.stop()
        with _logged("producer"):
            await asyncio.wait_for(self.producer.stop(), 3)
        for table in (self.channels, self.sender_numbers, self.requested.table):
            with _logged(f"table {table.name}"):
                await table.stop()


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
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


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean stop."""
    service = FallbackService(settings)
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
    await asyncio.wait({start_task, stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if http_task.done():
        log.error("HTTP server on port %d stopped", settings.http_port)
        code = 1
    elif start_task.done() and start_task.exception() is not None:
        log.error("start-up failed", exc_info=start_task.exception())
        code = 1
    else:
        await asyncio.wait({stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
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
    log.info("stopped")
    return code


def run() -> int:
    """`fallback-service run`: configuration from the environment, then serve."""
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    return asyncio.run(serve(settings))
