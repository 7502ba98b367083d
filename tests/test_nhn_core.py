"""The NHN SMS API as data (§10): endpoints, bodies, what each answer means, back-off."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core import nhn
from service.core.models import MessageKind, SmsRequest
from service.core.rules import Policy, decide
from tests.factories import NOON_KST, REGISTRY, channel, event

NOW = 1_800_000_000.0


def request(**fields: Any) -> SmsRequest:
    decision = decide(
        event(**fields), channel(), REGISTRY, already_requested=False, now=NOON_KST, policy=Policy()
    )
    assert decision.request is not None
    return decision.request


def answer(header: dict[str, Any], results: list[dict[str, Any]] | None = None) -> bytes:
    body = None
    if results is not None:
        body = {"data": {"requestId": "20261125ReQ", "statusCode": "2", "sendResultList": results}}
    return json.dumps({"header": header, "body": body}).encode()


OK = {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"}


def test_endpoint_by_type_and_ad_flag() -> None:
    sms = request()
    lms = request(content="가" * 100)
    assert (sms.type, lms.type) == (MessageKind.SMS, MessageKind.LMS)
    assert nhn.endpoint(sms) == "sender/sms"
    assert nhn.endpoint(lms) == "sender/mms"
    assert nhn.path("KEY", sms) == "/sms/v3.0/appKeys/KEY/sender/sms"
    for kind, expected in ((sms, "sender/ad-sms"), (lms, "sender/ad-mms")):
        ad = SmsRequest(**{**{f: getattr(kind, f) for f in kind.__slots__}, "ad": True})
        assert nhn.endpoint(ad) == expected


def test_body_carries_the_request_of_section_6() -> None:
    lms = request(content="가" * 100)
    body = nhn.body(lms)
    assert body == {
        "sendNo": lms.sendNo,
        "body": lms.body,
        "title": "@mybrand",
        # Without the event's own grouping key, the fallbackId: the lookup's exact match.
        "recipientList": [
            {
                "recipientNo": "01012345678",
                "countryCode": "82",
                "recipientGroupingKey": lms.fallbackId,
            }
        ],
    }
    sms = request(senderGroupingKey="S1", recipientGroupingKey="R1", statsId="st")
    body = nhn.body(sms)
    assert "title" not in body
    assert body["recipientList"] == [
        {"recipientNo": "01012345678", "countryCode": "82", "recipientGroupingKey": "R1"}
    ]
    assert (body["senderGroupingKey"], body["statsId"]) == ("S1", "st")


@pytest.mark.parametrize(
    ("status", "content", "verdict", "code"),
    [
        (200, answer(OK, [{"recipientNo": "01012345678", "resultCode": 0}]), "accepted", 0),
        (200, answer(OK, [{"recipientNo": "+82-10", "resultCode": 0}]), "accepted", 0),
        (200, answer(OK, []), "accepted", 0),
        (200, answer(OK, [{"recipientNo": "01012345678", "resultCode": None}]), "accepted", 0),
        # refused for the recipient, in its entry
        (200, answer(OK, [{"recipientNo": "01012345678", "resultCode": -2019}]), "rejected", -2019),
        (200, answer(OK, [{"recipientNo": "01012345678", "resultCode": -6001}]), "rejected", -6001),
        # refused in the header: the message
        *[
            (
                200,
                answer({"isSuccessful": False, "resultCode": c, "resultMessage": "x"}),
                "rejected",
                c,
            )
            for c in (-2015, -2023, -2312, -2313, -2019, -6003, -6004, -6000, -2014, -9997, 4)
        ],
        # the account or our configuration: no message gets past
        *[
            (
                200,
                answer({"isSuccessful": False, "resultCode": c, "resultMessage": "x"}),
                "account",
                c,
            )
            for c in (-1000, -1001, -1002, -1004, -1008, -2052, -9996, -9998)
        ],
        # the API's "try again"
        (
            200,
            answer({"isSuccessful": False, "resultCode": -9999, "resultMessage": "x"}),
            "transient",
            -9999,
        ),
        (
            200,
            answer({"isSuccessful": False, "resultCode": -2021, "resultMessage": "x"}),
            "transient",
            -2021,
        ),
        # A 5xx without the API's own body says nothing of the message: looked up (§10).
        (500, b"", "ambiguous", None),
        (502, b"<html>", "ambiguous", None),
        (503, b"", "ambiguous", None),
        (
            503,
            b'{"header": {"isSuccessful": false, "resultCode": -9999, "resultMessage": "x"}}',
            "transient",
            None,
        ),
        (429, b"", "transient", None),
        (408, b"", "transient", None),
        (200, b"<html>proxy</html>", "ambiguous", None),
        (200, b'{"header": {}}', "ambiguous", None),
        (401, b"", "account", None),
        (403, b"", "account", None),
        (404, b"", "account", None),
        (400, b"", "rejected", None),
        (413, b"", "rejected", None),
    ],
)
def test_classify(status: int, content: bytes, verdict: str, code: int | None) -> None:
    found = nhn.classify(status, {}, content, "01012345678", NOW)
    assert found.verdict == verdict
    assert found.result_code == code


def test_accepted_carries_the_request_id_and_entry_message() -> None:
    found = nhn.classify(
        200,
        {},
        answer(OK, [{"recipientNo": "01012345678", "resultCode": 0, "resultMessage": "SUCCESS"}]),
        "01012345678",
        NOW,
    )
    assert (found.request_id, found.result_message) == ("20261125ReQ", "SUCCESS")


def test_the_recipients_own_entry_decides_among_several() -> None:
    results = [
        {"recipientNo": "01099998888", "resultCode": 0},
        {"recipientNo": "01012345678", "resultCode": -2019, "resultMessage": "invalid"},
    ]
    found = nhn.classify(200, {}, answer(OK, results), "01012345678", NOW)
    assert (found.verdict, found.result_code, found.result_message) == (
        "rejected",
        -2019,
        "invalid",
    )


def test_a_429_carries_its_retry_after() -> None:
    found = nhn.classify(429, {"retry-after": "3"}, b"", "0", NOW)
    assert found.retry_after == 3.0
