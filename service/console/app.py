"""The console's HTTP surface (§12): server-rendered pages behind a session, every write checked
for role and CSRF token, the response headers a security review expects."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.console.follow import Progress
from service.console.i18n import LANGUAGES, choose, words
from service.console.index import DeadLetterRow, Index, Query, Row
from service.console.operations import Operations
from service.console.sessions import LoginBrake, Session, Sessions
from service.console.users import (
    User,
    UsersFileError,
    hash_password,
    load_users,
    verify_password,
)
from service.core.models import DeadLetterError, Reason, Status
from service.core.rules import KST
from service.logs import mask_number, mask_numbers_in
from service.ops import Refused
from service.ops.audit import Actor
from service.ops.dlq import DeadLetter
from service.ops.find import Story

log = logging.getLogger("service.console")

HERE = Path(__file__).parent
COOKIE = "fallback_console"
LANGUAGE_COOKIE = "fallback_console_lang"
PAGE_SIZE = 50
CSV_LIMIT = 100_000
SHOWN_DEAD_LETTERS = 500
# Compared against for unknown names, so that a wrong name costs what a wrong password does.
_NOBODY = hash_password("no such user")

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass
class Console:
    """What the pages need: the settings, the accounts, the index and the seam to Kafka."""

    settings: Settings
    users: dict[str, User]
    sessions: Sessions
    index: Index
    operations: Operations
    progress: Progress
    secure_cookies: bool = False
    users_file: str | None = None
    brake: LoginBrake = field(default_factory=LoginBrake)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _users_stamp: float | None = None

    def __post_init__(self) -> None:
        # The accounts were read from the file as it is now: a later change is what counts.
        if self.users_file is not None:
            with contextlib.suppress(OSError):
                self._users_stamp = os.stat(self.users_file).st_mtime

    def refresh_users(self) -> None:
        """Read the users file again when it changed (an add-user while the console runs); a
        file made unusable keeps the accounts read last, and says so."""
        if self.users_file is None:
            return
        try:
            stamp = os.stat(self.users_file).st_mtime
        except OSError:
            return
        if stamp == self._users_stamp:
            return
        self._users_stamp = stamp
        try:
            fresh = load_users(self.users_file)
        except UsersFileError as exc:
            log.error(
                "console: the users file is unusable, keeping the accounts read last: %s", exc
            )
            return
        for name, user in self.users.items():
            if fresh.get(name) != user:  # removed, or a new password or role
                self.sessions.end_user(name)
        self.users = fresh


class _Headers:
    """Adds the security headers to every answer, and no-store to all but the static files."""

    def __init__(self, app: ASGIApp, secure: bool) -> None:
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                for name, value in SECURITY_HEADERS.items():
                    headers.append((name.encode(), value.encode()))
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                if self.secure:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _local(target: str | None, default: str = "/fallbacks") -> str:
    """A redirect target on this console only (no `//host`, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(KST).strftime("%Y-%m-%d %H:%M:%S")


def _parse_time(raw: str | None) -> int | None:
    """RFC 3339, or a browser's `datetime-local` value (Korean time); None when empty."""
    text = (raw or "").strip()
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=KST)
    return int(moment.timestamp() * 1000)


def masked_bytes(raw: bytes | None) -> bytes:
    """`raw` with the digits of every phone-number-like run replaced by `*`, byte for byte."""
    if raw is None:
        return b""
    return mask_numbers_in(raw.decode("latin-1")).encode("latin-1")


def masked_request(request: dict[str, Any]) -> dict[str, Any]:
    """An SMS request (§6) as the console shows it: the recipient masked, and every
    number-like run in its texts too."""
    shown: dict[str, Any] = {}
    for key, value in request.items():
        if key == "recipientNo" and isinstance(value, str):
            shown[key] = mask_number(value)
        elif isinstance(value, str):
            shown[key] = mask_numbers_in(value) if key != "sendNo" else value
        elif isinstance(value, dict):
            shown[key] = masked_request(value)
        else:
            shown[key] = value
    return shown


def _hex(raw: bytes, limit: int = 1024) -> str:
    shown = raw[:limit]
    lines = [
        f"{i:06x}  " + " ".join(f"{b:02x}" for b in shown[i : i + 16])
        for i in range(0, len(shown), 16)
    ]
    if len(raw) > limit:
        lines.append(f"… {len(raw) - limit} bytes more")
    return "\n".join(lines)


def _as_dead_letter(row: DeadLetterRow) -> DeadLetter:
    return DeadLetter(
        partition=row.partition,
        offset=row.offset,
        timestamp=datetime.fromtimestamp(row.at / 1000, UTC),
        error=row.error,
        detail=row.detail,
        key=row.key,
        value=row.value,
        headers=row.headers,
    )


def _csv_cell(value: Any) -> str:
    text = mask_numbers_in("" if value is None else str(value))
    # A spreadsheet runs a cell that starts with one of these as a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Pages:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _time
        self.env.filters["masked"] = mask_numbers_in
        self.env.filters["q"] = lambda value: quote(str(value), safe="")

    # Sessions and answers

    def session(self, request: Request) -> Session | None:
        return self.c.sessions.get(request.cookies.get(COOKIE), self.c.clock())

    def language(self, request: Request) -> str:
        return choose(request.headers.get("accept-language"), request.cookies.get(LANGUAGE_COOKIE))

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        language = self.language(request)
        flash = session.flash[:] if session is not None else []
        if session is not None:
            session.flash.clear()
        html = self.env.get_template(template).render(
            t=words(language),
            lang=language,
            other=LANGUAGES[1 - LANGUAGES.index(language)],
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            session=session,
            flash=flash,
            progress=self.c.progress,
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    async def page(self, request: Request) -> Session | Response:
        session = self.session(request)
        return session if session is not None else self.to_login(request)

    async def write(self, request: Request) -> tuple[Session, FormData] | Response:
        """The session and form of a write, or the 403 that refuses it (nothing read further,
        nothing written)."""
        session = self.session(request)
        if session is None:
            return PlainTextResponse("403: log in first", status_code=403)
        form = await request.form()
        offered = form.get("csrf_token") or request.headers.get("x-csrf-token")
        if not session.csrf_matches(offered if isinstance(offered, str) else None):
            log.warning("console: write without a valid CSRF token from %s", session.user)
            return PlainTextResponse("403: missing or wrong CSRF token", status_code=403)
        if not session.may_write:
            log.warning("console: %s (viewer) tried %s", session.user, request.url.path)
            return PlainTextResponse("403: this account can only read", status_code=403)
        return session, form

    @staticmethod
    def actor(session: Session) -> Actor:
        return Actor(session.user, via="console")

    # Routes

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def language_switch(self, request: Request) -> Response:
        chosen = request.query_params.get("to")
        response = RedirectResponse(_local(request.query_params.get("next")), status_code=303)
        if chosen in LANGUAGES:
            response.set_cookie(
                LANGUAGE_COOKIE,
                chosen,
                max_age=365 * 86400,
                httponly=True,
                samesite="strict",
                secure=self.c.secure_cookies,
            )
        return response

    async def login_page(self, request: Request) -> Response:
        return self.render(
            request,
            "login.html",
            None,
            next=_local(request.query_params.get("next")),
            error=None,
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        name = str(form.get("username") or "")[:64]
        password = str(form.get("password") or "")[:1024]
        target = _local(str(form.get("next") or ""))
        address = request.client.host if request.client else "?"
        keys = (f"user:{name}", f"address:{address}")
        self.c.refresh_users()
        wait = self.c.brake.wait(keys, self.c.clock())
        if wait:
            await self.c.sleep(wait)
        user = self.c.users.get(name)
        stored = user.password_hash if user is not None else _NOBODY
        matches = await asyncio.to_thread(verify_password, stored, password)
        if user is None or not matches:
            failures = self.c.brake.failed(keys, self.c.clock())
            log.warning(
                "console: failed login for %r from %s (%d in a row)", name, address, failures
            )
            language = self.language(request)
            return self.render(
                request,
                "login.html",
                None,
                status_code=401,
                next=target,
                error=words(language)["login_failed"],
            )
        self.c.brake.succeeded(keys)
        self.c.sessions.close(request.cookies.get(COOKIE))
        session = self.c.sessions.open(user.name, user.role, self.c.clock())
        log.info("console: %s (%s) logged in from %s", user.name, user.role.value, address)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            session.token,
            httponly=True,
            samesite="strict",
            secure=self.c.secure_cookies,
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = self.session(request)
        if session is not None:
            form = await request.form()
            offered = form.get("csrf_token") or request.headers.get("x-csrf-token")
            if not session.csrf_matches(offered if isinstance(offered, str) else None):
                return PlainTextResponse("403: missing or wrong CSRF token", status_code=403)
            self.c.sessions.close(session.token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def home(self, request: Request) -> Response:
        found = await self.page(request)
        if isinstance(found, Response):
            return found
        return RedirectResponse("/fallbacks", status_code=303)

    # Channels (§3)

    async def channels(
        self,
        request: Request,
        session: Session | None = None,
        *,
        editing: str | None = None,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        found = session or await self.page(request)
        if isinstance(found, Response):
            return found
        session = found
        channels = sorted(self.c.operations.channels().items())
        editing = editing or request.query_params.get("edit")
        current = dict(channels).get(editing) if editing else None
        if values is None and current is not None:
            values = {
                "senderKey": editing or "",
                "enabled": "on" if current.enabled else "off",
                "sendNo": current.sendNo or "",
                "title": current.title or "",
                "unsubscribeNo": current.unsubscribeNo or "",
                "adName": current.adName or "",
                "resultCodes": ",".join(current.resultCodes or ()),
            }
        return self.render(
            request,
            "channels.html",
            session,
            status_code=status_code,
            channels=channels,
            editing=editing,
            values=values or {"enabled": "on"},
            errors=errors or {},
        )

    async def put_channel(self, request: Request) -> Response:
        checked = await self.write(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        key = request.path_params.get("sender_key") or str(form.get("senderKey") or "").strip()
        changes: dict[str, Any] = {}
        errors: dict[str, str] = {}
        if "enabled" in form:
            enabled = str(form["enabled"]).lower()
            if enabled not in ("on", "off"):
                errors["enabled"] = "on or off"
            changes["enabled"] = enabled == "on"
        for name in ("sendNo", "title", "unsubscribeNo", "adName"):
            if name in form:
                changes[name] = str(form[name]).strip() or None
        if "resultCodes" in form:
            codes = [c.strip() for c in str(form["resultCodes"]).split(",") if c.strip()]
            changes["resultCodes"] = codes or None
        posted = {k: str(v) for k, v in form.items() if k != "csrf_token"}
        posted["senderKey"] = key
        if not errors:
            try:
                change = await self.c.operations.put_channel(key, changes, self.actor(session))
            except Refused as exc:
                errors[exc.field or "form"] = str(exc)
            else:
                t = words(self.language(request))
                session.flash.append(
                    ("ok", f"{key}: {t['saved' if change.changed else 'unchanged']}")
                )
                session.flash.extend(("warning", w) for w in change.warnings)
                return RedirectResponse("/channels", status_code=303)
        return await self.channels(
            request, session, editing=key, values=posted, errors=errors, status_code=400
        )

    async def delete_channel(self, request: Request) -> Response:
        checked = await self.write(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        key = request.path_params["sender_key"]
        try:
            await self.c.operations.delete_channel(key, self.actor(session))
        except Refused as exc:
            session.flash.append(("error", str(exc)))
        else:
            session.flash.append(("ok", f"{key}: {words(self.language(request))['deleted']}"))
        return RedirectResponse("/channels", status_code=303)

    # Sender numbers (§4)

    async def sender_numbers(
        self,
        request: Request,
        session: Session | None = None,
        *,
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        found = session or await self.page(request)
        if isinstance(found, Response):
            return found
        session = found
        numbers = sorted(self.c.operations.sender_numbers().items())
        used: dict[str, list[str]] = {}
        for key, channel in self.c.operations.channels().items():
            if channel.sendNo:
                used.setdefault(channel.sendNo, []).append(key)
        return self.render(
            request,
            "sender_numbers.html",
            session,
            status_code=status_code,
            numbers=numbers,
            used=used,
            errors=errors or {},
            values=values or {"status": "ACTIVE"},
        )

    async def put_sendno(self, request: Request) -> Response:
        checked = await self.write(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        number = request.path_params.get("number") or str(form.get("number") or "")
        status = str(form.get("status") or "")
        try:
            change = await self.c.operations.put_sendno(number, status, self.actor(session))
        except Refused as exc:
            return await self.sender_numbers(
                request,
                session,
                errors={exc.field or "form": str(exc)},
                values={"number": number, "status": status},
                status_code=400,
            )
        t = words(self.language(request))
        message = t["saved" if change.changed else "unchanged"]
        session.flash.append(("ok", f"{change.number} {change.status.value}: {message}"))
        return RedirectResponse("/sender-numbers", status_code=303)

    async def delete_sendno(self, request: Request) -> Response:
        checked = await self.write(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        try:
            number = await self.c.operations.delete_sendno(
                request.path_params["number"], self.actor(session)
            )
        except Refused as exc:
            session.flash.append(("error", str(exc)))
        else:
            session.flash.append(("ok", f"{number}: {words(self.language(request))['deleted']}"))
        return RedirectResponse("/sender-numbers", status_code=303)

    # Send query (NHN's 발송 조회)

    def query(self, request: Request) -> tuple[Query, dict[str, str], dict[str, str]]:
        params = {k: v.strip() for k, v in request.query_params.items()}
        errors: dict[str, str] = {}
        times: dict[str, int | None] = {}
        for name in ("from", "to"):
            try:
                times[name] = _parse_time(params.get(name))
            except ValueError:
                errors[name] = words(self.language(request))["bad_time"]
                times[name] = None
        query = Query(
            request_id=params.get("requestId") or None,
            fallback_id=params.get("fallbackId") or None,
            since_ms=times["from"],
            until_ms=times["to"],
            sender_key=params.get("senderKey") or None,
            status=params.get("status") or None,
            reason=params.get("reason") or None,
        )
        return query, params, errors

    async def fallbacks(self, request: Request) -> Response:
        found = await self.page(request)
        if isinstance(found, Response):
            return found
        query, params, errors = self.query(request)
        before = None
        cursor = params.get("before", "")
        if ":" in cursor:
            at, _, fid = cursor.partition(":")
            if at.isdigit():
                before = (int(at), fid)
        rows: list[Row] = []
        if not errors:
            rows = await asyncio.to_thread(
                self.c.index.search, query, limit=PAGE_SIZE + 1, before=before
            )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        plain = {k: v for k, v in params.items() if k != "before" and v}
        next_page = None
        if more:
            last = rows[-1]
            next_page = "?" + urlencode({**plain, "before": f"{last.first_at}:{last.fallback_id}"})
        return self.render(
            request,
            "fallbacks.html",
            found,
            status_code=400 if errors else 200,
            rows=rows,
            params=params,
            errors=errors,
            next_page=next_page,
            csv_link="/fallbacks.csv" + ("?" + urlencode(plain) if plain else ""),
            statuses=[s.value for s in Status],
            reasons=[r.value for r in Reason],
        )

    async def fallbacks_csv(self, request: Request) -> Response:
        found = await self.page(request)
        if isinstance(found, Response):
            return found
        query, _, errors = self.query(request)
        if errors:
            return PlainTextResponse("; ".join(f"{k}: {v}" for k, v in errors.items()), 400)
        index = self.c.index

        async def lines() -> AsyncIterator[bytes]:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(
                [
                    "fallbackId",
                    "requestId",
                    "senderKey",
                    "type",
                    "firstAt",
                    "request",
                    "send",
                    "result",
                    "reason",
                    "provider",
                    "lastAt",
                ]
            )
            yield "\ufeff".encode() + out.getvalue().encode()
            before: tuple[int, str] | None = None
            written = 0
            while written < CSV_LIMIT:
                rows = await asyncio.to_thread(
                    index.search, query, limit=min(5000, CSV_LIMIT - written), before=before
                )
                if not rows:
                    break
                out = io.StringIO()
                writer = csv.writer(out)
                for r in rows:
                    writer.writerow(
                        [
                            _csv_cell(v)
                            for v in (
                                r.fallback_id,
                                r.request_id,
                                r.sender_key,
                                r.type,
                                _time(r.first_at),
                                r.request_status,
                                r.send_status,
                                r.final_status,
                                r.reason,
                                r.provider,
                                _time(r.last_at),
                            )
                        ]
                    )
                yield out.getvalue().encode()
                written += len(rows)
                before = (rows[-1].first_at, rows[-1].fallback_id)

        stamp = datetime.now(KST).strftime("%Y%m%d-%H%M%S")
        return StreamingResponse(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="fallbacks-{stamp}.csv"'},
        )

    async def fallback(self, request: Request) -> Response:
        found = await self.page(request)
        if isinstance(found, Response):
            return found
        fid = request.path_params["fallback_id"]
        row, outcomes = await asyncio.to_thread(self.c.index.story, fid)
        letters = await asyncio.to_thread(self.c.index.dead_letters, fid=fid)
        if row is None and not letters:
            return self.render(request, "fallback.html", found, status_code=404, fid=fid, row=None)
        requested = next((at for at, o in outcomes if o.get("status") == Status.REQUESTED), None)
        request_record: dict[str, Any] | None = None
        request_note = None
        if requested is not None and self.c.settings.delivers:
            request_note = "request_not_on_kafka"
        elif requested is not None:
            got = await self.c.operations.request(fid, requested)
            if got is None:
                request_note = "request_not_found"
            else:
                request_record = masked_request(got)
        story = Story(fid, [o for _, o in outcomes], [], [_as_dead_letter(d) for d in letters])
        return self.render(
            request,
            "fallback.html",
            found,
            fid=fid,
            row=row,
            answer=mask_numbers_in(story.answer()),
            outcomes=[
                (at, mask_numbers_in(orjson.dumps(o, option=orjson.OPT_INDENT_2).decode()))
                for at, o in outcomes
            ],
            request_record=(
                orjson.dumps(request_record, option=orjson.OPT_INDENT_2).decode()
                if request_record
                else None
            ),
            request_note=request_note,
            letters=[self._letter(d) for d in letters],
        )

    # Dead letters (§8)

    @staticmethod
    def _letter(row: DeadLetterRow) -> dict[str, Any]:
        shown = masked_bytes(row.value)
        return {
            "partition": row.partition,
            "offset": row.offset,
            "at": row.at,
            "error": row.error,
            "detail": mask_numbers_in(row.detail),
            "key": masked_bytes(row.key).decode("utf-8", "replace") if row.key else None,
            "text": shown.decode("utf-8", "replace")[:4000],
            "hex": _hex(shown),
            "size": len(row.value or b""),
            "headers": [(k, mask_numbers_in(v.decode("utf-8", "replace"))) for k, v in row.headers],
            "fallback_id": row.fallback_id,
        }

    def _letter_filters(self, source: Any) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
        raw = {k: str(source.get(k) or "").strip() for k in ("error", "from", "to")}
        errors: dict[str, str] = {}
        chosen: dict[str, Any] = {"error": raw["error"] or None}
        for name, target in (("from", "since_ms"), ("to", "until_ms")):
            try:
                chosen[target] = _parse_time(raw[name])
            except ValueError:
                errors[name] = "RFC 3339"
                chosen[target] = None
        if raw["error"] and raw["error"] not in {e.value for e in DeadLetterError}:
            errors["error"] = "unknown error"
        return chosen, raw, errors

    async def dead_letters(self, request: Request) -> Response:
        found = await self.page(request)
        if isinstance(found, Response):
            return found
        chosen, raw, errors = self._letter_filters(request.query_params)
        rows = (
            []
            if errors
            else await asyncio.to_thread(
                self.c.index.dead_letters, **chosen, limit=SHOWN_DEAD_LETTERS + 1
            )
        )
        return self.render(
            request,
            "dead_letters.html",
            found,
            status_code=400 if errors else 200,
            letters=[self._letter(r) for r in rows[:SHOWN_DEAD_LETTERS]],
            more=len(rows) > SHOWN_DEAD_LETTERS,
            shown_limit=SHOWN_DEAD_LETTERS,
            filters=raw,
            errors=errors,
            kinds=[e.value for e in DeadLetterError],
        )

    async def replay(self, request: Request) -> Response:
        checked = await self.write(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        chosen, raw, errors = self._letter_filters(form)
        if errors:
            return PlainTextResponse("; ".join(f"{k}: {v}" for k, v in errors.items()), 400)
        rows = await asyncio.to_thread(self.c.index.dead_letters, **chosen)
        if form.get("confirm") != "yes":
            return self.render(
                request,
                "replay.html",
                session,
                letters=[self._letter(r) for r in rows[:SHOWN_DEAD_LETTERS]],
                count=len(rows),
                filters=raw,
            )
        sent = await self.c.operations.replay(
            [_as_dead_letter(r) for r in rows], self.actor(session)
        )
        log.info("console: %s replayed %d dead letters (%s)", session.user, sent, raw)
        t = words(self.language(request))
        session.flash.append(("ok", t["replayed"].format(n=sent)))
        return RedirectResponse("/dead-letters?" + urlencode(raw), status_code=303)

    # Audit (§10)

    async def audit(self, request: Request) -> Response:
        found = await self.page(request)
        if isinstance(found, Response):
            return found
        table = request.query_params.get("table") or None
        rows = await asyncio.to_thread(self.c.index.audit, limit=500, table=table)
        return self.render(request, "audit.html", found, rows=rows, table=table)


def console_app(console: Console) -> ASGIApp:
    """The console's ASGI application."""
    pages = _Pages(console)
    routes = [
        Route("/healthz", pages.healthz),
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/lang", pages.language_switch),
        Route("/", pages.home),
        Route("/channels", pages.channels, methods=["GET"]),
        Route("/channels", pages.put_channel, methods=["POST"]),
        Route("/channels/{sender_key}", pages.put_channel, methods=["POST"]),
        Route("/channels/{sender_key}/delete", pages.delete_channel, methods=["POST"]),
        Route("/sender-numbers", pages.sender_numbers, methods=["GET"]),
        Route("/sender-numbers", pages.put_sendno, methods=["POST"]),
        Route("/sender-numbers/{number}", pages.put_sendno, methods=["POST"]),
        Route("/sender-numbers/{number}/delete", pages.delete_sendno, methods=["POST"]),
        Route("/fallbacks", pages.fallbacks),
        Route("/fallbacks.csv", pages.fallbacks_csv),
        Route("/fallbacks/{fallback_id:path}", pages.fallback),
        Route("/dead-letters", pages.dead_letters),
        Route("/dead-letters/replay", pages.replay, methods=["POST"]),
        Route("/audit", pages.audit),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return _Headers(Starlette(routes=routes), console.secure_cookies)
