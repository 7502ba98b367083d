"""Throughput of the running service against the bare aiokafka loop, per broker and mode.

On each broker (Tansu, and Apache Kafka when Java and Maven are here) both consume the same
number of pre-produced failure events from a 3-partition topic, in one run: the bare loop reads
each record and writes two (acks=all, one commit per batch), the service does everything the
contract asks, at-least-once and (Apache Kafka) exactly-once. Figures are records/s; the ratios
are what to compare across machines.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.compose import build_service
from service.dev.apache_kafka import on_each_broker
from tests.factories import event_dict
from tests.kafka_helpers import Topics, create_topics, seed

COUNT = 20_000


async def fill(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    contents = ["[마이브랜드] 인증번호 482913", "가" * 60, "주문 완료 🎉 감사합니다"]
    futures = [
        await producer.send(
            topic,
            orjson.dumps(event_dict(requestId=f"B{i}", content=contents[i % 3])),
            key=f"B{i}:1".encode(),
        )
        for i in range(COUNT)
    ]
    await asyncio.gather(*futures)
    await producer.stop()


async def bare_loop(bootstrap: str, topics: Topics) -> float:
    consumer = AIOKafkaConsumer(
        topics.input,
        bootstrap_servers=bootstrap,
        group_id="bare",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    seen, started = 0, None
    while seen < COUNT:
        batches = await consumer.getmany(timeout_ms=100, max_records=1000)
        if not batches:
            continue
        started = started or time.monotonic()
        futures = []
        for records in batches.values():
            for r in records:
                futures.append(await producer.send(topics.output, r.value, key=r.key))
                futures.append(await producer.send(topics.events, r.value, key=r.key))
                seen += 1
        await asyncio.gather(*futures)
        await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
    elapsed = time.monotonic() - (started or time.monotonic())
    await consumer.stop()
    await producer.stop()
    return COUNT / elapsed


async def service_run(bootstrap: str, topics: Topics, **overrides: Any) -> float:
    settings = topics.settings(bootstrap, log_outcomes=False, batch_max_records=1000, **overrides)
    service = build_service(settings)
    await service.start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.group_id, enable_auto_commit=False
    )
    await consumer.start()
    tps = [TopicPartition(topics.input, p) for p in range(3)]
    started = None
    while True:
        handled = service.metrics.registry.get_sample_value("fallback_batch_records_sum") or 0
        if handled and started is None:
            started = time.monotonic() - 0.0
        if handled >= COUNT:
            break
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - (started or time.monotonic())
    done = sum([(await consumer.committed(tp)) or 0 for tp in tps])
    await consumer.stop()
    await service.stop()
    assert done == COUNT, f"committed {done} of {COUNT}"
    return COUNT / elapsed


async def fresh(bootstrap: str) -> Topics:
    topics = Topics.fresh()
    await create_topics(bootstrap, topics)
    await seed(bootstrap, topics)
    await fill(bootstrap, topics.input)
    return topics


async def measure(name: str, bootstrap: str, modes: dict[str, dict[str, Any]]) -> None:
    """The bare loop, then the service in each mode, on one broker; one summary line."""
    bare = await bare_loop(bootstrap, await fresh(bootstrap))
    served = {
        mode: await service_run(bootstrap, await fresh(bootstrap), **o) for mode, o in modes.items()
    }
    print(f"{name}: bare aiokafka loop (read 1, write 2, commit/batch) {bare:,.0f} records/s")
    for mode, rate in served.items():
        print(
            f"{name}: service {mode:<14} {rate:8,.0f} records/s, {rate / bare:.2f} x the bare loop"
        )
    if len(served) > 1:
        alo, eos = served["at-least-once"], served["exactly-once"]
        print(f"{name}: exactly-once / at-least-once: {eos / alo:.2f}")


MODES: dict[str, dict[str, dict[str, Any]]] = {
    "tansu": {"at-least-once": {}},
    "apache-kafka": {
        "at-least-once": {"kafka_enable_idempotence": True},
        "exactly-once": {"processing_guarantee": "exactly-once"},
    },
}


async def main() -> None:
    print(f"{COUNT:,} events per run, 3 partitions, broker on this machine")

    async def on(name: str, bootstrap: str) -> None:
        await measure(name, bootstrap, MODES[name])

    await on_each_broker(on)


if __name__ == "__main__":
    asyncio.run(main())
