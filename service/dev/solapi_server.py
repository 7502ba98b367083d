"""A local stand-in for Solapi's messages API v4, for `make run-solapi`, the tests and the
benchmarks: it checks each call's signature as Solapi does (the API key, the HMAC, a date within
15 minutes, no signature twice in 15 minutes), takes send-many/detail calls of up to 10,000
messages, refuses messages with Solapi's codes, lists messages, and reports results.

Not in the image. Run it with `python -m service.dev.solapi_server --port 8091`; control it over
HTTP on the same port (no signature needed there):

- `POST /_control` `{"fault": "http", "status": 503, "own_body": true, "times": 3}` answers the
  next 3 sends with HTTP 503 (with Solapi's own error body; without `own_body`, a proxy's page);
  `{"fault": "code", "code": "NotEnoughBalance", "status": 402}` a whole-call error of Solapi's;
  `{"fault": "drop"}` closes the connection unanswered, `{"fault": "slow", "delay": 2}` answers
  late, and with `"after": true` either comes after the messages were taken. `times` -1 lasts
  until `{"clear": true}`; `"match": "text"` limits a fault to bodies containing the text.
- `{"registered": [...]}` the sender numbers (default: all), `{"refuse": {"010…": "3010"}}`
  recipients refused with a code, `{"invalid": ["010…"]}` recipients that make the whole call
  a 400 `ValidationError`, `{"balance": 0}` refuses every call 402 `NotEnoughBalance`, `{"down":
  true}` refuses connections until `{"down": false}`, `{"list_status": 503}` answers the
  message list with that status (a lookup that cannot be answered) until `{"list_status": 200}`.
- Results: `{"results": {"delay": 1.0, "undelivered": ["010…"], "share": 0.1}}`; a report
  webhook `{"webhook": {"url": "…", "secret": "…"}}` (called again up to 5 times until it
  answers 200). `GET /_webhooks` lists the calls made.
- `GET /_requests` every call received (time, path, whether its signature passed, the answer);
  `DELETE /_requests` forgets them and the counts of messages taken per fallbackId.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import re
import string
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from service.dev.http_stub import Reply, StubServer, take_fault

_AUTH = re.compile(
    r"^HMAC-SHA256\s+apiKey=([^,\s]+),\s*date=([^,\s]+),\s*salt=([^,\s]+),\s*signature=([0-9a-f]+)$",
    re.IGNORECASE,
)
_WINDOW = 15 * 60
_SMS_BYTES, _LMS_BYTES, _SUBJECT_BYTES = 90, 2000, 40
_NETWORKS = ("SKT", "KT", "LGU+")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(code: str, message: str) -> bytes:
    return json.dumps({"errorCode": code, "errorMessage": message}).encode()


@dataclass
class SolapiServer(StubServer):
    """Solapi's send, list and report surface, in memory."""

    api_key: str = "demo-api-key"
    api_secret: str = "demo-api-secret"
    refuse: dict[str, str] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)
    balance: float = float("inf")
    list_status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    # Messages taken, by messageId (insertion order is the list's order).
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How many times each fallbackId was taken: duplicates show as counts above 1.
    accepted: Counter[str] = field(default_factory=Counter)
    result_delay: float = 1.0
    undelivered: set[str] = field(default_factory=set)
    share: float = 0.0
    webhook_url: str | None = None
    webhook_secret: str = ""
    webhook_calls: list[dict[str, Any]] = field(default_factory=list)
    _signatures: dict[str, float] = field(default_factory=dict)
    _due: list[tuple[float, str]] = field(default_factory=list)
    _reporter: asyncio.Task[None] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.listen(host, port)
        self._reporter = asyncio.create_task(self._report())

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reporter
        await self.close()

    # Control.

    def control(self, command: dict[str, Any]) -> None:
        """Change the server's behaviour (see the module's docstring)."""
        super().control(command)
        if "refuse" in command:
            self.refuse = {str(k): str(v) for k, v in command["refuse"].items()}
        if "invalid" in command:
            self.invalid = set(command["invalid"])
        if "balance" in command:
            self.balance = float(command["balance"])
        if "list_status" in command:
            self.list_status = int(command["list_status"])
        results = command.get("results")
        if isinstance(results, dict):
            self.result_delay = float(results.get("delay", self.result_delay))
            self.undelivered = set(results.get("undelivered", self.undelivered))
            self.share = float(results.get("share", self.share))
        webhook = command.get("webhook")
        if isinstance(webhook, dict):
            self.webhook_url = webhook.get("url")
            self.webhook_secret = str(webhook.get("secret", ""))

    # HTTP.

    async def answer(
        self, method: str, target: str, headers: dict[str, str], content: bytes
    ) -> Reply:
        path, _, raw_query = target.partition("?")
        if path == "/_control" and method == "POST":
            command = json.loads(content or b"{}")
            self.control(command)
            self.down_after_answer(command)
            return 200, {}, b'{"ok": true}'
        if path == "/_requests":
            if method == "DELETE":
                self.received.clear()
                self.accepted.clear()
                return 200, {}, b'{"ok": true}'
            return 200, {}, json.dumps(self.received, ensure_ascii=False).encode()
        if path == "/_webhooks":
            return 200, {}, json.dumps(self.webhook_calls).encode()
        entry: dict[str, Any] = {"time": time.time(), "method": method, "path": path}
        self.received.append(entry)
        refused = self._check_auth(headers.get("authorization", ""))
        entry["signatureOk"] = refused is None
        entry["authorization"] = headers.get("authorization", "")
        if refused is not None:
            entry["answer"] = refused[0]
            return 403, {}, _error(*refused)
        if path == "/messages/v4/list" and method == "GET":
            query = dict(urllib.parse.parse_qsl(raw_query))
            entry["answer"] = self.list_status
            if self.list_status != 200:
                return self.list_status, {}, b"<html>unavailable</html>"
            return 200, {}, self._list(query)
        if path != "/messages/v4/send-many/detail" or method != "POST":
            entry["answer"] = 404
            return 404, {}, _error("NotFound", "no such API")
        fault = take_fault(self.faults, content)
        if fault is not None and not fault.after:
            if fault.kind == "drop":
                entry["answer"] = "dropped"
                return None
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "http":
                entry["answer"] = f"HTTP {fault.status}"
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                body = (
                    _error("InternalError", "잠시 후 다시 시도해 주세요")
                    if fault.own_body
                    else b"<html>bad gateway</html>"
                )
                return fault.status, extra, body
            elif fault.kind == "code":
                entry["answer"] = str(fault.code)
                return fault.status, {}, _error(str(fault.code), "refused by the stand-in")
        status, body = self._send(content)
        entry["answer"] = status
        entry["messages"] = len(json.loads(content).get("messages") or []) if status == 200 else 0
        if fault is not None and fault.after:
            if fault.kind == "drop":
                entry["answer"] = "taken, then dropped"
                return None
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
        return status, {}, body

    def _check_auth(self, header: str) -> tuple[str, str] | None:
        """None when the signature passes, else Solapi's (errorCode, errorMessage)."""
        found = _AUTH.match(header.strip())
        if found is None:
            return "InvalidAuthorizationHeader", "expected HMAC-SHA256 apiKey=…, date=…, salt=…"
        key, date, salt, given = found.groups()
        if key != self.api_key:
            return "InvalidAPIKey", "unknown API key"
        try:
            moment = datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return "InvalidAuthorizationHeader", "date is not ISO 8601"
        now = time.time()
        if abs(now - moment) > _WINDOW:
            return "RequestTimeTooSkewed", "date is more than 15 minutes off"
        expected = hmac.new(
            self.api_secret.encode(), (date + salt).encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, given.lower()):
            return "SignatureDoesNotMatch", "signature does not match"
        self._signatures = {s: t for s, t in self._signatures.items() if t > now - _WINDOW}
        if given in self._signatures:
            return "DuplicatedSignature", "signature used in the last 15 minutes"
        self._signatures[given] = now
        return None

    def _send(self, content: bytes) -> tuple[int, bytes]:
        try:
            request = json.loads(content.decode("utf-8"))
            messages = request["messages"]
            if not isinstance(messages, list) or not 1 <= len(messages) <= 10_000:
                raise ValueError("messages: 1 to 10,000")
            for m in messages:
                if not all(isinstance(m.get(k), str) and m.get(k) for k in ("to", "from", "text")):
                    raise ValueError("to, from and text are required strings")
                if m["to"] in self.invalid:
                    raise ValueError(f"to: {m['to']} is not a valid number")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return 400, _error("ValidationError", str(exc))
        if self.balance <= 0:
            return 402, _error("NotEnoughBalance", "잔액이 부족합니다")
        group = "G4V" + _random_id(16)
        failed: list[dict[str, Any]] = []
        listed: list[dict[str, Any]] = []
        seen: set[str] = set()
        now = time.time()
        for m in messages:
            code = self._refusal(m, seen)
            seen.add(m["to"])
            message_id = "M4V" + _random_id(16)
            item = {
                "messageId": message_id,
                "groupId": group,
                "to": m["to"],
                "from": m["from"],
                "type": m.get("type", "SMS"),
                "country": m.get("country", "82"),
                "customFields": m.get("customFields") or {},
            }
            if code is not None:
                failed.append({**item, "statusCode": code[0], "statusMessage": code[1]})
                continue
            stored = {
                **item,
                "text": m["text"],
                "subject": m.get("subject"),
                "statusCode": "2000",
                "statusMessage": "정상 접수(이통사로 접수 예정)",
                "dateCreated": _iso(now),
                "dateUpdated": _iso(now),
                "networkName": random.choice(_NETWORKS),
            }
            self.messages[message_id] = stored
            listed.append({k: stored[k] for k in ("messageId", "to", "statusCode", "customFields")})
            fid = item["customFields"].get("fallbackId")
            if isinstance(fid, str):
                self.accepted[fid] += 1
            self._due.append((now + self.result_delay, message_id))
        count = {
            "total": len(messages),
            "registeredSuccess": len(listed),
            "registeredFailed": len(failed),
        }
        document = {
            "failedMessageList": failed,
            "groupInfo": {"groupId": group, "status": "SENDING", "count": count},
            "messageList": listed,
        }
        return 200, json.dumps(document, ensure_ascii=False).encode()

    def _refusal(self, m: dict[str, Any], seen: set[str]) -> tuple[str, str] | None:
        """Solapi's per-message refusals (message-status-codes)."""
        if m["to"] in seen:
            return "1026", "중복 수신번호"
        if self.registered is not None and m["from"] not in self.registered:
            return "1062", "발신번호 미등록"
        if m["to"] in self.refuse:
            return self.refuse[m["to"]], "수신 거부"
        kind = m.get("type", "SMS")
        subject = m.get("subject")
        try:
            size = len(m["text"].encode("euc-kr"))
            subject_size = len(subject.encode("euc-kr")) if isinstance(subject, str) else 0
        except UnicodeEncodeError:
            return "1029", "EUC-KR 로 표현할 수 없는 문자"
        if kind == "SMS" and subject:
            return "1013", "SMS 에는 제목을 쓸 수 없습니다"
        if subject_size > _SUBJECT_BYTES:
            return "1014", "제목 길이 초과"
        if size > (_SMS_BYTES if kind == "SMS" else _LMS_BYTES):
            return "1031", "메시지 길이 초과"
        return None

    def _list(self, query: dict[str, str]) -> bytes:
        """A page of the message list (`to`, `startDate`/`endDate` by creation or, with
        `dateType=UPDATED`, by update; `limit`, `startKey`)."""
        field_name = (
            "dateUpdated" if query.get("dateType", "").upper() == "UPDATED" else "dateCreated"
        )
        start = _parsed(query.get("startDate"), float("-inf"))
        end = _parsed(query.get("endDate"), float("inf"))
        wanted = [
            m
            for m in self.messages.values()
            if ("to" not in query or m["to"] == query["to"])
            and start <= _parsed(m[field_name], 0) < end
        ]
        limit = max(1, min(500, int(query.get("limit", "20"))))
        offset = int(query["startKey"]) if query.get("startKey", "").isdigit() else 0
        page = wanted[offset : offset + limit]
        more = offset + limit < len(wanted)
        document = {
            "startKey": str(offset),
            "nextKey": str(offset + limit) if more else None,
            "limit": limit,
            "messageList": {m["messageId"]: m for m in page},
        }
        return json.dumps(document, ensure_ascii=False).encode()

    # Results.

    async def _report(self) -> None:
        """Settle messages as their results fall due, and push them to the webhook."""
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            pending: list[tuple[dict[str, Any], int]] = []
            while True:
                await asyncio.sleep(0.2)
                now = time.time()
                due = [mid for at, mid in self._due if at <= now]
                self._due = [(at, mid) for at, mid in self._due if at > now]
                for mid in due:
                    m = self.messages.get(mid)
                    if m is None:
                        continue
                    bad = m["to"] in self.undelivered or random.random() < self.share
                    m["statusCode"] = "3060" if bad else "4000"
                    m["statusMessage"] = "수신 거부" if bad else "정상 수신"
                    m["dateUpdated"] = m["dateReported"] = _iso(now)
                    if self.webhook_url:
                        pending.append(({"data": dict(m), "retryCount": 0}, 0))
                if pending and self.webhook_url:
                    pending = await self._push(client, pending[:1000]) + pending[1000:]

    async def _push(
        self, client: httpx.AsyncClient, events: list[tuple[dict[str, Any], int]]
    ) -> list[tuple[dict[str, Any], int]]:
        assert self.webhook_url is not None
        body = [e for e, _ in events]
        try:
            response = await client.post(
                self.webhook_url,
                content=json.dumps(body, ensure_ascii=False).encode(),
                headers={
                    "Content-Type": "application/json",
                    "X-Solapi-Event-Name": "SINGLE-REPORT",
                    "X-Solapi-Secret": self.webhook_secret,
                },
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            status = 0
            self.webhook_calls.append({"time": time.time(), "count": len(body), "error": repr(exc)})
        else:
            self.webhook_calls.append({"time": time.time(), "count": len(body), "status": status})
        if status == 200:
            return []
        # Solapi calls again, up to five times in all.
        return [(e, tries + 1) for e, tries in events if tries + 1 < 5]


def _parsed(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def _random_id(length: int) -> str:
    return "".join(random.choices(string.ascii_uppercase + string.digits, k=length))


async def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--api-key", default="demo-api-key")
    parser.add_argument("--api-secret", default="demo-api-secret")
    parser.add_argument("--result-delay", type=float, default=1.0, help="seconds to a result")
    parser.add_argument("--webhook-url", help="where reports are pushed (SINGLE-REPORT)")
    parser.add_argument("--webhook-secret", default="")
    args = parser.parse_args(argv)
    server = SolapiServer(api_key=args.api_key, api_secret=args.api_secret)
    server.result_delay = args.result_delay
    server.webhook_url, server.webhook_secret = args.webhook_url, args.webhook_secret
    await server.run_until_interrupted(args.host, args.port, "Solapi messages API stand-in")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(sys.argv[1:]))
