"""The dedupe state at 1,000,000 remembered fallbacks: memory, and restore time per broker.

Writes 1,000,000 markers (as the service writes them: keyed by fallbackId, in the owner
partition) to a 6-partition changelog, then restores them as a replica does on assignment: all
six partitions in one replica, and three each in two replicas. Reports bytes per remembered
fallback (the digest tables, and the process's resident memory growth), and seconds to restore.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import rss_mb

from service.config import load_settings
from service.dev.apache_kafka import on_each_broker
from service.kafka.admin import admin_client
from service.state.dedupe import PartitionedDedupe, owner_partition

COUNT = 1_000_000
PARTITIONS = 6
INPUT = "bench.in"
# A REQUESTED outcome of the usual size.
OUTCOME = (
    b'{"fallbackId":"20261125-000000000:1","requestId":"20261125-000000000","recipientSeq":1,'
    b'"senderKey":"sk-mybrand","status":"REQUESTED","reason":null,"type":"SMS","bodyBytes":88,'
    b'"truncated":false,"replacedChars":0,"processedAt":"2026-11-25T12:00:00.000+09:00"}'
)


def requested_marker(i: int) -> tuple[str, int, bytes]:
    """The i-th benchmark fallback's id, owner partition and marker, as the service writes it:
    the input record and the outcome inside."""
    fid = f"20261125-{i:09d}:{i % 5 + 1}"
    owner = owner_partition(fid, PARTITIONS)
    value = PartitionedDedupe.marker(
        fid, "2026-11-25T12:00:00.000+09:00", (INPUT, owner, i), [OUTCOME]
    )
    return fid, owner, value


async def write_markers(
    bootstrap: str,
    topic: str,
    count: int = COUNT,
    marker_of: Callable[[int], tuple[str, int, bytes]] = requested_marker,
) -> float:
    """Write `count` changelog records (`marker_of(i)`: key, partition, value); seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1024 * 1024
    )
    await producer.start()
    began = time.monotonic()
    try:
        futures = []
        for i in range(count):
            fid, owner, value = marker_of(i)
            futures.append(await producer.send(topic, value, key=fid.encode(), partition=owner))
            if len(futures) >= 50_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - began


async def restore(bootstrap: str, topic: str, partitions: list[int]) -> PartitionedDedupe:
    dedupe = PartitionedDedupe(topic, {"bootstrap_servers": bootstrap}, retention_seconds=7 * 86400)
    dedupe.start(PARTITIONS)
    # The input committed past every marker's record, as after any clean stop: each marker's
    # source is read and none is kept in flight.
    await dedupe.restore(partitions, {TopicPartition(INPUT, p): COUNT for p in partitions})
    return dedupe


async def create_changelog(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import NewTopic

    async with admin_client(load_settings(kafka_bootstrap_servers=bootstrap).kafka()) as admin:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])


async def measure(name: str, bootstrap: str) -> None:
    topic = "bench.dedupe"
    await create_changelog(bootstrap, topic)
    wrote = await write_markers(bootstrap, topic)
    before = rss_mb()
    began = time.monotonic()
    one = await restore(bootstrap, topic, list(range(PARTITIONS)))
    whole = time.monotonic() - began
    grown = rss_mb() - before
    held = len(one)
    table = sum(s.nbytes for s in one.states.values())
    del one
    began = time.monotonic()
    halves = await asyncio.gather(
        restore(bootstrap, topic, [0, 1, 2]), restore(bootstrap, topic, [3, 4, 5])
    )
    both = time.monotonic() - began
    print(
        f"{name}: {held:,} markers (written in {wrote:.1f}s); one replica restores all in "
        f"{whole:.1f}s; tables {table / held:.1f} bytes/fallback ({table / 1e6:.1f} MB), "
        f"process grew {grown:.0f} MB ({grown * 1e6 / held:.0f} bytes/fallback); two replicas "
        f"hold {len(halves[0]):,} and {len(halves[1]):,} "
        f"({sum(s.nbytes for s in halves[0].states.values()) / 1e6:.1f} and "
        f"{sum(s.nbytes for s in halves[1].states.values()) / 1e6:.1f} MB), "
        f"restored side by side in {both:.1f}s"
    )


async def main() -> None:
    await on_each_broker(measure)


if __name__ == "__main__":
    asyncio.run(main())
