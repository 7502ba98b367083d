"""Delivery results (§11) through the running service on real brokers: every kind of result,
results before their events, a results topic partitioned otherwise, EXPIRED after a kill and
after a rebalance, and one final outcome per fallback across kills in both modes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.core.models import FINAL_STATUSES
from service.dev.broker import free_port
from tests.factories import event_dict
from tests.kafka_helpers import (
    Broker,
    Topics,
    backlog,
    finals,
    prepare,
    put,
    read_to_end,
    running,
    values,
)
from tests.processes import service_process, wait_ready
from tests.waiting import eventually, eventually_value

pytestmark = pytest.mark.broker

FINAL = FINAL_STATUSES
RESULTS_ON = {"delivery_results": True, "result_sweep_seconds": 0.5}


def result(fid: str, status: str = "DELIVERED", code: str = "1000", **more: Any) -> dict[str, Any]:
    return {
        "fallbackId": fid,
        "status": status,
        "resultCode": code,
        "provider": "sms-service",
        "reportedAt": "2026-11-22T14:00:04.210+09:00",
        **more,
    }


async def wait_finals(bootstrap: str, topic: str, count: int, within: float = 30) -> Any:
    return await eventually_value(
        lambda: finals(bootstrap, topic), lambda f: len(f) >= count, within
    )


async def test_results_of_every_kind(broker: Broker, topics: Topics) -> None:
    bootstrap = broker.bootstrap
    await prepare(bootstrap, topics, partitions=3)
    # Written before its event: the SMS service can be that fast.
    await put(bootstrap, topics.results, [("R3:1", result("R3:1")), ("junk", b"{not json")])
    settings = topics.settings(bootstrap, **RESULTS_ON, result_deadline_sms="4s")
    async with running(settings) as service:
        events = [(f"R{i}:1", event_dict(requestId=f"R{i}")) for i in range(4)]
        await put(bootstrap, topics.input, events)

        async def requested() -> int:
            outcomes = values(await read_to_end(bootstrap, topics.events))
            return sum(o["status"] == "REQUESTED" for o in outcomes)

        await eventually_value(requested, lambda n: n == 4, 20)
        await put(
            bootstrap,
            topics.results,
            [
                ("R0:1", result("R0:1", telecom="SKT")),
                ("R1:1", result("R1:1", "UNDELIVERED", "3006", resultMessage="착신거절")),
                ("R9:1", result("R9:1")),  # never requested: kept for the early window
            ],
        )
        found = await wait_finals(bootstrap, topics.events, 4)  # R2 EXPIRED after 4 s
        await put(bootstrap, topics.results, [("R0:1", result("R0:1", "UNDELIVERED"))])
        registry = service.metrics.registry
        await eventually(
            lambda: (
                registry.get_sample_value("fallback_results_ignored_total", {"why": "later"}) == 1
            ),
            20,
            "the second result of R0:1 counted",
        )
        assert registry.get_sample_value("fallback_results_awaited") == 0
    found = await finals(bootstrap, topics.events)
    assert {fid: [o["status"] for o in f] for fid, f in found.items()} == {
        "R0:1": ["DELIVERED"],
        "R1:1": ["UNDELIVERED"],
        "R2:1": ["EXPIRED"],
        "R3:1": ["DELIVERED"],
    }
    delivered = found["R0:1"][0]
    assert delivered["delivery"]["telecom"] == "SKT" and delivered["delivery"]["latencyMs"] >= 0
    assert found["R1:1"][0]["reason"] == "undelivered"
    assert found["R1:1"][0]["delivery"]["resultCode"] == "3006"
    assert found["R2:1"][0]["reason"] == "no_result" and found["R2:1"][0]["delivery"] is None
    (dead,) = await read_to_end(bootstrap, topics.dlq)
    assert dict(dead.headers)["x-original-topic"] == topics.results.encode()
    assert dead.value == b"{not json"


async def test_results_on_a_topic_partitioned_otherwise(broker: Broker, topics: Topics) -> None:
    bootstrap = broker.bootstrap
    await prepare(bootstrap, topics, partitions=3)
    single = f"{topics.results}-one"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(single, 1, 1)])
    finally:
        await admin.close()
    settings = topics.settings(bootstrap, **RESULTS_ON, results_topic=single)
    async with running(settings) as service:
        await put(
            bootstrap,
            topics.input,
            [(f"R{i}:1", event_dict(requestId=f"R{i}")) for i in range(9)],
        )
        await eventually_value(
            lambda: read_to_end(bootstrap, topics.events), lambda r: len(r) == 9, 20
        )
        await put(bootstrap, single, [(f"R{i}:1", result(f"R{i}:1")) for i in range(9)])
        found = await wait_finals(bootstrap, topics.events, 9)
        # Every result came on partition 0; those owned by partitions 1 and 2 were forwarded.
        assert service.metrics.registry.get_sample_value("fallback_routed_total")
    assert all([o["status"] for o in f] == ["DELIVERED"] for f in found.values())


async def test_expired_after_a_kill_while_the_deadline_passed(
    broker: Broker, topics: Topics
) -> None:
    bootstrap = broker.bootstrap
    await prepare(bootstrap, topics, partitions=3)
    port = free_port()
    env = topics.env(
        bootstrap,
        FALLBACK_HTTP_PORT=str(port),
        FALLBACK_DELIVERY_RESULTS="on",
        FALLBACK_RESULT_DEADLINE_SMS="5s",
        FALLBACK_RESULT_SWEEP_SECONDS="0.5",
    )
    with service_process(env) as p:
        await asyncio.to_thread(wait_ready, port, p, 60)
        await put(
            bootstrap,
            topics.input,
            [(f"R{i}:1", event_dict(requestId=f"R{i}")) for i in range(30)],
        )
        await eventually_value(
            lambda: read_to_end(bootstrap, topics.events), lambda r: len(r) == 30, 20
        )
        await put(bootstrap, topics.results, [("R0:1", result("R0:1"))])
        await wait_finals(bootstrap, topics.events, 1)
        p.send_signal(signal.SIGKILL)
        await asyncio.to_thread(p.wait, 10)
    await asyncio.sleep(6)  # the deadline passes while no replica runs
    with service_process(env) as p:
        await asyncio.to_thread(wait_ready, port, p, 60)
        found = await wait_finals(bootstrap, topics.events, 30, within=40)
        p.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(p.wait, 15) == 0
    found = await finals(bootstrap, topics.events)
    assert [o["status"] for o in found.pop("R0:1")] == ["DELIVERED"]
    assert len(found) == 29 and all([o["status"] for o in f] == ["EXPIRED"] for f in found.values())


async def test_expired_after_a_rebalance(broker: Broker, topics: Topics) -> None:
    bootstrap = broker.bootstrap
    await prepare(bootstrap, topics, partitions=3)
    settings = topics.settings(bootstrap, **RESULTS_ON, result_deadline_sms="6s")
    async with running(settings) as first:
        await put(
            bootstrap,
            topics.input,
            [(f"R{i}:1", event_dict(requestId=f"R{i}")) for i in range(30)],
        )
        await eventually_value(
            lambda: read_to_end(bootstrap, topics.events), lambda r: len(r) == 30, 20
        )
        awaited = first.metrics.registry.get_sample_value("fallback_results_awaited")
        assert awaited == 30
        # A second replica joins: the partitions (and what their fallbacks await) are shared.
        async with running(settings) as second:
            await eventually(
                lambda: len(second.consumer.assignment()) > 0, 30, "the second replica assigned"
            )
            found = await wait_finals(bootstrap, topics.events, 30, within=40)
    found = await finals(bootstrap, topics.events)
    assert len(found) == 30 and all([o["status"] for o in f] == ["EXPIRED"] for f in found.values())


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
async def test_one_final_outcome_across_kills(
    kafka: Broker, tmp_path: Path, guarantee: str
) -> None:
    count, kills = 4000, 2
    bootstrap = kafka.bootstrap
    topics, port, env = await backlog(
        bootstrap,
        kafka.overrides,
        count,
        guarantee,
        FALLBACK_DELIVERY_RESULTS="on",
    )
    # A quarter of the results come before their events' requests are recorded.
    early = [(f"R{i}:1", result(f"R{i}:1")) for i in range(0, count, 4)]
    later = [(f"R{i}:1", result(f"R{i}:1", "UNDELIVERED")) for i in range(count) if i % 4]
    await put(bootstrap, topics.results, early)
    log = tmp_path / "service.log"
    for run in range(kills + 1):
        with service_process(env, output=log) as p:
            await asyncio.to_thread(wait_ready, port, p, 60)
            if run == 0:
                await put(bootstrap, topics.results, later[: len(later) // 2])
            elif run == 1:
                await put(bootstrap, topics.results, later[len(later) // 2 :])
            if run < kills:
                await asyncio.sleep(1.5)  # in the middle of the results
                p.send_signal(signal.SIGKILL)
                await asyncio.to_thread(p.wait, 10)
            else:

                async def final_count() -> int:
                    return len(await finals(bootstrap, topics.events))

                done = await eventually_value(final_count, lambda n: n == count, 120)
                assert done == count, log.read_text()[-3000:]
                p.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(p.wait, 15) == 0
    found = await finals(bootstrap, topics.events)
    assert len(found) == count
    for i in range(count):
        statuses = {o["status"] for o in found[f"R{i}:1"]}
        assert statuses == {"DELIVERED" if i % 4 == 0 else "UNDELIVERED"}, i
    repeated = sum(len(f) - 1 for f in found.values())
    print(f"\n{guarantee}: {count} fallbacks, {kills} kills: {repeated} repeated final outcomes")
    if guarantee == "exactly-once":
        assert repeated == 0
    else:
        # At-least-once repeats only the same outcome, written again by a batch a kill cut short.
        for f in found.values():
            assert len({orjson.dumps(o) for o in f}) == 1
