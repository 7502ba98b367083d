"""The `nhn` sink: each SMS request sent to an NHN Cloud SMS API v3.0-compatible endpoint over
HTTP (contract §10), with retries, a rate limit, a bound on requests in flight, a circuit
breaker, and a lookup of the send list before anything ambiguous is sent again. What an answer
means is decided in `service.core.nhn`; this module does the calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx
import orjson

from service.config import NhnApi
from service.core import nhn
from service.core.provider import Answer, Found, Lookup, Verdict, retry_wait, transport_failure
from service.metrics import Metrics
from service.pipeline.seams import Delivery
from service.sinks.provider import REAL_TIME, Clocks, ProviderSink


class NhnSink(ProviderSink):
    """Sends each delivery as one API call (one recipient per call, so each fallback settles on
    its own) and sets its answer: SENT, FAILED, or held while the API is unavailable or while
    it cannot say whether it took an ambiguous attempt."""

    name = "nhn"

    def __init__(
        self,
        api: NhnApi,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clocks: Clocks = REAL_TIME,
    ) -> None:
        super().__init__(api.pressure, metrics, clocks)
        self.api = api
        self._transport = transport
        # One client per request in flight, each holding one keep-alive connection: httpcore's
        # shared pool spends milliseconds per request re-assigning connections once requests
        # queue (encode/httpcore#1035), which capped a shared 16-connection client near 250/s.
        # Taking a client from this queue is also the bound on requests in flight.
        self.lanes: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        self._clients: list[httpx.AsyncClient] = []

    async def start(self) -> None:
        pressure = self.pressure
        for _ in range(pressure.concurrency):
            client = _client(self.api, self._transport)
            self._clients.append(client)
            self.lanes.put_nowait(client)
        self.log.info(
            "sending SMS to %s (%d at once, %s requests/s)",
            self.api.base_url,
            pressure.concurrency,
            f"{pressure.rate_limit:g}" if pressure.rate_limit else "unlimited",
        )

    async def stop(self) -> None:
        clients, self._clients = self._clients, []
        self.lanes = asyncio.Queue()
        for client in clients:
            await client.aclose()

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
        pressure = self.pressure
        request = delivery.request
        fid = request.fallbackId
        endpoint = nhn.endpoint(request)
        path = nhn.path(self.api.app_key, request)
        content = orjson.dumps(nhn.body(request))
        started = self._clock()
        deadline = started + pressure.request_deadline_seconds
        breaker = self.breaker
        attempt = 0
        while True:
            if not await breaker.admit():
                delivery.held = True
                return
            if fid in self.unsure:
                found = await self._lookup(client, delivery)
                settled = self.looked_up(delivery, found)
                if settled is not None:
                    breaker.answered()
                    delivery.answer = settled
                    return
                if found.lookup is Lookup.UNKNOWN:
                    self.trouble(found.detail)
                    if not breaker.closed or self._clock() + 0.05 >= deadline:
                        delivery.held = True
                        return
                    await self._sleep(self.backoff(attempt + 1))
                    continue
            await self.bucket.take()
            attempt += 1
            answer = await self._call(
                client, path, endpoint, content, request.recipientNo, deadline
            )
            if answer.verdict in (Verdict.ACCEPTED, Verdict.REJECTED):
                breaker.answered()
                delivery.answer = self.answered(delivery, answer, attempt)
                return
            if answer.verdict is Verdict.ACCOUNT:
                code = f"{answer.result_code} " if answer.result_code is not None else ""
                self.open_for_account(f"{code}{answer.result_message}")
                delivery.held = True
                return
            ambiguous = answer.verdict is Verdict.AMBIGUOUS
            if ambiguous:
                self.became_unsure(delivery, attempt)
            self.trouble(answer.result_message)
            if not breaker.closed:
                delivery.held = True
                return
            if ambiguous:
                wait = self.lookup_wait(attempt)
            else:
                wait = retry_wait(
                    answer,
                    attempt,
                    pressure.backoff_base_seconds,
                    pressure.backoff_max_seconds,
                    self._random(),
                )
            if attempt >= pressure.max_attempts or self._clock() + wait >= deadline:
                if fid not in self.unsure and breaker.answered_since(started):
                    # The API answers others: this request is the problem, not the API.
                    delivery.answer = self.unanswered(delivery, answer, attempt)
                else:
                    if fid not in self.unsure:
                        # Nobody got an answer all this time: the API is down, not this request.
                        breaker.open(answer.result_message)
                    delivery.held = True
                return
            self.metrics.provider_retries.labels(self.name, endpoint).inc()
            await self._sleep(wait)

    async def _call(
        self,
        client: httpx.AsyncClient,
        path: str,
        endpoint: str,
        content: bytes,
        recipient_no: str,
        deadline: float,
    ) -> Answer:
        timeout = max(0.05, min(self.pressure.timeout_seconds, deadline - self._clock()))
        in_flight = self.metrics.provider_in_flight.labels(self.name)
        in_flight.inc()
        began = time.perf_counter()
        try:
            response = await client.post(path, content=content, timeout=timeout)
        except httpx.TimeoutException as exc:
            answer = transport_failure(type(exc).__name__, timeout=True)
        except httpx.HTTPError as exc:
            answer = transport_failure(type(exc).__name__, timeout=False)
        else:
            answer = nhn.classify(
                response.status_code,
                response.headers,
                response.content,
                recipient_no,
                self._wall_clock(),
            )
        finally:
            in_flight.dec()
        self.observe_call(endpoint, answer.label, began)
        return answer

    async def _lookup(self, client: httpx.AsyncClient, delivery: Delivery) -> Found:
        """Ask NHN's send list whether it took `delivery` in an ambiguous attempt (§10)."""
        request = delivery.request
        unsure = self.unsure[request.fallbackId]
        path = nhn.lookup_path(self.api.app_key, request)
        page = 1
        while True:
            query = nhn.lookup_query(request, unsure.first_sent, self.now(), page)
            began = time.perf_counter()
            try:
                response = await client.get(
                    path, params=query, timeout=self.pressure.timeout_seconds
                )
            except httpx.HTTPError as exc:
                self.observe_call("lookup", "error", began)
                return Found(Lookup.UNKNOWN, detail=f"lookup failed: {type(exc).__name__}")
            self.observe_call("lookup", str(response.status_code), began)
            found, more = nhn.parse_lookup(response.status_code, response.content, request)
            if found.lookup is not Lookup.NOT_TAKEN or not more:
                return found
            page += 1


def _client(api: NhnApi, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    """One lane: a client holding one keep-alive connection to the API."""
    return httpx.AsyncClient(
        base_url=api.base_url,
        headers={
            "X-Secret-Key": api.secret_key.get_secret_value(),
            "Content-Type": nhn.CONTENT_TYPE,
            "Accept": "application/json",
        },
        timeout=httpx.Timeout(api.pressure.timeout_seconds),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        transport=transport,
        follow_redirects=False,
        trust_env=False,
    )
