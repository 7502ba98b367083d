"""The `nhn` sink: each SMS request sent to an NHN Cloud SMS API v3.0-compatible endpoint over
HTTP (contract §10), with retries, a rate limit, a bound on requests in flight and a circuit
breaker. What an answer means is decided in `service.core.nhn`; this module does the calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx
import orjson

from service.config import NhnApi
from service.core import nhn
from service.core.settle import ProviderAnswer
from service.logs import mask_number
from service.metrics import Metrics
from service.pipeline.seams import Delivery
from service.sinks.limits import Breaker, BreakerState, TokenBucket

log = logging.getLogger("fallback.sink.nhn")


class NhnSink:
    """Sends each delivery as one API call (one recipient per call, so each fallback settles on
    its own) and sets its answer: SENT, FAILED, or held while the API is unavailable."""

    name = "nhn"
    delivers = True

    def __init__(
        self,
        api: NhnApi,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        unit_random: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self._transport = transport
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = unit_random
        self._sleep = sleep
        # One client per request in flight, each holding one keep-alive connection: httpcore's
        # shared pool spends milliseconds per request re-assigning connections once requests
        # queue (encode/httpcore#1035), which capped a shared 16-connection client near 250/s.
        # Taking a client from this queue is also the bound on requests in flight.
        self.lanes: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        self._clients: list[httpx.AsyncClient] = []
        self.bucket = TokenBucket(api.rate_limit, clock=clock, sleep=sleep)
        self.breaker = Breaker(api.breaker_threshold, max_wait=api.breaker_max_seconds, clock=clock)
        self.breaker.on_change = self._breaker_changed

    async def start(self) -> None:
        api = self.api
        for _ in range(api.concurrency):
            client = _client(api, self._transport)
            self._clients.append(client)
            self.lanes.put_nowait(client)
        log.info(
            "sending SMS to %s (%d at once, %s requests/s)",
            api.base_url,
            api.concurrency,
            f"{api.rate_limit:g}" if api.rate_limit else "unlimited",
        )

    async def stop(self) -> None:
        clients, self._clients = self._clients, []
        self.lanes = asyncio.Queue()
        for client in clients:
            await client.aclose()

    def unavailable(self) -> str | None:
        breaker = self.breaker
        if breaker.closed:
            return None
        return f"SMS API unavailable for {breaker.open_for():.0f}s: {breaker.reason}"

    def retry_in(self) -> float:
        return self.breaker.wait

    def probe(self) -> None:
        self.breaker.probe()

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Send every delivery, up to `concurrency` at once; each ends answered or held."""
        if len(deliveries) == 1:
            await self._send(deliveries[0])
            return
        async with asyncio.TaskGroup() as group:
            for delivery in deliveries:
                group.create_task(self._send(delivery))

    async def _send(self, delivery: Delivery) -> None:
        if not self._clients:
            raise RuntimeError("the nhn sink is not started")
        client = await self.lanes.get()
        try:
            await self._attempts(client, delivery)
        finally:
            self.lanes.put_nowait(client)

    async def _attempts(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        api = self.api
        request = delivery.request
        endpoint = nhn.endpoint(request)
        path = nhn.path(api.app_key, request)
        content = orjson.dumps(nhn.body(request))
        started = self._clock()
        deadline = started + api.request_deadline_seconds
        breaker = self.breaker
        attempt = 0
        while True:
            if not await breaker.admit():
                delivery.held = True
                return
            await self.bucket.take()
            attempt += 1
            answer = await self._call(
                client, path, endpoint, content, request.recipientNo, deadline
            )
            if answer.verdict in (nhn.Verdict.ACCEPTED, nhn.Verdict.REJECTED):
                breaker.answered()
                delivery.answer = _answered(self.name, delivery, answer, attempt)
                return
            if answer.verdict is nhn.Verdict.ACCOUNT:
                code = f"{answer.result_code} " if answer.result_code is not None else ""
                breaker.open(f"refused for every message: {code}{answer.result_message}")
                delivery.held = True
                return
            breaker.trouble(answer.result_message)
            if not breaker.closed:
                delivery.held = True
                return
            wait = nhn.retry_wait(
                answer, attempt, api.backoff_base_seconds, api.backoff_max_seconds, self._random()
            )
            if attempt >= api.max_attempts or self._clock() + wait >= deadline:
                if breaker.answered_since(started):
                    # The API answers others: this request is the problem, not the API.
                    delivery.answer = _unanswered(self.name, delivery, answer, attempt)
                else:
                    # Nobody got an answer all this time: the API is down, not this request.
                    breaker.open(answer.result_message)
                    delivery.held = True
                return
            self.metrics.nhn_retries.labels(endpoint).inc()
            await self._sleep(wait)

    async def _call(
        self,
        client: httpx.AsyncClient,
        path: str,
        endpoint: str,
        content: bytes,
        recipient_no: str,
        deadline: float,
    ) -> nhn.Answer:
        metrics = self.metrics
        timeout = max(0.05, min(self.api.timeout_seconds, deadline - self._clock()))
        metrics.nhn_in_flight.inc()
        began = time.perf_counter()
        try:
            response = await client.post(path, content=content, timeout=timeout)
        except httpx.TimeoutException as exc:
            answer = nhn.transport_failure(f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            answer = nhn.transport_failure(f"connection error: {type(exc).__name__}")
        else:
            answer = nhn.classify(
                response.status_code,
                response.headers,
                response.content,
                recipient_no,
                self._wall_clock(),
            )
        finally:
            metrics.nhn_in_flight.dec()
            metrics.nhn_latency.labels(endpoint).observe(time.perf_counter() - began)
        metrics.nhn_requests.labels(endpoint, answer.label).inc()
        return answer

    def _breaker_changed(self, state: BreakerState) -> None:
        self.metrics.nhn_breaker_open.set(0 if state is BreakerState.CLOSED else 1)
        if state is BreakerState.OPEN:
            log.error(
                "SMS API unavailable for %.0fs (%s): input paused, probing again in %.1fs",
                self.breaker.open_for(),
                self.breaker.reason,
                self.breaker.wait,
            )
        elif state is BreakerState.CLOSED:
            log.warning("SMS API answers again: input resumed")


def _client(api: NhnApi, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    """One lane: a client holding one keep-alive connection to the API."""
    return httpx.AsyncClient(
        base_url=api.base_url,
        headers={
            "X-Secret-Key": api.secret_key.get_secret_value(),
            "Content-Type": nhn.CONTENT_TYPE,
            "Accept": "application/json",
        },
        timeout=httpx.Timeout(api.timeout_seconds),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        transport=transport,
        follow_redirects=False,
        trust_env=False,
    )


def _answered(name: str, delivery: Delivery, answer: nhn.Answer, attempt: int) -> ProviderAnswer:
    """The provider's answer to a message it took or refused (refusals logged, masked)."""
    accepted = answer.verdict is nhn.Verdict.ACCEPTED
    if not accepted:
        log.warning(
            "%s to %s refused by the SMS API: %s %s",
            delivery.request.fallbackId,
            mask_number(delivery.request.recipientNo),
            answer.result_code if answer.result_code is not None else "",
            answer.result_message,
        )
    return ProviderAnswer(
        name, accepted, answer.request_id, answer.result_code, answer.result_message, attempt
    )


def _unanswered(name: str, delivery: Delivery, answer: nhn.Answer, attempt: int) -> ProviderAnswer:
    """No answer within the retry budget while the API answers others (FAILED unavailable)."""
    log.warning(
        "%s: no answer from the SMS API after %d attempts: %s",
        delivery.request.fallbackId,
        attempt,
        answer.result_message,
    )
    return ProviderAnswer(name, None, None, answer.result_code, answer.result_message, attempt)
