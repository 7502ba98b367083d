"""Exactly-once (§9) on Apache Kafka: kills, membership changes, re-publishing, refusal on Tansu.

Counts are taken the way a downstream consumer sees them: `read_committed`. The kill test also
runs in at-least-once mode and reports both views, to show what each mode promises.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.dev.broker import free_port
from tests.factories import event_dict
from tests.kafka_helpers import (
    Broker,
    Topics,
    backlog,
    committed,
    create_topics,
    fill,
    prepare,
    put,
    read,
    read_to_end,
    running,
    values,
)
from tests.processes import service_process, wait_ready
from tests.waiting import eventually_value

pytestmark = pytest.mark.broker

EXACTLY_ONCE = {"processing_guarantee": "exactly-once"}


async def progress(bootstrap: str, group: str, topic: str) -> int:
    """Input records committed by the group so far."""
    return sum(v or 0 for v in (await committed(bootstrap, group, topic)).values())


async def wait_progress(
    bootstrap: str, group: str, topic: str, at_least: int, within: float
) -> int:
    """The group's progress once it reaches `at_least`, or where it stands after `within`."""
    try:
        return await eventually_value(
            lambda: progress(bootstrap, group, topic), lambda done: done >= at_least, within
        )
    except AssertionError:
        return await progress(bootstrap, group, topic)


def duplicates(keys: list[bytes | None]) -> int:
    """How many records repeat a key already seen."""
    return sum(n - 1 for n in Counter(keys).values())


async def views(bootstrap: str, topics: Topics) -> dict[str, Any]:
    """Requests and outcomes per fallback, as a read_committed and a read_uncommitted reader
    see them."""
    seen: dict[str, Any] = {}
    for level in ("read_committed", "read_uncommitted"):
        requests = await read_to_end(bootstrap, topics.output, isolation_level=level)
        outcomes = await read_to_end(bootstrap, topics.events, isolation_level=level)
        seen[level] = {
            "requests": len(requests),
            "outcomes": len(outcomes),
            "duplicate_requests": duplicates([r.key for r in requests]),
            "duplicate_outcomes": duplicates([r.key for r in outcomes]),
            "request_keys": {r.key for r in requests},
            "outcome_keys": {r.key for r in outcomes},
        }
    return seen


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
async def test_three_kills_while_draining(kafka: Broker, tmp_path: Path, guarantee: str) -> None:
    count, kills = 20_000, 3
    bootstrap = kafka.bootstrap
    topics, port, env = await backlog(bootstrap, kafka.overrides, count, guarantee)
    group = env["FALLBACK_GROUP_ID"]
    log = tmp_path / "service.log"
    killed_at = []
    for run in range(kills + 1):
        with service_process(env, output=log) as p:
            await asyncio.to_thread(wait_ready, port, p, 60)
            if run < kills:
                # Let it commit a few thousand more, then kill it in the middle of a batch.
                base = await progress(bootstrap, group, topics.input)
                killed_at.append(
                    await wait_progress(bootstrap, group, topics.input, base + 4000, 60)
                )
                p.send_signal(signal.SIGKILL)
                await asyncio.to_thread(p.wait, 10)
            else:
                done = await wait_progress(bootstrap, group, topics.input, count, 180)
                assert done == count, log.read_text()[-3000:]
                p.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(p.wait, 15) == 0
    assert len(killed_at) == kills and killed_at == sorted(killed_at) and killed_at[-1] < count

    seen = await views(bootstrap, topics)
    committed_view, raw_view = seen["read_committed"], seen["read_uncommitted"]
    print(
        f"\n{guarantee}: {count} events, {kills} kills at {killed_at}; "
        + "; ".join(
            f"{level}: {v['requests']} requests ({v['duplicate_requests']} duplicates), "
            f"{v['outcomes']} outcomes ({v['duplicate_outcomes']} duplicates)"
            for level, v in seen.items()
        )
    )
    every = {f"R{i}:1".encode() for i in range(count)}
    # Nothing lost in either mode: every event has its outcome and its request.
    assert committed_view["outcome_keys"] == every
    assert committed_view["request_keys"] == every
    if guarantee == "exactly-once":
        assert committed_view["requests"] == count
        assert committed_view["outcomes"] == count
        assert committed_view["duplicate_requests"] == 0
        assert committed_view["duplicate_outcomes"] == 0
    else:
        # At-least-once repeats only what a kill caught in flight: at most a batch per kill and
        # partition, never more.
        assert committed_view["duplicate_requests"] <= kills * 3 * 1000
    assert raw_view["outcomes"] >= committed_view["outcomes"]


async def test_members_joining_and_leaving(kafka: Broker) -> None:
    count = 12_000
    topics = Topics.fresh(kafka.overrides | EXACTLY_ONCE)
    bootstrap = kafka.bootstrap
    await prepare(bootstrap, topics, partitions=6)
    settings = topics.settings(bootstrap, log_outcomes=False, batch_max_records=200)
    group = settings.group_id
    async with running(settings) as a, running(settings):
        await fill(bootstrap, topics.input, count)
        await wait_progress(bootstrap, group, topics.input, count // 4, 60)
        async with running(settings):  # a third member joins mid-stream
            await wait_progress(bootstrap, group, topics.input, count // 2, 60)
            await a.stop()  # and the first one leaves
            done = await wait_progress(bootstrap, group, topics.input, count, 120)
    assert done == count
    seen = (await views(bootstrap, topics))["read_committed"]
    assert (seen["requests"], seen["duplicate_requests"]) == (count, 0)
    assert (seen["outcomes"], seen["duplicate_outcomes"]) == (count, 0)


async def test_republished_input_after_completion(kafka: Broker) -> None:
    topics = Topics.fresh(kafka.overrides | EXACTLY_ONCE)
    bootstrap = kafka.bootstrap
    await prepare(bootstrap, topics, partitions=3)
    settings = topics.settings(bootstrap)
    events = [event_dict(requestId=f"P{i}") for i in range(20)]
    async with running(settings):
        await put(bootstrap, topics.input, [(f"P{i}:1", e) for i, e in enumerate(events)])
        await read(bootstrap, topics.events, 20)
    async with running(settings):
        # The same events again, under other keys: most land on other partitions.
        await put(bootstrap, topics.input, [(f"again-{i}", e) for i, e in enumerate(events)])
        outcomes = values(await read(bootstrap, topics.events, 40))
    # Partitions interleave when read back: compare per fallback, not by position.
    per_fallback = Counter((o["fallbackId"], o["status"], o["reason"]) for o in outcomes)
    assert per_fallback == Counter(
        {(f"P{i}:1", "REQUESTED", None): 1 for i in range(20)}
        | {(f"P{i}:1", "SKIPPED", "duplicate"): 1 for i in range(20)}
    )
    requests = await read_to_end(bootstrap, topics.output)
    assert sorted(r.key for r in requests) == sorted(f"P{i}:1".encode() for i in range(20))


async def test_tansu_refuses_exactly_once_at_start_up(tansu: Broker) -> None:
    topics = Topics.fresh()
    await create_topics(tansu.bootstrap, topics)
    port = free_port()
    env = topics.env(
        tansu.bootstrap, FALLBACK_HTTP_PORT=str(port), FALLBACK_PROCESSING_GUARANTEE="exactly-once"
    )
    with service_process(env) as p:
        code = await asyncio.to_thread(p.wait, 60)
        output = p.stdout.read().decode() if p.stdout else ""
    assert code == 2, output
    assert "FALLBACK_PROCESSING_GUARANTEE" in output
    assert "Traceback" not in output
