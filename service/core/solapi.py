"""Solapi's messages API v4 as plain data (contract §10, §11): the signed `Authorization` header,
the send-many body a batch of requests becomes, what an answer says of each message, the
message-list lookup after an ambiguous call, and the report a delivery result comes in.

Pure: the `solapi` sink (`service.sinks.solapi`) and its collector do the HTTP; this module only
decides. Times and random salts are passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core.models import MessageKind, SmsRequest
from service.core.provider import Answer, Verdict, parse_retry_after, reported_at
from service.core.rules import timestamp

SEND_PATH = "/messages/v4/send-many/detail"
LIST_PATH = "/messages/v4/list"
# Solapi takes up to 10,000 messages per call (sendMany.md); the list answers up to 500 a page.
MOST_PER_CALL = 10_000
LIST_LIMIT = 500
DELIVERED_CODE = "4000"
# Not final yet: accepted (2000) and handed to the carrier, waiting for its report (3000).
_PENDING_CODES = frozenset({"2000", "3000"})

# Whole-call refusals no message can get past (§10): the account, its key or our clock.
_ACCOUNT_ERRORS = frozenset(
    {
        "NotEnoughBalance",
        "InvalidAPIKey",
        "SignatureDoesNotMatch",
        "RequestTimeTooSkewed",
        "Unauthorized",
        "Forbidden",
        "InsufficientBalance",
    }
)
# Signed again and sent again at once: a signature Solapi saw in the last 15 minutes.
RESIGN_ERROR = "DuplicatedSignature"
# The call's content was refused: split it, so one bad message never fails its neighbours.
INVALID_ERRORS = frozenset({"ValidationError", "BadRequest", "InvalidRequest"})


def signature(secret: str, date: str, salt: str) -> str:
    """Hex HMAC-SHA256 of `date + salt` under the API secret."""
    return hmac.new(secret.encode(), (date + salt).encode(), hashlib.sha256).hexdigest()


def authorization(api_key: str, secret: str, now: datetime, salt: str) -> str:
    """The `Authorization` header of one call, signed for `now` with a fresh `salt` (§10)."""
    date = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return (
        f"HMAC-SHA256 apiKey={api_key}, date={date}, salt={salt}, "
        f"signature={signature(secret, date, salt)}"
    )


def message(request: SmsRequest) -> dict[str, Any]:
    """One message of the send-many body, from the request of §6."""
    item: dict[str, Any] = {
        "to": request.recipientNo,
        "from": request.sendNo,
        "text": request.body,
        "type": request.type.value,
        "autoTypeDetect": False,
        "country": request.countryCode,
        "customFields": {"fallbackId": request.fallbackId},
    }
    if request.type is MessageKind.LMS and request.title is not None:
        item["subject"] = request.title
    return item


def send_body(requests: Sequence[SmsRequest]) -> dict[str, Any]:
    """The send-many body for `requests` (one call)."""
    return {
        "messages": [message(r) for r in requests],
        "allowDuplicates": False,
        "showMessageList": True,
    }


def calls(requests: Sequence[SmsRequest], most: int) -> list[list[int]]:
    """`requests` (by index) cut into calls of at most `most` messages, no recipient twice in
    one call: with `allowDuplicates` false Solapi refuses a repeated recipient (1026), and two
    fallbacks to one number are two SMS the customer is owed."""
    out: list[list[int]] = []
    open_calls: list[tuple[list[int], set[str]]] = []
    for index, request in enumerate(requests):
        for members, numbers in open_calls:
            if len(members) < most and request.recipientNo not in numbers:
                members.append(index)
                numbers.add(request.recipientNo)
                break
        else:
            members, numbers = [index], {request.recipientNo}
            open_calls.append((members, numbers))
            out.append(members)
        # A full call takes no more: keep the search short.
        open_calls = [(m, n) for m, n in open_calls if len(m) < most]
    return out


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """What one send-many call's answer means: either for the call as a whole (`whole`), or
    per message (`each`, in the order of the call's requests). `invalid` is a refusal of the
    call's content (ValidationError): split it and send the parts again."""

    whole: Answer | None = None
    each: tuple[Answer, ...] = ()
    invalid: bool = False
    resign: bool = False


def _error_of(document: Any) -> tuple[str, str] | None:
    """Solapi's own error body `{errorCode, errorMessage}`, when `document` is one."""
    if not isinstance(document, dict) or not isinstance(document.get("errorCode"), str):
        return None
    return document["errorCode"], str(document.get("errorMessage") or "")


def classify(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    requests: Sequence[SmsRequest],
    now_epoch: float,
) -> CallAnswer:
    """What an HTTP answer of send-many/detail means for each of `requests` (§10).

    A 200 carries partial failure: a message in `failedMessageList` is refused with its
    `statusCode`, the others are taken (their `messageId` from `messageList`). `headers` are
    looked up in lower case.
    """
    try:
        document: Any = json.loads(content)
    except ValueError:
        document = None  # a proxy's page, or nothing: read below as that
    error = _error_of(document)
    retry_after = parse_retry_after(headers.get("retry-after"), now_epoch)
    if status >= 500:
        # Solapi's own error body says it took nothing; a proxy's page says nothing (§10).
        verdict = Verdict.TRANSIENT if error is not None else Verdict.AMBIGUOUS
        label = f"HTTP {status}" + (f": {error[0]}" if error else "")
        return CallAnswer(Answer(verdict, None, label, retry_after=retry_after))
    if status == 429:
        return CallAnswer(Answer(Verdict.TRANSIENT, None, "HTTP 429", retry_after=retry_after))
    if error is not None and status >= 400:
        code, text = error
        if code == RESIGN_ERROR:
            return CallAnswer(Answer(Verdict.TRANSIENT, None, code), resign=True)
        if code in _ACCOUNT_ERRORS or status in (401, 402, 403):
            if code == "RequestTimeTooSkewed":
                text = f"{text} (this host's clock is more than 15 minutes off)".strip()
            return CallAnswer(Answer(Verdict.ACCOUNT, None, f"{code}: {text}"))
        if code in INVALID_ERRORS or status == 400:
            return CallAnswer(Answer(Verdict.REJECTED, None, f"{code}: {text}"), invalid=True)
        return CallAnswer(Answer(Verdict.ACCOUNT, None, f"{code}: {text}"))
    if status in (401, 402, 403, 404, 405):
        return CallAnswer(Answer(Verdict.ACCOUNT, None, f"HTTP {status}"))
    if status == 400:
        return CallAnswer(Answer(Verdict.REJECTED, None, "HTTP 400"), invalid=True)
    if not 200 <= status < 300:
        return CallAnswer(Answer(Verdict.AMBIGUOUS, None, f"HTTP {status}"))
    try:
        if document is None:
            raise ValueError("not JSON")
        failed = document.get("failedMessageList") or []
        listed = document.get("messageList") or []
        group = (document.get("groupInfo") or {}).get("groupId")
        if not isinstance(failed, list) or not isinstance(listed, list | dict):
            raise TypeError
    except (ValueError, TypeError, AttributeError):
        return CallAnswer(Answer(Verdict.AMBIGUOUS, None, f"HTTP {status}: unreadable answer"))
    if isinstance(listed, dict):
        listed = list(listed.values())
    refused = _by_message(failed, requests)
    taken = _by_message(listed, requests)
    each = []
    for index, _ in enumerate(requests):
        entry = refused.get(index)
        if entry is not None:
            refusal = _int_or_none(entry.get("statusCode"))
            each.append(Answer(Verdict.REJECTED, refusal, str(entry.get("statusMessage") or "")))
            continue
        accepted = taken.get(index) or {}
        message_id = accepted.get("messageId") or group
        status_code = _int_or_none(accepted.get("statusCode"))
        each.append(
            Answer(
                Verdict.ACCEPTED,
                status_code if status_code is not None else 2000,
                str(accepted.get("statusMessage") or "accepted"),
                str(message_id) if message_id else None,
            )
        )
    return CallAnswer(each=tuple(each))


def _by_message(entries: Sequence[Any], requests: Sequence[SmsRequest]) -> dict[int, Any]:
    """Entries of an answer's list matched to the call's requests: by `customFields.fallbackId`,
    else by recipient (unique within a call, `calls`)."""
    by_id = {r.fallbackId: i for i, r in enumerate(requests)}
    by_to = {r.recipientNo: i for i, r in enumerate(requests)}
    found: dict[int, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        fields = entry.get("customFields")
        fid = fields.get("fallbackId") if isinstance(fields, dict) else None
        index = by_id.get(fid) if isinstance(fid, str) else None
        if index is None:
            index = by_to.get(str(entry.get("to") or ""))
        if index is not None:
            found[index] = entry
    return found


def _int_or_none(value: object) -> int | None:
    if not isinstance(value, str | int):
        return None
    try:
        return int(value)
    except ValueError:
        return None


# The message list (lookup after an ambiguous call, and the collector's poll).

_LOOKUP_MARGIN = timedelta(minutes=2)


def list_time(moment: datetime) -> str:
    """A time as the message list's `startDate`/`endDate` take it (ISO 8601, UTC)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def lookup_query(
    first_sent: datetime, now: datetime, to: str | None, start_key: str | None
) -> dict[str, str]:
    """The message list's query for the messages sent since a call's first ambiguous attempt
    (to one recipient when the call had one)."""
    query = {
        "startDate": list_time(first_sent - _LOOKUP_MARGIN),
        "endDate": list_time(now + _LOOKUP_MARGIN),
        "limit": str(LIST_LIMIT),
    }
    if to is not None:
        query["to"] = to
    if start_key:
        query["startKey"] = start_key
    return query


def updated_query(start: datetime, end: datetime, start_key: str | None) -> dict[str, str]:
    """The collector's query: messages whose status changed in [start, end)."""
    query = {
        "dateType": "UPDATED",
        "startDate": list_time(start),
        "endDate": list_time(end),
        "limit": str(LIST_LIMIT),
    }
    if start_key:
        query["startKey"] = start_key
    return query


@dataclass(frozen=True, slots=True)
class Listed:
    """One message of a list page, or of a report: what the lookup and the collector read."""

    message_id: str
    fallback_id: str | None
    status_code: str
    status_message: str | None
    telecom: str | None
    reported_at: str | None

    @property
    def final(self) -> bool:
        return self.status_code not in _PENDING_CODES

    @property
    def delivered(self) -> bool:
        return self.status_code == DELIVERED_CODE


def _listed(item: Mapping[str, Any]) -> Listed | None:
    message_id = item.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        return None
    fields = item.get("customFields")
    fid = fields.get("fallbackId") if isinstance(fields, dict) else None
    reported = item.get("dateReported") or item.get("dateReceived") or item.get("dateUpdated")
    telecom = item.get("networkName") or item.get("networkCode")
    return Listed(
        message_id=message_id,
        fallback_id=fid if isinstance(fid, str) and fid else None,
        status_code=str(item.get("statusCode") or ""),
        status_message=str(item["statusMessage"]) if item.get("statusMessage") else None,
        telecom=str(telecom) if telecom else None,
        reported_at=reported_at(reported),
    )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the message list: its messages and the key of the next page (None: last)."""

    messages: tuple[Listed, ...]
    next_key: str | None


def parse_list(document: Any) -> Page:
    """A message-list answer; raises ValueError when it is not one."""
    if not isinstance(document, dict):
        raise ValueError("not a message list")
    items = document.get("messageList")
    if isinstance(items, dict):
        items = list(items.values())
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ValueError("messageList is not a list")
    found = tuple(m for item in items if isinstance(item, dict) and (m := _listed(item)))
    next_key = document.get("nextKey")
    return Page(found, str(next_key) if next_key and found else None)


def parse_lookup(status: int, content: bytes) -> tuple[dict[str, str] | None, str | None, str]:
    """One page of the message list as the lookup reads it: the fallbackIds it lists (with
    their messageId), the next page's key, and why it could not be read (the mapping None).
    A fallback on no page was not taken; a page that cannot be read decides nothing."""
    if status != 200:
        return None, None, f"lookup answered HTTP {status}"
    try:
        page = parse_list(json.loads(content))
    except ValueError as exc:
        return None, None, f"lookup unreadable: {exc}"
    found = {m.fallback_id: m.message_id for m in page.messages if m.fallback_id is not None}
    return found, page.next_key, ""


def parse_report(document: Any) -> list[Listed]:
    """The final results in a report webhook call (an array of `{data: {...}}`); raises
    ValueError when it is not one."""
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise ValueError("expected an array of reports")
    found = []
    for event in document:
        if not isinstance(event, dict):
            raise ValueError("a report is not an object")
        data = event.get("data", event)
        if not isinstance(data, dict):
            raise ValueError("a report's data is not an object")
        listed = _listed(data)
        if listed is not None and listed.final and listed.fallback_id is not None:
            found.append(listed)
    return found


def secret_ok(given: str | None, expected: str | None) -> bool:
    """Whether a report carries the configured `X-Solapi-Secret` (constant time); never
    without a configured one."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def delivery_result(listed: Listed, fallback_id: str, now: datetime) -> dict[str, Any]:
    """The results-topic record (§11) of a final Solapi status of fallback `fallback_id`."""
    return {
        "fallbackId": fallback_id,
        "status": "DELIVERED" if listed.delivered else "UNDELIVERED",
        "resultCode": listed.status_code,
        "resultMessage": listed.status_message,
        "provider": "solapi",
        "providerMessageId": listed.message_id,
        "telecom": listed.telecom,
        "reportedAt": listed.reported_at or timestamp(now),
    }
