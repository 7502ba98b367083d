"""The writers on scripted producers: retry order, stop path, commit refusals, batches, and the
transactional writer's acks before its commit."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaTimeoutError, OutOfOrderSequenceNumber

from service.kafka.transactional import TransactionalWriter
from service.kafka.writer import AcknowledgedWriter
from service.pipeline.seams import Stopping, Write
from tests.fakes import ScriptedProducer, ScriptedTransactionalProducer


def writes(n: int) -> list[Write]:
    return [Write("t", f"k{i}".encode(), b"v") for i in range(n)]


class CountingWriter(AcknowledgedWriter):
    """The real writer, counting the publish errors it reports."""

    def __init__(self, producer: ScriptedProducer, stopping: asyncio.Event | None = None) -> None:
        self.errors: list[int] = []
        super().__init__(
            lambda: producer,
            stopping=stopping or asyncio.Event(),
            on_publish_error=lambda: self.errors.append(1),
            max_delay=0.01,
        )


def writer(producer: ScriptedProducer, stopping: asyncio.Event | None = None) -> CountingWriter:
    return CountingWriter(producer, stopping)


async def test_all_acknowledged_in_one_round() -> None:
    producer = ScriptedProducer()
    w = writer(producer)
    await w.write(writes(3))
    assert [k for _, k in producer.sent] == [b"k0", b"k1", b"k2"]
    assert w.errors == []


async def test_retries_from_the_first_failed_ack_in_order() -> None:
    # k1's ack fails; k2's succeeds, but it is sent again after k1 to keep partition order.
    producer = ScriptedProducer([None, KafkaTimeoutError(), None])
    w = writer(producer)
    await w.write(writes(3))
    assert [k for _, k in producer.sent] == [b"k0", b"k1", b"k2", b"k1", b"k2"]
    assert w.errors == [1]


async def test_a_send_refused_at_once_is_retried_from_there() -> None:
    producer = ScriptedProducer([None, ("refuse", KafkaTimeoutError()), None, None])
    w = writer(producer)
    await w.write(writes(3))
    # k1 was refused before a future existed, so k2 was not sent in the first round.
    assert [k for _, k in producer.sent] == [b"k0", b"k1", b"k2"]
    assert w.errors == [1]


async def test_keeps_retrying_with_backoff_until_it_succeeds() -> None:
    producer = ScriptedProducer([KafkaTimeoutError()] * 4)
    w = writer(producer)
    await w.write(writes(1))
    assert len(producer.sent) == 5
    assert w.errors == [1, 1, 1, 1]


async def test_stop_path_leaves_the_batch_unwritten() -> None:
    stopping = asyncio.Event()
    producer = ScriptedProducer([KafkaTimeoutError()] * 100)
    w = writer(producer, stopping)
    task = asyncio.create_task(w.write(writes(2)))
    await asyncio.sleep(0.05)
    stopping.set()
    with pytest.raises(Stopping):
        await asyncio.wait_for(task, 2)


class _Consumer:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.committed: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.error:
            raise self.error
        self.committed.append(offsets)


async def test_commit_goes_to_the_attached_consumer() -> None:
    w = writer(ScriptedProducer())
    consumer = _Consumer()
    await w.commit({TopicPartition("in", 0): 5})  # not attached yet: nothing to commit to
    w.attach(consumer)
    await w.commit({TopicPartition("in", 0): 5})
    assert consumer.committed == [{TopicPartition("in", 0): 5}]


async def test_commit_refused_by_a_rebalance_is_counted_not_raised() -> None:
    refused: list[int] = []
    w = AcknowledgedWriter(
        ScriptedProducer,
        stopping=asyncio.Event(),
        on_commit_refused=lambda: refused.append(1),
    )
    w.attach(_Consumer(CommitFailedError("rebalanced")))
    await w.commit({TopicPartition("in", 0): 5})
    assert refused == [1]


async def test_a_producer_out_of_step_with_the_broker_is_replaced() -> None:
    # After an outage an idempotent producer can fail for good with OutOfOrderSequenceNumber;
    # retrying on it would loop forever.
    broken = ScriptedProducer([OutOfOrderSequenceNumber()] * 100)
    fresh = ScriptedProducer()
    made = iter([broken, fresh])
    w = AcknowledgedWriter(lambda: next(made), stopping=asyncio.Event(), max_delay=0.01)
    await w.write(writes(2))
    assert w.producer is fresh
    assert broken.stopped and fresh.started
    assert [k for _, k in fresh.sent] == [b"k0", b"k1"]


async def test_writes_side_by_side_replace_a_broken_producer_once() -> None:
    # The parts of a batch write side by side: both see the producer fail for good.
    broken = ScriptedProducer([OutOfOrderSequenceNumber()] * 100)
    fresh = ScriptedProducer()
    made = [broken, fresh]
    w = AcknowledgedWriter(lambda: made.pop(0), stopping=asyncio.Event(), max_delay=0.01)
    await asyncio.gather(w.write(writes(2)), w.write(writes(3)))
    assert w.producer is fresh and made == []  # one replacement, not two
    assert sorted(k for _, k in fresh.sent) == sorted([b"k0", b"k1", b"k0", b"k1", b"k2"])


async def test_a_write_that_can_never_succeed_stops_instead_of_stalling() -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    from service.pipeline.seams import Unwritable

    producer = ScriptedProducer([("refuse", MessageSizeTooLargeError())])
    w = writer(producer)
    with pytest.raises(Unwritable, match="can never succeed"):
        await asyncio.wait_for(w.write(writes(1)), 2)
    assert w.errors == [1]


def keyed(n: int, partition: int | None = None) -> list[Write]:
    return [Write("t", f"k{i}".encode(), b"v", partition=partition) for i in range(n)]


async def test_batched_writes_keep_each_partitions_order_and_the_default_partitioner() -> None:
    from aiokafka.partitioner import murmur2

    producer = ScriptedProducer(capacity=2, partitions=3)
    await writer(producer).write(keyed(9))
    by_partition: dict[int, list[bytes | None]] = {}
    for topic, partition, records in producer.batches:
        assert topic == "t" and 1 <= len(records) <= 2
        by_partition.setdefault(partition, []).extend(k for k, _ in records)
    for partition, keys in by_partition.items():
        expected = [
            f"k{i}".encode()
            for i in range(9)
            if (murmur2(f"k{i}".encode()) & 0x7FFFFFFF) % 3 == partition
        ]
        assert keys == expected  # the partition send() would pick, in write order


async def test_a_failed_batch_is_resent_from_its_first_write() -> None:
    # All to partition 0, two per batch: k0 k1 | k2 k3 | k4. The second batch fails.
    producer = ScriptedProducer(capacity=2, outcomes=[None, KafkaTimeoutError(), None])
    w = writer(producer)
    await w.write(keyed(5, partition=0))
    assert [k for _, k in producer.sent] == [
        b"k0", b"k1", b"k2", b"k3", b"k4",  # first round
        b"k2", b"k3", b"k4",  # from the first write of the failed batch
    ]  # fmt: skip
    assert w.errors == [1]


async def test_a_batch_refused_at_once_is_retried_from_there() -> None:
    producer = ScriptedProducer(
        capacity=2, outcomes=[None, ("refuse", KafkaTimeoutError()), None, None]
    )
    w = writer(producer)
    await w.write(keyed(4, partition=1))
    assert [k for _, k in producer.sent] == [b"k0", b"k1", b"k2", b"k3"]
    assert w.errors == [1]


async def test_a_record_too_large_for_a_batch_goes_alone_after_its_partitions_batch() -> None:
    producer = ScriptedProducer(capacity=10)
    big = Write("t", b"big", b"x" * 200_000, partition=0)
    await writer(producer).write([*keyed(2, partition=0), big, *keyed(1, partition=0)])
    assert [k for _, k in producer.sent] == [b"k0", b"k1", b"big", b"k0"]


async def test_every_batch_is_closed_before_it_is_submitted() -> None:
    # A batch left open lingers `linger_ms` for more records: three acknowledged steps per input
    # batch would each wait for it.
    producer = ScriptedProducer(capacity=2, partitions=3)
    await writer(producer).write(keyed(9))
    assert producer.closed and all(producer.closed)


def transactional(producer: ScriptedTransactionalProducer) -> TransactionalWriter:
    return TransactionalWriter(lambda _: producer, group_id="g", stopping=asyncio.Event())


SOURCE = TopicPartition("in", 0)


def sourced(n: int) -> list[Write]:
    return [Write("t", f"k{i}".encode(), b"v", source=SOURCE, partition=0) for i in range(n)]


async def test_transactional_writes_do_not_wait_for_acks_the_commit_does() -> None:
    producer = ScriptedTransactionalProducer(capacity=10, outcomes=["pending", "pending"])
    w = transactional(producer)
    await w.write(sourced(2))  # returns with both acks outstanding
    await w.write(sourced(1))
    assert producer.calls == ["begin"] and len(producer.pending) == 2
    committing = asyncio.create_task(w.commit({SOURCE: 3}))
    await asyncio.sleep(0)
    assert producer.calls == ["begin"]  # waiting for the acks
    for future in producer.pending:
        future.set_result(None)
    await committing
    assert producer.calls == ["begin", "offsets [3]", "commit"]


async def test_a_transactional_send_that_failed_aborts_instead_of_committing() -> None:
    producer = ScriptedTransactionalProducer(capacity=10, outcomes=[KafkaTimeoutError()])
    w = transactional(producer)
    await w.write(sourced(2))
    with pytest.raises(KafkaTimeoutError):
        await w.commit({SOURCE: 2})
    assert "commit" not in producer.calls and "abort" in producer.calls


async def test_transactional_writes_side_by_side_begin_each_transaction_once() -> None:
    producer = ScriptedTransactionalProducer(capacity=10)
    w = transactional(producer)
    await asyncio.gather(w.write(sourced(2)), w.write(sourced(3)), w.write(sourced(1)))
    await w.commit({SOURCE: 6})
    assert producer.calls == ["begin", "offsets [6]", "commit"]
