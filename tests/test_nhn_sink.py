"""The `nhn` sink (§10): calls, retries, the breaker and the rate limit, on `httpx.MockTransport`
and against the local NHN-compatible server (`service.dev.nhn_server`) over real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from pydantic import SecretStr

from service.config import NhnApi, Pressure
from service.dev.nhn_server import NhnServer
from service.metrics import Metrics
from service.pipeline.seams import Delivery
from service.sinks.limits import BreakerState
from service.sinks.nhn import NhnSink
from service.sinks.provider import Clocks
from tests.factories import PRESSURE, SEND_NO, sms_request

SOURCE = TopicPartition("in", 0)


def api(**changes: Any) -> NhnApi:
    """The test API's slice; `changes` name its fields or those of its `Pressure`."""
    pressed = {k: v for k, v in changes.items() if k in Pressure.__dataclass_fields__}
    rest = {k: v for k, v in changes.items() if k not in pressed}
    base = NhnApi(
        base_url="http://nhn.test",
        app_key="APP",
        secret_key=SecretStr("SECRET"),
        pressure=dataclasses.replace(PRESSURE, **pressed),
    )
    return dataclasses.replace(base, **rest)


def deliveries(count: int, **fields: Any) -> list[Delivery]:
    return [Delivery(sms_request(i + 1, **fields), SOURCE) for i in range(count)]


def ok(request_id: str = "REQ") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"},
            "body": {
                "data": {
                    "requestId": request_id,
                    "statusCode": "2",
                    "sendResultList": [
                        {"recipientNo": "01012345678", "resultCode": 0, "recipientSeq": 1}
                    ],
                }
            },
        },
    )


def listing(items: list[dict[str, Any]]) -> httpx.Response:
    """A page of the send list, as the lookup after an ambiguous attempt reads it."""
    return httpx.Response(
        200,
        json={
            "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"},
            "body": {"pageNum": 1, "pageSize": 1000, "totalCount": len(items), "data": items},
        },
    )


def refused(code: int, message: str = "refused", status: int = 200) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "header": {"isSuccessful": False, "resultCode": code, "resultMessage": message},
            "body": None,
        },
    )


class Sleeps:
    """A sleep that does not wait, and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(0)


async def started(
    handler: Callable[[httpx.Request], Any], sleeps: Sleeps | None = None, **changes: Any
) -> NhnSink:
    async def sends(request: httpx.Request) -> httpx.Response:
        # Lookups after an ambiguous attempt find nothing: the send is retried as before.
        if request.method == "GET":
            return listing([])
        answer = handler(request)
        if asyncio.iscoroutine(answer):
            answer = await answer
        assert isinstance(answer, httpx.Response)
        return answer

    sink = NhnSink(
        api(**changes),
        Metrics(),
        transport=httpx.MockTransport(sends),
        clocks=Clocks(sleep=sleeps or Sleeps(), unit_random=lambda: 0.5),
    )
    await sink.start()
    return sink


async def test_a_request_is_sent_to_its_endpoint_with_the_keys_and_settles_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok("20261125A")

    sink = await started(handler)
    [delivery] = deliveries(1)
    await sink.deliver([delivery])
    await sink.stop()
    assert delivery.answer is not None
    assert (delivery.answer.accepted, delivery.answer.request_id) == (True, "20261125A")
    assert (delivery.answer.attempts, delivery.answer.result_code) == (1, 0)
    [request] = seen
    assert str(request.url) == "http://nhn.test/sms/v3.0/appKeys/APP/sender/sms"
    assert request.headers["x-secret-key"] == "SECRET"
    assert request.headers["content-type"] == "application/json;charset=UTF-8"
    body = json.loads(request.content.decode("utf-8"))
    assert body["sendNo"] == SEND_NO
    assert body["recipientList"] == [
        {
            "recipientNo": "01012345678",
            "countryCode": "82",
            "recipientGroupingKey": delivery.request.fallbackId,
        }
    ]
    assert body["body"] == delivery.request.body


async def test_transient_trouble_is_retried_with_backoff_then_sent() -> None:
    answers = iter(
        [
            refused(-9999, "System error.", status=503),
            refused(-9999, "System error."),
            httpx.Response(429, headers={"Retry-After": "3"}),
            ok(),
        ]
    )
    sleeps = Sleeps()
    sink = await started(lambda request: next(answers), sleeps)
    [delivery] = deliveries(1)
    await sink.deliver([delivery])
    assert delivery.answer is not None and delivery.answer.accepted
    assert delivery.answer.attempts == 4
    # Full jitter at 0.5 of 0.2·2^(n-1); the 429's Retry-After wins over its jitter.
    assert sleeps.asked == [pytest.approx(0.1), pytest.approx(0.2), 3.0]
    requests = sink.metrics.provider_requests
    assert requests.labels("nhn", "sender/sms", "http_503")._value.get() == 1
    assert requests.labels("nhn", "sender/sms", "-9999")._value.get() == 1
    assert sink.metrics.provider_retries.labels("nhn", "sender/sms")._value.get() == 3


async def test_connection_errors_and_timeouts_are_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused")
        if calls == 2:
            raise httpx.ReadTimeout("slow")
        return ok()

    sleeps = Sleeps()
    sink = await started(handler, sleeps)
    [delivery] = deliveries(1)
    await sink.deliver([delivery])
    assert delivery.answer is not None and delivery.answer.accepted
    assert delivery.answer.attempts == 3
    # The timeout was ambiguous: a call's timeout passed, the send list said "not taken".
    assert sleeps.asked[1] == PRESSURE.timeout_seconds
    assert sink.metrics.provider_lookups.labels("nhn", "not_taken")._value.get() == 1
    assert not sink.unsure


async def test_a_lost_answer_is_found_by_the_lookup_and_never_sent_again() -> None:
    posts: list[httpx.Request] = []
    gets: list[httpx.Request] = []
    [delivery] = deliveries(1)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            gets.append(request)
            item = {
                "requestId": "TAKEN-1",
                "recipientNo": delivery.request.recipientNo,
                "body": delivery.request.body,
                "senderGroupingKey": None,
                "recipientGroupingKey": delivery.request.fallbackId,
            }
            return listing([item])
        posts.append(request)
        raise httpx.RemoteProtocolError("the connection closed after the request was sent")

    sink = NhnSink(
        api(),
        Metrics(),
        transport=httpx.MockTransport(handler),
        clocks=Clocks(sleep=Sleeps(), unit_random=lambda: 0.5),
    )
    await sink.start()
    await sink.deliver([delivery])
    assert len(posts) == 1 and len(gets) == 1
    assert delivery.answer is not None and delivery.answer.accepted
    assert delivery.answer.request_id == "TAKEN-1"
    assert gets[0].url.params["recipientNo"] == delivery.request.recipientNo


async def test_a_lookup_without_an_answer_keeps_the_request_held_and_with_this_provider() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "GET":
            return httpx.Response(503)
        posts += 1
        raise httpx.ReadTimeout("slow")

    sink = NhnSink(
        api(request_deadline_seconds=0.5, breaker_threshold=100),
        Metrics(),
        transport=httpx.MockTransport(handler),
        clocks=Clocks(sleep=Sleeps(), unit_random=lambda: 0.0),
    )
    await sink.start()
    [delivery] = deliveries(1)
    await sink.deliver([delivery])
    assert posts == 1  # never sent blindly again
    assert delivery.held and delivery.answer is None
    assert sink.holds(delivery.request.fallbackId)


@pytest.mark.parametrize("code", [-2015, -2023, -2312, -2313, -2019, -6003, -6001, -9997])
async def test_business_errors_fail_at_once_without_retry(code: int) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return refused(code, "the API's words")

    sink = await started(handler)
    [delivery] = deliveries(1)
    await sink.deliver([delivery])
    assert calls == 1
    assert delivery.answer is not None
    assert delivery.answer.accepted is False
    assert (delivery.answer.result_code, delivery.answer.result_message) == (
        code,
        "the API's words",
    )
    assert sink.breaker.closed


async def test_a_request_that_exhausts_its_attempts_while_others_are_answered_fails() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["recipientList"][0]["recipientNo"] == "01099990000":
            return refused(-9999, "System error.", status=502)
        return ok()

    sink = await started(handler, breaker_threshold=100)
    troubled = Delivery(sms_request(1, recipientNo="01099990000"), SOURCE)
    # Sent together: the API answers the others while `troubled` keeps failing.
    await sink.deliver([troubled, *deliveries(5)])
    assert troubled.answer is not None
    assert troubled.answer.accepted is None
    assert troubled.answer.attempts == 4
    assert troubled.answer.result_message == "HTTP 502"
    assert sink.breaker.closed and not sink.unsure


async def test_an_api_that_answers_nobody_opens_the_breaker_and_holds_everything() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    sink = await started(handler, concurrency=2)
    batch = deliveries(20)
    await sink.deliver(batch)
    assert all(d.held and d.answer is None for d in batch)
    assert sink.breaker.state is BreakerState.OPEN
    # The breaker opened after 5 failures in a row; nothing more went out after it.
    assert calls <= 5 + 2
    assert sink.unavailable() is not None and "HTTP 503" in (sink.unavailable() or "")
    assert sink.metrics.provider_unavailable.labels("nhn")._value.get() == 1
    # While open, a new batch does not reach the API at all.
    before = calls
    again = deliveries(3)
    await sink.deliver(again)
    assert calls == before and all(d.held for d in again)


async def test_a_probe_goes_alone_and_closes_the_breaker_when_answered() -> None:
    state = {"up": False, "calls": 0, "concurrent": 0, "most": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["calls"] += 1
        state["concurrent"] += 1
        state["most"] = max(state["most"], state["concurrent"])
        await asyncio.sleep(0.01)
        state["concurrent"] -= 1
        return ok() if state["up"] else httpx.Response(503)

    sink = await started(handler, concurrency=4, breaker_threshold=2)
    await sink.deliver(deliveries(4))
    assert sink.breaker.state is BreakerState.OPEN
    wait = sink.retry_in()
    # A failed probe: one call only, then open again with a longer wait.
    sink.probe()
    state["calls"], state["most"] = 0, 0
    held = deliveries(6)
    await sink.deliver(held)
    assert state["calls"] == 1 and all(d.held for d in held)
    assert sink.breaker.state is BreakerState.OPEN and sink.retry_in() == 2 * wait
    # The API is back: the probe goes alone, then the rest at full concurrency.
    state["up"] = True
    sink.probe()
    state["calls"], state["most"] = 0, 0
    batch = deliveries(8)
    await sink.deliver(batch)
    assert all(d.answer is not None and d.answer.accepted for d in batch)
    assert sink.breaker.closed and sink.unavailable() is None
    assert state["calls"] == 8


@pytest.mark.parametrize(
    "response",
    [refused(-1004, "Not allow ip."), refused(-2052, "quota"), httpx.Response(401)],
    ids=["ip", "quota", "http-401"],
)
async def test_an_account_level_refusal_opens_the_breaker_at_once(response: httpx.Response) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return response

    sink = await started(handler, concurrency=1)
    batch = deliveries(3)
    await sink.deliver(batch)
    assert calls == 1
    assert all(d.held for d in batch)
    assert "refused for every message" in (sink.unavailable() or "")


async def test_a_retry_after_beyond_the_deadline_ends_the_attempts() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["recipientList"][0]["recipientNo"] == "01099990000":
            await asyncio.sleep(0.05)  # the others are answered meanwhile
            return httpx.Response(429, headers={"Retry-After": "120"})
        return ok()

    sleeps = Sleeps()
    sink = await started(handler, sleeps, request_deadline_seconds=10, breaker_threshold=100)
    troubled = Delivery(sms_request(9, recipientNo="01099990000"), SOURCE)
    await sink.deliver([troubled, *deliveries(3)])
    assert troubled.answer is not None and troubled.answer.accepted is None
    assert troubled.answer.attempts == 1 and sleeps.asked == []


async def test_requests_in_flight_never_exceed_the_concurrency_bound() -> None:
    state = {"now": 0, "most": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        await asyncio.sleep(0.005)
        state["now"] -= 1
        return ok()

    sink = await started(handler, concurrency=3)
    batch = deliveries(30)
    await sink.deliver(batch)
    assert state["most"] == 3
    assert all(d.answer is not None and d.answer.accepted for d in batch)


# --- against the local NHN-compatible server, over real sockets --------------------------------


async def real_sink(nhn_server: NhnServer, **changes: Any) -> NhnSink:
    sink = NhnSink(api(base_url=nhn_server.url, **changes), Metrics())
    await sink.start()
    return sink


async def test_the_server_gets_one_call_per_request_with_endpoint_body_and_headers(
    nhn_server: NhnServer,
) -> None:
    sink = await real_sink(nhn_server)
    sms = deliveries(3)
    lms = [Delivery(sms_request(10, content="가" * 100), SOURCE)]
    await sink.deliver(sms + lms)
    await sink.stop()
    assert all(d.answer is not None and d.answer.accepted for d in sms + lms)
    assert len({d.answer.request_id for d in sms + lms if d.answer}) == 4
    paths = Counter(r["path"] for r in nhn_server.received)
    assert paths == {
        "/sms/v3.0/appKeys/APP/sender/sms": 3,
        "/sms/v3.0/appKeys/APP/sender/mms": 1,
    }
    for entry in nhn_server.received:
        assert entry["secretKeyOk"] is True
        assert entry["headers"]["content-type"] == "application/json;charset=UTF-8"
        assert entry["answer"] == 0 and entry["recipientCode"] == 0
    [mms] = [r for r in nhn_server.received if r["path"].endswith("/mms")]
    assert mms["body"]["title"] == lms[0].request.title
    assert mms["body"]["body"] == lms[0].request.body


async def test_business_errors_from_the_server(nhn_server: NhnServer) -> None:
    sink = await real_sink(nhn_server)
    nhn_server.control({"registered": [SEND_NO, "0317770000"], "blocked": ["0317770000"]})
    unregistered = Delivery(sms_request(1, sendNo="0299998888"), SOURCE)
    cases = {
        -2312: unregistered,
        -2019: Delivery(sms_request(2), SOURCE),
    }
    # Numbers our own rules would refuse, so set after the decision: the API's refusal is tested.
    cases[-2019].request.recipientNo = "0101234"
    unregistered.request.sendNo = "0299998888"
    blocked = Delivery(sms_request(3), SOURCE)
    blocked.request.sendNo = "0317770000"
    cases[-2313] = blocked
    await sink.deliver(list(cases.values()))
    for code, delivery in cases.items():
        assert delivery.answer is not None, code
        assert (delivery.answer.accepted, delivery.answer.result_code) == (False, code)
        assert delivery.answer.attempts == 1
    assert len(nhn_server.received) == 3


async def test_dropped_connections_are_looked_up_and_sent_once(nhn_server: NhnServer) -> None:
    sink = await real_sink(nhn_server, timeout_seconds=0.3, backoff_base_seconds=0.01)
    # Two drops before the API took it (the lookups find nothing: sent again), then a slow
    # answer of a message it took (the lookup finds it: not sent again).
    nhn_server.control({"fault": "drop", "times": 2})
    nhn_server.control({"fault": "slow", "delay": 1.0, "times": 1, "after": True})
    [delivery] = deliveries(1)
    await sink.deliver([delivery])
    assert delivery.answer is not None and delivery.answer.accepted
    assert delivery.answer.attempts == 3
    assert [r.get("answer") for r in nhn_server.received][:2] == ["dropped", "dropped"]
    assert nhn_server.accepted[delivery.request.body] == 1
    assert delivery.answer.request_id == nhn_server.sent[0]["requestId"]


async def test_a_request_taken_before_the_connection_dropped_is_taken_once(
    nhn_server: NhnServer,
) -> None:
    sink = await real_sink(
        nhn_server, timeout_seconds=0.3, backoff_base_seconds=0.01, breaker_threshold=100
    )
    nhn_server.control({"fault": "drop", "after": True})
    batch = deliveries(5)
    await sink.deliver(batch)
    assert all(d.answer is not None and d.answer.accepted for d in batch)
    taken = Counter(m["recipientGroupingKey"] for m in nhn_server.sent)
    assert [taken[d.request.fallbackId] for d in batch] == [1] * 5
    assert len(nhn_server.received) == 5  # one send each, then lookups
    assert {d.answer.request_id for d in batch if d.answer} == {
        m["requestId"] for m in nhn_server.sent
    }


async def test_provider_unavailable_after_the_budget(nhn_server: NhnServer) -> None:
    sink = await real_sink(nhn_server, backoff_base_seconds=0.01, max_attempts=3)
    nhn_server.control({"fault": "http", "status": 500, "own_body": True, "match": "01099990000"})
    troubled = Delivery(sms_request(5, recipientNo="01099990000"), SOURCE)
    others = deliveries(20)
    await sink.deliver([troubled, *others])
    assert all(d.answer is not None and d.answer.accepted for d in others)
    assert troubled.answer is not None
    assert (troubled.answer.accepted, troubled.answer.attempts) == (None, 3)
    assert troubled.answer.result_message == "HTTP 500"


async def test_the_rate_limit_holds_at_the_server(nhn_server: NhnServer) -> None:
    rate = 40.0
    sink = await real_sink(nhn_server, rate_limit=rate, concurrency=16)
    began = time.monotonic()
    await sink.deliver(deliveries(100))
    elapsed = time.monotonic() - began
    times = sorted(r["time"] for r in nhn_server.received)
    assert len(times) == 100
    # Any one second holds at most a second's tokens plus the burst (a tenth of a second's).
    burst = max(1.0, rate / 10)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    # (+3: requests released together by the bucket can arrive a little bunched.)
    assert busiest <= rate + burst + 3, busiest
    assert elapsed >= (100 - burst) / rate * 0.95
