"""HTTP endpoints (§10) on the bare ASGI app: status codes, HEAD, 405, readiness reasons."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter

from service.runtime.http import make_http_app


def client(why: list[str | None]) -> httpx.AsyncClient:
    registry = CollectorRegistry()
    Counter("fallback_probe", "a probe", registry=registry).inc()
    app = make_http_app(lambda: why[0], registry)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_get_endpoints() -> None:
    why: list[str | None] = ["loading channels"]
    async with client(why) as c:
        assert (await c.get("/healthz")).status_code == 200
        not_ready = await c.get("/readyz")
        assert (not_ready.status_code, not_ready.text) == (503, "not ready: loading channels\n")
        why[0] = None
        assert (await c.get("/readyz")).text == "ready\n"
        metrics = await c.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain; version=")
        assert "fallback_probe_total 1.0" in metrics.text
        assert (await c.get("/nope")).status_code == 404


async def test_head_answers_like_get() -> None:
    async with client([None]) as c:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await c.head(path)).status_code == 200
        assert (await c.head("/nope")).status_code == 404


async def test_other_methods_are_405() -> None:
    async with client([None]) as c:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = await c.request(method, "/healthz")
            assert response.status_code == 405
            assert response.text == "method not allowed\n"
