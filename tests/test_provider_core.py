"""What any provider's answer means (§10): back-off, Retry-After, transport failures (sent or
not), and the lookups of NHN and Solapi after an ambiguous attempt, as pure functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core import nhn, provider, solapi
from service.core.provider import Answer, Lookup, Verdict
from tests.factories import sms_request as request

NOW = 1_800_000_000.0
MOMENT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert provider.parse_retry_after("7", NOW) == 7.0
    later = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert provider.parse_retry_after(later, NOW) == pytest.approx(30.0)
    assert provider.parse_retry_after("soon", NOW) is None
    assert provider.parse_retry_after(None, NOW) is None


@given(
    attempt=st.integers(1, 30),
    base=st.floats(0.001, 5),
    cap=st.floats(0.001, 60),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_backoff_is_full_jitter_under_the_capped_exponential(
    attempt: int, base: float, cap: float, draw: float
) -> None:
    wait = provider.backoff(attempt, base, cap, draw)
    assert 0 <= wait <= min(cap, base * 2 ** (attempt - 1)) + 1e-9


def test_retry_wait_never_shorter_than_retry_after() -> None:
    throttled = Answer(Verdict.TRANSIENT, None, "HTTP 429", retry_after=2.0)
    assert provider.retry_wait(throttled, 1, 0.2, 5, 0.5) == 2.0
    assert provider.retry_wait(throttled, 10, 1, 5, 0.9) == pytest.approx(4.5)


@pytest.mark.parametrize(
    ("error", "timeout", "verdict", "label"),
    [
        # Never connected: the provider cannot have the request, it may go elsewhere.
        ("ConnectError", False, Verdict.TRANSIENT, "connection_error"),
        ("ConnectTimeout", True, Verdict.TRANSIENT, "timeout"),
        ("PoolTimeout", True, Verdict.TRANSIENT, "timeout"),
        # Sent, then no answer: perhaps taken, looked up before anything is sent again.
        ("ReadTimeout", True, Verdict.AMBIGUOUS, "timeout"),
        ("WriteTimeout", True, Verdict.AMBIGUOUS, "timeout"),
        ("RemoteProtocolError", False, Verdict.AMBIGUOUS, "connection_error"),
        ("ReadError", False, Verdict.AMBIGUOUS, "connection_error"),
    ],
)
def test_a_transport_failure_is_ambiguous_once_the_request_went_out(
    error: str, timeout: bool, verdict: Verdict, label: str
) -> None:
    answer = provider.transport_failure(error, timeout=timeout)
    assert (answer.verdict, answer.label) == (verdict, label)


def test_labels_for_metrics() -> None:
    assert Answer(Verdict.ACCEPTED, 0, "SUCCESS").label == "0"
    assert Answer(Verdict.TRANSIENT, None, "HTTP 503").label == "http_503"


# NHN's send-list lookup.


def nhn_list(items: list[dict[str, Any]], successful: bool = True) -> bytes:
    header = {"isSuccessful": successful, "resultCode": 0 if successful else -1000}
    return json.dumps({"header": header, "body": {"data": items}}).encode()


def test_nhn_lookup_asks_for_the_recipient_in_the_window_in_korean_time() -> None:
    r = request(senderGroupingKey="S1")
    query = nhn.lookup_query(r, MOMENT, MOMENT + timedelta(seconds=30), 2)
    assert query["startRequestDate"] == "2026-12-02 17:58:00"
    assert query["endRequestDate"] == "2026-12-02 18:02:30"
    assert (query["recipientNo"], query["pageNum"], query["senderGroupingKey"]) == (
        r.recipientNo,
        "2",
        "S1",
    )
    assert query["recipientGroupingKey"] == r.fallbackId
    assert nhn.lookup_path("APP", r) == "/sms/v3.0/appKeys/APP/sender/sms"


def test_nhn_lookup_finds_the_same_message_only() -> None:
    r = request()
    same = {
        "requestId": "REQ1",
        "recipientNo": r.recipientNo,
        "body": r.body,
        "senderGroupingKey": None,
        "recipientGroupingKey": r.fallbackId,
    }
    found, more = nhn.parse_lookup(200, nhn_list([same]), r)
    assert (found.lookup, found.request_id, more) == (Lookup.TAKEN, "REQ1", False)
    other_text = {**same, "body": "another message"}
    other_key = {**same, "recipientGroupingKey": "mine"}
    found, _ = nhn.parse_lookup(200, nhn_list([other_text, other_key]), r)
    assert found.lookup is Lookup.NOT_TAKEN


def test_nhn_lookup_that_cannot_be_read_decides_nothing() -> None:
    r = request()
    assert nhn.parse_lookup(503, b"", r)[0].lookup is Lookup.UNKNOWN
    assert nhn.parse_lookup(200, b"<html>", r)[0].lookup is Lookup.UNKNOWN
    assert nhn.parse_lookup(200, nhn_list([], successful=False), r)[0].lookup is Lookup.UNKNOWN


def test_nhn_lookup_reads_the_next_page_of_a_full_one() -> None:
    r = request()
    filler = [{"recipientNo": r.recipientNo, "body": "x"}] * nhn.LOOKUP_PAGE_SIZE
    found, more = nhn.parse_lookup(200, nhn_list(filler), r)
    assert (found.lookup, more) == (Lookup.NOT_TAKEN, True)


# Solapi's message-list lookup.


def test_solapi_lookup_lists_the_fallbacks_it_has() -> None:
    page = {
        "messageList": {
            "M1": {"messageId": "M1", "statusCode": "2000", "customFields": {"fallbackId": "A:1"}},
            "M2": {"messageId": "M2", "statusCode": "4000"},
        },
        "nextKey": "K2",
    }
    found, next_key, why = solapi.parse_lookup(200, json.dumps(page).encode())
    assert (found, next_key, why) == ({"A:1": "M1"}, "K2", "")
    assert (
        solapi.parse_lookup(
            500,
            b"",
        )[0]
        is None
    )
    assert solapi.parse_lookup(200, b"[1]")[0] is None
    query = solapi.lookup_query(MOMENT, MOMENT, "01012345678", "K2")
    assert query == {
        "startDate": "2026-12-02T08:58:00Z",
        "endDate": "2026-12-02T09:02:00Z",
        "limit": "500",
        "to": "01012345678",
        "startKey": "K2",
    }
