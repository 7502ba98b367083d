"""What the benchmarks share: the service started as users start it, its memory, fast preloading."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.kafka.options import keyed_partition
from tests.kafka_helpers import Topics

BIN = Path(sys.executable).parent


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of process `pid` (this one when None), in MB."""
    return _status_mb(pid, "VmRSS:")


def peak_rss_mb(pid: int) -> float:
    """The most memory process `pid` has held resident so far, in MB."""
    return _status_mb(pid, "VmHWM:")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int | None, field: str) -> float:
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def service_env(topics: Topics, bootstrap: str, port: int, **extra: str) -> dict[str, str]:
    """What the benchmarks set for `fallback-service run`: the topics, the group and the HTTP
    port; no advertising quiet hours (every run converts the same mix, whatever the hour); the
    test suite's 2 s group session (Tansu forms a group in about half of it). The rest, batch
    size and wait included, is the default."""
    env = topics.env(bootstrap, FALLBACK_HTTP_PORT=str(port), **extra)
    env.pop("FALLBACK_BATCH_TIMEOUT_MS")
    return env


def start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`fallback-service run` with `env` (and none of this shell's FALLBACK_ variables)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACK_")} | env
    return subprocess.Popen(
        [str(BIN / "fallback-service"), "run"],
        env=full,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def stop(process: subprocess.Popen[bytes], within: float = 15) -> None:
    """SIGTERM, and wait for the exit (killed after `within` seconds)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, within)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait)


async def wait_ready(port: int, within: float = 60) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(int(within * 10)):
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the service did not get ready")


async def preload(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce keyed records fast (record batches per partition, partitioned as the default
    partitioner does); returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=60_000)
    await producer.start()
    count = 0
    try:
        partitions = sorted(await producer.partitions_for(topic))
        batches: dict[int, Any] = {}
        futures: list[asyncio.Future[Any]] = []
        for key, value in records:
            p = partitions[keyed_partition(key, len(partitions))]
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            count += 1
            if len(futures) >= 64:
                await asyncio.gather(*futures)
                futures.clear()
        for p, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count
