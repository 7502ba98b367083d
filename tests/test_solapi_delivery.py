"""The service with `FALLBACK_SINK=solapi` and `nhn,solapi` on a real broker (Tansu) and both
local servers: SENT by the provider that took each fallback, its final outcome from Solapi's
collector (poll and report webhook), failover through the running service, and a restart during
failover that loses nothing and sends nothing twice (§10, §11)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from service.dev.broker import free_port
from service.dev.nhn_server import NhnServer
from service.dev.solapi_server import SolapiServer
from tests.kafka_helpers import Broker, Topics, finals, prepare, put, read_to_end, running, values
from tests.processes import service_process, wait_ready
from tests.test_nhn_results import events
from tests.waiting import eventually_value

pytestmark = pytest.mark.broker

SOLAPI = {
    "solapi_api_key": "KEY",
    "solapi_api_secret": "SECRET",
    "solapi_backoff_base_ms": 20,
    "solapi_breaker_max_seconds": 1.0,
}
NHN = {
    "nhn_app_key": "APP",
    "nhn_secret_key": "SECRET",
    "nhn_backoff_base_ms": 20,
    "nhn_breaker_max_seconds": 1.0,
}
RESULTS = {
    "delivery_results": True,
    "solapi_results_poll_seconds": 0.3,
    "nhn_results_poll_seconds": 0.3,
    "solapi_webhook_secret": "SHARED",
    "result_sweep_seconds": 0.5,
}


@pytest.fixture
def topics(tansu: Broker) -> Topics:
    return Topics.fresh(tansu.overrides)


def outcomes_of(records: list[Any], status: str) -> list[dict[str, Any]]:
    return [o for o in values(records) if o["status"] == status]


async def test_the_whole_story_through_solapi(
    tansu: Broker, topics: Topics, solapi_server: SolapiServer
) -> None:
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    solapi_server.control({"results": {"delay": 0.3, "undelivered": ["01012340001"]}})
    settings = topics.settings(
        bootstrap, sink="solapi", solapi_base_url=solapi_server.url, **SOLAPI, **RESULTS
    )
    async with running(settings) as service:
        await put(bootstrap, topics.input, events(6))
        found = await eventually_value(
            lambda: finals(bootstrap, topics.events), lambda f: len(f) == 6, 40
        )
        registry = service.metrics.registry
        polled = registry.get_sample_value(
            "fallback_results_collected_total", {"provider": "solapi", "via": "poll"}
        )
    statuses = {fid: [o["status"] for o in f] for fid, f in found.items()}
    assert statuses == {f"R{i}:1": ["UNDELIVERED" if i == 1 else "DELIVERED"] for i in range(6)}
    assert polled == 6
    records = await read_to_end(bootstrap, topics.events)
    sent = outcomes_of(records, "SENT")
    assert len(sent) == 6 and {o["provider"]["name"] for o in sent} == {"solapi"}
    by_message = {m["customFields"]["fallbackId"]: mid for mid, m in solapi_server.messages.items()}
    assert all(o["provider"]["requestId"] == by_message[o["fallbackId"]] for o in sent)
    delivered = found["R0:1"][0]["delivery"]
    assert (delivered["provider"], delivered["resultCode"]) == ("solapi", "4000")
    assert found["R1:1"][0]["delivery"]["resultCode"] == "3060"
    assert set(solapi_server.accepted.values()) == {1} and len(solapi_server.accepted) == 6
    # The sink delivered itself: nothing on the output topic.
    assert await read_to_end(bootstrap, topics.output) == []


async def test_the_report_webhook_checks_its_secret_and_answers_once_written(
    tansu: Broker, topics: Topics, solapi_server: SolapiServer
) -> None:
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=1)
    # Results far in the future: the webhook posted here is the only one.
    solapi_server.control({"results": {"delay": 3600}})
    settings = topics.settings(
        bootstrap, sink="solapi", solapi_base_url=solapi_server.url, **SOLAPI, **RESULTS
    )
    async with running(settings) as service:
        await put(bootstrap, topics.input, events(1))
        await eventually_value(
            lambda: read_to_end(bootstrap, topics.events),
            lambda r: len(outcomes_of(r, "SENT")) == 1,
            30,
        )
        [message_id] = list(solapi_server.messages)
        report = [
            {
                "data": {
                    "messageId": message_id,
                    "statusCode": "4000",
                    "customFields": {"fallbackId": "R0:1"},
                    "dateReported": "2026-12-02T09:00:04.000Z",
                }
            }
        ]
        body = orjson.dumps(report)
        transport = httpx.ASGITransport(app=service.http_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            bare = await client.post("/webhooks/solapi", content=body)
            wrong = await client.post(
                "/webhooks/solapi", content=body, headers={"X-Solapi-Secret": "nope"}
            )
            assert (bare.status_code, wrong.status_code) == (401, 401)
            junk = await client.post(
                "/webhooks/solapi", content=b"{", headers={"X-Solapi-Secret": "SHARED"}
            )
            assert junk.status_code == 400
            good = await client.post(
                "/webhooks/solapi", content=body, headers={"X-Solapi-Secret": "SHARED"}
            )
            assert good.status_code == 200
        hooks = await read_to_end(bootstrap, settings.solapi_results_topic_name)
        assert sum(r.key == b"hook" for r in hooks) == 1
        found = await eventually_value(
            lambda: finals(bootstrap, topics.events), lambda f: len(f) == 1, 20
        )
    assert found["R0:1"][0]["status"] == "DELIVERED"
    assert found["R0:1"][0]["delivery"]["reportedAt"] == "2026-12-02T18:00:04.000+09:00"


async def test_a_failed_over_fallback_is_sent_by_solapi_and_ends_delivered(
    tansu: Broker, topics: Topics, nhn_server: NhnServer, solapi_server: SolapiServer
) -> None:
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    solapi_server.control({"results": {"delay": 0.3}})
    nhn_server.control({"results": {"delay": 0.3}})
    settings = topics.settings(
        bootstrap,
        sink="nhn,solapi",
        nhn_base_url=nhn_server.url,
        solapi_base_url=solapi_server.url,
        **NHN,
        **SOLAPI,
        **RESULTS,
    )
    async with running(settings) as service:
        await put(bootstrap, topics.input, events(5, prefix="A"))
        await eventually_value(lambda: finals(bootstrap, topics.events), lambda f: len(f) == 5, 40)
        await nhn_server.down(True)
        await put(bootstrap, topics.input, events(5, prefix="B"))
        found = await eventually_value(
            lambda: finals(bootstrap, topics.events), lambda f: len(f) == 10, 40
        )
        # One provider down is not an outage of the service.
        assert service.readiness() is None
        moved = service.metrics.registry.get_sample_value(
            "fallback_provider_failovers_total",
            {"from": "nhn", "to": "solapi", "reason": "unavailable"},
        )
    sent = {
        o["fallbackId"]: o for o in outcomes_of(await read_to_end(bootstrap, topics.events), "SENT")
    }
    assert {f: sent[f]["provider"]["name"] for f in sent} == {
        **{f"A{i}:1": "nhn" for i in range(5)},
        **{f"B{i}:1": "solapi" for i in range(5)},
    }
    assert {fid: f[0]["status"] for fid, f in found.items()} == dict.fromkeys(sent, "DELIVERED")
    assert {f[0]["delivery"]["provider"] for fid, f in found.items() if fid.startswith("B")} == {
        "solapi"
    }
    assert moved == 5
    taken = Counter(m["recipientGroupingKey"] for m in nhn_server.sent)
    taken.update(solapi_server.accepted)
    assert set(taken.values()) == {1} and len(taken) == 10


async def test_answers_lost_at_the_first_provider_stay_there_and_are_taken_once(
    tansu: Broker, topics: Topics, nhn_server: NhnServer, solapi_server: SolapiServer
) -> None:
    """NHN takes each of the first requests and drops the connection before answering: the
    service looks them up at NHN (never at Solapi), and each fallback is taken once in all."""
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    nhn_server.control({"fault": "drop", "after": True, "times": 6})
    settings = topics.settings(
        bootstrap,
        sink="nhn,solapi",
        nhn_base_url=nhn_server.url,
        solapi_base_url=solapi_server.url,
        nhn_timeout_seconds=0.5,
        **NHN,
        **SOLAPI,
    )
    async with running(settings) as service:
        await put(bootstrap, topics.input, events(12))
        records = await eventually_value(
            lambda: read_to_end(bootstrap, topics.events),
            lambda r: len(outcomes_of(r, "SENT")) == 12,
            60,
        )
        found = service.metrics.registry.get_sample_value(
            "fallback_provider_lookups_total", {"provider": "nhn", "result": "taken"}
        )
    taken = Counter(m["recipientGroupingKey"] for m in nhn_server.sent)
    taken.update(solapi_server.accepted)
    assert len(taken) == 12 and set(taken.values()) == {1}
    dropped = [r for r in nhn_server.received if str(r.get("answer")).startswith("taken, then")]
    assert len(dropped) == 6 and found == 6
    sent = outcomes_of(records, "SENT")
    # Whatever failed over was never taken by NHN; what NHN took (answered or found) is nhn's.
    for o in sent:
        assert o["provider"]["name"] == (
            "nhn"
            if o["fallbackId"] in {m["recipientGroupingKey"] for m in nhn_server.sent}
            else "solapi"
        )


async def test_a_restart_during_failover_loses_nothing_and_sends_nothing_twice(
    tansu: Broker, topics: Topics, nhn_server: NhnServer, solapi_server: SolapiServer
) -> None:
    bootstrap = tansu.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    port = free_port()
    env = topics.env(
        bootstrap,
        FALLBACK_HTTP_PORT=str(port),
        FALLBACK_SINK="nhn,solapi",
        FALLBACK_NHN_BASE_URL=nhn_server.url,
        FALLBACK_SOLAPI_BASE_URL=solapi_server.url,
        **{f"FALLBACK_{k.upper()}": str(v) for k, v in (NHN | SOLAPI).items()},
    )

    async def sent() -> list[dict[str, Any]]:
        return outcomes_of(await read_to_end(bootstrap, topics.events), "SENT")

    await nhn_server.down(True)
    with service_process(env) as first:
        await asyncio.to_thread(wait_ready, port, first)
        await put(bootstrap, topics.input, events(20, prefix="A"))
        await eventually_value(sent, lambda s: len(s) == 20, 30)
        # Now the second provider fails too: the next events are held, the input paused.
        solapi_server.control({"balance": 0})
        await put(bootstrap, topics.input, events(20, prefix="B"))
        readyz = f"http://127.0.0.1:{port}/readyz"
        await eventually_value(
            lambda: asyncio.to_thread(httpx.get, readyz),
            lambda answer: answer.status_code == 503,
            30,
            "/readyz 503 with both providers down",
        )
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
    solapi_server.control({"balance": 1e9})
    with service_process(env) as second:
        await asyncio.to_thread(wait_ready, port, second)
        done = await eventually_value(sent, lambda s: len(s) >= 40, 40)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 15) == 0
    assert Counter(o["fallbackId"] for o in done) == Counter(
        {f"{p}{i}:1": 1 for p in "AB" for i in range(20)}
    )
    assert {o["provider"]["name"] for o in done} == {"solapi"}
    assert len(solapi_server.accepted) == 40 and set(solapi_server.accepted.values()) == {1}
    assert nhn_server.sent == []
