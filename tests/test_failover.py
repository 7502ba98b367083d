"""Failover between delivering sinks (§10), `FALLBACK_SINK=nhn,solapi`, against both local
servers over real sockets: a request moves on only when the first provider surely did not take
it, stays after an ambiguous attempt, comes back when the first answers again, and waits when
both are down. Zero lost, zero taken twice by the two servers together."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from service.dev.nhn_server import NhnServer
from service.dev.solapi_server import SolapiServer
from service.metrics import Metrics
from service.pipeline.seams import Delivery
from service.sinks.failover import FailoverSink
from service.sinks.nhn import NhnSink
from service.sinks.solapi import SolapiSink
from tests import test_nhn_sink, test_solapi_sink
from tests.test_solapi_sink import deliveries


async def chain(nhn_server: NhnServer, solapi_server: SolapiServer, **nhn: Any) -> FailoverSink:
    metrics = Metrics()
    first = NhnSink(
        test_nhn_sink.api(
            base_url=nhn_server.url,
            **{"timeout_seconds": 0.3, "backoff_base_seconds": 0.01, **nhn},
        ),
        metrics,
    )
    second = SolapiSink(test_solapi_sink.api(solapi_server.url), metrics)
    sink = FailoverSink([first, second], metrics)
    await sink.start()
    return sink


def taken(nhn_server: NhnServer, solapi_server: SolapiServer) -> Counter[str]:
    """How many times each fallback was taken by the two servers together."""
    counts = Counter(m["recipientGroupingKey"] for m in nhn_server.sent)
    counts.update(solapi_server.accepted)
    return counts


def moved(sink: FailoverSink, reason: str) -> float:
    value = sink.metrics.registry.get_sample_value(
        "fallback_provider_failovers_total", {"from": "nhn", "to": "solapi", "reason": reason}
    )
    return value or 0.0


def providers(batch: list[Delivery]) -> Counter[str]:
    return Counter(d.answer.name for d in batch if d.answer is not None)


async def test_the_first_provider_takes_everything_while_it_answers(
    nhn_server: NhnServer, solapi_server: SolapiServer
) -> None:
    sink = await chain(nhn_server, solapi_server)
    batch = deliveries(10)
    await sink.deliver(batch)
    assert providers(batch) == {"nhn": 10}
    assert solapi_server.accepted == {}


@pytest.mark.parametrize(
    ("down", "reason"),
    [
        (None, "unavailable"),  # connection refused
        ({"fault": "http", "status": 503, "own_body": True}, "unavailable"),
        ({"fault": "code", "code": -2052}, "account"),  # monthly quota
        ({"fault": "code", "code": -1004}, "account"),  # IP refused
    ],
    ids=["refused", "503-own-body", "quota", "ip"],
)
async def test_requests_the_first_surely_did_not_take_go_to_the_second(
    nhn_server: NhnServer, solapi_server: SolapiServer, down: dict[str, Any] | None, reason: str
) -> None:
    sink = await chain(nhn_server, solapi_server)
    if down is None:
        await nhn_server.down(True)
    else:
        nhn_server.control(down)
    batch = deliveries(40)
    await sink.deliver(batch)
    assert all(d.answer is not None and d.answer.accepted for d in batch)
    assert providers(batch) == {"solapi": 40}
    counts = taken(nhn_server, solapi_server)
    assert [counts[d.request.fallbackId] for d in batch] == [1] * 40
    assert moved(sink, reason) == 40
    # One provider is down, not both: the input is not paused.
    assert sink.unavailable() is None


@pytest.mark.parametrize(
    "fault",
    [
        {"fault": "drop", "after": True, "times": 3},
        {"fault": "slow", "delay": 1.0, "after": True, "times": 3},
    ],
    ids=["dropped", "timed-out"],
)
async def test_an_ambiguous_attempt_stays_with_its_provider_and_is_taken_once(
    nhn_server: NhnServer, solapi_server: SolapiServer, fault: dict[str, Any]
) -> None:
    sink = await chain(nhn_server, solapi_server, breaker_threshold=2)
    nhn_server.control(fault)
    batch = deliveries(6)
    await sink.deliver(batch)
    # Whatever the breaker did, nothing ambiguous went to solapi, and nothing went out twice.
    counts = taken(nhn_server, solapi_server)
    for d in batch:
        assert counts[d.request.fallbackId] <= 1
        if d.answer is None:
            assert d.held and sink.sinks[0].holds(d.request.fallbackId)
    assert not any(
        fid in solapi_server.accepted
        for fid in (m["recipientGroupingKey"] for m in nhn_server.sent)
    )
    # Read again later (as a held batch is): each ends taken exactly once in all.
    for _ in range(20):
        held = [d for d in batch if d.answer is None]
        if not held:
            break
        await asyncio.sleep(sink.retry_in())
        sink.probe()
        await sink.deliver(held)
    counts = taken(nhn_server, solapi_server)
    assert [counts[d.request.fallbackId] for d in batch] == [1] * 6
    assert all(d.answer is not None and d.answer.accepted for d in batch)


async def test_new_requests_go_back_to_the_first_once_it_answers(
    nhn_server: NhnServer, solapi_server: SolapiServer
) -> None:
    sink = await chain(nhn_server, solapi_server)
    await nhn_server.down(True)
    first = deliveries(5)
    await sink.deliver(first)
    assert providers(first) == {"solapi": 5}
    await nhn_server.down(False)
    await asyncio.sleep(sink.sinks[0].retry_in() + 0.1)
    later = deliveries(5, start=50)
    await sink.deliver(later)
    assert providers(later) == {"nhn": 5}
    assert sink.metrics.provider_failovers.labels("solapi", "nhn", "recovered")._value.get() == 1


async def test_both_down_holds_everything_and_pauses_until_one_returns(
    nhn_server: NhnServer, solapi_server: SolapiServer
) -> None:
    sink = await chain(nhn_server, solapi_server)
    await nhn_server.down(True)
    solapi_server.control({"balance": 0})
    batch = deliveries(8)
    await sink.deliver(batch)
    assert all(d.held and d.answer is None for d in batch)
    reason = sink.unavailable() or ""
    assert "nhn unavailable" in reason and "NotEnoughBalance" in reason
    assert taken(nhn_server, solapi_server) == Counter()
    solapi_server.control({"balance": 1e9})
    await asyncio.sleep(sink.retry_in())
    sink.probe()
    for d in batch:
        d.held = False
    await sink.deliver(batch)
    assert providers(batch) == {"solapi": 8}
    assert sink.unavailable() is None
