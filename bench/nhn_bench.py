"""The `nhn` sink against the local NHN-compatible server, on the embedded broker (Tansu), with
the service started as users start it (`fallback-service run`, default logging).

1. Throughput: 5,000 pre-produced failures, SENT per second, at the default concurrency (16)
   with the default rate limit (300/s) and with no rate limit.
2. A one-minute outage: failures arrive at 100/s; the API answers 503 for 60 s, then recovers.
   Reported: the service's RSS during the outage, the input lag at its end, the time to drain
   after it, and the delivery: SENT, FAILED, and bodies the API accepted twice.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import rss_mb, start_service, wait_ready

from service.dev.broker import free_port, start_broker
from service.dev.nhn_server import NhnServer
from tests.factories import event_dict
from tests.kafka_helpers import Topics, create_topics, seed

THROUGHPUT_EVENTS = 5_000
OUTAGE_SECONDS = 60
ARRIVALS_PER_SECOND = 100


def event(i: int) -> bytes:
    return orjson.dumps(event_dict(requestId=f"N{i}", content=f"[마이브랜드] 인증번호 {i:06d}"))


async def produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, event(i), key=f"N{i}:1".encode())
            for i in range(first, first + count)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def lag(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0, 1, 2}]
        ends = await consumer.end_offsets(tps)
        total = 0
        for tp in tps:
            done = await consumer.committed(tp)
            total += ends[tp] - (done or 0)
        return total
    finally:
        await consumer.stop()


async def setup(
    bootstrap: str, server: NhnServer, **extra: str
) -> tuple[Topics, dict[str, str], int]:
    topics = Topics.fresh()
    await create_topics(bootstrap, topics, partitions=3)
    await seed(bootstrap, topics)
    port = free_port()
    env = topics.env(bootstrap, FALLBACK_HTTP_PORT=str(port))
    env.update(
        FALLBACK_SINK="nhn",
        FALLBACK_NHN_BASE_URL=server.url,
        FALLBACK_NHN_APP_KEY=server.app_key,
        FALLBACK_NHN_SECRET_KEY=server.secret_key,
        **extra,
    )
    return topics, env, port


async def throughput(bootstrap: str, log: Path, **extra: str) -> float:
    server = NhnServer()
    await server.start()
    topics, env, port = await setup(bootstrap, server, **extra)
    await produce(bootstrap, topics.input, 0, THROUGHPUT_EVENTS)
    process = start_service(env, log)
    try:
        await wait_ready(port)
        while not server.received:  # noqa: ASYNC110 (polls the server's state)
            await asyncio.sleep(0.01)
        first = time.monotonic()
        while len(server.accepted) < THROUGHPUT_EVENTS:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return THROUGHPUT_EVENTS / (time.monotonic() - first)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
        await server.stop()


async def outage(bootstrap: str, log: Path) -> dict[str, Any]:
    server = NhnServer()
    await server.start()
    topics, env, port = await setup(bootstrap, server, FALLBACK_LOG_OUTCOMES="false")
    process = start_service(env, log)
    produced = 0
    stop = asyncio.Event()

    async def arrivals() -> None:
        nonlocal produced
        while not stop.is_set():
            began = time.monotonic()
            await produce(bootstrap, topics.input, produced, ARRIVALS_PER_SECOND)
            produced += ARRIVALS_PER_SECOND
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))

    try:
        await wait_ready(port)
        feeder = asyncio.create_task(arrivals())
        await asyncio.sleep(5)
        server.control({"fault": "http", "status": 503, "times": -1})
        rss: list[float] = []
        outage_began = time.monotonic()
        while time.monotonic() - outage_began < OUTAGE_SECONDS:
            rss.append(rss_mb(process.pid))
            await asyncio.sleep(1)
        lag_at_end = await lag(bootstrap, env["FALLBACK_GROUP_ID"], topics.input)
        stop.set()
        await feeder
        server.control({"clear": True})
        recovered = time.monotonic()
        while len(server.accepted) < produced:
            rss.append(rss_mb(process.pid))
            await asyncio.sleep(0.1)
            if time.monotonic() - recovered > 120:
                break
        drained = time.monotonic() - recovered
        bodies = server.accepted
        rejected = sum(1 for r in server.received if r.get("recipientCode") not in (None, 0))
        return {
            "events": produced,
            "sent": len(bodies),
            "failed": rejected,
            "twice": sum(n - 1 for n in bodies.values()),
            "calls during outage": sum(1 for r in server.received if r.get("answer") == "HTTP 503"),
            "input lag at end of outage": lag_at_end,
            "drained after (s)": round(drained, 1),
            "rss min/max (MB)": (round(min(rss), 1), round(max(rss), 1)),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
        await server.stop()


async def main() -> None:
    broker = start_broker()
    log = Path("/tmp/nhn_bench_service.log")
    log.unlink(missing_ok=True)  # noqa: ASYNC240 (before anything runs)
    try:
        limited = await throughput(broker.bootstrap, log)
        unlimited = await throughput(broker.bootstrap, log, FALLBACK_NHN_RATE_LIMIT="0")
        print(
            f"nhn sink throughput, concurrency 16: {limited:,.0f} SENT/s with the default rate "
            f"limit (300/s), {unlimited:,.0f} SENT/s without"
        )
        if "--no-outage" not in sys.argv:
            result = await outage(broker.bootstrap, log)
            print(f"one-minute outage at {ARRIVALS_PER_SECOND} events/s: {result}")
    finally:
        broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
