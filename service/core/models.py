"""Wire models (contract §2-§8), the one `Reason` enum and the classification of input records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

MAX_EVENT_BYTES = 64 * 1024
MAX_DETAIL_BYTES = 1024

# Headers the service puts on what it writes (§6, §8); written by the shell, named once here.
IDEMPOTENCY_KEY = "idempotency-key"
DLQ_ERROR = "x-fallback-error"
DLQ_ERROR_DETAIL = "x-fallback-error-detail"
DLQ_ORIGINAL_TOPIC = "x-original-topic"
DLQ_ORIGINAL_PARTITION = "x-original-partition"
DLQ_ORIGINAL_OFFSET = "x-original-offset"
DLQ_VALUE_TRUNCATED = "x-fallback-value-truncated"
DLQ_ORIGINAL_SIZE = "x-fallback-original-size"


def fallback_id(request_id: str, recipient_seq: int) -> str:
    """`{requestId}:{recipientSeq}`: the id of one fallback everywhere downstream (§2)."""
    return f"{request_id}:{recipient_seq}"


class Status(StrEnum):
    """Outcome status (§7). SENT and FAILED come from sinks that deliver themselves."""

    REQUESTED = "REQUESTED"
    SKIPPED = "SKIPPED"
    REJECTED = "REJECTED"
    SENT = "SENT"
    FAILED = "FAILED"
    # Final outcomes with delivery results on (§7, §11).
    DELIVERED = "DELIVERED"
    UNDELIVERED = "UNDELIVERED"
    EXPIRED = "EXPIRED"


FINAL_STATUSES = frozenset({Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED})
"""The statuses that end a fallback's story (§7): one of them per requested fallback."""


class Reason(StrEnum):
    """Every reason code an outcome can carry (§5), in decision order."""

    DUPLICATE = "duplicate"
    EXPIRED = "expired"
    CHANNEL_NOT_CONFIGURED = "channel_not_configured"
    FALLBACK_DISABLED = "fallback_disabled"
    RESULT_CODE_EXCLUDED = "result_code_excluded"
    RESEND_NOT_REQUESTED = "resend_not_requested"
    RECIPIENT_NUMBER_INVALID = "recipient_number_invalid"
    SENDER_NUMBER_MISSING = "sender_number_missing"
    SENDER_NUMBER_INVALID = "sender_number_invalid"
    SENDER_NUMBER_UNREGISTERED = "sender_number_unregistered"
    SENDER_NUMBER_BLOCKED = "sender_number_blocked"
    UNSUBSCRIBE_NUMBER_MISSING = "unsubscribe_number_missing"
    UNSUBSCRIBE_NUMBER_INVALID = "unsubscribe_number_invalid"
    AD_QUIET_HOURS = "ad_quiet_hours"
    AD_FORMAT_INVALID = "ad_format_invalid"
    UNENCODABLE_CHARACTERS = "unencodable_characters"
    EMPTY_BODY = "empty_body"
    INTERNATIONAL_LMS_UNSUPPORTED = "international_lms_unsupported"
    # Settlement by a sink that delivers itself (§7, §10): FAILED outcomes.
    PROVIDER_REJECTED = "provider_rejected"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    # Final outcomes (§7, §11): the carrier gave up; no result came by the deadline.
    UNDELIVERED = "undelivered"
    NO_RESULT = "no_result"


SKIP_REASONS = frozenset(
    {
        Reason.DUPLICATE,
        Reason.EXPIRED,
        Reason.CHANNEL_NOT_CONFIGURED,
        Reason.FALLBACK_DISABLED,
        Reason.RESULT_CODE_EXCLUDED,
        Reason.RESEND_NOT_REQUESTED,
        Reason.AD_QUIET_HOURS,
    }
)

# Reasons that only settlement gives (FAILED outcomes of a delivering sink), never `decide`.
SETTLEMENT_REASONS = frozenset({Reason.PROVIDER_REJECTED, Reason.PROVIDER_UNAVAILABLE})

# Reasons of the final outcomes that delivery results give (§11), never `decide`.
RESULT_REASONS = frozenset({Reason.UNDELIVERED, Reason.NO_RESULT})


class DeadLetterError(StrEnum):
    """Why an input record went to the DLQ (§8): header `x-fallback-error`."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    OVERSIZED = "oversized"


class MessageKind(StrEnum):
    SMS = "SMS"
    LMS = "LMS"


def _blank_is_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


class _Wire(BaseModel):
    # Strict: a string where a number belongs is "a field of the wrong type" (§2), not a number.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Button(_Wire):
    ordering: int | None = None
    type: str | None = None
    name: str | None = None
    linkMo: str | None = None
    linkPc: str | None = None


class ResendParameter(_Wire):
    """Per-message overrides; missing, null or blank means "use the channel or the rule"."""

    isResend: bool | None = None
    resendType: MessageKind | None = None
    resendTitle: str | None = None
    resendContent: str | None = None
    resendSendNo: str | None = None
    resendUnsubscribeNo: str | None = None

    @field_validator(
        "resendTitle", "resendContent", "resendSendNo", "resendUnsubscribeNo", mode="before"
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_is_none(value)

    @field_validator("resendType", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        value = _blank_is_none(value)
        if not isinstance(value, str):
            return value
        # An enum in strict mode still takes its value from JSON text; accept any case. The
        # error never repeats the value: it may be a phone number in the wrong field.
        try:
            return MessageKind(value.strip().upper())
        except ValueError:
            raise ValueError("expected SMS or LMS") from None


class FailureEvent(_Wire):
    """An AlimTalk delivery failure for one recipient (§2)."""

    requestId: str = Field(min_length=1, max_length=64)
    recipientSeq: int = Field(ge=1)
    senderKey: str = Field(min_length=1, max_length=64)
    plusFriendId: str | None = None
    templateCode: str | None = None
    recipientNo: str
    countryCode: str = Field("82", pattern=r"^[0-9]{1,4}$")
    content: str = Field(max_length=4000)
    buttons: tuple[Button, ...] = ()
    messageType: Literal["ALIMTALK", "FRIENDTALK", "BRAND_MESSAGE"] = "ALIMTALK"
    isAd: bool = False
    resultCode: str
    resultCodeName: str | None = None
    failedAt: str | None = None
    senderGroupingKey: str | None = None
    recipientGroupingKey: str | None = None
    statsId: str | None = None
    resendParameter: ResendParameter = ResendParameter()

    @field_validator("countryCode", mode="before")
    @classmethod
    def _country(cls, value: Any) -> Any:
        # "+82", " 82" and null all mean Korea's code as digits.
        if value is None:
            return "82"
        if isinstance(value, str):
            return value.strip().lstrip("+") or "82"
        return value

    @field_validator("buttons", mode="before")
    @classmethod
    def _buttons(cls, value: Any) -> Any:
        # Lists arrive from JSON; a tuple keeps the model hashable and immutable.
        if value is None:
            return ()
        return tuple(value) if isinstance(value, list) else value

    @field_validator("messageType", "isAd", "resendParameter", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: Any) -> Any:
        if value is None:
            return {"messageType": "ALIMTALK", "isAd": False, "resendParameter": {}}[
                info.field_name
            ]
        return value

    @field_validator("failedAt")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("failedAt must be an RFC 3339 timestamp") from None
        return value

    @property
    def fallback_id(self) -> str:
        return fallback_id(self.requestId, self.recipientSeq)


class ChannelSettings(_Wire):
    """Per-channel fallback settings (§3), keyed by senderKey."""

    enabled: bool
    sendNo: str | None = None
    title: str | None = None
    unsubscribeNo: str | None = None
    adName: str | None = None
    # When non-empty, only failures with one of these Kakao result codes fall back.
    resultCodes: tuple[str, ...] | None = None

    @field_validator("sendNo", "title", "unsubscribeNo", "adName", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_is_none(value)

    @field_validator("resultCodes", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        # Lists arrive from JSON; an empty list means "every code", like no list.
        if isinstance(value, list):
            return tuple(value) or None
        return value


class SenderNumberStatus(StrEnum):
    ACTIVE = "ACTIVE"
    BLOCKED = "BLOCKED"


class SenderNumber(_Wire):
    """A registered sender number (§4), keyed by the number's digits."""

    status: SenderNumberStatus

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        return SenderNumberStatus(value) if isinstance(value, str) else value


# The outputs are slotted dataclasses rather than BaseModels, and not frozen: building them
# cost more than the whole conversion otherwise (frozen __init__ is ~7x slower). Treat them as
# immutable. pydantic still validates them and describes their schema through the TypeAdapters
# below; orjson serialises them natively.
@dataclass(slots=True)
class Origin:
    requestId: str
    recipientSeq: int
    senderKey: str
    templateCode: str | None
    resultCode: str


@dataclass(slots=True)
class SmsRequest:
    """What the SMS service is asked to send (§6)."""

    fallbackId: str
    type: MessageKind
    sendNo: str
    recipientNo: str
    countryCode: str
    title: str | None
    body: str
    ad: bool
    bodyBytes: int
    titleBytes: int | None
    truncated: bool
    replacedChars: int
    senderGroupingKey: str | None
    recipientGroupingKey: str | None
    statsId: str | None
    origin: Origin
    createdAt: str


@dataclass(slots=True)
class Outcome:
    """One per well-formed failure event (§7); sinks that deliver add SENT/FAILED later."""

    fallbackId: str
    requestId: str
    recipientSeq: int
    senderKey: str
    status: Status
    reason: Reason | None
    type: MessageKind | None
    bodyBytes: int | None
    truncated: bool
    replacedChars: int
    processedAt: str


SMS_REQUEST = TypeAdapter(SmsRequest)
OUTCOME = TypeAdapter(Outcome)


def to_json(value: SmsRequest | Outcome) -> bytes:
    """The wire form of an output."""
    return orjson.dumps(value)


# Where an outcome's fields after the event's own (fallbackId, requestId, recipientSeq,
# senderKey) begin: a quote inside a JSON string is escaped, so the first match is the key.
_AFTER_IDENTITY = b',"status":'


def outcome_without_event(outcome: bytes) -> bytes:
    """An outcome's JSON less the fields its failure event gives (the first four): what a
    dedupe marker keeps of it. `outcome_with_event` makes the same bytes again."""
    return b"{" + outcome[outcome.index(_AFTER_IDENTITY) + 1 :]


def outcome_with_event(rest: bytes, event: FailureEvent) -> bytes:
    """The outcome `outcome_without_event` made `rest` of, for the same event, byte for byte."""
    identity = {
        "fallbackId": event.fallback_id,
        "requestId": event.requestId,
        "recipientSeq": event.recipientSeq,
        "senderKey": event.senderKey,
    }
    return orjson.dumps({**identity, **orjson.loads(rest)})


class Malformed(BaseModel):
    """Why an input record cannot be an event; it goes to the DLQ unchanged (§8)."""

    error: DeadLetterError
    detail: str


def describe_errors(error: ValidationError, whole: str = "event") -> str:
    """Each problem as `field: message`; never the value (it may be a phone number)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or whole
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def truncate_detail(detail: str) -> str:
    """Keep a DLQ detail within 1 KiB of UTF-8 without splitting a character."""
    raw = detail.encode("utf-8")
    if len(raw) <= MAX_DETAIL_BYTES:
        return detail
    return raw[: MAX_DETAIL_BYTES - 3].decode("utf-8", errors="ignore") + "..."


_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def json_object(value: bytes | None) -> dict[str, Any] | Malformed:
    """The JSON object a record value holds, or why it holds none (§8): the first step of
    reading the input (§2) and the results topic (§11)."""
    if value is None:
        return Malformed(error=DeadLetterError.INVALID_JSON, detail="record has no value")
    if len(value) > MAX_EVENT_BYTES:
        return Malformed(
            error=DeadLetterError.OVERSIZED,
            detail=f"value is {len(value)} bytes, more than {MAX_EVENT_BYTES}",
        )
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Malformed(error=DeadLetterError.INVALID_JSON, detail=truncate_detail(str(exc)))
    if not isinstance(data, dict):
        # JSON, but not an object: the document has the wrong shape, not the wrong syntax.
        return Malformed(
            error=DeadLetterError.INVALID_EVENT,
            detail=f"value is a JSON {_JSON_TYPES.get(type(data), 'value')}, not an object",
        )
    return data


def parse_failure_event(value: bytes | None) -> FailureEvent | Malformed:
    """Classify one input record value: an event, or why it is malformed (§2, §8)."""
    data = json_object(value)
    if isinstance(data, Malformed):
        return data
    try:
        return FailureEvent.model_validate(data)
    except ValidationError as exc:
        return Malformed(
            error=DeadLetterError.INVALID_EVENT, detail=truncate_detail(describe_errors(exc))
        )
