"""A killed replica started again, with 1,000,000 fallbacks remembered: seconds until it is ready.

On Apache Kafka (the broker users run; static membership is judged there), 1,000,000 dedupe
markers as the service writes them (`dedupe_bench.requested_marker`) go into the changelog of a
6-partition input. `fallback-service run` as users start it (default session timeout, 10 s)
starts, becomes ready, is killed with SIGKILL and is started again at once; from that second
start to `/readyz` answering 200 is what is measured, three kills per way of joining:

- dynamic membership (FALLBACK_KAFKA_GROUP_INSTANCE_ID unset): the new member's join waits for
  the killed one's session to expire;
- static membership (KIP-345, the variable set to the same name again): no wait.

The service's own log says how much of it the restore of the dedupe state took.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dedupe_bench
from harness import service_env, start_service, wait_ready

from service.dev.apache_kafka import on_apache_kafka
from service.dev.broker import free_port
from tests.kafka_helpers import Topics, create_topics

PARTITIONS = 6
LOG = Path(tempfile.gettempdir()) / "restart_bench.log"
_RESTORED = re.compile(rb"restored (\d+) requested fallbacks of partitions .* in ([0-9.]+)s")


def _restores(log: Path, since: int) -> list[tuple[int, float]]:
    """(fallbacks, seconds) of every restore the service logged past byte `since`."""
    return [(int(n), float(s)) for n, s in _RESTORED.findall(log.read_bytes()[since:])]


async def kill_and_restart(
    bootstrap: str, topics: Topics, dedupe_topic: str, instance: str | None, kills: int
) -> list[tuple[float, float]]:
    """(seconds to ready, seconds of it restoring) after each of `kills` kills."""
    port = free_port()
    extra = {
        "FALLBACK_DEDUPE_TOPIC": dedupe_topic,
        # As users start it: the default session, not the benchmarks' usual 2 s.
        "FALLBACK_KAFKA_SESSION_TIMEOUT_MS": "10000",
        "FALLBACK_KAFKA_HEARTBEAT_INTERVAL_MS": "3000",
    }
    if instance is not None:
        extra["FALLBACK_KAFKA_GROUP_INSTANCE_ID"] = instance
    env = service_env(topics, bootstrap, port, **extra)
    process = start_service(env, LOG)
    await wait_ready(port, within=120)
    took: list[tuple[float, float]] = []
    try:
        for _ in range(kills):
            process.kill()
            await asyncio.to_thread(process.wait)
            since = LOG.stat().st_size
            began = time.monotonic()
            process = start_service(env, LOG)
            await wait_ready(port, within=120)
            ready = time.monotonic() - began
            restored = _restores(LOG, since)
            took.append((ready, sum(s for _, s in restored)))
            await asyncio.sleep(1)
    finally:
        process.kill()
        await asyncio.to_thread(process.wait)
    return took


async def measure(name: str, bootstrap: str, kills: int, count: int) -> None:
    shared = Topics.fresh()
    await create_topics(bootstrap, shared, partitions=PARTITIONS)
    dedupe_topic = shared.settings(bootstrap).dedupe_topic_name
    wrote = await dedupe_bench.write_markers(bootstrap, dedupe_topic, count)
    print(f"{name}: {count:,} markers written in {wrote:.0f}s", flush=True)
    lines = []
    for way, instance in (("dynamic membership", None), ("static membership", "replica-0")):
        topics = Topics.fresh()
        await create_topics(bootstrap, topics, partitions=PARTITIONS)
        took = await kill_and_restart(bootstrap, topics, dedupe_topic, instance, kills)
        ready = [t for t, _ in took]
        restoring = [r for _, r in took]
        lines.append(
            f"{way}: ready {statistics.median(ready):.1f}s after the restart "
            f"(runs {', '.join(f'{t:.1f}' for t in ready)}), of which restoring "
            f"{statistics.median(restoring):.1f}s"
        )
        print(f"{name}: {lines[-1]}", flush=True)
    print(f"{name}: {count:,} remembered | " + " | ".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--count", type=int, default=dedupe_bench.COUNT)
    args = parser.parse_args()
    LOG.write_bytes(b"")
    asyncio.run(on_apache_kafka(lambda name, bs: measure(name, bs, args.kills, args.count)))


if __name__ == "__main__":
    main()
