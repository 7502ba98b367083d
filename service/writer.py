"""The Kafka writer seam: acknowledged writes and the commit of input offsets (contract §9).

`Processor` only knows the `Writer` protocol. `AcknowledgedWriter` is the at-least-once writer:
each `write` is acknowledged (acks=all) before it returns, then `commit` commits the input
offsets. A transactional writer (exactly-once) implements the same three calls with one
transaction per input partition; `Write.source` says which input partition caused each record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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

from service.kafka import keyed_partition

log = logging.getLogger("fallback.writer")

# After these a producer never sends again (aiokafka's sender gives up): replace it.
FATAL_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    InvalidProducerEpoch,
)


class Stopping(Exception):
    """The service is stopping while a batch could not be written; it stays uncommitted."""


class Unwritable(Exception):
    """A write that no retry can make succeed (too large, not authorised): the service stops,
    loudly, rather than stall retrying it; the batch stays uncommitted."""


# The broker (or the client) refuses these the same way every time.
NEVER_SUCCEEDS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    InvalidTopicError,
)


@dataclass(slots=True)
class Write:
    """One record to produce, the input partition that caused it, and (when the key's
    partitioner must not choose) the output partition."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    source: TopicPartition | None = None
    partition: int | None = None


class Writer(Protocol):
    """How the processor's outputs and input offsets reach Kafka."""

    async def start(self) -> None:
        """Connect; retried by the caller until the broker answers."""
        ...

    async def stop(self) -> None: ...

    def attach(self, consumer: Any) -> None:
        """The group consumer whose offsets `commit` commits, once it runs."""
        ...

    async def assigned(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Take over `partitions`; returns, per partition, the offset below which records
        already fetched belong to a previous owner (none when there is nothing to drop)."""
        ...

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Give `partitions` up; the batch in flight has finished."""
        ...

    async def write(self, writes: Sequence[Write]) -> None:
        """Produce `writes` in order; return once every one is acknowledged.

        Raises `Stopping` when the service stops before they could be written.
        """
        ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Make the batch final: commit the next input offset of each partition."""
        ...

    async def abandon(self) -> None:
        """Forget a batch that will be read again (rewound, or stopping)."""
        ...


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

    async def assigned(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        # The previous owner committed before giving the partitions up (or died, and its
        # uncommitted records come again, covered by the dedupe state): nothing to drop.
        return {}

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
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
        return await _settle(await send_batched(self.producer, writes))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self.consumer
        if consumer is None or not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved: the outputs stand, and the new owner reads these records
            # again and skips the fallbacks already requested.
            self._on_commit_refused()
            log.warning("commit refused, records will be processed again: %s", exc)

    async def abandon(self) -> None:
        # Acknowledged writes cannot be taken back; the re-read is covered by the dedupe state.
        return None


# A record larger than this goes through `send`, whose size check names the problem at once.
_BATCHED_RECORD_MAX = 128 * 1024


async def send_batched(
    producer: AIOKafkaProducer, writes: list[Write]
) -> tuple[list[asyncio.Future[Any]], int, BaseException | None]:
    """The writes in record batches per output partition (aiokafka's batch API), each write's
    future that of its batch: thousands of `send` calls per input batch cost more than the
    conversion. Partitions are chosen as `send` would (murmur2 of the key, or random without
    one), and a partition's batches go out in write order, so outputs keep input order."""
    known: dict[str, list[int]] = {}
    builders: list[Any] = []  # every batch made, by number
    batch_of: list[int] = []  # each write's batch number
    submitted: dict[int, asyncio.Future[Any]] = {}
    open_batch: dict[tuple[str, int], int] = {}  # output partition → its open batch

    async def submit(slot: tuple[str, int]) -> None:
        number = open_batch.pop(slot)
        # Closed, the batch goes out at once instead of lingering (`linger_ms`) for more records:
        # the write's records are all in it already, and every write waits for its acks.
        builders[number].close()
        submitted[number] = await producer.send_batch(builders[number], slot[0], partition=slot[1])

    def start(slot: tuple[str, int]) -> int:
        builders.append(producer.create_batch())
        open_batch[slot] = len(builders) - 1
        return open_batch[slot]

    error: BaseException | None = None
    try:
        for w in writes:
            partition = w.partition
            if partition is None:
                partition = await _partition_of(producer, known, w.topic, w.key)
            slot = (w.topic, partition)
            if len(w.value or b"") + len(w.key or b"") > _BATCHED_RECORD_MAX:
                # Alone, through `send`, after what this partition already has.
                if slot in open_batch:
                    await submit(slot)
                builders.append(None)
                batch_of.append(len(builders) - 1)
                submitted[len(builders) - 1] = await producer.send(
                    w.topic, w.value, key=w.key, headers=w.headers, partition=partition
                )
                continue
            number = open_batch[slot] if slot in open_batch else start(slot)
            headers = w.headers or []
            if (
                builders[number].append(key=w.key, value=w.value, timestamp=None, headers=headers)
                is None
            ):
                await submit(slot)  # full: send it and start the next one
                number = start(slot)
                builders[number].append(key=w.key, value=w.value, timestamp=None, headers=headers)
            batch_of.append(number)
        for slot in list(open_batch):
            await submit(slot)
    except Exception as exc:  # refused at once: counts like a failed ack from there on
        error = exc
    # Without an error every write's batch went out: the futures cover all the writes.
    futures: list[asyncio.Future[Any]] = []
    for number in batch_of:
        if number not in submitted:
            break
        futures.append(submitted[number])
    return futures, len(futures), error


async def _partition_of(
    producer: AIOKafkaProducer, known: dict[str, list[int]], topic: str, key: bytes | None
) -> int:
    """The partition aiokafka's default partitioner gives `key` in `topic`."""
    partitions = known.get(topic)
    if partitions is None:
        partitions = known[topic] = sorted(await producer.partitions_for(topic))
    if key is None:
        return random.choice(partitions)
    return partitions[keyed_partition(key, len(partitions))]


async def _settle(
    sent: tuple[list[asyncio.Future[Any]], int, BaseException | None],
) -> tuple[int, BaseException | None]:
    """Wait for every ack: the index of the first write that failed, and its error."""
    futures, failed_at, first_error = sent
    unique = list(dict.fromkeys(futures))
    results = await asyncio.gather(*unique, return_exceptions=True)
    failures = {
        id(f): r for f, r in zip(unique, results, strict=True) if isinstance(r, BaseException)
    }
    for index, future in enumerate(futures):
        if id(future) in failures:
            if index < failed_at:
                failed_at, first_error = index, failures[id(future)]
            break
    return failed_at, first_error
