"""§2 and §8: which input records are events and why the others go to the DLQ."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.core.models import (
    MAX_EVENT_BYTES,
    ChannelSettings,
    DeadLetterError,
    FailureEvent,
    Malformed,
    MessageKind,
    SenderNumber,
    outcome_with_event,
    outcome_without_event,
    parse_failure_event,
    to_json,
    truncate_detail,
)
from service.core.rules import Policy, decide
from service.core.settle import ProviderAnswer, settle
from tests.factories import NOON_KST, REGISTRY, channel, event_dict


def classify(value: bytes | None) -> DeadLetterError | None:
    result = parse_failure_event(value)
    return result.error if isinstance(result, Malformed) else None


def encoded(**fields: Any) -> bytes:
    return orjson.dumps(event_dict(**fields))


def test_well_formed_event() -> None:
    result = parse_failure_event(encoded())
    assert isinstance(result, FailureEvent)
    assert result.fallback_id == "R1:1"
    assert result.countryCode == "82"
    assert result.messageType == "ALIMTALK"
    assert result.isAd is False


def test_unknown_fields_are_ignored() -> None:
    result = parse_failure_event(encoded(newField={"x": 1}, another=[1, 2]))
    assert isinstance(result, FailureEvent)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"not json", DeadLetterError.INVALID_JSON),
        (b"{", DeadLetterError.INVALID_JSON),
        (b"\xff\xfe{}", DeadLetterError.INVALID_JSON),  # not UTF-8
        # JSON, but not an object: the wrong shape, not the wrong syntax (§2).
        (b"[1, 2]", DeadLetterError.INVALID_EVENT),
        (b'"text"', DeadLetterError.INVALID_EVENT),
        (b"null", DeadLetterError.INVALID_EVENT),
        (b"3018", DeadLetterError.INVALID_EVENT),
        (b"", DeadLetterError.INVALID_JSON),
        (None, DeadLetterError.INVALID_JSON),  # a tombstone on the input topic
        (b"{}", DeadLetterError.INVALID_EVENT),
    ],
)
def test_not_an_object(value: bytes | None, error: DeadLetterError) -> None:
    assert classify(value) is error


@pytest.mark.parametrize(
    "field", ["requestId", "recipientSeq", "senderKey", "recipientNo", "content", "resultCode"]
)
def test_missing_required_field(field: str) -> None:
    result = parse_failure_event(encoded(**{field: ...}))
    assert isinstance(result, Malformed)
    assert result.error is DeadLetterError.INVALID_EVENT
    assert field in result.detail


@pytest.mark.parametrize(
    "fields",
    [
        {"recipientSeq": "1"},  # a string where a number belongs
        {"recipientSeq": 1.5},
        {"recipientSeq": 0},
        {"recipientSeq": True},
        {"requestId": ""},
        {"requestId": "x" * 65},
        {"senderKey": 5},
        {"recipientNo": 1012345678},
        {"content": None},
        {"content": "가" * 4001},
        {"resultCode": 3018},
        {"isAd": "true"},
        {"messageType": "SMS"},
        {"buttons": "none"},
        {"buttons": [{"ordering": "1", "type": "WL"}]},
        {"resendParameter": {"isResend": "no"}},
        {"resendParameter": {"resendType": "MMS"}},
        {"resendParameter": []},
        {"failedAt": "yesterday"},
        {"countryCode": 82},
        {"countryCode": "kr"},
    ],
)
def test_wrong_type(fields: dict[str, Any]) -> None:
    assert classify(encoded(**fields)) is DeadLetterError.INVALID_EVENT


@pytest.mark.parametrize(
    "fields",
    [
        {"content": "가" * 4000},
        {"requestId": "x" * 64},
        {"isAd": None, "messageType": None, "countryCode": None, "resendParameter": None},
        {"failedAt": "2026-11-22T14:00:00+09:00"},
        {"failedAt": "2026-11-22T05:00:00Z"},
        {"buttons": None},
        {"buttons": [{"ordering": 1, "type": "WL", "name": "a", "linkMo": "b", "linkPc": None}]},
        {"resendParameter": {"resendType": " ", "resendTitle": "", "resendSendNo": "  "}},
        {"messageType": "BRAND_MESSAGE"},
    ],
)
def test_accepted_variants(fields: dict[str, Any]) -> None:
    assert classify(encoded(**fields)) is None


def test_blank_overrides_are_none() -> None:
    result = parse_failure_event(
        encoded(resendParameter={"resendType": "", "resendContent": " \n", "resendSendNo": ""})
    )
    assert isinstance(result, FailureEvent)
    params = result.resendParameter
    assert params.resendType is None
    assert params.resendContent is None
    assert params.resendSendNo is None
    lower = parse_failure_event(encoded(resendParameter={"resendType": "lms"}))
    assert isinstance(lower, FailureEvent)
    assert lower.resendParameter.resendType is MessageKind.LMS


def test_oversized_is_checked_before_parsing() -> None:
    big = encoded(content="a" * 100, pad="x" * MAX_EVENT_BYTES)
    assert classify(big) is DeadLetterError.OVERSIZED
    assert classify(b"x" * (MAX_EVENT_BYTES + 1)) is DeadLetterError.OVERSIZED
    exactly = encoded(pad="")
    exactly = exactly[:-2] + b" " * (MAX_EVENT_BYTES - len(exactly)) + exactly[-2:]
    assert len(exactly) == MAX_EVENT_BYTES
    assert classify(exactly) is None


def test_detail_is_readable_and_bounded() -> None:
    result = parse_failure_event(encoded(recipientSeq="one"))
    assert isinstance(result, Malformed)
    assert result.detail.startswith("recipientSeq: ")
    many = {f"f{i}": i for i in range(10)}
    bad = parse_failure_event(orjson.dumps({"buttons": [many] * 200}))
    assert isinstance(bad, Malformed)
    assert len(bad.detail.encode()) <= 1024
    assert len(truncate_detail("가" * 1000).encode()) <= 1024


def test_channel_settings() -> None:
    ch = ChannelSettings.model_validate({"enabled": True, "sendNo": " ", "extra": 1})
    assert ch.sendNo is None
    with pytest.raises(ValueError):
        ChannelSettings.model_validate({"sendNo": "0215990000"})
    with pytest.raises(ValueError):
        ChannelSettings.model_validate({"enabled": "yes"})


def test_sender_number() -> None:
    assert SenderNumber.model_validate({"status": "ACTIVE"}).status == "ACTIVE"
    with pytest.raises(ValueError):
        SenderNumber.model_validate({"status": "active"})
    with pytest.raises(ValueError):
        SenderNumber.model_validate({})


@settings(max_examples=300)
@given(
    request_id=st.text(min_size=1, max_size=64).filter(lambda s: s.strip() == s and s != ""),
    seq=st.integers(min_value=1, max_value=10**9),
    sender_key=st.text(min_size=1, max_size=64).filter(lambda s: s.strip() == s and s != ""),
    sent=st.booleans(),
    message=st.text(max_size=80),
)
def test_a_marker_keeps_an_outcome_without_the_events_fields_and_gives_it_back_exactly(
    request_id: str, seq: int, sender_key: str, sent: bool, message: str
) -> None:
    event = parse_failure_event(
        orjson.dumps(event_dict(requestId=request_id, recipientSeq=seq, senderKey=sender_key))
    )
    assume(isinstance(event, FailureEvent))
    assert isinstance(event, FailureEvent)
    decision = decide(
        event,
        channel(),
        REGISTRY,
        already_requested=False,
        now=NOON_KST,
        policy=Policy(quiet_hours=None),
    )
    answer = ProviderAnswer("nhn", sent, "20261125-1" if sent else None, 0, message)
    for outcome in (
        decision.outcome,
        settle(decision.outcome, answer, "2026-11-25T12:00:00+09:00"),
    ):
        raw = to_json(outcome)
        rest = outcome_without_event(raw)
        assert b"fallbackId" not in rest and orjson.loads(rest)["status"] == outcome.status
        assert outcome_with_event(rest, event) == raw
