"""The NHN Cloud SMS API v3.0 as plain data (contract §10): which endpoint and body a request
becomes, what an answer means, and how a request is looked up after an ambiguous attempt.

Pure: the `nhn` sink (`service.sinks.nhn`) does the HTTP; this module only decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from service.core.models import MessageKind, SmsRequest
from service.core.nhn_results import nhn_time
from service.core.provider import Answer, Found, Lookup, Verdict, parse_retry_after

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


def endpoint(request: SmsRequest) -> str:
    """The send endpoint for `request`, relative to the app key: by type and ad flag (§10)."""
    kind = "sms" if request.type is MessageKind.SMS else "mms"
    return f"sender/ad-{kind}" if request.ad else f"sender/{kind}"


def path(app_key: str, request: SmsRequest) -> str:
    """The URL path of the send call for `request`."""
    return f"/sms/{API_VERSION}/appKeys/{app_key}/{endpoint(request)}"


def grouping_key(request: SmsRequest) -> str:
    """The recipient's grouping key sent to NHN: the event's own, else the fallbackId (at most
    75 characters; NHN takes 100), so the send list can tell this fallback from any other to
    the same number when an answer is lost (docs/decisions.md)."""
    return request.recipientGroupingKey or request.fallbackId


def body(request: SmsRequest) -> dict[str, Any]:
    """The JSON body of §10 for `request`. Optional fields that are null are left out rather
    than sent as null: the API documents them as optional strings."""
    recipient: dict[str, Any] = {
        "recipientNo": request.recipientNo,
        "countryCode": request.countryCode,
        "recipientGroupingKey": grouping_key(request),
    }
    payload: dict[str, Any] = {"sendNo": request.sendNo, "body": request.body}
    if request.type is MessageKind.LMS and request.title is not None:
        payload["title"] = request.title
    payload["recipientList"] = [recipient]
    if request.senderGroupingKey is not None:
        payload["senderGroupingKey"] = request.senderGroupingKey
    if request.statsId is not None:
        payload["statsId"] = request.statsId
    return payload


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
        # 429 and 408 say the call was refused as a whole. A 5xx is the API's own refusal only
        # when it carries the API's error body; a proxy's page says nothing of the message (§10).
        own = status < 500 or _header_of(content) is not None
        verdict = Verdict.TRANSIENT if own else Verdict.AMBIGUOUS
        return Answer(verdict, None, f"HTTP {status}", retry_after=retry_after)
    if status in _ACCOUNT_STATUSES:
        return Answer(Verdict.ACCOUNT, None, f"HTTP {status}")
    if not 200 <= status < 300:
        return Answer(Verdict.REJECTED, None, f"HTTP {status}")
    document = _header_of(content)
    if document is None:
        # Something between us and the API answered: we cannot know whether the message was
        # taken, so it is looked up before it is sent again.
        return Answer(Verdict.AMBIGUOUS, None, f"HTTP {status}: unreadable answer")
    header = document["header"]
    successful = header["isSuccessful"]
    code = int(header["resultCode"])
    message = str(header.get("resultMessage") or "")
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


def _header_of(content: bytes) -> dict[str, Any] | None:
    """The API's answer document when `content` is one (a `header` with its result), else None."""
    try:
        document = json.loads(content)
        header = document["header"]
        int(header["resultCode"])
        header["isSuccessful"]
    except (ValueError, TypeError, KeyError):
        return None
    return document if isinstance(document, dict) else None


# The lookup after an ambiguous attempt (§10): the send list of the request's time window.
LOOKUP_PAGE_SIZE = 1000
# Around the first ambiguous attempt: NHN stamps requestDate on its own clock.
_LOOKUP_MARGIN = timedelta(minutes=2)


def lookup_path(app_key: str, request: SmsRequest) -> str:
    """The send list holding `request` (advertising sends are in the same lists)."""
    kind = "sms" if request.type is MessageKind.SMS else "mms"
    return f"/sms/{API_VERSION}/appKeys/{app_key}/sender/{kind}"


def lookup_query(
    request: SmsRequest, first_sent: datetime, now: datetime, page: int
) -> dict[str, str]:
    """The query of the send list for the messages to `request`'s recipient since its first
    ambiguous attempt (request dates in Korean time, `yyyy-MM-dd HH:mm:ss`)."""
    query = {
        "startRequestDate": nhn_time(first_sent - _LOOKUP_MARGIN),
        "endRequestDate": nhn_time(now + _LOOKUP_MARGIN),
        "recipientNo": request.recipientNo,
        "pageNum": str(page),
        "pageSize": str(LOOKUP_PAGE_SIZE),
    }
    if request.senderGroupingKey is not None:
        query["senderGroupingKey"] = request.senderGroupingKey
    query["recipientGroupingKey"] = grouping_key(request)
    return query


def parse_lookup(status: int, content: bytes, request: SmsRequest) -> tuple[Found, bool]:
    """What one page of the send list says of `request`, and whether another page follows.

    A listed message is `request` when its recipient, grouping keys and text are the same: the
    recipient's grouping key is the fallbackId unless the event brought its own
    (`grouping_key`). No answer we can read is UNKNOWN: the request stays held rather than
    risk a second SMS.
    """
    if status != 200:
        return Found(Lookup.UNKNOWN, detail=f"lookup answered HTTP {status}"), False
    document = _header_of(content)
    if document is None or document["header"]["isSuccessful"] is not True:
        code = document["header"]["resultCode"] if document is not None else "unreadable"
        return Found(Lookup.UNKNOWN, detail=f"lookup refused: {code}"), False
    body = document.get("body") or {}
    items = body.get("data")
    if not isinstance(items, list):
        return Found(Lookup.UNKNOWN, detail="lookup answer without a list"), False
    for item in items:
        if isinstance(item, dict) and _same_message(item, request):
            return Found(Lookup.TAKEN, str(item.get("requestId") or "") or None), False
    more = len(items) >= LOOKUP_PAGE_SIZE
    return Found(Lookup.NOT_TAKEN), more


def _same_message(item: Mapping[str, Any], request: SmsRequest) -> bool:
    if str(item.get("recipientNo") or "") != request.recipientNo:
        return False
    if item.get("senderGroupingKey") != request.senderGroupingKey:
        return False
    if item.get("recipientGroupingKey") != grouping_key(request):
        return False
    if item.get("body") != request.body:
        return False
    return request.type is MessageKind.SMS or item.get("title") in (None, request.title)
