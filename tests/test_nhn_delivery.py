"""The service with `FALLBACK_SINK=nhn` on a real broker (Tansu) and the local NHN-compatible
server: SENT per event, the breaker pausing the input through an outage, a restart during an
outage, and a kill while sending (what a crash between the answer and the marker repeats)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.dev.broker import free_port
from service.dev.nhn_server import NhnServer
from service.runtime.service import FallbackService
from tests.kafka_helpers import (
    Broker,
    Topics,
    committed,
    fill,
    prepare,
    read,
    read_to_end,
    running,
    values,
)
from tests.processes import service_process, wait_ready
from tests.waiting import eventually, eventually_value

pytestmark = pytest.mark.broker

NHN = {
    "sink": "nhn",
    "nhn_app_key": "APP",
    "nhn_secret_key": "SECRET",
    "nhn_backoff_base_ms": 20,
    "nhn_breaker_max_seconds": 1.0,
}


@pytest.fixture
def topics(tansu: Broker) -> Topics:
    return Topics.fresh(tansu.overrides)


def nhn_env(
    topics: Topics, bootstrap: str, nhn_server: NhnServer, port: int, **extra: str
) -> dict[str, str]:
    """The environment of `fallback-service run` delivering to `nhn_server`."""
    nhn = {f"FALLBACK_{k.upper()}": str(v) for k, v in NHN.items()}
    return topics.env(
        bootstrap,
        FALLBACK_HTTP_PORT=str(port),
        FALLBACK_NHN_BASE_URL=nhn_server.url,
        **nhn,
        **extra,
    )


async def settled(
    bootstrap: str, topic: str, count: int, within: float = 30
) -> list[dict[str, Any]]:
    outcomes = values(await read(bootstrap, topic, count, within=within))
    return [o for o in outcomes if o["status"] in {"SENT", "FAILED"}]


def metric(service: FallbackService, name: str) -> float:
    """A metric's value through the registry's public API (0 when unset)."""
    return service.metrics.registry.get_sample_value(name) or 0.0


async def test_each_event_is_sent_once_and_settles_sent(
    tansu: Broker, topics: Topics, nhn_server: NhnServer
) -> None:
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    settings = topics.settings(bootstrap, nhn_base_url=nhn_server.url, **NHN)
    async with running(settings):
        await fill(bootstrap, topics.input, 30)
        outcomes = values(await read(bootstrap, topics.events, 60))
    sent = [o for o in outcomes if o["status"] == "SENT"]
    assert len(sent) == 30 and len({o["fallbackId"] for o in sent}) == 30
    assert all(o["provider"]["name"] == "nhn" and o["provider"]["resultCode"] == 0 for o in sent)
    assert sum(1 for o in outcomes if o["status"] == "REQUESTED") == 30
    assert set(nhn_server.accepted.values()) == {1} and len(nhn_server.received) == 30
    # Nothing is published to the output topic: the sink delivered itself.
    assert await read_to_end(bootstrap, topics.output) == []


async def test_an_outage_pauses_the_input_and_everything_is_delivered_after(
    tansu: Broker, topics: Topics, nhn_server: NhnServer
) -> None:
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=1)
    settings = topics.settings(bootstrap, nhn_base_url=nhn_server.url, **NHN)
    group = settings.group_id
    async with running(settings) as service:
        nhn_server.control({"fault": "http", "status": 503, "times": -1})
        await fill(bootstrap, topics.input, 40)
        await eventually(
            lambda: "nhn unavailable" in (service.readiness() or ""),
            20,
            lambda: f"readiness {service.readiness()}",
        )
        assert (
            service.metrics.registry.get_sample_value(
                "fallback_provider_unavailable", {"provider": "nhn"}
            )
            == 1
        )
        # The breaker opens during a batch's deliveries; the batch then commits what settled
        # (nothing: offset 0) and is held. From then on the committed offset must stay.
        await eventually(lambda: metric(service, "fallback_sink_held_total") > 0, 20, "a hold")
        # While open: no event is taken (the committed offset stays), only probes reach the API.
        before = len(nhn_server.received)
        offset = (await committed(bootstrap, group, topics.input))[0]
        await asyncio.sleep(2.5)  # a window in which nothing may happen: watched, not awaited
        probes = len(nhn_server.received) - before
        assert probes <= 4, probes  # a probe after 1 s, then after 1 s again (the cap)
        assert (await committed(bootstrap, group, topics.input))[0] == offset
        assert service.readiness() is not None
        # The API comes back: everything is delivered, once.
        nhn_server.control({"clear": True})
        outcomes = await settled(bootstrap, topics.events, 80)
        assert service.readiness() is None
    assert len(outcomes) == 40 and {o["status"] for o in outcomes} == {"SENT"}
    bodies = nhn_server.accepted
    assert len(bodies) == 40 and set(bodies.values()) == {1}
    assert (await committed(bootstrap, group, topics.input))[0] == 40


async def test_a_restart_during_an_outage_loses_nothing_and_repeats_nothing(
    tansu: Broker, topics: Topics, nhn_server: NhnServer
) -> None:
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    port = free_port()
    env = nhn_env(topics, bootstrap, nhn_server, port)
    with service_process(env) as first:
        await asyncio.to_thread(wait_ready, port, first)
        await fill(bootstrap, topics.input, 20, prefix="A")
        assert len(await settled(bootstrap, topics.events, 40)) == 20
        nhn_server.control({"fault": "http", "status": 503, "times": -1})
        await fill(bootstrap, topics.input, 20, prefix="B", first=20)
        readyz = f"http://127.0.0.1:{port}/readyz"
        await eventually_value(
            lambda: asyncio.to_thread(httpx.get, readyz),
            lambda answer: answer.status_code == 503,
            20,
            "/readyz 503",
        )
        assert "nhn unavailable" in (await asyncio.to_thread(httpx.get, readyz)).text
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
    nhn_server.control({"clear": True})
    with service_process(env) as second:
        await asyncio.to_thread(wait_ready, port, second)
        outcomes = await settled(bootstrap, topics.events, 80)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 15) == 0
    sent = Counter(o["fallbackId"] for o in outcomes if o["status"] == "SENT")
    assert len(sent) == 40 and set(sent.values()) == {1}
    bodies = nhn_server.accepted
    assert len(bodies) == 40 and set(bodies.values()) == {1}


async def test_a_kill_while_sending_repeats_at_most_the_batch_in_flight(
    tansu: Broker, topics: Topics, nhn_server: NhnServer, tmp_path: Path
) -> None:
    """What a crash between the API's answer and the marker repeats (§10): the requests of the
    batch in flight that were answered but not yet recorded. Nothing more, nothing lost."""
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    port = free_port()
    batch = 100
    env = nhn_env(
        topics,
        bootstrap,
        nhn_server,
        port,
        FALLBACK_BATCH_MAX_RECORDS=str(batch),
        FALLBACK_LOG_OUTCOMES="false",
    )
    total = 1200
    # Slow answers, so that the kill lands while requests are being answered.
    nhn_server.control({"fault": "slow", "delay": 0.005, "times": -1})
    await fill(bootstrap, topics.input, total)
    log = tmp_path / "service.log"
    with service_process(env, output=log) as first:
        await asyncio.to_thread(wait_ready, port, first)
        await eventually(
            lambda: len(nhn_server.received) >= total // 3,
            60,
            lambda: log.read_text()[-3000:],
            every=0.02,
        )
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
    nhn_server.control({"clear": True})
    log2 = tmp_path / "second.log"
    with service_process(env, output=log2) as second:
        await asyncio.to_thread(wait_ready, port, second)
        await eventually(
            lambda: len(nhn_server.accepted) >= total, 60, lambda: log2.read_text()[-3000:]
        )
        # The outcomes follow the API's answers by a batch's writes.
        outcomes = values(
            await eventually_value(
                lambda: read_to_end(bootstrap, topics.events),
                lambda records: len({o["fallbackId"] for o in values(records)}) == total,
                30,
                "an outcome for every event",
            )
        )
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 15) == 0, log2.read_text()[-3000:]
    bodies = nhn_server.accepted
    repeated = sum(n - 1 for n in bodies.values())
    print(f"\nkill while sending: {total} events, {repeated} sent twice (batch {batch})")
    assert len(bodies) == total  # nothing lost
    assert max(bodies.values()) <= 2
    # Each input partition has one batch in flight.
    assert repeated <= 2 * batch
    # Every event has its REQUESTED and SENT outcomes, even one whose batch was killed between
    # its markers and its outcomes: the markers carry them (docs/reliability.md). None is a
    # `duplicate` of itself; a repeated outcome is the same bytes.
    sent = {o["fallbackId"] for o in outcomes if o["status"] == "SENT"}
    requested = {o["fallbackId"] for o in outcomes if o["status"] == "REQUESTED"}
    assert len(sent) == len(requested) == total
    assert {o["status"] for o in outcomes} == {"REQUESTED", "SENT"}
    raw = Counter(r.value for r in await read_to_end(bootstrap, topics.events))
    by_event = Counter((o["fallbackId"], o["status"]) for o in outcomes)
    assert len(raw) == len(by_event)  # repeats are byte for byte the same


async def test_nhn_with_exactly_once_is_refused_naming_both_variables(
    tansu: Broker, topics: Topics
) -> None:
    env = topics.env(
        tansu.bootstrap,
        FALLBACK_SINK="nhn",
        FALLBACK_PROCESSING_GUARANTEE="exactly-once",
        FALLBACK_NHN_APP_KEY="APP",
        FALLBACK_NHN_SECRET_KEY="SECRET",
    )
    with service_process(env) as process:
        code = await asyncio.to_thread(process.wait, 30)
        said = process.stdout.read().decode() if process.stdout else ""
    assert code == 2
    assert "FALLBACK_SINK" in said and "FALLBACK_PROCESSING_GUARANTEE" in said
    assert "SECRET" not in said
    _ = sys  # the process runs the installed console script
