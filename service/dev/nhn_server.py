"""A local stand-in for NHN Cloud's SMS API v3.0 send endpoints, for `make run` and the tests:
it validates requests as the API documents, answers in its shape, and can be told to fail.

Not in the image. Run it with `python -m service.dev.nhn_server --port 8090`; control it over
HTTP on the same port:

- `POST /_control` `{"fault": "http", "status": 503, "retry_after": "2", "times": 3}` answers the
  next 3 sends with HTTP 503 (a proxy's page; `"own_body": true` for the API's own error body);
  other faults: `{"fault": "code", "code": -9999}` (the API's own error answer), `{"fault":
  "drop"}` (close the connection unanswered), `{"fault": "slow", "delay": 0.5}`; with `"after":
  true` a drop or a slow answer comes after the message was taken. `times` -1 (the default)
  lasts until `{"clear": true}`; `"match": "text"` limits a fault to bodies containing the text.
  `{"registered": [...]}`, `{"blocked": [...]}` and `{"opted_out": [...]}` set the sender
  numbers and the 080 opt-outs; `{"down": true}` refuses connections until `{"down": false}`.
- `GET /sms/v3.0/appKeys/{appKey}/sender/sms|mms` lists the messages taken (by request date,
  recipient and grouping keys), as the send-list lookup after an ambiguous attempt asks.
- Results: see `service.dev.nhn_reports` (`message-results`, the webhook, `{"results": …}`).
- `GET /_requests` lists every send received (time, path, headers, body, answer);
  `DELETE /_requests` forgets them (and the count of each body accepted).

HTTP/1.1 with keep-alive on asyncio streams (`service.dev.http_stub`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import string
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.dev.http_stub import Reply, StubServer, take_fault
from service.dev.nhn_reports import KST, Reports

_RESULTS_PATH = re.compile(r"^/sms/v3\.0/appKeys/([^/]+)/message-results$")
_SEND_PATH = re.compile(r"^/sms/v3\.0/appKeys/([^/]+)/sender/(sms|mms|ad-sms|ad-mms|auth/sms)$")
_LIST_PATH = re.compile(r"^/sms/v3\.0/appKeys/([^/]+)/sender/(sms|mms)$")
_AD_TAIL = re.compile(r"무료\s*(?:수신\s*)?거부\s*080[\d\-\s]*\d")
_KOREAN_MOBILE = re.compile(r"^01[016789]\d{7,8}$")


@dataclass
class NhnServer(StubServer):
    """The API's send surface, in memory. `start()` listens; `port` is then the bound port."""

    app_key: str = "demo-app-key"
    secret_key: str = "demo-secret-key"
    blocked: set[str] = field(default_factory=set)
    opted_out: set[str] = field(default_factory=set)
    received: list[dict[str, Any]] = field(default_factory=list)
    # How many times each message body was accepted (SENT): duplicates show as counts above 1.
    accepted: Counter[str] = field(default_factory=Counter)
    # The handsets' results: reported after a delay, by `message-results` and the webhook.
    reports: Reports = field(default_factory=Reports)
    # Every message taken, as the send list shows it.
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.listen(host, port)
        await self.reports.start()

    async def stop(self) -> None:
        await self.reports.stop()
        await self.close()

    async def answer(
        self, method: str, target: str, headers: dict[str, str], content: bytes
    ) -> Reply:
        path = target.split("?", 1)[0]
        if path == "/_control" and method == "POST":
            command = json.loads(content or b"{}")
            self.control(command)
            self.down_after_answer(command)
            return 200, {}, b'{"ok": true}'
        listing = _LIST_PATH.match(path)
        if listing is not None and method == "GET":
            if listing.group(1) != self.app_key or headers.get("x-secret-key") != self.secret_key:
                return 401, {}, _header(False, -1000, "Invalid appKey or secretKey.")
            query = dict(urllib.parse.parse_qsl(target.partition("?")[2]))
            return 200, {}, self._listing(listing.group(2), query)
        if path == "/_webhooks":
            return 200, {}, json.dumps(self.reports.calls).encode()
        results = _RESULTS_PATH.match(path)
        if results is not None and method == "GET":
            if results.group(1) != self.app_key or headers.get("x-secret-key") != self.secret_key:
                return 401, {}, _header(False, -1000, "Invalid appKey or secretKey.")
            query = dict(urllib.parse.parse_qsl(target.partition("?")[2]))
            status, body = self.reports.query(query)
            return status, {}, body
        if path == "/_requests":
            if method == "DELETE":
                self.received.clear()
                self.accepted.clear()
                self.sent.clear()
                return 200, {}, b'{"ok": true}'
            return 200, {}, json.dumps(self.received, ensure_ascii=False).encode()
        found = _SEND_PATH.match(path)
        if method != "POST" or found is None:
            return 200, {}, _header(False, -9998, "Not exist API.")
        entry: dict[str, Any] = {
            "time": time.time(),
            "path": path,
            "headers": {k: v for k, v in headers.items() if k != "x-secret-key"},
            "secretKeyOk": headers.get("x-secret-key") == self.secret_key,
            "body": _json_or_text(content),
        }
        self.received.append(entry)
        fault = take_fault(self.faults, content)
        if fault is not None and not fault.after:
            if fault.kind == "drop":
                entry["answer"] = "dropped"
                return None
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "http":
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                entry["answer"] = f"HTTP {fault.status}"
                page = (
                    _header(False, -9999, "System error.")
                    if fault.own_body
                    else b"<html>unavailable</html>"
                )
                return fault.status, extra, page
            elif fault.kind == "code":
                entry["answer"] = fault.code
                return 200, {}, _header(False, int(fault.code), "System error.")
        status, body = self._send(found.group(1), found.group(2), headers, content)
        entry["answer"] = json.loads(body)["header"]["resultCode"]
        data = json.loads(body).get("body") or {}
        if data:
            entry["recipientCode"] = data["data"]["sendResultList"][0]["resultCode"]
            if entry["recipientCode"] == 0:
                self._taken(found.group(2), entry["body"], data["data"])
        if fault is not None and fault.after:
            if fault.kind == "drop":
                entry["answer"] = f"taken, then dropped ({entry['answer']})"
                return None
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
        return status, {}, body

    def _taken(self, kind: str, request: dict[str, Any], data: dict[str, Any]) -> None:
        """Remember a message taken: counted (duplicates show), listed, and its result due."""
        self.accepted[request["body"]] += 1
        result = data["sendResultList"][0]
        self.reports.accepted(data["requestId"], result["recipientNo"])
        self.sent.append(
            {
                "requestId": data["requestId"],
                "requestDate": datetime.now(KST).strftime("%Y-%m-%d %H:%M:%S"),
                "list": "mms" if kind in {"mms", "ad-mms"} else "sms",
                "recipientNo": result["recipientNo"],
                "recipientSeq": 1,
                "body": request["body"],
                "title": request.get("title"),
                "senderGroupingKey": request.get("senderGroupingKey"),
                "recipientGroupingKey": result.get("recipientGroupingKey"),
                "msgStatus": "3",
                "resultCode": "1000",
            }
        )

    def _listing(self, kind: str, query: dict[str, str]) -> bytes:
        """A page of the send list (`sender/sms`, `sender/mms`) filtered as the query asks."""
        start = query.get("startRequestDate", "0000")
        end = query.get("endRequestDate", "9999")
        items = [
            {k: v for k, v in m.items() if k != "list"}
            for m in self.sent
            if m["list"] == kind
            and start <= m["requestDate"] <= end
            and all(
                m.get(name) == query[name]
                for name in ("recipientNo", "senderGroupingKey", "recipientGroupingKey")
                if name in query
            )
        ]
        page, size = int(query.get("pageNum", "1")), int(query.get("pageSize", "15"))
        shown = items[(page - 1) * size : page * size]
        document = {
            "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"},
            "body": {"pageNum": page, "pageSize": size, "totalCount": len(items), "data": shown},
        }
        return json.dumps(document, ensure_ascii=False).encode()

    def control(self, command: dict[str, Any]) -> None:
        """Change the server's behaviour (see the module's docstring)."""
        super().control(command)
        if "blocked" in command:
            self.blocked = set(command["blocked"])
        if "opted_out" in command:
            self.opted_out = set(command["opted_out"])
        self.reports.control(command)

    def _send(
        self, app_key: str, kind: str, headers: dict[str, str], content: bytes
    ) -> tuple[int, bytes]:
        """Validate a send as the guide and its error codes describe, and answer it."""
        if app_key != self.app_key:
            return 200, _header(False, -1000, "Invalid appKey.")
        if headers.get("x-secret-key") != self.secret_key:
            # The guide names no code for a wrong secret key; an HTTP 401 is this stand-in's.
            return 401, _header(False, -1000, "Invalid secretKey.")
        if not headers.get("content-type", "").lower().startswith("application/json"):
            return 200, _header(False, -9996, "Unsupported media type.")
        try:
            request = json.loads(content.decode("utf-8"))
            body = request["body"]
            send_no = request["sendNo"]
            recipients = request["recipientList"]
            if not isinstance(body, str) or not isinstance(send_no, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return 200, _header(False, -9997, "Invalid API parameters.")
        long = kind in {"mms", "ad-mms"}
        title = request.get("title")
        if not recipients:
            return 200, _header(False, -2001, "RecipientList can not be null.")
        if not body or (long and not title):
            return 200, _header(False, -2014, "The recipient can not be empty.")
        if len(body) > (4000 if long else 255) or (title is not None and len(title) > 120):
            return 200, _header(False, -2015, "Title or Body exceed maximum byte.")
        try:
            (body + (title or "")).encode("cp949")
        except UnicodeEncodeError:
            return 200, _header(False, -2023, "Unacceptable characters in title and body.")
        if self.registered is not None and send_no not in self.registered:
            return 200, _header(False, -2312, "Not regist sendno.")
        if send_no in self.blocked:
            return 200, _header(False, -2313, "This sendno is blocked.")
        if kind.startswith("ad-") and not (
            body.lstrip().startswith("(광고)") and _AD_TAIL.search(body)
        ):
            return 200, _header(False, -6003, "The body must contain block guide ment.")
        recipient = recipients[0]
        number = str(recipient.get("recipientNo", ""))
        if recipient.get("countryCode", "82") == "82" and not _KOREAN_MOBILE.match(number):
            code, message = -2019, "RecipientNo is invalid."
        elif kind.startswith("ad-") and number in self.opted_out:
            code, message = -6001, "Recipient Number is refused."
        else:
            code, message = 0, "SUCCESS"
        request_id = datetime.now().strftime("%Y%m%d%H%M%S") + "".join(
            random.choices(string.ascii_letters + string.digits, k=11)
        )
        result = {
            "recipientNo": number,
            "resultCode": code,
            "resultMessage": message,
            "recipientSeq": 1,
            "recipientGroupingKey": recipient.get("recipientGroupingKey"),
        }
        document = {
            "header": {"isSuccessful": True, "resultCode": 0, "resultMessage": "SUCCESS"},
            "body": {
                "data": {
                    "requestId": request_id,
                    "statusCode": "2",
                    "senderGroupingKey": request.get("senderGroupingKey"),
                    "sendResultList": [result],
                }
            },
        }
        return 200, json.dumps(document, ensure_ascii=False).encode()


def _header(successful: bool, code: int, message: str) -> bytes:
    document = {
        "header": {"isSuccessful": successful, "resultCode": code, "resultMessage": message},
        "body": None,
    }
    return json.dumps(document).encode()


def _json_or_text(content: bytes) -> Any:
    try:
        return json.loads(content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return content.decode("utf-8", "replace")


async def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--app-key", default="demo-app-key")
    parser.add_argument("--secret-key", default="demo-secret-key")
    parser.add_argument("--result-delay", type=float, default=1.0, help="seconds to a result")
    parser.add_argument("--undelivered-share", type=float, default=0.0)
    parser.add_argument("--webhook-url", help="where results are pushed (MESSAGE_RESULT_UPDATE)")
    parser.add_argument("--webhook-signature", default="")
    args = parser.parse_args(argv)
    server = NhnServer(app_key=args.app_key, secret_key=args.secret_key)
    server.reports.delay, server.reports.share = args.result_delay, args.undelivered_share
    server.reports.webhook_url = args.webhook_url
    server.reports.webhook_signature = args.webhook_signature
    await server.run_until_interrupted(args.host, args.port, "NHN SMS API stand-in")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(sys.argv[1:]))
