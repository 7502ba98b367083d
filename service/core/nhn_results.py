"""NHN Cloud's delivery results as plain data (contract §11): the windows the collector polls
`message-results` in, what a page or a `MESSAGE_RESULT_UPDATE` webhook says, and the results
topic record each final result becomes.

Pure: `service.sinks.nhn_results` does the HTTP and the Kafka; this module only decides.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.core.provider import reported_at
from service.core.rules import KST

# NHN answers a window of at most one day (api-guide: 결과 업데이트 기준 메시지 검색).
LONGEST_WINDOW = timedelta(days=1)
PAGE_SIZE = 1000
DELIVERED_CODE = "1000"
# telecomCode of the results (NHN's codes for the three Korean carriers).
TELECOMS = {"10001": "SKT", "10002": "KT", "10003": "LGU+"}


@dataclass(frozen=True, slots=True)
class NhnResult:
    """One final result NHN reports of one recipient of one request."""

    request_id: str
    recipient_seq: int
    result_code: str
    result_message: str | None
    telecom: str | None
    reported_at: str  # RFC 3339

    @property
    def delivered(self) -> bool:
        return self.result_code == DELIVERED_CODE


def nhn_time(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss` in Korean time, as NHN's query parameters take it."""
    return moment.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S")


def next_window(
    finished_until: datetime | None, now: datetime, overlap: timedelta
) -> tuple[datetime, datetime]:
    """The window to poll next: from a little before where the last finished one ended (an
    update NHN records late is not missed), at most a day long, never past `now`. Without a
    finished window, the last `overlap` before now."""
    start = (finished_until or now) - overlap
    return start, min(now, start + LONGEST_WINDOW)


def results_query(
    start: datetime, end: datetime, page: int, size: int = PAGE_SIZE
) -> dict[str, str]:
    """The query parameters of one page of `message-results`."""
    return {
        "startUpdateDate": nhn_time(start),
        "endUpdateDate": nhn_time(end),
        "pageNum": str(page),
        "pageSize": str(size),
    }


def results_path(app_key: str) -> str:
    return f"/sms/v3.0/appKeys/{app_key}/message-results"


def _result(item: Mapping[str, Any], date_fields: tuple[str, ...]) -> NhnResult | None:
    code = item.get("resultCode")
    request_id = item.get("requestId")
    if code is None or str(code).strip() == "" or not isinstance(request_id, str):
        return None  # not final yet (requested, processing)
    reported = next((r for f in date_fields if (r := reported_at(item.get(f)))), None)
    if reported is None:
        return None
    telecom = item.get("telecomCode")
    return NhnResult(
        request_id=request_id,
        recipient_seq=int(item.get("recipientSeq") or 1),
        result_code=str(code),
        result_message=item.get("resultCodeName") or item.get("resultMessage"),
        telecom=TELECOMS.get(str(telecom), str(telecom)) if telecom else None,
        reported_at=reported,
    )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of `message-results`: its final results, and whether another page follows."""

    results: list[NhnResult]
    more: bool


def parse_page(document: Any, page: int, size: int = PAGE_SIZE) -> Page:
    """A page of `message-results`; raises ValueError for an answer that is not one."""
    if not isinstance(document, Mapping):
        raise ValueError("the answer is not a JSON object")
    header = document.get("header") or {}
    if not header.get("isSuccessful"):
        raise ValueError(
            f"NHN refused the query: {header.get('resultCode')} {header.get('resultMessage')}"
        )
    body = document.get("body") or {}
    items = body.get("data") or []
    if not isinstance(items, list):
        raise ValueError("body.data is not a list")
    total = int(body.get("totalCount") or 0)
    results = [
        r
        for item in items
        if isinstance(item, Mapping) and (r := _result(item, ("resultDate", "updateDate")))
    ]
    return Page(results, more=page * size < total and len(items) == size)


def parse_webhook(document: Any) -> list[NhnResult]:
    """The final results of a `MESSAGE_RESULT_UPDATE` webhook call; raises ValueError for a
    body that is not one. Other events (UNSUBSCRIBE, ...) carry no results: an empty list."""
    if not isinstance(document, Mapping):
        raise ValueError("the body is not a JSON object")
    if document.get("event") != "MESSAGE_RESULT_UPDATE":
        return []
    hooks = document.get("hooks")
    if not isinstance(hooks, list):
        raise ValueError("hooks is not a list")
    found = []
    for hook in hooks:
        if isinstance(hook, Mapping) and hook.get("messageStatus") in {"COMPLETED", "FAILED"}:
            result = _result(hook, ("receiveDate", "resultDate", "requestDate"))
            if result is not None:
                found.append(result)
    return found


def signature_ok(given: str | None, expected: str | None) -> bool:
    """Whether a webhook call carries the configured `X-Toast-Webhook-Signature` (in constant
    time); never without a configured one."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def delivery_result(result: NhnResult, fallback_id: str) -> dict[str, Any]:
    """The results-topic record (§11) of one NHN result of fallback `fallback_id`."""
    return {
        "fallbackId": fallback_id,
        "status": "DELIVERED" if result.delivered else "UNDELIVERED",
        "resultCode": result.result_code,
        "resultMessage": result.result_message,
        "provider": "nhn",
        "providerMessageId": f"{result.request_id}:{result.recipient_seq}",
        "telecom": result.telecom,
        "reportedAt": result.reported_at,
    }
