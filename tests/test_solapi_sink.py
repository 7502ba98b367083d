"""The `solapi` sink (§10) against the local Solapi-compatible server over real sockets: many
messages per call, refusals settled per message, a ValidationError isolated, every attempt
signed anew, account-level refusals, and ambiguous calls looked up before anything is resent."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

from aiokafka import TopicPartition
from pydantic import SecretStr

from service.config import Pressure, SolapiApi
from service.core.models import SmsRequest
from service.dev.solapi_server import SolapiServer
from service.metrics import Metrics
from service.pipeline.seams import Delivery
from service.sinks.provider import Clocks
from service.sinks.solapi import SolapiSink
from tests.factories import PRESSURE as FAST
from tests.factories import SEND_NO, sms_request

SOURCE = TopicPartition("in", 0)
PRESSURE = dataclasses.replace(
    FAST,
    timeout_seconds=0.5,
    request_deadline_seconds=20.0,
    backoff_base_seconds=0.01,
    backoff_max_seconds=0.05,
    concurrency=4,
)


def api(url: str, **changes: Any) -> SolapiApi:
    pressed = {k: v for k, v in changes.items() if k in Pressure.__dataclass_fields__}
    rest = {k: v for k, v in changes.items() if k not in pressed}
    base = SolapiApi(
        url, "KEY", SecretStr("SECRET"), 1000, dataclasses.replace(PRESSURE, **pressed)
    )
    return dataclasses.replace(base, **rest)


def request(seq: int, **fields: Any) -> SmsRequest:
    """A request to a number of its own (Solapi's calls take one message per recipient)."""
    fields.setdefault("recipientNo", f"010{seq:08d}")
    return sms_request(seq, **fields)


def deliveries(count: int, start: int = 1, **fields: Any) -> list[Delivery]:
    return [Delivery(request(start + i, **fields), SOURCE) for i in range(count)]


async def sink_for(server: SolapiServer, **changes: Any) -> SolapiSink:
    salt = changes.pop("salt", None)
    wall_clock = changes.pop("wall_clock", None)
    extra: dict[str, Any] = {}
    if salt is not None:
        extra["salt"] = salt
    if wall_clock is not None:
        extra["clocks"] = Clocks(wall=wall_clock)
    sink = SolapiSink(api(server.url, **changes), Metrics(), **extra)
    await sink.start()
    return sink


def sends(server: SolapiServer) -> list[dict[str, Any]]:
    return [r for r in server.received if r["path"].endswith("/send-many/detail")]


async def test_a_batch_goes_in_one_signed_call_and_each_message_settles_sent(
    solapi_server: SolapiServer,
) -> None:
    sink = await sink_for(solapi_server)
    batch = [*deliveries(30), Delivery(request(99, content="가" * 100), SOURCE)]
    await sink.deliver(batch)
    await sink.stop()
    assert all(d.answer is not None and d.answer.accepted for d in batch)
    ids = {d.answer.request_id for d in batch if d.answer}
    assert len(ids) == 31 and ids == set(solapi_server.messages)
    [call] = sends(solapi_server)
    assert call["signatureOk"] and call["messages"] == 31
    stored = {m["customFields"]["fallbackId"]: m for m in solapi_server.messages.values()}
    lms = stored[batch[-1].request.fallbackId]
    assert (lms["type"], lms["subject"], lms["text"]) == (
        "LMS",
        batch[-1].request.title,
        batch[-1].request.body,
    )
    assert all(d.answer.name == "solapi" for d in batch if d.answer)


async def test_calls_hold_at_most_the_batch_max(solapi_server: SolapiServer) -> None:
    sink = await sink_for(solapi_server, batch_max=10)
    batch = deliveries(25)
    await sink.deliver(batch)
    assert sorted(c["messages"] for c in sends(solapi_server)) == [5, 10, 10]
    assert all(d.answer is not None and d.answer.accepted for d in batch)


async def test_refusals_in_a_200_fail_their_own_message_only(solapi_server: SolapiServer) -> None:
    sink = await sink_for(solapi_server)
    solapi_server.control(
        {
            "registered": [SEND_NO],
            "refuse": {"01000000003": "1061", "01000000004": "2061", "01000000005": "2062"},
        }
    )
    batch = deliveries(8)
    # Texts and numbers our own rules would never produce, set after the decision: the API's
    # refusal is what is tested.
    batch[0].request.body = "emoji 😀"  # 1029: outside EUC-KR
    batch[1].request.body = "가" * 46  # 1031: 92 bytes in an SMS
    batch[5].request.sendNo = "0299998888"  # 1062: not registered
    await sink.deliver(batch)
    codes = [(d.answer.accepted, d.answer.result_code) for d in batch if d.answer]
    assert codes == [
        (False, 1029),
        (False, 1031),
        (False, 1061),
        (False, 2061),
        (False, 2062),
        (False, 1062),
        (True, 2000),
        (True, 2000),
    ]
    assert len(sends(solapi_server)) == 1
    assert set(solapi_server.accepted) == {batch[6].request.fallbackId, batch[7].request.fallbackId}


async def test_a_validation_error_never_fails_its_neighbours(solapi_server: SolapiServer) -> None:
    sink = await sink_for(solapi_server)
    solapi_server.control({"invalid": ["01000000013"]})
    batch = deliveries(16, start=1)
    await sink.deliver(batch)
    bad = batch[12]
    assert bad.answer is not None and bad.answer.accepted is False
    assert bad.answer.result_message.startswith("ValidationError")
    others = [d for d in batch if d is not bad]
    assert all(d.answer is not None and d.answer.accepted for d in others)
    assert all(solapi_server.accepted[d.request.fallbackId] == 1 for d in others)
    # Split in halves until the bad message stood alone: log2(16) + 1 levels of calls.
    assert len(sends(solapi_server)) <= 2 * 4 + 1
    assert sink.breaker.closed


async def test_every_attempt_is_signed_anew(solapi_server: SolapiServer) -> None:
    sink = await sink_for(solapi_server)
    solapi_server.control({"fault": "http", "status": 503, "own_body": True, "times": 2})
    batch = deliveries(3)
    await sink.deliver(batch)
    calls = sends(solapi_server)
    assert len(calls) == 3 and all(c["signatureOk"] for c in calls)
    assert len({c["authorization"] for c in calls}) == 3
    assert all(d.answer is not None and d.answer.attempts == 3 for d in batch)


async def test_a_signature_seen_before_is_signed_again(solapi_server: SolapiServer) -> None:
    salts = itertools.chain(["same", "same"], (f"fresh{i}" for i in itertools.count()))
    moment = time.time()  # one date and one salt: one signature
    sink = await sink_for(solapi_server, salt=lambda: next(salts), wall_clock=lambda: moment)
    first, second = deliveries(1, 1), deliveries(1, 2)
    await sink.deliver(first)
    await sink.deliver(second)
    assert all(d.answer is not None and d.answer.accepted for d in first + second)
    assert [c["answer"] for c in sends(solapi_server)] == [200, "DuplicatedSignature", 200]


async def test_account_level_refusals_hold_everything(solapi_server: SolapiServer) -> None:
    sink = await sink_for(solapi_server)
    solapi_server.control({"balance": 0})
    batch = deliveries(5)
    await sink.deliver(batch)
    assert all(d.held and d.answer is None for d in batch)
    assert "NotEnoughBalance" in (sink.unavailable() or "")
    assert sink.account_down and not sink.unsure  # surely not taken: free to fail over
    assert solapi_server.accepted == {}


async def test_a_clock_far_off_is_named(solapi_server: SolapiServer) -> None:
    sink = await sink_for(solapi_server, wall_clock=lambda: time.time() + 20 * 60)
    batch = deliveries(1)
    await sink.deliver(batch)
    assert batch[0].held
    assert "clock" in (sink.unavailable() or "")


async def test_a_call_dropped_after_it_was_taken_is_looked_up_not_resent(
    solapi_server: SolapiServer,
) -> None:
    sink = await sink_for(solapi_server)
    solapi_server.control({"fault": "drop", "after": True, "times": 1})
    batch = deliveries(20)
    await sink.deliver(batch)
    assert all(d.answer is not None and d.answer.accepted for d in batch)
    assert all(solapi_server.accepted[d.request.fallbackId] == 1 for d in batch)
    assert len(sends(solapi_server)) == 1
    taken = {m["customFields"]["fallbackId"]: mid for mid, m in solapi_server.messages.items()}
    assert all(d.answer and d.answer.request_id == taken[d.request.fallbackId] for d in batch)
    assert sink.metrics.provider_lookups.labels("solapi", "taken")._value.get() == 20


async def test_a_call_dropped_before_it_was_taken_is_sent_again_once(
    solapi_server: SolapiServer,
) -> None:
    sink = await sink_for(solapi_server)
    solapi_server.control({"fault": "drop", "times": 1})
    batch = deliveries(3)
    await sink.deliver(batch)
    assert all(d.answer is not None and d.answer.accepted for d in batch)
    assert all(solapi_server.accepted[d.request.fallbackId] == 1 for d in batch)
    assert len(sends(solapi_server)) == 2


async def test_a_timeout_after_it_was_taken_is_looked_up_not_resent(
    solapi_server: SolapiServer,
) -> None:
    sink = await sink_for(solapi_server, timeout_seconds=0.3)
    solapi_server.control({"fault": "slow", "delay": 1.0, "after": True, "times": 1})
    batch = deliveries(4)
    await sink.deliver(batch)
    assert all(d.answer is not None and d.answer.accepted for d in batch)
    assert all(solapi_server.accepted[d.request.fallbackId] == 1 for d in batch)


async def test_a_lookup_that_cannot_be_answered_holds_and_never_resends(
    solapi_server: SolapiServer,
) -> None:
    sink = await sink_for(solapi_server, request_deadline_seconds=1.0, breaker_threshold=100)
    solapi_server.control({"fault": "drop", "times": 1, "after": True, "list_status": 503})
    batch = deliveries(2)
    await sink.deliver(batch)
    assert len(sends(solapi_server)) == 1  # never sent blindly again
    assert all(d.held and d.answer is None for d in batch)
    assert all(sink.holds(d.request.fallbackId) for d in batch)
    # The list answers again: the next attempt finds them, still without a second send.
    solapi_server.control({"list_status": 200})
    for d in batch:
        d.held = False
    await sink.deliver(batch)
    assert all(d.answer is not None and d.answer.accepted for d in batch)
    assert len(sends(solapi_server)) == 1 and not sink.unsure
