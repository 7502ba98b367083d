"""The nhn result collector (§11): the pure mapping, and against the local NHN stand-in on a real
broker: polling, paging, overlapping windows, a restart between windows, the webhook with a bad
and a good signature, a webhook call retried after a crash, and the whole story through the
running service (SENT, then DELIVERED or UNDELIVERED, or EXPIRED when NHN never reports)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from service.config import Settings
from service.core import nhn_results
from service.core.models import FINAL_STATUSES
from service.dev.broker import free_port
from service.dev.nhn_server import NhnServer
from service.kafka.options import client_options
from service.metrics import Metrics
from service.runtime.compose import build_nhn_collector
from service.runtime.service import FallbackService
from service.sinks.nhn_results import NhnCollector
from tests.factories import event_dict
from tests.kafka_helpers import (
    Broker,
    Topics,
    finals,
    prepare,
    put,
    read_to_end,
    running,
    values,
)
from tests.processes import service_process, wait_ready
from tests.waiting import eventually, eventually_value

NHN_RESULTS = {
    "sink": "nhn",
    "nhn_app_key": "APP",
    "nhn_secret_key": "SECRET",
    "nhn_backoff_base_ms": 20,
    "delivery_results": True,
    "nhn_results_poll_seconds": 0.3,
    "nhn_webhook_signature": "SIGNED",
    "result_sweep_seconds": 0.5,
}
FINAL = FINAL_STATUSES


# The pure mapping


def test_windows_overlap_and_last_at_most_a_day() -> None:
    now = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
    overlap = timedelta(seconds=80)
    assert nhn_results.next_window(None, now, overlap) == (now - overlap, now)
    last = now - timedelta(seconds=10)
    assert nhn_results.next_window(last, now, overlap) == (last - overlap, now)
    # Down for three days: a day at a time from where it stopped.
    old = now - timedelta(days=3)
    start, end = nhn_results.next_window(old, now, overlap)
    assert start == old - overlap and end - start == timedelta(days=1)


def test_the_query_is_in_korean_time() -> None:
    start = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
    query = nhn_results.results_query(start, start + timedelta(minutes=1), 2, 1000)
    assert query == {
        "startUpdateDate": "2026-11-22 14:00:00",
        "endUpdateDate": "2026-11-22 14:01:00",
        "pageNum": "2",
        "pageSize": "1000",
    }


def page(items: list[dict[str, Any]], total: int, ok: bool = True) -> dict[str, Any]:
    return {
        "header": {"isSuccessful": ok, "resultCode": 0 if ok else -9997, "resultMessage": "x"},
        "body": {"pageNum": 1, "pageSize": 2, "totalCount": total, "data": items},
    }


ITEM = {
    "requestId": "N1",
    "recipientSeq": 1,
    "resultCode": "1000",
    "resultCodeName": "성공",
    "resultDate": "2026-11-22 14:00:04",
    "telecomCode": "10001",
}


def test_a_page_says_its_final_results_and_whether_more_follow() -> None:
    pending = dict(ITEM, requestId="N2", resultCode=None)
    parsed = nhn_results.parse_page(page([ITEM, pending], total=3), 1, size=2)
    assert [r.request_id for r in parsed.results] == ["N1"] and parsed.more
    (one,) = parsed.results
    assert (
        one.delivered
        and one.telecom == "SKT"
        and one.reported_at == "2026-11-22T14:00:04.000+09:00"
    )
    assert not nhn_results.parse_page(page([ITEM], total=3), 2, size=2).more
    with pytest.raises(ValueError, match="refused"):
        nhn_results.parse_page(page([], 0, ok=False), 1)


def test_the_results_topic_record_of_an_nhn_result() -> None:
    (undelivered,) = nhn_results.parse_page(page([dict(ITEM, resultCode="3006")], 1), 1).results
    record = nhn_results.delivery_result(undelivered, "R1:1")
    assert record["status"] == "UNDELIVERED" and record["resultCode"] == "3006"
    assert record["provider"] == "nhn" and record["providerMessageId"] == "N1:1"


def test_webhook_bodies_and_signatures() -> None:
    hook = dict(ITEM, messageStatus="COMPLETED", receiveDate="2026-11-22 14:00:05")
    body = {"event": "MESSAGE_RESULT_UPDATE", "hooks": [hook, dict(hook, messageStatus="READY")]}
    (found,) = nhn_results.parse_webhook(body)
    assert found.reported_at.startswith("2026-11-22T14:00:05")
    assert nhn_results.parse_webhook({"event": "UNSUBSCRIBE", "hooks": []}) == []
    with pytest.raises(ValueError):
        nhn_results.parse_webhook({"event": "MESSAGE_RESULT_UPDATE", "hooks": "no"})
    assert nhn_results.signature_ok("SIGNED", "SIGNED")
    assert not nhn_results.signature_ok("signed", "SIGNED")
    assert not nhn_results.signature_ok(None, "SIGNED") and not nhn_results.signature_ok("", None)


# Against the local stand-in, on a real broker


def settings_for(topics: Topics, bootstrap: str, server: NhnServer, **extra: Any) -> Settings:
    return topics.settings(bootstrap, **(NHN_RESULTS | extra), nhn_base_url=server.url)


def events(
    count: int, number: str = "0101234{:04d}", prefix: str = "R"
) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{prefix}{i}:1", event_dict(requestId=f"{prefix}{i}", recipientNo=number.format(i)))
        for i in range(count)
    ]


@pytest.mark.broker
async def test_the_whole_story_through_the_running_service(
    broker: Broker, topics: Topics, nhn_server: NhnServer
) -> None:
    bootstrap = broker.bootstrap
    await prepare(bootstrap, topics, partitions=2)
    nhn_server.control(
        {"results": {"delay": 0.5, "undelivered": ["01012340001"], "never": ["01012340002"]}}
    )
    settings = settings_for(topics, bootstrap, nhn_server, result_deadline_sms="6s")
    async with running(settings) as service:
        await put(bootstrap, topics.input, events(6))
        found = await eventually_value(
            lambda: finals(bootstrap, topics.events), lambda f: len(f) == 6, 40
        )
        registry = service.metrics.registry
        await eventually(
            lambda: (
                registry.get_sample_value(
                    "fallback_results_collected_total", {"provider": "nhn", "via": "poll"}
                )
                == 5
            ),
            10,
            "five results collected",
        )
    statuses = {fid: [o["status"] for o in f] for fid, f in found.items()}
    assert statuses == {
        "R0:1": ["DELIVERED"],
        "R1:1": ["UNDELIVERED"],
        "R2:1": ["EXPIRED"],
        "R3:1": ["DELIVERED"],
        "R4:1": ["DELIVERED"],
        "R5:1": ["DELIVERED"],
    }
    delivered = found["R0:1"][0]["delivery"]
    assert delivered["provider"] == "nhn" and delivered["resultCode"] == "1000"
    assert delivered["telecom"] in {"SKT", "KT", "LGU+"}
    assert found["R1:1"][0]["delivery"]["resultCode"] == "3006"
    # Each SENT fallback: REQUESTED, SENT, then its one final outcome.
    story = [
        o["status"]
        for o in values(await read_to_end(bootstrap, topics.events))
        if o["fallbackId"] == "R0:1"
    ]
    assert story == ["REQUESTED", "SENT", "DELIVERED"]


def collector_for(
    settings: Settings, metrics: Metrics, *, page_size: int = 1000, leads: bool = True
) -> NhnCollector:
    """The collector as the service composes it, leading (owning input partition 0) or not."""
    owned = [(settings.input_topic, 0)] if leads else []
    collector = build_nhn_collector(
        settings, client_options(settings.kafka()), metrics, lambda: owned, page_size=page_size
    )
    assert isinstance(collector, NhnCollector)
    return collector


async def sent_by(service: FallbackService, bootstrap: str, topics: Topics, count: int) -> None:
    async def sent() -> int:
        return sum(
            o["status"] == "SENT" for o in values(await read_to_end(bootstrap, topics.events))
        )

    await eventually_value(sent, lambda n: n == count, 30)


async def results_written(bootstrap: str, topics: Topics) -> list[dict[str, Any]]:
    return values(await read_to_end(bootstrap, topics.results))


@pytest.mark.broker
async def test_polling_pages_overlapping_windows_and_a_restart_between_windows(
    tansu: Broker, nhn_server: NhnServer
) -> None:
    bootstrap = tansu.bootstrap
    topics = Topics.fresh(tansu.overrides)
    await prepare(bootstrap, topics, partitions=1)
    nhn_server.control({"results": {"delay": 0.2}})
    # The service sends and settles; collectors built here poll (the service's own never leads:
    # its poll is an hour away).
    settings = settings_for(topics, bootstrap, nhn_server, nhn_results_poll_seconds=3600)
    async with running(settings) as service:
        await put(bootstrap, topics.input, events(7))
        await sent_by(service, bootstrap, topics, 7)
        await asyncio.sleep(0.5)  # every result is due at the stand-in
        first = collector_for(settings, Metrics(), page_size=2)
        await first.start()
        try:
            assert await first.cycle() == 7  # four pages of two
            assert await first.cycle() == 0  # the overlapping window again: nothing new
            until = first.finished_until
        finally:
            await first.stop()
        queries = [r for r in nhn_server.received if "message-results" in r["path"]]
        assert queries == []  # queries are not logged as sends
        # Between two collectors, more results come due.
        await put(bootstrap, topics.input, events(3, "0109876{:04d}", prefix="S"))
        await sent_by(service, bootstrap, topics, 10)
        await asyncio.sleep(0.5)
        second = collector_for(settings, Metrics(), page_size=2)
        await second.start()
        try:
            written = await second.cycle()
            # It resumed from the first one's window: the new results, and the old ones its
            # overlap read again (counted `later` by the owner, never a second outcome).
            assert second.cycles == 1 and until is not None
            assert second.finished_until is not None and second.finished_until > until
            assert written >= 3
        finally:
            await second.stop()
        found = await eventually_value(
            lambda: finals(bootstrap, topics.events), lambda f: len(f) == 10, 20
        )
    assert all(len(f) == 1 for f in found.values())
    ids = {r["fallbackId"] for r in await results_written(bootstrap, topics)}
    assert ids == {f"R{i}:1" for i in range(7)} | {f"S{i}:1" for i in range(3)}


async def hooks_written(bootstrap: str, settings: Settings) -> int:
    """Webhook calls written to the collector topic (beside the collector's progress)."""
    records = await read_to_end(bootstrap, settings.nhn_results_topic_name)
    return sum(r.key == b"hook" for r in records)


@pytest.mark.broker
async def test_the_webhook_checks_its_signature_and_answers_once_written(
    tansu: Broker, nhn_server: NhnServer
) -> None:
    bootstrap = tansu.bootstrap
    topics = Topics.fresh(tansu.overrides)
    await prepare(bootstrap, topics, partitions=1)
    # The stand-in never reports this number itself: the webhook posted here is the only
    # result, so the poller cannot win the race to the first result.
    nhn_server.control({"results": {"delay": 0.1, "never": ["01012340000"]}})
    settings = settings_for(topics, bootstrap, nhn_server)
    async with running(settings) as service:
        await put(bootstrap, topics.input, events(1))
        await sent_by(service, bootstrap, topics, 1)
        (sent,) = [
            o for o in values(await read_to_end(bootstrap, topics.events)) if o["status"] == "SENT"
        ]
        hook = {
            "requestId": sent["provider"]["requestId"],
            "recipientSeq": 1,
            "messageStatus": "COMPLETED",
            "resultCode": "1000",
            "receiveDate": "2026-11-22 14:00:05",
        }
        body = orjson.dumps({"event": "MESSAGE_RESULT_UPDATE", "hooks": [hook]})
        transport = httpx.ASGITransport(app=service.http_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            bad = await client.post("/webhooks/nhn", content=body)
            wrong = await client.post(
                "/webhooks/nhn", content=body, headers={"X-Toast-Webhook-Signature": "nope"}
            )
            assert (bad.status_code, wrong.status_code) == (401, 401)
            assert await hooks_written(bootstrap, settings) == 0
            junk = await client.post(
                "/webhooks/nhn", content=b"[", headers={"X-Toast-Webhook-Signature": "SIGNED"}
            )
            assert junk.status_code == 400
            good = await client.post(
                "/webhooks/nhn", content=body, headers={"X-Toast-Webhook-Signature": "SIGNED"}
            )
            assert good.status_code == 200
        # Answered only once written.
        assert await hooks_written(bootstrap, settings) == 1
        found = await eventually_value(
            lambda: finals(bootstrap, topics.events), lambda f: len(f) == 1, 20
        )
        assert found["R0:1"][0]["delivery"]["reportedAt"].startswith("2026-11-22T14:00:05")
        registry = service.metrics.registry
        assert (
            registry.get_sample_value(
                "fallback_webhook_calls_total", {"provider": "nhn", "code": "401"}
            )
            == 2
        )


@pytest.mark.broker
async def test_a_webhook_call_is_retried_after_a_crash(
    tansu: Broker, nhn_server: NhnServer
) -> None:
    """NHN calls again when not answered 200: a service down at the first call still gets it."""
    bootstrap = tansu.bootstrap
    topics = Topics.fresh(tansu.overrides)
    await prepare(bootstrap, topics, partitions=1)
    port = free_port()
    nhn_server.control(
        {
            "results": {"delay": 3},
            "webhook": {"url": f"http://127.0.0.1:{port}/webhooks/nhn", "signature": "SIGNED"},
        }
    )
    env = topics.env(
        bootstrap,
        FALLBACK_HTTP_PORT=str(port),
        FALLBACK_NHN_BASE_URL=nhn_server.url,
        **{f"FALLBACK_{k.upper()}": str(v) for k, v in NHN_RESULTS.items()},
    )
    env["FALLBACK_NHN_RESULTS_POLL_SECONDS"] = "1"
    env["FALLBACK_DELIVERY_RESULTS"] = "on"
    with service_process(env) as p:
        await asyncio.to_thread(wait_ready, port, p, 60)
        await put(bootstrap, topics.input, events(1))

        async def sent() -> bool:
            outcomes = values(await read_to_end(bootstrap, topics.events))
            return any(o["status"] == "SENT" for o in outcomes)

        await eventually(sent, 20, "the message SENT")
        p.kill()  # down before the result comes due: the first webhook call fails
        await asyncio.to_thread(p.wait, 10)
    await eventually(lambda: bool(nhn_server.reports.calls), 20, "a webhook call made")
    assert nhn_server.reports.calls[0]["status"] != 200
    with service_process(env) as p:
        await asyncio.to_thread(wait_ready, port, p, 60)
        await eventually(
            lambda: any(c["status"] == 200 for c in nhn_server.reports.calls), 30, "a call answered"
        )
        found = await eventually_value(
            lambda: finals(bootstrap, topics.events), lambda f: len(f) == 1, 30
        )
    assert [o["status"] for o in found["R0:1"]] == ["DELIVERED"]
