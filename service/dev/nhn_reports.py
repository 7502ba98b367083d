"""The delivery results of the local NHN stand-in (`service.dev.nhn_server`): each accepted
message gets its handset result after a delay (some undelivered, some never), answered by
`message-results` and pushed to a `MESSAGE_RESULT_UPDATE` webhook, as NHN does (§11).

Controlled through the stand-in's `POST /_control`: `{"results": {"delay": 1.0, "undelivered":
["01000000002"], "never": ["01000000003"], "share": 0.1}}` (numbers always undelivered (3006),
never reported, and a share of the others undelivered at random); `{"webhook": {"url": "…",
"signature": "…"}}` (NHN retries a call that is not answered 200, up to 5 times). `GET
/_webhooks` lists the calls made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

KST = ZoneInfo("Asia/Seoul")
_TELECOMS = ("10001", "10002", "10003")


@dataclass
class Message:
    """One accepted recipient, and its result once it is due."""

    request_id: str
    recipient_no: str
    requested: float
    due: float
    code: str | None  # None: never reported
    telecom: str
    posted: int = 0  # webhook attempts made
    delivered_hook: bool = False
    next_try: float = 0.0

    def item(self) -> dict[str, Any]:
        """The message as `message-results` lists it."""
        return {
            "requestId": self.request_id,
            "recipientSeq": 1,
            "recipientNo": self.recipient_no,
            "msgStatus": "3" if self.code == "1000" else "0",
            "resultCode": self.code,
            "resultCodeName": "성공" if self.code == "1000" else "착신거절",
            "requestDate": _nhn(self.requested),
            "resultDate": _nhn(self.due),
            "updateDate": _nhn(self.due),
            "telecomCode": self.telecom,
        }

    def hook(self) -> dict[str, Any]:
        return {
            "senderType": "NORMAL",
            "requestId": self.request_id,
            "recipientSeq": 1,
            "requestDate": _nhn(self.requested),
            "receiveDate": _nhn(self.due),
            "recipientNo": self.recipient_no,
            "messageStatus": "COMPLETED" if self.code == "1000" else "FAILED",
            "resultCode": self.code,
            "telecomCode": self.telecom,
            "messageCount": 1,
        }


def _nhn(at: float) -> str:
    return datetime.fromtimestamp(at, KST).strftime("%Y-%m-%d %H:%M:%S")


def _parse(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST).timestamp()


@dataclass
class Reports:
    """The stand-in's result reporting."""

    delay: float = 1.0
    undelivered: set[str] = field(default_factory=set)
    never: set[str] = field(default_factory=set)
    share: float = 0.0
    webhook_url: str | None = None
    webhook_signature: str = ""
    messages: list[Message] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def accepted(self, request_id: str, recipient_no: str) -> None:
        now = time.time()
        if recipient_no in self.never:
            code = None
        elif recipient_no in self.undelivered or random.random() < self.share:
            code = "3006"
        else:
            code = "1000"
        due = now + self.delay
        self.messages.append(
            Message(request_id, recipient_no, now, due, code, random.choice(_TELECOMS))
        )

    def control(self, command: dict[str, Any]) -> None:
        results = command.get("results")
        if isinstance(results, dict):
            self.delay = float(results.get("delay", self.delay))
            self.undelivered = set(results.get("undelivered", self.undelivered))
            self.never = set(results.get("never", self.never))
            self.share = float(results.get("share", self.share))
        webhook = command.get("webhook")
        if isinstance(webhook, dict):
            self.webhook_url = webhook.get("url")
            self.webhook_signature = str(webhook.get("signature", ""))

    def query(self, params: dict[str, str]) -> tuple[int, bytes]:
        """One page of `message-results` (updateDate within the window, in update order)."""
        try:
            start, end = _parse(params["startUpdateDate"]), _parse(params["endUpdateDate"])
            page = int(params.get("pageNum", "1"))
            size = int(params.get("pageSize", "15"))
        except (KeyError, ValueError):
            return 200, _failure(-9997, "Invalid API parameters.")
        if end - start > timedelta(days=1).total_seconds() or end < start:
            return 200, _failure(-9997, "The search period is at most one day.")
        now = time.time()
        # Seconds are NHN's precision: a window ending at second s holds updates during it.
        final = sorted(
            (m for m in self.messages if m.code is not None and m.due <= now),
            key=lambda m: m.due,
        )
        inside = [m for m in final if start <= int(m.due) <= end]
        chosen = inside[(page - 1) * size : page * size]
        document = {
            "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"},
            "body": {
                "pageNum": page,
                "pageSize": size,
                "totalCount": len(inside),
                "data": [m.item() for m in chosen],
            },
        }
        return 200, json.dumps(document, ensure_ascii=False).encode()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._push())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _push(self) -> None:
        """Call the webhook for every result that came due, retrying what was not answered 200."""
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                await asyncio.sleep(0.2)
                if not self.webhook_url:
                    continue
                now = time.time()
                due = [
                    m
                    for m in self.messages
                    if m.code is not None
                    and m.due <= now
                    and not m.delivered_hook
                    and m.posted < 5
                    and m.next_try <= now
                ]
                if due:
                    await self._call(client, due[:100])

    async def _call(self, client: httpx.AsyncClient, due: list[Message]) -> None:
        body = {
            "hooksId": f"hooks-{len(self.calls)}",
            "productName": "SMS",
            "event": "MESSAGE_RESULT_UPDATE",
            "hooks": [m.hook() for m in due],
        }
        call: dict[str, Any] = {"time": time.time(), "hooks": len(due)}
        try:
            response = await client.post(
                self.webhook_url or "",
                json=body,
                headers={"X-Toast-Webhook-Signature": self.webhook_signature},
            )
            call["status"] = response.status_code
        except httpx.HTTPError as exc:
            call["status"] = f"{type(exc).__name__}"
        self.calls.append(call)
        for m in due:
            m.posted += 1
            m.delivered_hook = call["status"] == 200
            m.next_try = time.time() + 0.5 * 2**m.posted  # NHN calls again, later each time


def _failure(code: int, message: str) -> bytes:
    header = {"isSuccessful": False, "resultCode": code, "resultMessage": message}
    return json.dumps({"header": header, "body": None}).encode()
