"""Broker faults on Apache Kafka, which keeps its log on disk (§9): killed, or stopped for 30 s.

Each test has a broker of its own, kills or stops it mid-stream, starts it again on the same log
directory and ports, and checks that the running service recovered by itself with nothing lost
(and, in exactly-once mode, nothing repeated in the read_committed view).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.dev.apache_kafka import ApacheKafka
from tests.conftest import KAFKA_OVERRIDES, start_kafka
from tests.kafka_helpers import Topics, backlog, read_to_end
from tests.processes import service_process, wait_ready
from tests.test_exactly_once import duplicates, progress, wait_progress
from tests.waiting import eventually_value

pytestmark = pytest.mark.broker

COUNT = 6000


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[ApacheKafka]:
    broker = start_kafka(tmp_path / "kafka")
    yield broker
    broker.stop()


# Each mode meets one fault (the time budget of `make test`): the default mode a killed broker,
# exactly-once a broker stopped for 30 s. Both modes share the consumer's reconnection; the
# writers differ, and each is proven losing nothing (and exactly-once repeating nothing).
@pytest.mark.parametrize(
    ("fault", "guarantee"), [("killed", "at-least-once"), ("stopped-30s", "exactly-once")]
)
async def test_service_recovers_from_a_broker_fault(
    own_kafka: ApacheKafka, tmp_path: Path, fault: str, guarantee: str
) -> None:
    bootstrap = own_kafka.bootstrap
    topics, port, env = await backlog(
        bootstrap, KAFKA_OVERRIDES, COUNT, guarantee, FALLBACK_BATCH_MAX_RECORDS="200"
    )
    group = env["FALLBACK_GROUP_ID"]
    log = tmp_path / "service.log"
    with service_process(env, output=log) as p:
        await asyncio.to_thread(wait_ready, port, p, 60)
        await wait_progress(bootstrap, group, topics.input, COUNT // 4, 60)
        if fault == "killed":
            await asyncio.to_thread(own_kafka.kill)
            await asyncio.sleep(2)
        else:
            await asyncio.to_thread(own_kafka.stop)
            await asyncio.sleep(30)
        began = time.monotonic()
        await asyncio.to_thread(own_kafka.start)
        done = await wait_progress(bootstrap, group, topics.input, COUNT, 180)
        recovered_in = time.monotonic() - began
        assert p.poll() is None, log.read_text()[-3000:]  # it never gave up
        assert done == COUNT, log.read_text()[-3000:]
        p.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(p.wait, 15) == 0
    requests = await read_to_end(bootstrap, topics.output)
    outcomes = await read_to_end(bootstrap, topics.events)
    print(
        f"\n{guarantee}, broker {fault}: done {recovered_in:.1f}s after the broker was back; "
        f"{len(requests)} requests ({duplicates([r.key for r in requests])} duplicates), "
        f"{len(outcomes)} outcomes ({duplicates([r.key for r in outcomes])} duplicates)"
    )
    every = {f"R{i}:1".encode() for i in range(COUNT)}
    assert {r.key for r in outcomes} == every
    assert {r.key for r in requests} == every
    if guarantee == "exactly-once":
        assert len(requests) == len(outcomes) == COUNT
    assert await progress(bootstrap, group, topics.input) == COUNT


@dataclass
class Draining:
    """A service process a quarter of the way through a backlog, on its own broker."""

    process: subprocess.Popen[bytes]
    topics: Topics
    port: int
    group: str
    env: dict[str, str]
    log: Path


@contextlib.asynccontextmanager
async def draining(own_kafka: ApacheKafka, tmp_path: Path) -> AsyncIterator[Draining]:
    topics, port, env = await backlog(
        own_kafka.bootstrap,
        KAFKA_OVERRIDES,
        COUNT,
        "at-least-once",
        FALLBACK_BATCH_MAX_RECORDS="200",
    )
    group = env["FALLBACK_GROUP_ID"]
    log = tmp_path / "service.log"
    with service_process(env, output=log) as p:
        await asyncio.to_thread(wait_ready, port, p, 60)
        await wait_progress(own_kafka.bootstrap, group, topics.input, COUNT // 4, 60)
        yield Draining(p, topics, port, group, env, log)


def _ready(port: int) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


async def _until_ready_is(port: int, status: int, within: float) -> float:
    """Seconds until /readyz answers `status`."""
    began = time.monotonic()
    await eventually_value(
        lambda: asyncio.to_thread(_ready, port),
        lambda found: found == status,
        within,
        f"/readyz answering {status}",
        every=0.5,
    )
    return time.monotonic() - began


async def test_readiness_through_a_20s_freeze_then_sigterm_while_frozen(
    own_kafka: ApacheKafka, tmp_path: Path
) -> None:
    """/readyz says 503 while the broker is frozen and 200 after. Then, frozen again, SIGTERM
    exits 0 within 10 s; what could not be committed is read again after a restart, and
    nothing is lost. (One broker for both: the suite's time budget.)"""
    bootstrap = own_kafka.bootstrap
    async with draining(own_kafka, tmp_path) as run:
        p, topics, port, group, env, log = (
            run.process,
            run.topics,
            run.port,
            run.group,
            run.env,
            run.log,
        )
        own_kafka.freeze()
        try:
            noticed = await _until_ready_is(port, 503, 15)
            async with httpx.AsyncClient() as client:
                body = (await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)).text
            await asyncio.sleep(20 - noticed)
            assert await asyncio.to_thread(_ready, port) == 503
        finally:
            own_kafka.thaw()
        back = await _until_ready_is(port, 200, 60)
        print(f"\nfrozen 20 s: 503 after {noticed:.1f}s ({body.strip()}), 200 {back:.1f}s after")
        assert "broker unreachable" in body
        assert p.poll() is None
        await wait_progress(bootstrap, group, topics.input, COUNT // 2, 60)
        own_kafka.freeze()
        try:
            await asyncio.sleep(1)
            p.send_signal(signal.SIGTERM)
            began = time.monotonic()
            code = await asyncio.to_thread(p.wait, 20)
            stopped_in = time.monotonic() - began
        finally:
            own_kafka.thaw()
    print(f"SIGTERM with the broker frozen: exit {code} in {stopped_in:.1f}s")
    assert code == 0, log.read_text()[-3000:]
    assert stopped_in < 10
    with service_process(env, output=log) as again:
        await asyncio.to_thread(wait_ready, port, again, 60)
        assert await wait_progress(bootstrap, group, topics.input, COUNT, 120) == COUNT
        again.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(again.wait, 15) == 0
    outcomes = await read_to_end(bootstrap, topics.events)
    assert {r.key for r in outcomes} == {f"R{i}:1".encode() for i in range(COUNT)}


async def test_broker_absent_at_start_up(own_kafka: ApacheKafka, tmp_path: Path) -> None:
    """Not ready while the broker is away, retrying; working once it appears."""
    bootstrap = own_kafka.bootstrap
    topics, port, env = await backlog(bootstrap, KAFKA_OVERRIDES, 500, "at-least-once")
    group = env["FALLBACK_GROUP_ID"]
    await asyncio.to_thread(own_kafka.stop)
    with service_process(env, output=tmp_path / "service.log") as p:
        await asyncio.sleep(5)
        assert p.poll() is None  # it waits, it does not give up
        assert await asyncio.to_thread(_ready, port) == 503
        await asyncio.to_thread(own_kafka.start)
        await _until_ready_is(port, 200, 90)
        assert await wait_progress(bootstrap, group, topics.input, 500, 60) == 500
