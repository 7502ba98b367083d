"""One batch of input records → outputs acknowledged by the broker → offsets to commit (§8, §9).

The conversion itself is `rules.decide`; this module only turns records into writes, writes them
with acks=all, and says which offsets are then safe to commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter

from service.config import Settings
from service.logs import mask_number
from service.metrics import Metrics
from service.models import (
    ChannelSettings,
    Malformed,
    SenderNumberStatus,
    parse_failure_event,
    to_json,
)
from service.rules import Decision, decide, timestamp
from service.tables import RequestedFallbacks, Table

log = logging.getLogger("fallback.outcomes")
errors = logging.getLogger("fallback.processor")

IDEMPOTENCY_KEY = "idempotency-key"


class Stopping(Exception):
    """The service is stopping while a batch could not be written; it stays uncommitted."""


@dataclass(slots=True)
class Write:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    """What one batch of input records causes, in the order it must be written."""

    deliveries: list[Write] = field(default_factory=list)  # SMS requests and dead letters
    outcomes: list[Write] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


def dead_letter(record: ConsumerRecord, malformed: Malformed, topic: str) -> Write:
    """The input record unchanged, with why and where it came from (§8)."""
    headers = list(record.headers or ())
    headers += [
        ("x-fallback-error", malformed.error.value.encode()),
        ("x-fallback-error-detail", malformed.detail.encode()),
        ("x-original-topic", record.topic.encode()),
        ("x-original-partition", str(record.partition).encode()),
        ("x-original-offset", str(record.offset).encode()),
    ]
    return Write(topic, record.key, record.value, headers)


class Processor:
    """Turns batches of failure events into SMS requests, outcomes and dead letters."""

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        channels: Table[ChannelSettings],
        sender_numbers: Table[SenderNumberStatus],
        requested: RequestedFallbacks,
        metrics: Metrics,
        *,
        stopping: asyncio.Event,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self.producer = producer
        self.channels = channels
        self.sender_numbers = sender_numbers
        self.requested = requested
        self.metrics = metrics
        self.stopping = stopping
        self.clock = clock
        self._outcome_counters: dict[tuple[str, str], Counter] = {}

    def convert(self, records: Sequence[ConsumerRecord], now: datetime) -> Batch:
        """Decide every record of the batch, in order. No I/O."""
        s = self.settings
        batch = Batch()
        deliveries, outcomes = batch.deliveries, batch.outcomes
        pending: set[str] = set()
        channels = self.channels.entries
        sender_numbers = self.sender_numbers.entries
        for record in records:
            batch.offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            event = parse_failure_event(record.value)
            if isinstance(event, Malformed):
                deliveries.append(dead_letter(record, event, s.dlq_topic))
                self._dead_lettered(record, event)
                continue
            fid = f"{event.requestId}:{event.recipientSeq}"
            decision = decide(
                event,
                channels.get(event.senderKey),
                sender_numbers,
                already_requested=fid in pending or fid in self.requested,
                now=now,
                policy=self.policy,
            )
            key = fid.encode()
            if decision.request is not None:
                pending.add(fid)
                batch.requested.append(fid)
                deliveries.append(
                    Write(s.output_topic, key, to_json(decision.request), [(IDEMPOTENCY_KEY, key)])
                )
            outcomes.append(Write(s.events_topic, key, to_json(decision.outcome)))
            self._observe(decision)
        return batch

    async def process(self, records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
        """Write everything `records` cause and return the offsets that are then safe to commit.

        Three steps, each acknowledged before the next: SMS requests and dead letters; the
        "requested" markers; the outcomes. So a marker never exists for a request the broker
        lost, and a REQUESTED outcome that anyone can see always has its marker.
        """
        started = time.monotonic()
        # Markers written by other replicas before this batch count: read up to them.
        await self.requested.table.catch_up()
        now = self.clock()
        batch = self.convert(records, now)
        if batch.requested:
            await self.write(batch.deliveries)
            stamp = timestamp(now)
            topic = self.requested.table.topic
            await self.write(
                [
                    Write(topic, fid.encode(), RequestedFallbacks.marker(fid, stamp))
                    for fid in batch.requested
                ]
            )
            self.requested.remember(batch.requested, int(now.timestamp() * 1000))
            await self.write(batch.outcomes)
        else:
            await self.write(batch.deliveries + batch.outcomes)
        elapsed = time.monotonic() - started
        metrics = self.metrics
        metrics.batch_size.observe(len(records))
        for _ in records:
            metrics.processing.observe(elapsed)
        return batch.offsets

    async def write(self, writes: list[Write]) -> None:
        """Produce `writes` in order and wait for every ack; retry from the first failure.

        Resending from the first failed write (not only the failed ones) keeps each output
        partition in input order; what is sent twice carries the same key and idempotency key.
        """
        delay = 0.2
        while writes:
            futures: list[asyncio.Future[object]] = []
            failed_at = len(writes)
            first_error: BaseException | None = None
            for index, w in enumerate(writes):
                try:
                    futures.append(
                        await self.producer.send(w.topic, w.value, key=w.key, headers=w.headers)
                    )
                except Exception as exc:  # a send refused at once counts like a failed ack
                    failed_at, first_error = index, exc
                    break
            results = await asyncio.gather(*futures, return_exceptions=True)
            for index, result in enumerate(results):
                if isinstance(result, BaseException):
                    if index < failed_at:
                        failed_at, first_error = index, result
                    break
            if failed_at == len(writes):
                return
            self.metrics.publish_errors.inc()
            errors.error(
                "writing %d records failed at %s (%s); retrying in %.1fs",
                len(writes) - failed_at,
                writes[failed_at].topic,
                first_error,
                delay,
            )
            writes = writes[failed_at:]
            if self.stopping.is_set():
                raise Stopping("stopping with unwritten outputs; the batch stays uncommitted")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, 5.0)

    def _observe(self, decision: Decision) -> None:
        outcome = decision.outcome
        reason = outcome.reason.value if outcome.reason else ""
        counter = self._outcome_counters.get((outcome.status, reason))
        if counter is None:
            counter = self.metrics.outcomes.labels(outcome.status.value, reason)
            self._outcome_counters[(outcome.status, reason)] = counter
        counter.inc()
        request = decision.request
        if request is not None:
            self.metrics.messages.labels(request.type.value).inc()
            if request.truncated:
                self.metrics.truncations.inc()
            if request.replacedChars:
                self.metrics.replaced_chars.inc(request.replacedChars)
        if self.settings.log_outcomes and log.isEnabledFor(logging.INFO):
            if request is not None:
                log.info(
                    "%s %s %s %dB to %s",
                    outcome.fallbackId,
                    outcome.status.value,
                    request.type.value,
                    request.bodyBytes,
                    mask_number(request.recipientNo),
                    extra={"fields": _fields(decision)},
                )
            else:
                log.info(
                    "%s %s %s",
                    outcome.fallbackId,
                    outcome.status.value,
                    reason,
                    extra={"fields": _fields(decision)},
                )

    def _dead_lettered(self, record: ConsumerRecord, malformed: Malformed) -> None:
        self.metrics.dead_letters.labels(malformed.error.value).inc()
        errors.warning(
            "dead-lettered %s[%d]@%d: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            malformed.error.value,
            malformed.detail,
        )


def _fields(decision: Decision) -> dict[str, object]:
    outcome = decision.outcome
    fields: dict[str, object] = {
        "fallbackId": outcome.fallbackId,
        "status": outcome.status.value,
        "reason": outcome.reason.value if outcome.reason else None,
    }
    if decision.request is not None:
        fields["type"] = decision.request.type.value
        fields["bodyBytes"] = decision.request.bodyBytes
        fields["recipientNo"] = mask_number(decision.request.recipientNo)
    return fields
