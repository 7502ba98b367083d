"""The delivering sinks against their local servers (`service.dev.nhn_server`,
`service.dev.solapi_server`), on the embedded broker (Tansu), with the service started as users
start it (`fallback-service run`, default logging).

1. Throughput, SENT per second from pre-produced failures: nhn (one call per SMS, concurrency
   16) with its default rate limit (300 calls/s) and without; solapi (send-many, up to 1,000
   messages per call) with its default rate limit (20 calls/s) and without.
2. A one-minute nhn outage without failover: failures arrive at 100/s; the API answers 503 for
   60 s, then recovers. The input pauses; reported: RSS, the input lag at the end of the
   outage, the time to drain after it, SENT, FAILED and bodies accepted twice.
3. A one-minute outage of the first provider with failover on (`FALLBACK_SINK=nhn,solapi`):
   failures arrive at 500/s; NHN refuses connections for 60 s. Reported: SENT/s by solapi during
   the outage, the input lag at its end, fallbacks taken twice by the two servers together, and
   the time from NHN's recovery to its first SMS again.

`--runs N` repeats the throughput figures (medians quoted); `--no-outage` skips 2 and 3.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import rss_mb, start_service, wait_ready

from service.dev.broker import free_port, start_broker
from service.dev.nhn_server import NhnServer
from service.dev.solapi_server import SolapiServer
from tests.factories import event_dict
from tests.kafka_helpers import Topics, create_topics, seed

NHN_EVENTS = 5_000
SOLAPI_EVENTS = 30_000
OUTAGE_SECONDS = 60
ARRIVALS_PER_SECOND = 100
FAILOVER_ARRIVALS_PER_SECOND = 500


def event(i: int) -> bytes:
    return orjson.dumps(
        event_dict(
            requestId=f"N{i}",
            recipientNo=f"010{i % 100_000_000:08d}",
            content=f"[마이브랜드] 인증번호 {i:06d}",
        )
    )


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
        # An offset committed after the end offsets were read: nothing waits there.
        return max(0, total)
    finally:
        await consumer.stop()


class Arrivals:
    """Failures produced at `rate` per second, in `ticks` steps a second, until `stop`."""

    def __init__(self, bootstrap: str, topic: str, rate: int, ticks: int = 1) -> None:
        self.bootstrap, self.topic, self.rate, self.ticks = bootstrap, topic, rate, ticks
        self.produced = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        step, every = self.rate // self.ticks, 1.0 / self.ticks
        while not self.stop.is_set():
            began = time.monotonic()
            await produce(self.bootstrap, self.topic, self.produced, step)
            self.produced += step
            await asyncio.sleep(max(0.0, every - (time.monotonic() - began)))


class Providers:
    """Both local servers, and what they took together."""

    def __init__(self) -> None:
        self.nhn = NhnServer()
        self.solapi = SolapiServer()

    async def start(self) -> None:
        await self.nhn.start()
        await self.solapi.start()
        self.solapi.result_delay = 3600  # no reports during a benchmark

    async def stop(self) -> None:
        await self.nhn.stop()
        await self.solapi.stop()

    def taken(self) -> Counter[str]:
        counts = Counter(m["recipientGroupingKey"] for m in self.nhn.sent)
        counts.update(self.solapi.accepted)
        return counts

    def env(self, sinks: str) -> dict[str, str]:
        return {
            "FALLBACK_SINK": sinks,
            "FALLBACK_NHN_BASE_URL": self.nhn.url,
            "FALLBACK_NHN_APP_KEY": self.nhn.app_key,
            "FALLBACK_NHN_SECRET_KEY": self.nhn.secret_key,
            "FALLBACK_SOLAPI_BASE_URL": self.solapi.url,
            "FALLBACK_SOLAPI_API_KEY": self.solapi.api_key,
            "FALLBACK_SOLAPI_API_SECRET": self.solapi.api_secret,
        }


async def setup(bootstrap: str, env: dict[str, str]) -> tuple[Topics, dict[str, str], int]:
    topics = Topics.fresh()
    await create_topics(bootstrap, topics, partitions=3)
    await seed(bootstrap, topics)
    port = free_port()
    full = topics.env(bootstrap, FALLBACK_HTTP_PORT=str(port))
    full.update(env)
    return topics, full, port


async def throughput(bootstrap: str, log: Path, sinks: str, events: int, **extra: str) -> float:
    """SENT/s from the provider's first call to its `events`-th message taken."""
    providers = Providers()
    await providers.start()
    topics, env, port = await setup(bootstrap, {**providers.env(sinks), **extra})
    await produce(bootstrap, topics.input, 0, events)
    process = start_service(env, log)
    try:
        await wait_ready(port)
        while not providers.taken():  # noqa: ASYNC110 (polls the servers' state)
            await asyncio.sleep(0.005)
        first = time.monotonic()
        while len(providers.taken()) < events:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return events / (time.monotonic() - first)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
        await providers.stop()


async def nhn_outage(bootstrap: str, log: Path) -> dict[str, Any]:
    """One provider, no failover: the input pauses through the outage."""
    providers = Providers()
    await providers.start()
    server = providers.nhn
    topics, env, port = await setup(
        bootstrap, {**providers.env("nhn"), "FALLBACK_LOG_OUTCOMES": "false"}
    )
    process = start_service(env, log)
    arrivals = Arrivals(bootstrap, topics.input, ARRIVALS_PER_SECOND)
    try:
        await wait_ready(port)
        feeder = asyncio.create_task(arrivals.run())
        await asyncio.sleep(5)
        server.control({"fault": "http", "status": 503, "own_body": True, "times": -1})
        rss: list[float] = []
        outage_began = time.monotonic()
        while time.monotonic() - outage_began < OUTAGE_SECONDS:
            rss.append(rss_mb(process.pid))
            await asyncio.sleep(1)
        lag_at_end = await lag(bootstrap, env["FALLBACK_GROUP_ID"], topics.input)
        arrivals.stop.set()
        await feeder
        produced = arrivals.produced
        server.control({"clear": True})
        recovered = time.monotonic()
        while len(server.sent) < produced:
            rss.append(rss_mb(process.pid))
            await asyncio.sleep(0.1)
            if time.monotonic() - recovered > 120:
                break
        drained = time.monotonic() - recovered
        taken = providers.taken()
        rejected = sum(1 for r in server.received if r.get("recipientCode") not in (None, 0))
        return {
            "events": produced,
            "sent": len(taken),
            "failed": rejected,
            "twice": sum(n - 1 for n in taken.values()),
            "calls during outage": sum(1 for r in server.received if r.get("answer") == "HTTP 503"),
            "input lag at end of outage": lag_at_end,
            "drained after (s)": round(drained, 1),
            "rss min/max (MB)": (round(min(rss), 1), round(max(rss), 1)),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
        await providers.stop()


async def failover_outage(bootstrap: str, log: Path) -> dict[str, Any]:
    """`nhn,solapi`: NHN refuses connections for a minute; Solapi takes the requests."""
    providers = Providers()
    await providers.start()
    topics, env, port = await setup(
        bootstrap, {**providers.env("nhn,solapi"), "FALLBACK_LOG_OUTCOMES": "false"}
    )
    process = start_service(env, log)
    arrivals = Arrivals(bootstrap, topics.input, FAILOVER_ARRIVALS_PER_SECOND, ticks=10)
    try:
        await wait_ready(port)
        feeder = asyncio.create_task(arrivals.run())
        await asyncio.sleep(5)
        await providers.nhn.down(True)
        before = len(providers.solapi.accepted)
        began = time.monotonic()
        rss: list[float] = []
        while time.monotonic() - began < OUTAGE_SECONDS:
            rss.append(rss_mb(process.pid))
            await asyncio.sleep(1)
        by_solapi = len(providers.solapi.accepted) - before
        lag_at_end = await lag(bootstrap, env["FALLBACK_GROUP_ID"], topics.input)
        nhn_before = len(providers.nhn.sent)
        await providers.nhn.down(False)
        recovered = time.monotonic()
        back = None
        while time.monotonic() - recovered < 90:
            if len(providers.nhn.sent) > nhn_before:
                back = time.monotonic() - recovered
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(3)
        arrivals.stop.set()
        await feeder
        produced = arrivals.produced
        stopped = time.monotonic()
        while len(providers.taken()) < produced and time.monotonic() < stopped + 180:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        all_sent = time.monotonic() - stopped
        taken = providers.taken()
        return {
            "events": produced,
            "sent": len(taken),
            "twice": sum(n - 1 for n in taken.values()),
            "SENT/s by solapi during the outage": round(by_solapi / OUTAGE_SECONDS),
            "input lag at end of outage": lag_at_end,
            "back to nhn after (s)": round(back, 1) if back is not None else None,
            "all sent after the arrivals stopped (s)": round(all_sent, 1),
            "rss min/max (MB)": (round(min(rss), 1), round(max(rss), 1)),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
        await providers.stop()


async def main(runs: int, outages: bool) -> None:
    broker = start_broker()
    log = Path("/tmp/provider_bench_service.log")
    log.unlink(missing_ok=True)  # noqa: ASYNC240 (before anything runs)
    try:
        cases = [
            ("nhn, default rate limit (300 calls/s)", "nhn", NHN_EVENTS, {}),
            ("nhn, no rate limit", "nhn", NHN_EVENTS, {"FALLBACK_NHN_RATE_LIMIT": "0"}),
            ("solapi, default rate limit (20 calls/s)", "solapi", SOLAPI_EVENTS, {}),
            ("solapi, no rate limit", "solapi", SOLAPI_EVENTS, {"FALLBACK_SOLAPI_RATE_LIMIT": "0"}),
        ]
        for name, sinks, events, extra in cases:
            figures = [
                await throughput(broker.bootstrap, log, sinks, events, **extra) for _ in range(runs)
            ]
            shown = ", ".join(f"{f:,.0f}" for f in figures)
            print(f"{name}: median {statistics.median(figures):,.0f} SENT/s ({shown})", flush=True)
        if outages:
            result = await nhn_outage(broker.bootstrap, log)
            print(f"one-minute nhn outage, no failover, {ARRIVALS_PER_SECOND}/s: {result}")
            result = await failover_outage(broker.bootstrap, log)
            print(
                f"one-minute nhn outage, failover to solapi, "
                f"{FAILOVER_ARRIVALS_PER_SECOND}/s: {result}"
            )
    finally:
        broker.stop()


async def failover_only() -> None:
    broker = start_broker()
    try:
        result = await failover_outage(broker.bootstrap, Path("/tmp/provider_bench_service.log"))
        print(
            f"one-minute nhn outage, failover to solapi, {FAILOVER_ARRIVALS_PER_SECOND}/s: {result}"
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-outage", action="store_true")
    parser.add_argument("--failover-only", action="store_true", help="only the failover outage")
    args = parser.parse_args()
    if args.failover_only:
        asyncio.run(failover_only())
    else:
        asyncio.run(main(args.runs, not args.no_outage))
