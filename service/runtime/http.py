"""HTTP on FALLBACK_HTTP_PORT: /healthz, /readyz, /metrics (§10) and the providers' result
webhooks (§11). A bare ASGI app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# A webhook: the request's headers (lower-case names) and body → status and body.
Webhook = Callable[[Mapping[str, str], bytes], Awaitable[tuple[int, bytes]]]


def make_http_app(
    readiness: Callable[[], str | None],
    registry: CollectorRegistry,
    webhooks: Mapping[str, Webhook] | None = None,
) -> ASGIApp:
    """`readiness()` returns None when ready, else why not (shown with the 503). `webhooks`
    are the providers' result webhooks by path (`POST /webhooks/nhn`, §11)."""
    hooks = dict(webhooks or {})

    async def respond(send: Send, status: int, body: bytes, content_type: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        text = "text/plain; charset=utf-8"
        hook = hooks.get(path)
        if hook is not None and method == "POST":
            body = await _body(receive)
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            status, answer = await hook(headers, body)
            await respond(send, status, answer, text)
        elif method not in {"GET", "HEAD"}:
            await respond(send, 405, b"method not allowed\n", text)
        elif path == "/healthz":
            await respond(send, 200, b"ok\n", text)
        elif path == "/readyz":
            why = readiness()
            if why is None:
                await respond(send, 200, b"ready\n", text)
            else:
                await respond(send, 503, f"not ready: {why}\n".encode(), text)
        elif path == "/metrics":
            await respond(send, 200, generate_latest(registry), CONTENT_TYPE_LATEST)
        else:
            await respond(send, 404, b"not found\n", text)

    return app


# A provider's webhook call carries a few results; more than this is not one.
_MAX_BODY = 4 * 1024 * 1024


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            return b""  # answered 400 by the webhook: not a call it can read
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
