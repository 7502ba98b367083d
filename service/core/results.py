"""Delivery results (contract §11) as plain data: the result record, what a requested fallback
awaits, and the final outcome (§7) a result or a passed deadline makes of it.

Pure: the caller passes the time; nothing here reads or writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import orjson
from pydantic import Field, ValidationError, field_validator

from service.core.models import (
    DeadLetterError,
    Malformed,
    MessageKind,
    Reason,
    Status,
    _Wire,
    describe_errors,
    json_object,
    truncate_detail,
)
from service.core.rules import timestamp


class ResultStatus(StrEnum):
    """What the SMS service or the provider reports of one SMS request (§11)."""

    DELIVERED = "DELIVERED"
    UNDELIVERED = "UNDELIVERED"


class DeliveryResult(_Wire):
    """One record of the results topic (§11); unknown fields are ignored."""

    fallbackId: str = Field(min_length=3, max_length=200)
    status: ResultStatus
    reportedAt: str
    resultCode: str | None = None
    resultMessage: str | None = None
    provider: str | None = None
    providerMessageId: str | None = None
    telecom: str | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return ResultStatus(value.strip().upper())
            except ValueError:
                raise ValueError("expected DELIVERED or UNDELIVERED") from None
        return value

    @field_validator("resultCode", mode="before")
    @classmethod
    def _code(cls, value: Any) -> Any:
        # NHN's codes are strings ("1000"), Solapi's too ("4000"); a number is taken as one.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("reportedAt")
    @classmethod
    def _reported(cls, value: str) -> str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("reportedAt must be an RFC 3339 timestamp") from None
        if moment.tzinfo is None:
            raise ValueError("reportedAt must carry its UTC offset")
        return value

    @property
    def reported_ms(self) -> int:
        return int(datetime.fromisoformat(self.reportedAt).timestamp() * 1000)


def parse_delivery_result(value: bytes | None) -> DeliveryResult | Malformed:
    """Classify one results-topic value as §8 classifies input: a result, or why not."""
    data = json_object(value)
    if isinstance(data, Malformed):
        return data
    try:
        return DeliveryResult.model_validate(data)
    except ValidationError as exc:
        return Malformed(
            error=DeadLetterError.INVALID_EVENT,
            detail=truncate_detail(describe_errors(exc, "result")),
        )


@dataclass(frozen=True, slots=True)
class Deadlines:
    """FALLBACK_RESULT_DEADLINE_SMS / _LMS: how long a result may take (NHN's own: 25 h, 80 h)."""

    sms: timedelta = timedelta(hours=25)
    lms: timedelta = timedelta(hours=80)

    def of(self, kind: MessageKind) -> timedelta:
        return self.sms if kind is MessageKind.SMS else self.lms


class Awaited(NamedTuple):
    """What the owner of a requested fallback keeps until its final outcome (§11).

    A tuple: one is made for every request, and a frozen dataclass costs several times more to
    build."""

    fallback_id: str
    sender_key: str
    kind: MessageKind
    failed_at_ms: int  # the failure's time (`failedAt`, else the input record's timestamp)
    deadline_s: int  # epoch seconds from which no result counts and it is EXPIRED

    def expired(self, now: datetime) -> bool:
        return now.timestamp() >= self.deadline_s


def deadline_s(requested_at: datetime, kind: MessageKind, deadlines: Deadlines) -> int:
    """When a fallback requested at `requested_at` stops awaiting its result (epoch seconds)."""
    return int((requested_at + deadlines.of(kind)).timestamp())


@dataclass(frozen=True, slots=True)
class Delivery:
    """The `delivery` object of a DELIVERED or UNDELIVERED outcome (§7)."""

    provider: str | None
    resultCode: str | None
    resultMessage: str | None
    telecom: str | None
    reportedAt: str
    latencyMs: int


@dataclass(frozen=True, slots=True)
class FinalOutcome:
    """DELIVERED, UNDELIVERED (`undelivered`) or EXPIRED (`no_result`), as §7 shows it.

    Its first four fields are the event's, like every outcome's (`outcome_without_event`).
    """

    fallbackId: str
    requestId: str
    recipientSeq: int
    senderKey: str
    status: Status
    reason: Reason | None
    type: MessageKind
    processedAt: str
    delivery: Delivery | None


def identity(fallback_id: str) -> tuple[str, int]:
    """The requestId and recipientSeq of `{requestId}:{recipientSeq}` (the requestId may hold
    colons, the sequence cannot)."""
    request_id, _, seq = fallback_id.rpartition(":")
    return request_id, int(seq)


def final_outcome(awaited: Awaited, result: DeliveryResult, now: datetime) -> FinalOutcome:
    """The outcome the first result of an awaited fallback makes (§7, §11)."""
    delivered = result.status is ResultStatus.DELIVERED
    request_id, seq = identity(awaited.fallback_id)
    return FinalOutcome(
        fallbackId=awaited.fallback_id,
        requestId=request_id,
        recipientSeq=seq,
        senderKey=awaited.sender_key,
        status=Status.DELIVERED if delivered else Status.UNDELIVERED,
        reason=None if delivered else Reason.UNDELIVERED,
        type=awaited.kind,
        processedAt=timestamp(now),
        delivery=Delivery(
            provider=result.provider,
            resultCode=result.resultCode,
            resultMessage=result.resultMessage,
            telecom=result.telecom,
            reportedAt=result.reportedAt,
            # A clock ahead at the SMS service cannot make the wait negative.
            latencyMs=max(0, result.reported_ms - awaited.failed_at_ms),
        ),
    )


def expired_outcome(awaited: Awaited, now: datetime) -> FinalOutcome:
    """EXPIRED `no_result`: no result came by the fallback's deadline (§11)."""
    request_id, seq = identity(awaited.fallback_id)
    return FinalOutcome(
        fallbackId=awaited.fallback_id,
        requestId=request_id,
        recipientSeq=seq,
        senderKey=awaited.sender_key,
        status=Status.EXPIRED,
        reason=Reason.NO_RESULT,
        type=awaited.kind,
        processedAt=timestamp(now),
        delivery=None,
    )


class Ignored(StrEnum):
    """Why a result is not an outcome: `fallback_results_ignored_total{why}` (§11)."""

    LATER = "later"  # the fallback has its final outcome already
    EXPIRED = "expired"  # it was EXPIRED before the result came
    NEVER_REQUESTED = "never_requested"  # still unknown after FALLBACK_RESULT_EARLY_WINDOW


class Early(StrEnum):
    """A result for a fallback not requested (yet): kept for the early window (§11)."""

    KEPT = "kept"


Verdict = FinalOutcome | Ignored | Early


def judge(
    result: DeliveryResult,
    awaited: Awaited | None,
    *,
    requested: bool,
    expired: bool,
    now: datetime,
) -> Verdict:
    """What one result does (§11): the final outcome of an awaited fallback; ignored (and
    counted) for one already final or EXPIRED; kept while it may be early.

    `requested`: the fallback counts as requested (§5.1 rule 1) but awaits nothing, so its final
    outcome exists, or it never awaited one (a FAILED send); `expired`: that outcome was EXPIRED.
    """
    if awaited is not None:
        return judge_awaited(result, awaited, now)
    if expired:
        return Ignored.EXPIRED
    if requested:
        return Ignored.LATER
    return Early.KEPT


def judge_awaited(
    result: DeliveryResult, awaited: Awaited, now: datetime
) -> FinalOutcome | Ignored:
    """The result of a fallback known to await one: its final outcome, unless it came after the
    deadline."""
    return Ignored.EXPIRED if awaited.expired(now) else final_outcome(awaited, result, now)


def early_until(first_seen_ms: int, window: timedelta) -> int:
    """Until when (epoch ms) a result first read at `first_seen_ms` waits for its request."""
    return first_seen_ms + int(window.total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class Expiry:
    """The command the owner's sweep writes for an awaited fallback past its deadline; read back
    as input, it becomes the EXPIRED outcome with the guarantees of any input (§9)."""

    fallbackId: str
    senderKey: str
    type: MessageKind

    def to_json(self) -> bytes:
        return orjson.dumps(self)


def parse_expiry(value: bytes | None) -> Expiry | None:
    """The expiry a repartition record carries, or None when it is not one."""
    try:
        data = orjson.loads(value or b"")
        return Expiry(str(data["fallbackId"]), str(data["senderKey"]), MessageKind(data["type"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
