"""The exactly-once writer: one Kafka transaction per input partition and batch (contract §9).

aiokafka sends only version 0 of the transactional requests, so an offset commit inside a
transaction carries no group generation (no KIP-447) and the broker would accept it from a member
that has lost the partition. The only fence is the transactional id's epoch, hence the
pre-KIP-447 pattern: one transactional producer per input partition, its `transactional.id`
derived from the group, the topic and the partition. Starting it on assignment bumps the epoch:
the previous owner (a zombie, too) is fenced and its open transaction aborted before the new
owner reads the committed offset.

Per batch, every record a partition's input causes (SMS request, dead letter, dedupe marker,
outcome) is sent in that partition's transaction, in record batches, one after the other without
waiting: nothing is visible before the commit. Before committing, every send's ack is awaited (a
failed send does not make an aiokafka transaction abortable on its own), then the input offset
joins the transaction and it commits. Anything else aborts it and the batch is read again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoBrokersAvailable,
)

from service.config import ConfigError
from service.kafka.batching import send_batched
from service.kafka.writer import NEVER_SUCCEEDS
from service.pipeline.seams import PartitionsNotCommitted, Stopping, Unwritable, Write

log = logging.getLogger("fallback.transactions")

ProducerFactory = Callable[[str], AIOKafkaProducer]

# Errors that mean "the broker is not there yet", not "it cannot do transactions".
_UNREACHABLE = (KafkaConnectionError, KafkaTimeoutError, NoBrokersAvailable)


def transactional_id(group_id: str, tp: TopicPartition) -> str:
    """The transactional id that owns input partition `tp` for this group."""
    return f"{group_id}-{tp.topic}-{tp.partition}"


class TransactionalWriter:
    """Exactly-once: each input partition's effects and offset commit in one transaction."""

    def __init__(
        self,
        make_producer: ProducerFactory,
        *,
        group_id: str,
        stopping: asyncio.Event,
        on_publish_error: Callable[[], None] = lambda: None,
        on_commit_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self._make_producer = make_producer
        self.group_id = group_id
        self.stopping = stopping
        self.consumer: Any = None
        self.producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._open: set[TopicPartition] = set()
        # Per input partition, the futures of what its open transaction sent.
        self._sent: dict[TopicPartition, list[asyncio.Future[Any]]] = {}
        # Writes run side by side (the parts of a batch); one at a time may begin transactions
        # and start producers. Sending does not wait for acks, so this costs nothing.
        self._sending = asyncio.Lock()
        self._on_publish_error = on_publish_error
        self._on_commit_refused = on_commit_refused

    async def start(self) -> None:
        """Check that the broker serves transactions; refuse to start when it cannot."""
        await _serves_transactions(self._make_producer(f"{self.group_id}-probe"))

    async def stop(self) -> None:
        await self.abandon()
        await self._close(list(self.producers))

    def attach(self, consumer: Any) -> None:
        self.consumer = consumer

    async def assigned(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Fence the previous owners, then read where they committed; seek there.

        Returns each partition's committed offset: records fetched before this point with a
        lower offset were read for a previous owner and must be dropped.
        """
        partitions = sorted(partitions)
        # Starting the producer (InitProducerId) fences the previous owner and aborts its open
        # transaction, so the committed offset read afterwards is final.
        await asyncio.gather(*(self._producer(tp) for tp in partitions))
        floors: dict[TopicPartition, int] = {}
        consumer = self.consumer
        if consumer is None:
            return floors
        for tp in partitions:
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
                floors[tp] = committed
        return floors

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """The batch in flight is done by now; close the partitions' producers."""
        gone = [tp for tp in partitions if tp in self.producers]
        for tp in gone:
            if tp in self._open:
                await self._abort(tp)
        await self._close(gone)

    async def write(self, writes: Sequence[Write]) -> None:
        """Send each record in its input partition's transaction, as record batches.

        Returns once they are sent, not acknowledged: nothing of a transaction is visible before
        it commits, so the order of the processor's steps holds without a round trip each, and
        `commit` waits for every ack before it commits.
        """
        async with self._sending:
            await self._write(writes)

    async def _write(self, writes: Sequence[Write]) -> None:
        by_source: dict[TopicPartition, list[Write]] = {}
        for w in writes:
            if w.source is None:
                raise ValueError(f"a transactional write needs its input partition: {w.topic}")
            by_source.setdefault(w.source, []).append(w)
        for source, own in by_source.items():
            try:
                producer = await self._begun(source)
            except KafkaError as exc:
                await self._failed({source}, exc)
            futures, _, error = await send_batched(producer, own)
            self._sent.setdefault(source, []).extend(futures)
            if error is not None:
                await self._failed({source}, error)

    async def _failed(self, partitions: set[TopicPartition], error: BaseException) -> NoReturn:
        """A send failed: the transactions must not commit, so the batch is read again.

        The producers that failed are retired: after a send error an aiokafka transactional
        producer may be fatally out of step with the broker (OutOfOrderSequenceNumber after an
        outage, ProducerFenced), and it cannot recover (no KIP-360). A new one re-initialises,
        which fences nothing but our own old epoch.
        """
        self._on_publish_error()
        for tp in partitions:
            self._open.discard(tp)
        await self._close(partitions)
        if isinstance(error, NEVER_SUCCEEDS):
            raise Unwritable(f"a write can never succeed: {error!r}")
        if self.stopping.is_set():
            raise Stopping("stopping with unwritten outputs; the transactions are aborted")
        raise error

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Wait for every send's ack, add each partition's next offset to its transaction and
        commit them all."""
        sent, self._sent = self._sent, {}
        failed_sends: dict[TopicPartition, BaseException] = {}
        for source, futures in sent.items():
            for result in await asyncio.gather(*set(futures), return_exceptions=True):
                if isinstance(result, BaseException):
                    failed_sends[source] = result
                    break
        if failed_sends:
            # Every partition is read again: the batch's outputs were decided together.
            await self.abandon()
            await self._failed(set(failed_sends), next(iter(failed_sends.values())))
        for tp in offsets:
            await self._begun(tp)  # a partition whose records wrote nothing still commits
        results = await asyncio.gather(
            *(self._commit_one(tp, offset) for tp, offset in offsets.items()),
            return_exceptions=True,
        )
        failed = {
            tp: r for tp, r in zip(offsets, results, strict=True) if isinstance(r, BaseException)
        }
        if failed:
            self._on_commit_refused()
            raise PartitionsNotCommitted(failed, set(offsets) - set(failed))

    async def _commit_one(self, tp: TopicPartition, offset: int) -> None:
        producer = self.producers[tp]
        try:
            await producer.send_offsets_to_transaction({TopicPartition(*tp): offset}, self.group_id)
            await producer.commit_transaction()
        except BaseException:
            await self._abort(tp)
            raise
        self._open.discard(tp)

    async def abandon(self) -> None:
        """Abort every open transaction: nothing of the batch becomes visible."""
        self._sent = {}
        for tp in list(self._open):
            await self._abort(tp)

    async def _abort(self, tp: TopicPartition) -> None:
        self._open.discard(tp)
        self._sent.pop(tp, None)
        producer = self.producers.get(tp)
        if producer is None:
            return
        try:
            await producer.abort_transaction()
        except Exception as exc:
            # Fenced or fatally broken (no KIP-360 recovery in aiokafka): start afresh, which
            # fences again, or finds the partition gone at the next rebalance.
            log.warning("aborting %s[%d] failed (%r); new producer", tp.topic, tp.partition, exc)
            await self._close([tp])

    async def _producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = self.producers.get(tp)
        if producer is None:
            producer = self._make_producer(transactional_id(self.group_id, tp))
            await producer.start()
            self.producers[tp] = producer
        return producer

    async def _begun(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = await self._producer(tp)
        if tp not in self._open:
            await producer.begin_transaction()
            self._open.add(tp)
        return producer

    async def _close(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in list(partitions):
            producer = self.producers.pop(tp, None)
            self._open.discard(tp)
            if producer is not None:
                try:
                    await asyncio.wait_for(producer.stop(), 5)
                except Exception as exc:
                    log.warning("closing producer of %s[%d]: %r", tp.topic, tp.partition, exc)


async def _serves_transactions(probe: AIOKafkaProducer) -> None:
    """Start and stop a transactional producer; a broker that refuses it stops start-up."""
    try:
        await probe.start()
    except _UNREACHABLE:
        raise  # retried by the caller until the broker answers
    except KafkaError as exc:
        raise ConfigError(
            "FALLBACK_PROCESSING_GUARANTEE: exactly-once needs a broker that serves "
            f"transactions, and this one refused a transactional producer ({exc!r}); "
            "use at-least-once with this broker"
        ) from None
    finally:
        await probe.stop()
