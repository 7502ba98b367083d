"""The at-least-once writer: acknowledged writes, then the commit of input offsets (§9).

It implements the pipeline's `Writer` seam: each `write` is acknowledged (acks=all) before it
returns, then `commit` commits the input offsets. The transactional writer
(`service.kafka.transactional`) implements the same calls with one transaction per input
partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    InvalidProducerEpoch,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownProducerId,
)

from service.kafka.batching import send_batched, settle_acks
from service.pipeline.seams import Partition, Stopping, Unwritable, Write

log = logging.getLogger("fallback.writer")

# After these a producer never sends again (aiokafka's sender gives up): replace it.
FATAL_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    InvalidProducerEpoch,
)


# The broker (or the client) refuses these the same way every time.
NEVER_SUCCEEDS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    InvalidTopicError,
)


class AcknowledgedWriter:
    """At-least-once: acknowledged writes, then an explicit offset commit by the consumer."""

    def __init__(
        self,
        make_producer: Callable[[], AIOKafkaProducer],
        *,
        stopping: asyncio.Event,
        on_publish_error: Callable[[], None] = lambda: None,
        on_commit_refused: Callable[[], None] = lambda: None,
        max_delay: float = 5.0,
    ) -> None:
        self._make_producer = make_producer
        self.producer = make_producer()
        self.stopping = stopping
        self.consumer: Any = None  # the group consumer, attached once it runs
        self._on_publish_error = on_publish_error
        self._on_commit_refused = on_commit_refused
        self._max_delay = max_delay

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    def attach(self, consumer: Any) -> None:
        self.consumer = consumer

    async def assigned(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        # The previous owner committed before giving the partitions up (or died, and its
        # uncommitted records come again, covered by the dedupe state): nothing to drop.
        return {}

    async def revoked(self, partitions: Iterable[Partition]) -> None:
        return None

    async def write(self, writes: Sequence[Write]) -> None:
        """Send everything at once, wait for every ack, and retry from the first failure.

        Resending from the first failed write (not only the failed ones) keeps each output
        partition in input order; what is sent twice carries the same key and idempotency key.
        """
        pending = list(writes)
        delay = 0.2
        while pending:
            producer = self.producer
            failed_at, error = await self._send_all(pending)
            if failed_at == len(pending):
                return
            self._on_publish_error()
            if isinstance(error, NEVER_SUCCEEDS):
                raise Unwritable(
                    f"writing to {pending[failed_at].topic} can never succeed: {error!r}"
                )
            log.error(
                "writing %d records failed at %s (%s); retrying in %.1fs",
                len(pending) - failed_at,
                pending[failed_at].topic,
                error,
                delay,
            )
            pending = pending[failed_at:]
            if self.stopping.is_set():
                raise Stopping("stopping with unwritten outputs; the batch stays uncommitted")
            if isinstance(error, FATAL_PRODUCER_ERRORS):
                await self._replace_producer(error, producer)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, self._max_delay)

    async def _replace_producer(self, error: BaseException, failed: AIOKafkaProducer) -> None:
        """An idempotent producer whose sequence numbers went out of step with the broker (after
        an outage) is dead for good in aiokafka (no KIP-360): start a new one.

        Writes run side by side (the parts of a batch): the first to see `failed` fail replaces
        it, the others find it replaced already."""
        if self.producer is not failed:
            return
        log.warning("producer failed for good (%r); starting a new one", error)
        old, self.producer = self.producer, self._make_producer()
        try:
            await asyncio.wait_for(old.stop(), 5)
        except Exception as exc:
            log.warning("closing the old producer: %r", exc)
        try:
            await self.producer.start()
        except KafkaError as exc:  # the broker is still away: the next round tries again
            log.warning("new producer cannot start yet: %r", exc)

    async def _send_all(self, writes: list[Write]) -> tuple[int, BaseException | None]:
        """Index of the first write that failed (len(writes) when none did), and its error."""
        return await settle_acks(await send_batched(self.producer, writes))

    async def commit(self, offsets: dict[Partition, int]) -> None:
        consumer = self.consumer
        if consumer is None or not offsets:
            return
        try:
            # aiokafka wants its own TopicPartition type (an equal tuple is refused).
            await consumer.commit({TopicPartition(*tp): o for tp, o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved: the outputs stand, and the new owner reads these records
            # again and skips the fallbacks already requested.
            self._on_commit_refused()
            log.warning("commit refused, records will be processed again: %s", exc)

    async def abandon(self) -> None:
        # Acknowledged writes cannot be taken back; the re-read is covered by the dedupe state.
        return None
