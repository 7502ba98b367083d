"""Whether the running service is healthy enough to call ready (§10): the broker answers, writes
succeed, the consumer moves when records wait. State fed by the shell; the clock is injected."""

from __future__ import annotations

import time
from collections.abc import Callable

# How long each symptom lasts before /readyz says so (a blip is not an outage).
BROKER_GRACE_SECONDS = 3.0
WRITES_GRACE_SECONDS = 5.0
STALL_SECONDS = 30.0


class Health:
    """Symptoms, with the time each began; `problem()` says the first one that lasts."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.broker_down_since: float | None = None
        self.writes_failing_since: float | None = None
        self.last_progress = clock()
        self.records_waiting = False

    def broker_answered(self, answered: bool) -> None:
        if answered:
            self.broker_down_since = None
        elif self.broker_down_since is None:
            self.broker_down_since = self._clock()

    def write_failed(self) -> None:
        if self.writes_failing_since is None:
            self.writes_failing_since = self._clock()

    def progressed(self) -> None:
        """A batch was written and committed."""
        self.writes_failing_since = None
        self.last_progress = self._clock()

    def waiting(self, records_waiting: bool) -> None:
        if records_waiting and not self.records_waiting:
            # Waiting starts now: the stall clock runs from the later of this and the last batch.
            self.last_progress = max(self.last_progress, self._clock())
        self.records_waiting = records_waiting

    def problem(self) -> str | None:
        """None when healthy; otherwise what is wrong and for how long."""
        now = self._clock()
        if self.broker_down_since is not None:
            down = now - self.broker_down_since
            if down >= BROKER_GRACE_SECONDS:
                return f"broker unreachable for {down:.0f}s"
        if self.writes_failing_since is not None:
            failing = now - self.writes_failing_since
            if failing >= WRITES_GRACE_SECONDS:
                return f"writes failing for {failing:.0f}s"
        if self.records_waiting and now - self.last_progress >= STALL_SECONDS:
            return f"no progress for {now - self.last_progress:.0f}s with records waiting"
        return None
