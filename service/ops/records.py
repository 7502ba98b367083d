"""Reading and writing the service's topics for operator tasks: one producer, group-less
readers of committed records, and a scan by time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from service.compat import refresh_metadata
from service.config import Settings
from service.kafka.options import client_options
from service.ops import Refused


@contextlib.asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """An acks=all producer with the service's connection and security options."""
    p = AIOKafkaProducer(**client_options(settings.kafka()), acks="all")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def committed_consumer(settings: Settings, **options: Any) -> AIOKafkaConsumer:
    """A group-less consumer (not started) of committed records only, with the service's
    connection and security options; it commits nothing."""
    return AIOKafkaConsumer(
        **client_options(settings.kafka()),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **options,
    )


@contextlib.asynccontextmanager
async def reader(settings: Settings, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less consumer of `topic` (committed records only), all partitions known."""
    consumer = committed_consumer(settings)
    await consumer.start()
    try:
        for _ in range(100):
            if consumer.partitions_for_topic(topic):
                break
            await refresh_metadata(consumer)
            await asyncio.sleep(0.1)
        else:
            raise Refused(f"topic {topic} does not exist")
        yield consumer
    finally:
        await consumer.stop()


async def scan(
    settings: Settings,
    topic: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    partitions: Iterable[int] | None = None,
    follow: bool = False,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[ConsumerRecord]:
    """Records of `topic` from `since` (or the beginning) to its end now, or on with `follow`."""
    async with reader(settings, topic) as consumer:
        numbers = sorted(
            partitions if partitions is not None else consumer.partitions_for_topic(topic)
        )
        tps = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if since is not None:
            found = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in tps}
            )
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
        ends = await consumer.end_offsets(tps)
        until_ms = int(until.timestamp() * 1000) if until is not None else None
        while True:
            if stop is not None and stop.is_set():
                return
            if not follow:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind:
                    return
            batches = await consumer.getmany(timeout_ms=300, max_records=5000)
            for tp in sorted(batches):
                for record in batches[tp]:
                    if until_ms is not None and record.timestamp > until_ms:
                        continue
                    yield record
