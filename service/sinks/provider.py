"""What every delivering sink (nhn, solapi) shares: the rate limit, the circuit breaker, the
metrics, and the memory of requests whose last attempt was ambiguous (contract §10).

A request is *unsure* at a provider after a timeout or a connection lost once it was sent: the
provider may have taken it. It stays with that provider (failover never moves it), and before
it is sent again the sink asks the provider whether it took it. The memory is this process's:
a crash loses it, and the requests it held are the in-flight requests of §10 that may repeat.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from service.config import Pressure
from service.core.provider import Answer, Found, Lookup, Verdict, backoff
from service.core.settle import ProviderAnswer
from service.logs import mask_number
from service.metrics import Metrics
from service.pipeline.seams import Delivery
from service.sinks.limits import Breaker, BreakerState, TokenBucket


@dataclass(frozen=True, slots=True)
class Clocks:
    """Time, chance and waiting as a sink sees them; tests pass their own."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    unit_random: Callable[[], float] = random.random
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


REAL_TIME = Clocks()


@dataclass(slots=True)
class Unsure:
    """A request whose last attempt was ambiguous: when it was first sent (the lookup's window)
    and how many attempts it has had."""

    first_sent: datetime
    attempts: int


class ProviderSink:
    """The parts of a delivering sink that do not depend on its provider's API."""

    name = "provider"
    delivers = True

    def __init__(self, pressure: Pressure, metrics: Metrics, clocks: Clocks) -> None:
        self.pressure = pressure
        self.metrics = metrics
        self._clock = clock = clocks.monotonic
        self._wall_clock = clocks.wall
        self._random = clocks.unit_random
        self._sleep = sleep = clocks.sleep
        self.log = logging.getLogger(f"fallback.sink.{self.name}")
        self.bucket = TokenBucket(pressure.rate_limit, clock=clock, sleep=sleep)
        self.breaker = Breaker(
            pressure.breaker_threshold, max_wait=pressure.breaker_max_seconds, clock=clock
        )
        self.breaker.on_change = self._breaker_changed
        # fallbackId → the ambiguous attempt not resolved yet (module docstring).
        self.unsure: dict[str, Unsure] = {}
        # Why the breaker is open: an account-level refusal, or trouble (failover's reason).
        self.account_down = False

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Send every delivery; each ends answered (`Delivery.answer`) or `held`."""
        raise NotImplementedError

    def unavailable(self) -> str | None:
        breaker = self.breaker
        if breaker.closed:
            return None
        return (
            f"SMS provider {self.name} unavailable for {breaker.open_for():.0f}s: {breaker.reason}"
        )

    def retry_in(self) -> float:
        return self.breaker.wait

    def probe(self) -> None:
        self.breaker.probe()

    def holds(self, fallback_id: str) -> bool:
        """Whether `fallback_id` is unsure here: it may not go to another provider."""
        return fallback_id in self.unsure

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC)

    def became_unsure(self, delivery: Delivery, attempts: int) -> None:
        """Remember that `delivery`'s last attempt was ambiguous."""
        fid = delivery.request.fallbackId
        known = self.unsure.get(fid)
        if known is None:
            self.unsure[fid] = Unsure(self.now(), attempts)
        else:
            known.attempts = attempts

    def lookup_wait(self, attempt: int) -> float:
        """The wait before asking whether an ambiguous attempt was taken: at least one call's
        timeout, so a provider still working on the request has finished it."""
        return max(self.pressure.timeout_seconds, self.backoff(attempt))

    def open_for_account(self, cause: str) -> None:
        """An account-level refusal: no message gets past it; unavailable until a probe passes."""
        self.account_down = True
        self.breaker.open(f"refused for every message: {cause}")

    def trouble(self, cause: str) -> None:
        """Transient trouble; opens the breaker after enough in a row."""
        if self.breaker.closed:
            self.account_down = False
        self.breaker.trouble(cause)

    def backoff(self, attempt: int) -> float:
        """`core.provider.backoff` with this sink's pace and random draw."""
        p = self.pressure
        return backoff(attempt, p.backoff_base_seconds, p.backoff_max_seconds, self._random())

    def looked_up(self, delivery: Delivery, found: Found) -> ProviderAnswer | None:
        """Settle what a lookup said: TAKEN answers the delivery SENT; NOT_TAKEN forgets the
        ambiguity (it may be sent again); UNKNOWN leaves it unsure. Returns the answer when
        settled."""
        fid = delivery.request.fallbackId
        self.metrics.provider_lookups.labels(self.name, found.lookup.value).inc()
        unsure = self.unsure.get(fid)
        attempts = unsure.attempts if unsure is not None else 1
        if found.lookup is Lookup.TAKEN:
            self.unsure.pop(fid, None)
            self.log.warning(
                "%s: the answer was lost, but %s has it (%s): SENT, not sent again",
                fid,
                self.name,
                found.request_id,
            )
            return ProviderAnswer(
                self.name, True, found.request_id, None, "found by lookup", attempts
            )
        if found.lookup is Lookup.NOT_TAKEN:
            self.unsure.pop(fid, None)
            self.log.info("%s: %s did not take it; sending it again", fid, self.name)
        else:
            self.log.warning(
                "%s: cannot ask %s whether it took it (%s)", fid, self.name, found.detail
            )
        return None

    def answered(self, delivery: Delivery, answer: Answer, attempt: int) -> ProviderAnswer:
        """The provider's answer to a message it took or refused (refusals logged, masked)."""
        accepted = answer.verdict is Verdict.ACCEPTED
        self.metrics.provider_messages.labels(
            self.name, "accepted" if accepted else "rejected"
        ).inc()
        unsure = self.unsure.pop(delivery.request.fallbackId, None)
        if unsure is not None:
            attempt = max(attempt, unsure.attempts + 1)
        if not accepted:
            self.log.warning(
                "%s to %s refused by %s: %s %s",
                delivery.request.fallbackId,
                mask_number(delivery.request.recipientNo),
                self.name,
                answer.result_code if answer.result_code is not None else "",
                answer.result_message,
            )
        return ProviderAnswer(
            self.name,
            accepted,
            answer.request_id,
            answer.result_code,
            answer.result_message,
            attempt,
        )

    def unanswered(self, delivery: Delivery, answer: Answer, attempt: int) -> ProviderAnswer:
        """No answer within the retry budget while the provider answers others."""
        self.log.warning(
            "%s: no answer from %s after %d attempts: %s",
            delivery.request.fallbackId,
            self.name,
            attempt,
            answer.result_message,
        )
        return ProviderAnswer(
            self.name, None, None, answer.result_code, answer.result_message, attempt
        )

    def observe_call(self, endpoint: str, answer_label: str, began: float) -> None:
        self.metrics.provider_latency.labels(self.name, endpoint).observe(
            time.perf_counter() - began
        )
        self.metrics.provider_requests.labels(self.name, endpoint, answer_label).inc()

    def _breaker_changed(self, state: BreakerState) -> None:
        self.metrics.provider_unavailable.labels(self.name).set(
            0 if state is BreakerState.CLOSED else 1
        )
        if state is BreakerState.OPEN:
            self.log.error(
                "%s unavailable for %.0fs (%s): probing again in %.1fs",
                self.name,
                self.breaker.open_for(),
                self.breaker.reason,
                self.breaker.wait,
            )
        elif state is BreakerState.CLOSED:
            self.log.warning("%s answers again", self.name)
