"""Solapi's messages API v4 as data (§10, §11): the signature, the send-many body, calls cut by
size and recipient, what each answer means per message, and the report webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core import solapi
from service.core.models import MessageKind
from service.core.provider import Verdict
from tests.factories import sms_request as request

NOW = 1_800_000_000.0


def test_the_authorization_is_hmac_sha256_of_date_and_salt() -> None:
    moment = datetime(2026, 12, 2, 9, 0, 1, 500_000, tzinfo=UTC)
    header = solapi.authorization("KEY", "SECRET", moment, "abc123")
    date = "2026-12-02T09:00:01.500Z"
    expected = hmac.new(b"SECRET", (date + "abc123").encode(), hashlib.sha256).hexdigest()
    assert header == f"HMAC-SHA256 apiKey=KEY, date={date}, salt=abc123, signature={expected}"


def test_a_message_carries_the_fallback_and_never_guesses_its_type() -> None:
    sms = request()
    item = solapi.message(sms)
    assert item == {
        "to": sms.recipientNo,
        "from": sms.sendNo,
        "text": sms.body,
        "type": "SMS",
        "autoTypeDetect": False,
        "country": "82",
        "customFields": {"fallbackId": sms.fallbackId},
    }
    lms = request(content="가" * 200)
    assert lms.type is MessageKind.LMS
    assert solapi.message(lms)["subject"] == lms.title
    body = solapi.send_body([sms, lms])
    assert (body["allowDuplicates"], body["showMessageList"], len(body["messages"])) == (
        False,
        True,
        2,
    )


@given(
    numbers=st.lists(st.sampled_from(["01000000001", "01000000002", "01000000003"]), max_size=40),
    most=st.integers(1, 7),
)
def test_calls_hold_at_most_so_many_and_no_recipient_twice(numbers: list[str], most: int) -> None:
    requests = [request(i + 1, recipientNo=n) for i, n in enumerate(numbers)]
    cut = solapi.calls(requests, most)
    assert sorted(i for call in cut for i in call) == list(range(len(requests)))
    for call in cut:
        assert len(call) <= most
        recipients = [requests[i].recipientNo for i in call]
        assert len(set(recipients)) == len(recipients)
        assert call == sorted(call)  # each call keeps the batch's order


def answer(failed: list[dict[str, Any]], listed: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"failedMessageList": failed, "messageList": listed, "groupInfo": {"groupId": "G1"}}
    ).encode()


def test_a_200_settles_each_message_on_its_own() -> None:
    a, b, c = (
        request(1, recipientNo="01000000001"),
        request(2, recipientNo="01000000002"),
        request(3, recipientNo="01000000003"),
    )
    failed: list[dict[str, Any]] = [
        {
            "to": b.recipientNo,
            "statusCode": "1062",
            "statusMessage": "발신번호 미등록",
            "customFields": {"fallbackId": b.fallbackId},
        },
        # Matched by recipient when Solapi leaves the custom fields out of a refusal.
        {"to": c.recipientNo, "statusCode": "1031", "statusMessage": "too long"},
    ]
    listed = [
        {
            "messageId": "M-A",
            "to": a.recipientNo,
            "statusCode": "2000",
            "customFields": {"fallbackId": a.fallbackId},
        }
    ]
    found = solapi.classify(200, {}, answer(failed, listed), [a, b, c], NOW)
    assert found.whole is None
    assert [(x.verdict, x.result_code, x.request_id) for x in found.each] == [
        (Verdict.ACCEPTED, 2000, "M-A"),
        (Verdict.REJECTED, 1062, None),
        (Verdict.REJECTED, 1031, None),
    ]


@pytest.mark.parametrize(
    ("status", "body", "verdict", "invalid", "resign"),
    [
        (
            400,
            {"errorCode": "ValidationError", "errorMessage": "to"},
            Verdict.REJECTED,
            True,
            False,
        ),
        (
            402,
            {"errorCode": "NotEnoughBalance", "errorMessage": "잔액 부족"},
            Verdict.ACCOUNT,
            False,
            False,
        ),
        (403, {"errorCode": "InvalidAPIKey", "errorMessage": ""}, Verdict.ACCOUNT, False, False),
        (
            403,
            {"errorCode": "SignatureDoesNotMatch", "errorMessage": ""},
            Verdict.ACCOUNT,
            False,
            False,
        ),
        (
            403,
            {"errorCode": "RequestTimeTooSkewed", "errorMessage": ""},
            Verdict.ACCOUNT,
            False,
            False,
        ),
        (
            403,
            {"errorCode": "DuplicatedSignature", "errorMessage": ""},
            Verdict.TRANSIENT,
            False,
            True,
        ),
        (
            503,
            {"errorCode": "ServiceUnavailable", "errorMessage": ""},
            Verdict.TRANSIENT,
            False,
            False,
        ),
        (503, None, Verdict.AMBIGUOUS, False, False),
        (502, None, Verdict.AMBIGUOUS, False, False),
        (429, None, Verdict.TRANSIENT, False, False),
        (200, None, Verdict.AMBIGUOUS, False, False),
    ],
)
def test_whole_call_answers(
    status: int, body: dict[str, str] | None, verdict: Verdict, invalid: bool, resign: bool
) -> None:
    content = json.dumps(body).encode() if body is not None else b"<html>gateway</html>"
    found = solapi.classify(status, {}, content, [request()], NOW)
    assert found.whole is not None and not found.each
    assert (found.whole.verdict, found.invalid, found.resign) == (verdict, invalid, resign)


def test_a_skewed_clock_is_named() -> None:
    content = json.dumps({"errorCode": "RequestTimeTooSkewed", "errorMessage": "date"}).encode()
    found = solapi.classify(403, {}, content, [request()], NOW)
    assert found.whole is not None and "clock" in found.whole.result_message


def test_a_report_gives_final_results_of_our_messages_only() -> None:
    report = [
        {
            "data": {
                "messageId": "M1",
                "statusCode": "4000",
                "customFields": {"fallbackId": "R:1"},
                "dateReported": "2026-12-02T09:00:04.210Z",
                "networkName": "SKT",
            }
        },
        {
            "data": {
                "messageId": "M2",
                "statusCode": "3059",
                "statusMessage": "spoofed",
                "customFields": {"fallbackId": "R:2"},
            }
        },
        {"data": {"messageId": "M3", "statusCode": "3000", "customFields": {"fallbackId": "R:3"}}},
        {"data": {"messageId": "M4", "statusCode": "4000"}},  # not one of ours
    ]
    found = solapi.parse_report(report)
    assert [(r.message_id, r.delivered) for r in found] == [("M1", True), ("M2", False)]
    moment = datetime(2026, 12, 2, 9, 0, 5, tzinfo=UTC)
    assert solapi.delivery_result(found[0], "R:1", moment) == {
        "fallbackId": "R:1",
        "status": "DELIVERED",
        "resultCode": "4000",
        "resultMessage": None,
        "provider": "solapi",
        "providerMessageId": "M1",
        "telecom": "SKT",
        "reportedAt": "2026-12-02T18:00:04.210+09:00",
    }
    second = solapi.delivery_result(found[1], "R:2", moment)
    assert (second["status"], second["reportedAt"]) == (
        "UNDELIVERED",
        "2026-12-02T18:00:05.000+09:00",
    )
    with pytest.raises(ValueError):
        solapi.parse_report("nope")


def test_the_webhook_secret_is_compared_and_required() -> None:
    assert solapi.secret_ok("s3", "s3")
    assert not solapi.secret_ok("s3", "other")
    assert not solapi.secret_ok(None, "s3")
    assert not solapi.secret_ok("s3", None)
