"""Plain-data builders shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from service.config import Pressure
from service.core.models import ChannelSettings, FailureEvent, SenderNumberStatus, SmsRequest
from service.core.rules import Policy, decide

SENDER_KEY = "sk-mybrand"
SEND_NO = "0215990000"
UNSUBSCRIBE_NO = "0801234567"
# 14:00 in Seoul: outside the default advertising quiet hours.
NOON_KST = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
NIGHT_KST = datetime(2026, 11, 22, 13, 30, tzinfo=UTC)  # 22:30 in Seoul


def event_dict(**fields: Any) -> dict[str, Any]:
    """A well-formed failure event as JSON data; keyword arguments replace or add fields."""
    data: dict[str, Any] = {
        "requestId": "R1",
        "recipientSeq": 1,
        "senderKey": SENDER_KEY,
        "plusFriendId": "@mybrand",
        "templateCode": "T001",
        "recipientNo": "010-1234-5678",
        "content": "[마이브랜드] 인증번호 482913",
        "resultCode": "3018",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not ...}


def event(**fields: Any) -> FailureEvent:
    return FailureEvent.model_validate(event_dict(**fields))


def channel(**fields: Any) -> ChannelSettings:
    data: dict[str, Any] = {"enabled": True, "sendNo": SEND_NO}
    data.update(fields)
    return ChannelSettings.model_validate(data)


REGISTRY = {
    SEND_NO: SenderNumberStatus.ACTIVE,
    "0317770000": SenderNumberStatus.BLOCKED,
    "15880000": SenderNumberStatus.ACTIVE,
}


def sms_request(seq: int = 1, **fields: Any) -> SmsRequest:
    """The SMS request the core makes of an event (recipient `seq` of request R1, at noon)."""
    decision = decide(
        event(recipientSeq=seq, **fields),
        channel(),
        REGISTRY,
        already_requested=False,
        now=NOON_KST,
        policy=Policy(),
    )
    assert decision.request is not None
    return decision.request


# A delivering sink's pace in the sink tests: quick back-offs, no rate limit.
PRESSURE = Pressure(
    timeout_seconds=2.0,
    max_attempts=4,
    request_deadline_seconds=30.0,
    backoff_base_seconds=0.2,
    backoff_max_seconds=5.0,
    rate_limit=0,
    concurrency=8,
    breaker_threshold=5,
    breaker_max_seconds=30.0,
)


def record(
    value: bytes | dict[str, Any] | None,
    *,
    offset: int = 0,
    partition: int = 0,
    topic: str = "in",
    key: bytes | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> ConsumerRecord[bytes, bytes]:
    """An input record as aiokafka hands it over; dict values are JSON-encoded."""
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=raw,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(raw or b""),
        headers=headers,
    )
