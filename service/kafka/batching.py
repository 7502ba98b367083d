"""Records sent as record batches per output partition (aiokafka's batch API), and their acks."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiokafka import AIOKafkaProducer

from service.kafka.options import keyed_partition
from service.pipeline.seams import Write

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


async def settle_acks(
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
