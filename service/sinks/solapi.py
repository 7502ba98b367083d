"""The `solapi` sink: SMS requests sent to a Solapi messages API v4-compatible endpoint, many per
call (contract §10), each call signed afresh, with retries, a rate limit on calls, a bound on
calls in flight, a circuit breaker, a refused call split until the message at fault stands
alone, and a lookup of the message list before anything ambiguous is sent again. What an answer
means is decided in `service.core.solapi`; this module does the calls.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime

import httpx
import orjson

from service.config import SolapiApi
from service.core import solapi
from service.core.provider import Found, Lookup, Verdict, retry_wait, transport_failure
from service.metrics import Metrics
from service.pipeline.seams import Delivery
from service.sinks.provider import REAL_TIME, Clocks, ProviderSink

# Pages of the message list read for one lookup, at most (500 messages each).
_LOOKUP_PAGES = 100


class SolapiAuth(httpx.Auth):
    """Signs every request as it goes out, so a retry never reuses a signature (§10)."""

    def __init__(
        self, api_key: str, secret: str, wall_clock: Callable[[], float], salt: Callable[[], str]
    ) -> None:
        self.api_key = api_key
        self._secret = secret
        self._clock = wall_clock
        self._salt = salt

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        now = datetime.fromtimestamp(self._clock(), UTC)
        request.headers["Authorization"] = solapi.authorization(
            self.api_key, self._secret, now, self._salt()
        )
        yield request


def client(
    api: SolapiApi,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    wall_clock: Callable[[], float] = time.time,
    salt: Callable[[], str] = lambda: secrets.token_hex(16),
) -> httpx.AsyncClient:
    """An HTTP client of the API whose every request is signed (the sink's and the collector's)."""
    return httpx.AsyncClient(
        base_url=api.base_url,
        auth=SolapiAuth(api.api_key, api.api_secret.get_secret_value(), wall_clock, salt),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=httpx.Timeout(api.pressure.timeout_seconds),
        limits=httpx.Limits(
            max_connections=api.pressure.concurrency,
            max_keepalive_connections=api.pressure.concurrency,
        ),
        transport=transport,
        follow_redirects=False,
        trust_env=False,
    )


class SolapiSink(ProviderSink):
    """Sends a batch's deliveries in calls of up to `batch_max` messages and sets each one's
    answer: SENT, FAILED, or held while the API is unavailable or cannot say whether it took an
    ambiguous call."""

    name = "solapi"

    def __init__(
        self,
        api: SolapiApi,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clocks: Clocks = REAL_TIME,
        salt: Callable[[], str] = lambda: secrets.token_hex(16),
    ) -> None:
        super().__init__(api.pressure, metrics, clocks)
        self.api = api
        self._transport = transport
        self._salt = salt
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(api.pressure.concurrency)

    async def start(self) -> None:
        self._client = client(
            self.api, transport=self._transport, wall_clock=self._wall_clock, salt=self._salt
        )
        pressure = self.pressure
        self.log.info(
            "sending SMS to %s (%d calls at once of up to %d messages, %s calls/s)",
            self.api.base_url,
            pressure.concurrency,
            self.api.batch_max,
            f"{pressure.rate_limit:g}" if pressure.rate_limit else "unlimited",
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Send every delivery in as few calls as the limits allow; each ends answered or held."""
        if self._client is None:
            raise RuntimeError("the solapi sink is not started")
        groups = solapi.calls([d.request for d in deliveries], self.api.batch_max)
        if len(groups) == 1:
            await self._group([deliveries[i] for i in groups[0]])
            return
        async with asyncio.TaskGroup() as tasks:
            for members in groups:
                tasks.create_task(self._group([deliveries[i] for i in members]))

    async def _group(self, members: list[Delivery]) -> None:
        """One call's messages, through every attempt, until each is answered or held."""
        pressure = self.pressure
        breaker = self.breaker
        started = self._clock()
        deadline = started + pressure.request_deadline_seconds
        attempt = 0
        pending = members
        while pending:
            if not await breaker.admit():
                _hold(pending)
                return
            unsure = [d for d in pending if d.request.fallbackId in self.unsure]
            if unsure:
                found = await self._lookup(unsure)
                still: list[Delivery] = []
                unknown = False
                for d in unsure:
                    settled = self.looked_up(d, found[d.request.fallbackId])
                    if settled is not None:
                        d.answer = settled
                    elif d.request.fallbackId in self.unsure:
                        unknown = True
                        still.append(d)
                if any(d.answer is not None for d in unsure):
                    breaker.answered()
                pending = [d for d in pending if d.answer is None]
                if unknown:
                    self.trouble(found[still[0].request.fallbackId].detail)
                    if not breaker.closed or self._clock() + 0.05 >= deadline:
                        _hold(pending)
                        return
                    await self._sleep(self.backoff(attempt + 1))
                    continue
                if not pending:
                    return
            await self.bucket.take()
            attempt += 1
            answer = await self._call(pending, deadline)
            if answer.each:
                breaker.answered()
                for d, each in zip(pending, answer.each, strict=True):
                    d.answer = self.answered(d, each, attempt)
                return
            whole = answer.whole
            assert whole is not None
            if answer.invalid:
                breaker.answered()  # the API answered: it is available
                if len(pending) == 1:
                    pending[0].answer = self.answered(pending[0], whole, attempt)
                    return
                # Split and isolate: the well-formed halves go through, the bad one narrows.
                half = len(pending) // 2
                await asyncio.gather(self._group(pending[:half]), self._group(pending[half:]))
                return
            if whole.verdict is Verdict.ACCOUNT:
                self.open_for_account(whole.result_message)
                _hold(pending)
                return
            ambiguous = whole.verdict is Verdict.AMBIGUOUS
            if ambiguous:
                for d in pending:
                    self.became_unsure(d, attempt)
            if answer.resign:
                # Signed again as the next attempt goes out; no wait, no trouble.
                if attempt < pressure.max_attempts:
                    continue
            else:
                self.trouble(whole.result_message)
            if not breaker.closed:
                _hold(pending)
                return
            if ambiguous:
                wait = self.lookup_wait(attempt)
            else:
                wait = retry_wait(
                    whole,
                    attempt,
                    pressure.backoff_base_seconds,
                    pressure.backoff_max_seconds,
                    self._random(),
                )
            if attempt >= pressure.max_attempts or self._clock() + wait >= deadline:
                if not ambiguous and breaker.answered_since(started):
                    for d in pending:
                        d.answer = self.unanswered(d, whole, attempt)
                else:
                    if not ambiguous:
                        breaker.open(whole.result_message)
                    _hold(pending)
                return
            self.metrics.provider_retries.labels(self.name, "send-many").inc()
            await self._sleep(wait)

    async def _call(self, members: Sequence[Delivery], deadline: float) -> solapi.CallAnswer:
        assert self._client is not None
        requests = [d.request for d in members]
        content = orjson.dumps(solapi.send_body(requests))
        timeout = max(0.05, min(self.pressure.timeout_seconds, deadline - self._clock()))
        in_flight = self.metrics.provider_in_flight.labels(self.name)
        async with self._slots:
            in_flight.inc()
            began = time.perf_counter()
            try:
                response = await self._client.post(
                    solapi.SEND_PATH, content=content, timeout=timeout
                )
            except httpx.TimeoutException as exc:
                answer = solapi.CallAnswer(transport_failure(type(exc).__name__, timeout=True))
            except httpx.HTTPError as exc:
                answer = solapi.CallAnswer(transport_failure(type(exc).__name__, timeout=False))
            else:
                answer = solapi.classify(
                    response.status_code,
                    response.headers,
                    response.content,
                    requests,
                    self._wall_clock(),
                )
            finally:
                in_flight.dec()
        self.observe_call("send-many", _label(answer), began)
        return answer

    async def _lookup(self, members: Sequence[Delivery]) -> dict[str, Found]:
        """Ask Solapi's message list which of `members` it took in an ambiguous call (§10)."""
        assert self._client is not None
        first = min(self.unsure[d.request.fallbackId].first_sent for d in members)
        numbers = {d.request.recipientNo for d in members}
        to = next(iter(numbers)) if len(numbers) == 1 else None
        wanted = {d.request.fallbackId for d in members}
        taken: dict[str, str] = {}
        start_key: str | None = None
        for _ in range(_LOOKUP_PAGES):
            query = solapi.lookup_query(first, self.now(), to, start_key)
            began = time.perf_counter()
            try:
                async with self._slots:
                    response = await self._client.get(solapi.LIST_PATH, params=query)
            except httpx.HTTPError as exc:
                self.observe_call("list", "error", began)
                return _all(wanted, Found(Lookup.UNKNOWN, detail=f"lookup failed: {exc!r}"))
            self.observe_call("list", str(response.status_code), began)
            page, start_key, why = solapi.parse_lookup(response.status_code, response.content)
            if page is None:
                return _all(wanted, Found(Lookup.UNKNOWN, detail=why))
            taken.update((fid, mid) for fid, mid in page.items() if fid in wanted)
            if start_key is None or wanted <= taken.keys():
                return {
                    fid: Found(Lookup.TAKEN, taken[fid])
                    if fid in taken
                    else Found(Lookup.NOT_TAKEN)
                    for fid in wanted
                }
        return _all(wanted, Found(Lookup.UNKNOWN, detail="the lookup's window lists too much"))


def _all(fallback_ids: set[str], found: Found) -> dict[str, Found]:
    return dict.fromkeys(fallback_ids, found)


def _hold(deliveries: Sequence[Delivery]) -> None:
    for d in deliveries:
        d.held = True


def _label(answer: solapi.CallAnswer) -> str:
    if answer.whole is not None:
        return answer.whole.label
    return "200"
