"""How hard a delivering sink may press its provider: a token bucket for the request rate and a
circuit breaker that stops sending while the provider as a whole is unavailable.

Both take their clock from the caller, so tests drive them without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum


class TokenBucket:
    """At most `rate` requests per second on average, and a burst of `capacity` at once.

    A rate of 0 means no limit.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        # A tenth of a second's worth: a burst, not a second's backlog fired at once.
        self.capacity = capacity if capacity is not None else max(1.0, rate / 10)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def take(self) -> None:
        """Wait until a request may go out, and count it."""
        if self.rate <= 0:
            return
        while True:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await self._sleep((1 - self._tokens) / self.rate)


class BreakerState(StrEnum):
    CLOSED = "closed"  # sending
    OPEN = "open"  # not sending; waiting to probe
    PROBING = "probing"  # one request goes out to see whether the provider is back


class Breaker:
    """Opens after `threshold` transient failures in a row, or at once on an account-level
    refusal. While open nothing is sent; after a wait that doubles up to `max_wait` one request
    probes, and the first real answer closes it again."""

    def __init__(
        self,
        threshold: int,
        *,
        first_wait: float = 1.0,
        max_wait: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.first_wait = first_wait
        self.max_wait = max_wait
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.reason = ""
        self.failures = 0
        self.opened_at: float | None = None
        # When it last opened (or a probe failed): the next probe is due `wait` after it.
        self.open_since = float("-inf")
        self.wait = first_wait
        # When the provider last gave a real answer (accepted or refused a message).
        self.last_answer = float("-inf")
        self.probe_done = asyncio.Event()
        self.probe_done.set()
        self._probe_taken = False
        self.on_change: Callable[[BreakerState], None] = lambda state: None

    @property
    def closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    def answered(self) -> None:
        """The provider answered for a message (accepted or refused it): it is available."""
        self.failures = 0
        self.last_answer = self._clock()
        if self.state is not BreakerState.CLOSED:
            self.state = BreakerState.CLOSED
            self.reason = ""
            self.opened_at = None
            self.wait = self.first_wait
            self.probe_done.set()
            self.on_change(self.state)

    def trouble(self, cause: str) -> None:
        """A transient failure: no answer, 5xx, 429, the API's own "try again"."""
        self.failures += 1
        if self.state is BreakerState.PROBING or self.failures >= self.threshold:
            self.open(cause)

    def open(self, cause: str) -> None:
        """Stop sending: the provider is unavailable (or refuses the account) because of `cause`."""
        if self.state is BreakerState.PROBING:
            self.wait = min(self.max_wait, self.wait * 2)  # the probe failed: wait longer
        self.reason = cause
        if self.state is not BreakerState.OPEN:
            self.open_since = self._clock()
            self.state = BreakerState.OPEN
            if self.opened_at is None:
                self.opened_at = self._clock()
            self.probe_done.set()
            self.on_change(self.state)

    def probe(self) -> None:
        """Let one request through to see whether the provider is back."""
        if self.state is BreakerState.OPEN:
            self.state = BreakerState.PROBING
            self._probe_taken = False
            self.probe_done.clear()
            self.on_change(self.state)

    def probe_due(self) -> bool:
        """Whether it has been open `wait` seconds: time for a probe (failover probes the
        providers before it without pausing anything)."""
        return self.state is BreakerState.OPEN and self._clock() - self.open_since >= self.wait

    def take_probe(self) -> bool:
        """While probing: True for the one request that probes, False for the others."""
        if self._probe_taken:
            return False
        self._probe_taken = True
        return True

    async def admit(self) -> bool:
        """Whether a request may go out now: always while closed; while probing, only the probe
        (the others wait for its answer); never while open."""
        while True:
            if self.state is BreakerState.CLOSED:
                return True
            if self.state is BreakerState.OPEN:
                return False
            if self.take_probe():
                return True
            await self.probe_done.wait()

    def open_for(self) -> float:
        """How long the breaker has been open (0 when closed)."""
        return 0.0 if self.opened_at is None else self._clock() - self.opened_at

    def answered_since(self, moment: float) -> bool:
        """Whether the provider gave a real answer to anyone after `moment`."""
        return self.last_answer > moment
