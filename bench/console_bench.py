"""The console's index and search (§12) at a day of a big campaign, on Apache Kafka.

- 1,000,000 outcome events (about 370,000 fallbacks: REQUESTED or SKIPPED, then SENT or
  FAILED, then DELIVERED or UNDELIVERED) spread over the last 24 hours, in a 6-partition
  outcome topic.
- Index build rate: the console's follower reads the whole topic into a new index file
  (`--runs` times, each from nothing), with the read budget raised out of the way and with the
  default budget (20,000 records/s), records/s.
- Search latency over the 1,000,000 indexed outcomes, through the console's application (ASGI,
  in process, HTML rendered, a logged-in session): by requestId, a fallback's story page, the
  first page of a one-hour time range (alone, with a channel, with a rare status), the tenth
  page of a range, and the CSV of one hour. Median and p99 of many, ms.

Targets (issue 22): a requestId search ≤ 200 ms, a page of a time-range search ≤ 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import Settings, load_settings
from service.console.app import COOKIE, Console, console_app
from service.console.follow import Budget, Follower
from service.console.index import Index
from service.console.serve import index_identity
from service.console.sessions import Sessions
from service.console.users import Role
from service.core.models import ChannelSettings, SenderNumberStatus
from service.dev.apache_kafka import on_apache_kafka
from service.kafka.admin import admin_client
from service.kafka.options import keyed_partition
from service.ops.audit import Actor
from service.ops.dlq import DeadLetter
from service.ops.tables import ChannelChange, SenderNumberChange

OUTCOMES = 1_000_000
PARTITIONS = 6
CHANNELS = 20
DAY_MS = 86_400_000


def outcomes(total: int, start_ms: int) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, value, timestamp) of `total` outcome events of one day from `start_ms`."""
    rng = random.Random(7)
    made = 0
    i = 0
    fallbacks = int(total / 2.7)
    while made < total:
        fid = f"B{i // 2}:{i % 2 + 1}"
        at = start_ms + i * DAY_MS // fallbacks
        base = {
            "fallbackId": fid,
            "requestId": f"B{i // 2}",
            "recipientSeq": i % 2 + 1,
            "senderKey": f"sk-brand{i % CHANNELS:02}",
            "type": "SMS",
            "processedAt": "2026-12-02T10:00:00.000+09:00",
        }
        chain: list[tuple[int, dict[str, Any]]] = []
        if rng.random() < 0.1:
            chain.append((at, {**base, "status": "SKIPPED", "reason": "fallback_disabled"}))
        else:
            chain.append((at, {**base, "status": "REQUESTED", "reason": None}))
            if rng.random() < 0.02:
                chain.append((at + 50, {**base, "status": "FAILED", "reason": "provider_rejected"}))
            else:
                sent = {"name": "nhn", "resultCode": 0, "resultMessage": "SUCCESS"}
                chain.append(
                    (at + 50, {**base, "status": "SENT", "reason": None, "provider": sent})
                )
                final = "DELIVERED" if rng.random() < 0.95 else "UNDELIVERED"
                delivery = {"provider": "nhn", "resultCode": "1000", "latencyMs": 4210}
                chain.append(
                    (
                        at + 5000,
                        {
                            **base,
                            "status": final,
                            "reason": None if final == "DELIVERED" else "undelivered",
                            "delivery": delivery,
                        },
                    )
                )
        for stamp, value in chain:
            if made == total:
                return
            yield fid.encode(), orjson.dumps(value), stamp
            made += 1
        i += 1


async def produce(bootstrap: str, topic: str, total: int, start_ms: int) -> None:
    """The outcomes, keyed by fallbackId as the service writes them, with their times."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20)
    await producer.start()
    try:
        batches: dict[int, Any] = {}
        futures = []
        for key, value, stamp in outcomes(total, start_ms):
            p = keyed_partition(key, PARTITIONS)
            batch = batches.get(p) or batches.setdefault(p, producer.create_batch())
            if batch.append(key=key, value=value, timestamp=stamp) is None:
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=stamp)
        for p, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def build(settings: Settings, path: str, total: int) -> float:
    """Seconds for a new index to hold the `total` outcomes of the topic."""
    index = Index(path, index_identity(settings))
    follower = Follower(settings, index, Budget(settings.console_read_budget))
    began = time.perf_counter()
    follower.start()
    try:
        while True:
            await asyncio.sleep(0.2)
            if follower.progress.error:
                raise RuntimeError(follower.progress.error)
            if follower.progress.caught_up and index.counts()["outcomes"] >= total:
                return time.perf_counter() - began
    finally:
        await follower.stop()
        index.close()


class _NoKafka:
    """The seam without writes: the benchmark only reads."""

    def channels(self) -> dict[str, ChannelSettings]:
        return {}

    def sender_numbers(self) -> dict[str, SenderNumberStatus]:
        return {}

    async def put_channel(self, key: str, changes: dict[str, Any], actor: Actor) -> ChannelChange:
        raise NotImplementedError

    async def delete_channel(self, key: str, actor: Actor) -> None:
        raise NotImplementedError

    async def put_sendno(self, number: str, status: str, actor: Actor) -> SenderNumberChange:
        raise NotImplementedError

    async def delete_sendno(self, number: str, actor: Actor) -> str:
        raise NotImplementedError

    async def replay(self, letters: list[DeadLetter], actor: Actor) -> int:
        raise NotImplementedError

    async def request(self, fid: str, near_ms: int) -> dict[str, Any] | None:
        return None


def _size(directory: Path, name: str) -> int:
    return sum(f.stat().st_size for f in directory.glob(f"{name}*"))


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


async def searches(settings: Settings, path: str, start_ms: int, total: int) -> dict[str, Any]:
    """Median and p99 (ms) of each kind of search over the built index."""
    index = Index(path, index_identity(settings))
    sessions = Sessions(idle=3600)
    console = Console(
        settings, {}, sessions, index, _NoKafka(), Follower(settings, index, Budget(1)).progress
    )
    console.progress.ready = True
    session = sessions.open("bench", Role.VIEWER, time.monotonic())
    transport = httpx.ASGITransport(app=console_app(console))
    rng = random.Random(11)
    # About 2.78 outcomes a fallback: ids below this many are surely written.
    requests = int(total / 2.9) // 2
    found: dict[str, Any] = {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://console", cookies={COOKIE: session.token}
    ) as client:

        async def timed(name: str, urls: list[str], check: str | None = None) -> None:
            times = []
            for url in urls:
                began = time.perf_counter()
                answer = await client.get(url)
                times.append((time.perf_counter() - began) * 1000)
                assert answer.status_code == 200, (url, answer.status_code)
                if check is not None:
                    assert check in answer.text, (url, check)
            times.sort()
            found[name] = {
                "median": statistics.median(times),
                "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
                "count": len(times),
            }

        def window() -> tuple[str, str]:
            begin = start_ms + rng.randrange(DAY_MS - 3_600_000)
            return _iso(begin), _iso(begin + 3_600_000)

        ids = [rng.randrange(requests) for _ in range(300)]
        await timed("requestId", [f"/fallbacks?requestId=B{n}" for n in ids], "B")
        await timed("story", [f"/fallbacks/B{n}:1" for n in ids[:200]], "B")
        ranges = [window() for _ in range(100)]
        await timed("range", [f"/fallbacks?from={a}&to={b}" for a, b in ranges])
        await timed(
            "range+channel",
            [
                f"/fallbacks?from={a}&to={b}&senderKey=sk-brand{rng.randrange(CHANNELS):02}"
                for a, b in ranges
            ],
        )
        await timed(
            "range+FAILED", [f"/fallbacks?from={a}&to={b}&status=FAILED" for a, b in ranges]
        )
        # The tenth page: nine cursors followed first (not timed), then the tenth timed.
        deep = []
        for a, b in ranges[:30]:
            url = f"/fallbacks?from={a}&to={b}"
            for _ in range(9):
                text = (await client.get(url)).text
                cursor = text.split('id="next"')[0].rsplit('href="', 1)[-1].split('"')[0]
                url = "/fallbacks" + cursor.replace("&amp;", "&")
            deep.append(url)
        await timed("range, page 10", deep)
        await timed("csv of one hour", [f"/fallbacks.csv?from={a}&to={b}" for a, b in ranges[:5]])
    index.close()
    return found


async def main(runs: int, total: int) -> None:
    async def measure(name: str, bootstrap: str) -> None:
        topic = "bench.console.events"
        async with admin_client(load_settings(kafka_bootstrap_servers=bootstrap).kafka()) as a:
            await a.create_topics(
                [
                    NewTopic(topic, PARTITIONS, 1),
                    NewTopic("bench.console.dlq", 1, 1),
                    NewTopic("bench.console.audit", 1, 1),
                ]
            )
        start_ms = int(time.time() * 1000) - DAY_MS
        began = time.perf_counter()
        await produce(bootstrap, topic, total, start_ms)
        print(
            f"{name}: {total:,} outcomes written in {time.perf_counter() - began:.1f} s", flush=True
        )
        common = {
            "kafka_bootstrap_servers": bootstrap,
            "events_topic": topic,
            "dlq_topic": "bench.console.dlq",
            "audit_topic": "bench.console.audit",
        }
        with tempfile.TemporaryDirectory() as directory:
            rates = []
            for run in range(runs):
                path = f"{directory}/index-{run}.sqlite"
                seconds = await build(
                    load_settings(**common, console_read_budget=10_000_000), path, total
                )
                rates.append(total / seconds)
                size = _size(Path(directory), f"index-{run}.sqlite")
                print(
                    f"run {run + 1}: index built at {total / seconds:,.0f} records/s "
                    f"({seconds:.1f} s; file {size / 2**20:.0f} MiB)",
                    flush=True,
                )
            capped = await build(load_settings(**common), f"{directory}/capped.sqlite", total)
            print(
                f"{name}: index build medians of {runs}: {statistics.median(rates):,.0f} records/s "
                f"(default budget 20,000/s: {total / capped:,.0f} records/s)",
                flush=True,
            )
            found = await searches(
                load_settings(**common), f"{directory}/index-0.sqlite", start_ms, total
            )
            for kind, figures in found.items():
                print(
                    f"{name}: search {kind}: median {figures['median']:.1f} ms, p99 "
                    f"{figures['p99']:.1f} ms ({figures['count']} searches over {total:,} outcomes)"
                )

    await on_apache_kafka(measure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--outcomes", type=int, default=OUTCOMES)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.outcomes))
