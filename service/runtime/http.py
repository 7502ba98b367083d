"""HTTP on FALLBACK_HTTP_PORT: /healthz, /readyz, /metrics (§10). A bare ASGI app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def make_http_app(readiness: Callable[[], str | None], registry: CollectorRegistry) -> ASGIApp:
    """`readiness()` returns None when ready, else why not (shown with the 503)."""

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
        if method not in {"GET", "HEAD"}:
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
