"""The NHN Cloud SMS API v3.0 as plain data (contract §10): which endpoint and body a request
becomes, what an answer means, and how long to wait before trying again.

Pure: the `nhn` sink (`service.sinks.nhn`) does the HTTP; this module only decides.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.core.models import MessageKind, SmsRequest

API_VERSION = "v3.0"
CONTENT_TYPE = "application/json;charset=UTF-8"

# Refusals no message can get past: app key, service or IP refused, project blocked (-1000 to
# -1008), the organisation's monthly quota (-2052); and two that mean our own configuration is
# wrong for every message: content type (-9996) and an API that does not exist (-9998, a wrong
# base URL). The service pauses on them instead of failing every fallback (docs/decisions.md).
_ACCOUNT_RANGE = range(-1008, -999)
_ACCOUNT_CODES = frozenset({-2052, -9996, -9998})
# The API's own "try again": system error, and its queue refusing the insert.
_TRANSIENT_CODES = frozenset({-9999, -2021})
# HTTP statuses that mean the account or the address is wrong, not the message.
_ACCOUNT_STATUSES = frozenset({401, 403, 404, 405})
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class Verdict(StrEnum):
    """What one answer of the API means for the request."""

    ACCEPTED = "accepted"  # SENT
    REJECTED = "rejected"  # FAILED provider_rejected, never retried
    TRANSIENT = "transient"  # retried; FAILED provider_unavailable when the budget is spent
    ACCOUNT = "account"  # no message can get past: pause the input, probe until it clears


@dataclass(frozen=True, slots=True)
class Answer:
    """One attempt's answer, classified. `retry_after` is the API's own wait, in seconds."""

    verdict: Verdict
    result_code: int | None
    result_message: str
    request_id: str | None = None
    retry_after: float | None = None

    @property
    def label(self) -> str:
        """The answer as a metric label: the API's result code, else the transport's cause."""
        if self.result_code is not None:
            return str(self.result_code)
        return self.result_message.split(":", 1)[0].strip().lower().replace(" ", "_")[:32]


def endpoint(request: SmsRequest) -> str:
    """The send endpoint for `request`, relative to the app key: by type and ad flag (§10)."""
    kind = "sms" if request.type is MessageKind.SMS else "mms"
    return f"sender/ad-{kind}" if request.ad else f"sender/{kind}"


def path(app_key: str, request: SmsRequest) -> str:
    """The URL path of the send call for `request`."""
    return f"/sms/{API_VERSION}/appKeys/{app_key}/{endpoint(request)}"


def body(request: SmsRequest) -> dict[str, Any]:
    """The JSON body of §10 for `request`. Optional fields that are null are left out rather
    than sent as null: the API documents them as optional strings."""
    recipient: dict[str, Any] = {
        "recipientNo": request.recipientNo,
        "countryCode": request.countryCode,
    }
    if request.recipientGroupingKey is not None:
        recipient["recipientGroupingKey"] = request.recipientGroupingKey
    payload: dict[str, Any] = {"sendNo": request.sendNo, "body": request.body}
    if request.type is MessageKind.LMS and request.title is not None:
        payload["title"] = request.title
    payload["recipientList"] = [recipient]
    if request.senderGroupingKey is not None:
        payload["senderGroupingKey"] = request.senderGroupingKey
    if request.statsId is not None:
        payload["statsId"] = request.statsId
    return payload


def transport_failure(cause: str) -> Answer:
    """No answer at all: the connection failed or the call timed out. Always worth retrying."""
    return Answer(Verdict.TRANSIENT, None, cause)


def classify(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    recipient_no: str,
    now_epoch: float,
) -> Answer:
    """What an HTTP answer of the send API means (§10).

    The API answers 200 for business errors too, with `header.isSuccessful` false. When the
    header is successful, the recipient's entry in `sendResultList` decides: a non-zero code
    there is a refusal of that recipient. `headers` are looked up in lower case.
    """
    if status >= 500 or status in _TRANSIENT_STATUSES:
        retry_after = parse_retry_after(headers.get("retry-after"), now_epoch)
        return Answer(Verdict.TRANSIENT, None, f"HTTP {status}", retry_after=retry_after)
    if status in _ACCOUNT_STATUSES:
        return Answer(Verdict.ACCOUNT, None, f"HTTP {status}")
    if not 200 <= status < 300:
        return Answer(Verdict.REJECTED, None, f"HTTP {status}")
    try:
        document = json.loads(content)
        header = document["header"]
        successful = header["isSuccessful"]
        code = int(header["resultCode"])
        message = str(header.get("resultMessage") or "")
    except (ValueError, TypeError, KeyError):
        # Something between us and the API answered (a proxy's page): we cannot know whether
        # the message was taken. Retrying risks a duplicate, not retrying risks a loss.
        return Answer(Verdict.TRANSIENT, None, f"HTTP {status}: unreadable answer")
    if successful is not True:
        if code in _TRANSIENT_CODES:
            return Answer(Verdict.TRANSIENT, code, message)
        if code in _ACCOUNT_RANGE or code in _ACCOUNT_CODES:
            return Answer(Verdict.ACCOUNT, code, message)
        return Answer(Verdict.REJECTED, code, message)
    data = ((document.get("body") or {}).get("data")) or {}
    request_id = data.get("requestId")
    request_id = str(request_id) if request_id is not None else None
    entry = _recipient_entry(data.get("sendResultList"), recipient_no)
    if entry is not None:
        entry_code = entry.get("resultCode")
        if entry_code not in (None, 0):
            try:
                entry_code = int(entry_code)
            except (TypeError, ValueError):
                entry_code = None
            entry_message = str(entry.get("resultMessage") or "")
            return Answer(Verdict.REJECTED, entry_code, entry_message, request_id)
        code = 0
        message = str(entry.get("resultMessage") or message)
    return Answer(Verdict.ACCEPTED, code, message, request_id)


def _recipient_entry(results: object, recipient_no: str) -> Mapping[str, Any] | None:
    if not isinstance(results, list):
        return None
    entries = [e for e in results if isinstance(e, dict)]
    for entry in entries:
        if entry.get("recipientNo") == recipient_no:
            return entry
    # One recipient per request: if the API wrote the number differently, its only entry is ours.
    return entries[0] if len(entries) == 1 else None


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """`Retry-After` in seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - now_epoch)


def backoff(attempt: int, base: float, cap: float, unit_random: float) -> float:
    """The wait before retry number `attempt` (1 = the first retry): full jitter, uniform in
    [0, min(cap, base·2^(attempt-1))]. `unit_random` is a draw from [0, 1)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return float(ceiling * unit_random)


def retry_wait(answer: Answer, attempt: int, base: float, cap: float, unit_random: float) -> float:
    """How long to wait after `answer` before the next attempt: the jittered backoff, but never
    less than what the API asked for in `Retry-After`."""
    wait = backoff(attempt, base, cap, unit_random)
    if answer.retry_after is not None:
        wait = max(wait, answer.retry_after)
    return wait
