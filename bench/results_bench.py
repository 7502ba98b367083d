"""Delivery results (§11) on Apache Kafka: what they cost the events, how fast results become
final outcomes, and the awaited set's memory and restore time at 1,000,000 awaited fallbacks.

- Events/s with `FALLBACK_DELIVERY_RESULTS` off and on, on the same pre-loaded events (6
  partitions, at least once), in pairs (each pair in the other order), `--runs` times: the
  ratio on/off of each pair.
- In each results-on run, once the events are done, one result per REQUESTED fallback (half
  DELIVERED, half UNDELIVERED) is pre-loaded to the results topic: final outcomes per second,
  beside the same run's events per second.
- 1,000,000 requested markers that await a result (as the service writes them) in a
  6-partition changelog, restored by one replica: bytes per awaited fallback (the awaited
  arrays, and the process's resident growth beyond the dedupe digests) and seconds to restore.

Latency and throughput are judged on Apache Kafka (Tansu slows as its topics grow); without
Java and Maven the benchmark says so and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workload
from dedupe_bench import OUTCOME, write_markers
from harness import preload, rss_mb, service_env, start_service, stop
from service_bench import LOG, PARTITIONS, drained, throughput

from service.config import load_settings
from service.core.models import MessageKind
from service.core.results import Awaited, Deadlines
from service.dev.apache_kafka import on_apache_kafka
from service.dev.broker import free_port
from service.kafka.admin import admin_client
from service.state.awaited import Results
from service.state.dedupe import PartitionedDedupe, owner_partition
from service.state.restore import read_changelog
from tests.kafka_helpers import Topics, create_topics, seed

EVENTS = 60_000
AWAITED = 1_000_000
RESULTS_ON = {"FALLBACK_DELIVERY_RESULTS": "on"}


async def _read_from(
    bootstrap: str, topic: str, starts: dict[int, int]
) -> list[tuple[bytes | None, bytes | None, int]]:
    """(key, value, timestamp ms) of `topic` from `starts` (per partition) to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts.get(tp.partition, 0))
        got: list[tuple[bytes | None, bytes | None, int]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                got.extend((r.key, r.value, r.timestamp) for r in records)
        return got
    finally:
        await consumer.stop()


async def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def _per_second(stamps: list[int]) -> float:
    return len(stamps) / ((max(stamps) - min(stamps)) / 1000)


async def results_run(bootstrap: str, source: str, total: int) -> tuple[float, float, int, float]:
    """(events/s, final outcomes/s, results, CPU ms per 1,000 events) of one results-on
    service run."""
    topics = Topics.fresh()
    await create_topics(bootstrap, topics, partitions=PARTITIONS)
    await seed(bootstrap, topics)
    topics.input = source
    group = f"bench-{topics.output}"
    port = free_port()
    process = start_service(
        service_env(topics, bootstrap, port, FALLBACK_GROUP_ID=group, **RESULTS_ON), LOG
    )
    try:
        cpu = (await drained(bootstrap, group, source, total, [process], 600)).cpu_ms_per_1000
        outcomes = await _read_from(bootstrap, topics.events, {})
        events_per_s = _per_second([t for _, _, t in outcomes])
        requested = [k for k, v, _ in outcomes if v and b'"REQUESTED"' in v]
        before = await _ends(bootstrap, topics.events)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        results = [
            (
                key,
                orjson.dumps(
                    {
                        "fallbackId": (key or b"").decode(),
                        "status": "DELIVERED" if i % 2 else "UNDELIVERED",
                        "resultCode": "1000" if i % 2 else "3006",
                        "provider": "bench",
                        "reportedAt": now,
                    }
                ),
            )
            for i, key in enumerate(requested)
            if key is not None
        ]
        await preload(bootstrap, topics.results, results)
        await drained(bootstrap, group, topics.results, len(results), [process], 600)
        finals = await _read_from(bootstrap, topics.events, before)
        assert len(finals) == len(results), (len(finals), len(results))
        return events_per_s, _per_second([t for _, _, t in finals]), len(results), cpu
    finally:
        await stop(process)


async def awaited_state(bootstrap: str) -> str:
    """Write AWAITED awaiting markers, restore them in one replica: memory and time."""
    topic = "bench.awaited"
    async with admin_client(load_settings(kafka_bootstrap_servers=bootstrap).kafka()) as admin:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    requested_at = datetime.now(UTC)
    stamp = requested_at.isoformat(timespec="milliseconds")

    def awaiting_marker(i: int) -> tuple[str, int, bytes]:
        fid = f"20261202-{i:09d}:1"
        owner = owner_partition(fid, PARTITIONS)
        awaits = Awaited(
            fallback_id=fid,
            sender_key=f"sk-{i % 40}",
            kind=MessageKind.LMS if i % 3 == 0 else MessageKind.SMS,
            failed_at_ms=int(requested_at.timestamp() * 1000),
            deadline_s=int(requested_at.timestamp()) + 25 * 3600,
        )
        value = PartitionedDedupe.marker(fid, stamp, ("bench.in", owner, i), [OUTCOME], awaits)
        return fid, owner, value

    await write_markers(bootstrap, topic, AWAITED, awaiting_marker)

    async def restore(results: Results | None) -> tuple[float, float, PartitionedDedupe]:
        dedupe = PartitionedDedupe(
            topic, {"bootstrap_servers": bootstrap}, retention_seconds=7 * 86400, results=results
        )
        dedupe.start(PARTITIONS)
        before = rss_mb()
        began = time.monotonic()
        await dedupe.restore(
            range(PARTITIONS), {TopicPartition("bench.in", p): AWAITED for p in range(PARTITIONS)}
        )
        return time.monotonic() - began, rss_mb() - before, dedupe

    class Nothing:
        def feed(self, partition: int, records: Any) -> None:
            pass

    began = time.monotonic()
    await read_changelog(
        {"bootstrap_servers": bootstrap}, topic, list(range(PARTITIONS)), lambda ends: Nothing()
    )
    reading_s = time.monotonic() - began
    # The dedupe state alone first (kept, so the second restore's memory is new memory), then
    # with the awaited set: the difference is the awaited set's cost.
    plain_s, plain_mb, _plain = await restore(None)
    results = Results(Deadlines(), 10 * 60 * 1000)
    with_s, with_mb, _kept = await restore(results)
    held = len(results)
    return (
        f"{held:,} awaited fallbacks restored in {with_s:.1f} s (dedupe state alone "
        f"{plain_s:.1f} s, reading the records alone {reading_s:.1f} s); awaited arrays "
        f"{results.nbytes / held:.1f} bytes/fallback "
        f"({results.nbytes / 1e6:.1f} MB); process grew {with_mb:.0f} MB with results, "
        f"{plain_mb:.0f} MB without ({(with_mb - plain_mb) * 1e6 / held:.0f} bytes/awaited "
        f"fallback beyond the dedupe digests)"
    )


async def main(runs: int, state_only: bool) -> None:
    async def measure(name: str, bootstrap: str) -> None:
        if state_only:
            print(f"{name}: {await awaited_state(bootstrap)}")
            return
        source = "bench.results.in"
        async with admin_client(load_settings(kafka_bootstrap_servers=bootstrap).kafka()) as a:
            await a.create_topics([NewTopic(source, PARTITIONS, 1)])
        await preload(bootstrap, source, workload.events(EVENTS))
        rows: list[dict[str, Any]] = []
        for run in range(runs):
            # Each pair in the other order than the last: the second of a pair is not
            # always the same one.
            if run % 2:
                on, finals, count, cpu_on = await results_run(bootstrap, source, EVENTS)
                plain = await throughput(bootstrap, source, EVENTS, mode={})
            else:
                plain = await throughput(bootstrap, source, EVENTS, mode={})
                on, finals, count, cpu_on = await results_run(bootstrap, source, EVENTS)
            off, cpu_off = plain.per_second, plain.cpu_ms_per_1000
            rows.append({"off": off, "on": on, "finals": finals, "ratio": on / off})
            print(
                f"run {run + 1}: events/s results off {off:,.0f}, on {on:,.0f} "
                f"(= {on / off:.2f}x; CPU {cpu_off:.0f} and {cpu_on:.0f} ms per 1,000 "
                f"events); {count:,} results -> final outcomes {finals:,.0f}/s "
                f"(= {finals / on:.2f}x the same run's events/s)",
                flush=True,
            )
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"{name}, medians of {runs}: events/s off {med['off']:,.0f}, on "
            f"{med['on']:,.0f} (on/off {med['ratio']:.2f}x); results -> final outcomes "
            f"{med['finals']:,.0f}/s"
        )
        print(f"{name}: {await awaited_state(bootstrap)}")

    await on_apache_kafka(measure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--state-only", action="store_true", help="only the awaited set")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.state_only))
