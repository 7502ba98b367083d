"""The composition root: `build_service` wires settings, adapters and the core into a service.

Every part with I/O (sink, writer, tables, clock) can be passed in instead, which is how tests
build the service on fakes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware

from service.compat import quiet_topic_warning
from service.config import ProcessingGuarantee, Settings
from service.config import Sink as SinkChoice
from service.kafka.options import client_options, faststream_security, make_producer
from service.kafka.transactional import TransactionalWriter
from service.kafka.writer import AcknowledgedWriter
from service.metrics import Metrics
from service.pipeline.observe import Observer
from service.pipeline.processor import Processor
from service.pipeline.results import ResultSteps
from service.pipeline.seams import Sink, Writer
from service.runtime.health import Health
from service.runtime.service import Collector, FallbackService, Tables
from service.runtime.sweep import Sweep
from service.sinks.kafka import KafkaSink
from service.state.awaited import Results
from service.state.dedupe import PartitionedDedupe
from service.state.digests import DigestSet
from service.state.markers import early_marker, final_marker
from service.state.tables import Table, decode_channel, decode_sender_number


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_tables(settings: Settings, options: dict[str, Any], metrics: Metrics) -> Tables:
    """The tables followed from compacted topics and the dedupe state, reporting to `metrics`."""
    exactly_once = settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE

    def invalid(table: str, detail: str) -> None:
        metrics.table_invalid.labels(table).inc()

    def changed(table: str, entries: int, read: int) -> None:
        metrics.table_entries.labels(table).set(entries)
        metrics.table_records.labels(table).inc(read)

    def dedupe_size(states: dict[int, DigestSet]) -> None:
        metrics.dedupe_entries.clear()
        for partition, state in states.items():
            metrics.dedupe_entries.labels(str(partition)).set(len(state))
        metrics.dedupe_bytes.set(sum(state.nbytes for state in states.values()))

    results = None
    if settings.delivery_results:
        results = Results(settings.deadlines(), settings.early_window_ms)
        metrics.awaited.set_function(lambda: len(results))
        metrics.awaited_bytes.set_function(lambda: results.nbytes)
    return Tables(
        channels=Table(
            "channels",
            settings.channel_settings_topic,
            decode_channel,
            options,
            on_invalid=invalid,
            on_change=changed,
        ),
        sender_numbers=Table(
            "sender_numbers",
            settings.sender_numbers_topic,
            decode_sender_number,
            options,
            on_invalid=invalid,
            on_change=changed,
        ),
        requested=PartitionedDedupe(
            settings.dedupe_topic_name,
            # Exactly-once: markers of aborted transactions must never count.
            {**options, "isolation_level": "read_committed"} if exactly_once else options,
            retention_seconds=settings.dedupe_retention_days * 86400,
            on_change=dedupe_size,
            # A crash leaves about one batch of markers in flight per partition (a held batch
            # of the nhn sink, two): room for several.
            in_flight_limit=max(20_000, 4 * settings.batch_max_records),
            results=results,
        ),
    )


def build_broker(settings: Settings, options: dict[str, Any], metrics: Metrics) -> KafkaBroker:
    """The FastStream broker that runs the consumer, with the service's security and metrics."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.kafka_client_id,
        security=faststream_security(settings.kafka(), options),
        # The handler in flight gets half the stop budget; the rest is for leaving the group,
        # the producers and the tables (FallbackService.stop keeps the whole within budget).
        graceful_timeout=settings.shutdown_timeout_seconds / 2,
        middlewares=(KafkaPrometheusMiddleware(registry=metrics.registry),),
        logger=_faststream_logger(),
        # FastStream logs two lines per message at INFO: keep them out of the service's INFO.
        log_level=logging.DEBUG,
        apply_types=False,
        allow_auto_create_topics=False,
    )


def _faststream_logger() -> logging.Logger:
    logger = logging.getLogger("fallback.faststream")
    quiet_topic_warning(logger)
    return logger


def build_writer(
    settings: Settings,
    options: dict[str, Any],
    metrics: Metrics,
    stopping: asyncio.Event,
    health: Health,
) -> Writer:
    """The writer FALLBACK_PROCESSING_GUARANTEE asks for (§9)."""

    def publish_error() -> None:
        metrics.publish_errors.inc()
        health.write_failed()

    if settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
        return TransactionalWriter(
            lambda transactional_id: make_producer(settings, options, transactional_id),
            group_id=settings.group_id,
            stopping=stopping,
            on_publish_error=publish_error,
            on_commit_refused=metrics.commit_failures.inc,
        )
    return AcknowledgedWriter(
        lambda: make_producer(settings, options),
        stopping=stopping,
        on_publish_error=publish_error,
        on_commit_refused=metrics.commit_failures.inc,
    )


def build_sink(settings: Settings, writer: Writer, metrics: Metrics) -> Sink:
    """The sink FALLBACK_SINK asks for (§10): several delivering sinks fail over in order."""
    if not settings.delivers:
        return KafkaSink(writer, settings.output_topic)
    # httpx is only loaded when a delivering sink is used.
    from service.sinks.failover import FailoverSink
    from service.sinks.provider import ProviderSink

    chain: list[ProviderSink] = []
    for choice in settings.sinks:
        if choice is SinkChoice.NHN:
            from service.sinks.nhn import NhnSink

            chain.append(NhnSink(settings.nhn(), metrics))
        else:
            from service.sinks.solapi import SolapiSink

            chain.append(SolapiSink(settings.solapi(), metrics))
    return chain[0] if len(chain) == 1 else FailoverSink(chain, metrics)


def build_service(
    settings: Settings,
    *,
    sink: Sink | None = None,
    writer: Writer | None = None,
    tables: Tables | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> FallbackService:
    """One service instance from `settings`; anything passed in replaces the real adapter.

    Nothing global changes here: the process entry (`service.cli.main`) installs the
    record-reader workaround of `service.compat` and runs its self-check.
    """
    metrics = Metrics()
    options = client_options(settings.kafka())
    stopping = asyncio.Event()
    health = Health()
    if writer is None:
        writer = build_writer(settings, options, metrics, stopping, health)
    if sink is None:
        sink = build_sink(settings, writer, metrics)
    if tables is None:
        tables = build_tables(settings, options, metrics)
    steps = None
    if tables.requested.results is not None:
        steps = ResultSteps(
            results_topic=settings.results_topic,
            repartition_topic=settings.repartition_topic_name,
            events_topic=settings.events_topic,
            dlq_topic=settings.dlq_topic,
            requested=tables.requested,
            awaiting=tables.requested.results,
            final_marker=final_marker,
            early_marker=early_marker,
        )
    metrics.delivery_rate_threshold.set(settings.alert_delivery_rate)
    processor = Processor(
        policy=settings.policy(),
        events_topic=settings.events_topic,
        dlq_topic=settings.dlq_topic,
        repartition_topic=settings.repartition_topic_name,
        channels=tables.channels.entries,
        sender_numbers=tables.sender_numbers.entries,
        requested=tables.requested,
        sink=sink,
        writer=writer,
        observer=Observer(metrics, log_outcomes=settings.log_outcomes),
        clock=clock,
        results=steps,
        deadlines=settings.deadlines(),
    )
    sweep = None
    results = tables.requested.results
    if results is not None:
        exactly_once = settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
        sweep = Sweep(
            results,
            changelog=settings.dedupe_topic_name,
            repartition=settings.repartition_topic_name,
            consumer_options={**options, "isolation_level": "read_committed"}
            if exactly_once
            else options,
            make_producer=lambda: make_producer(settings, options),
            deadlines=settings.deadlines(),
            every=settings.result_sweep_seconds,
            on_never_requested=metrics.results_ignored.labels("never_requested").inc,
        )
    # A collector leads while the service owns input partition 0: asked once it runs.
    built: list[FallbackService] = []
    collectors: list[Collector] = []

    def assignment() -> Collection[Any]:
        return built[0].consumer.assignment()

    if settings.collects_nhn_results:
        collectors.append(build_nhn_collector(settings, options, metrics, assignment))
    if settings.collects_solapi_results:
        collectors.append(build_solapi_collector(settings, options, metrics, assignment))
    # 1 while every provider is unavailable and the input is paused (§10).
    metrics.sink_paused.set_function(lambda: 1.0 if sink.delivers and sink.unavailable() else 0.0)
    service = FallbackService(
        settings,
        sweep=sweep,
        collectors=collectors,
        broker=build_broker(settings, options, metrics),
        processor=processor,
        tables=tables,
        metrics=metrics,
        stopping=stopping,
        health=health,
    )
    built.append(service)
    return service


def build_nhn_collector(
    settings: Settings,
    options: dict[str, Any],
    metrics: Metrics,
    assignment: Callable[[], Collection[Any]],
    *,
    page_size: int = 1000,
) -> Collector:
    """The nhn result collector (§11), leading while the service owns input partition 0."""
    from service.sinks.collector import leads_by
    from service.sinks.nhn_results import NhnCollector, SentIndex

    return NhnCollector(
        settings.nhn(),
        results_topic=settings.results_topic,
        collector_topic=settings.nhn_results_topic_name,
        poll_seconds=settings.nhn_results_poll_seconds,
        signature=settings.nhn_webhook(),
        index=SentIndex(
            options,
            settings.events_topic,
            keep=settings.deadlines().lms.total_seconds() + 3600,
        ),
        consumer_options=options,
        make_producer=lambda: make_producer(settings, options),
        metrics=metrics,
        leads=leads_by(assignment, settings.input_topic),
        page_size=page_size,
    )


def build_solapi_collector(
    settings: Settings,
    options: dict[str, Any],
    metrics: Metrics,
    assignment: Callable[[], Collection[Any]],
) -> Collector:
    """The solapi result collector (§11), leading while the service owns input partition 0."""
    from service.sinks.collector import leads_by
    from service.sinks.solapi_results import SolapiCollector

    return SolapiCollector(
        settings.solapi(),
        results_topic=settings.results_topic,
        collector_topic=settings.solapi_results_topic_name,
        poll_seconds=settings.solapi_results_poll_seconds,
        secret=settings.solapi_webhook(),
        consumer_options=options,
        make_producer=lambda: make_producer(settings, options),
        metrics=metrics,
        leads=leads_by(assignment, settings.input_topic),
    )
