"""Failover between delivering sinks (contract §10): each request goes to the first listed
provider that is available, and moves on only when that provider surely did not take it.

A request moves from one provider to the next when the call was not sent (connection refused,
breaker open), when the provider answered that it took nothing (429, an account-level refusal,
a 5xx with its own error body), or when it got no answer within its retry budget from a
provider that answered nothing ambiguous. A request whose attempt was ambiguous stays with that
provider (`ProviderSink.holds`), held until it can say whether it took it. A refusal of the
message itself is FAILED, not moved: the next provider would refuse it too, and the operator
must see it. When a provider before the current one is due for a probe, the next batch probes
it, so new requests go back to the first provider once it answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from service.metrics import Metrics
from service.pipeline.seams import Delivery
from service.sinks.provider import ProviderSink

log = logging.getLogger("fallback.sink.failover")

# Seconds before a batch whose only held requests wait for their own provider is read again.
_HELD_AGAIN = 0.2


class FailoverSink:
    """Delivering sinks in order, as one sink."""

    delivers = True

    def __init__(self, sinks: Sequence[ProviderSink], metrics: Metrics) -> None:
        if len(sinks) < 2:
            raise ValueError("failover needs at least two delivering sinks")
        self.sinks = list(sinks)
        self.metrics = metrics
        self.name = ",".join(s.name for s in sinks)
        # Which provider took the last requests free to go anywhere: a change is logged once.
        self.current = 0

    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start()

    async def stop(self) -> None:
        for sink in self.sinks:
            await sink.stop()

    def unavailable(self) -> str | None:
        """Why no request can go anywhere: every listed provider is unavailable."""
        reasons = [sink.unavailable() for sink in self.sinks]
        if all(reasons):
            return "; ".join(r for r in reasons if r)
        return None

    def retry_in(self) -> float:
        """How long the input pauses after a batch had requests held. While some provider is
        available, only requests waiting for their own provider (an ambiguous attempt) were
        held: read again soon, so that the partition behind them keeps flowing (the records
        settled past them are skipped). Otherwise the earliest probe of the unavailable ones."""
        if self.unavailable() is None:
            return _HELD_AGAIN
        return min(s.retry_in() for s in self.sinks)

    def probe(self) -> None:
        """Probe the providers whose wait has passed; all of them when none is available (the
        input was paused for it)."""
        everyone_down = self.unavailable() is not None
        for sink in self.sinks:
            if everyone_down or sink.breaker.probe_due():
                sink.probe()

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Each delivery to the first provider that takes it (or surely refuses it); held when
        none can, or when its own provider cannot yet say whether it took it."""
        for sink in self.sinks:
            if sink.breaker.probe_due():
                sink.probe()
        pending = list(deliveries)
        moved_from: dict[str, int] = {}
        took = None
        for index, sink in enumerate(self.sinks):
            if not pending:
                break
            # A request unsure at another provider waits for that one, wherever it is listed.
            mine = [d for d in pending if not self._held_elsewhere(d, index)]
            if not mine:
                continue
            for d in mine:
                d.held, d.answer = False, None
            await sink.deliver(mine)
            nxt = [d for d in mine if self._moves_on(d, sink)]
            if len(nxt) < len(mine) and took is None:
                took = index
            last = index == len(self.sinks) - 1
            if nxt and not last:
                reason = _why(sink, nxt)
                to = self.sinks[index + 1].name
                self.metrics.provider_failovers.labels(sink.name, to, reason).inc(len(nxt))
                for d in nxt:
                    moved_from[d.request.fallbackId] = index
                    d.held, d.answer = False, None
            keep = {id(d) for d in mine}
            pending = [d for d in pending if id(d) not in keep] + (nxt if not last else [])
        # Whatever still waits here was never given to its own provider: it stays held.
        for d in pending:
            if d.answer is None:
                d.held = True
        if took is not None and took != self.current:
            self._direction(took)

    def _held_elsewhere(self, delivery: Delivery, index: int) -> bool:
        fid = delivery.request.fallbackId
        return any(s.holds(fid) for i, s in enumerate(self.sinks) if i != index)

    def _moves_on(self, delivery: Delivery, sink: ProviderSink) -> bool:
        if sink.holds(delivery.request.fallbackId):
            return False
        if delivery.held:
            return True
        # No answer within the budget, and nothing ambiguous: surely not taken here.
        return delivery.answer is not None and delivery.answer.accepted is None

    def _direction(self, took: int) -> None:
        before, self.current = self.sinks[self.current], took
        now = self.sinks[took]
        if took == 0:
            self.metrics.provider_failovers.labels(before.name, now.name, "recovered").inc()
            log.warning("%s answers again: new requests go back to it", now.name)
        else:
            log.error(
                "failing over from %s to %s: %s",
                before.name,
                now.name,
                before.unavailable() or "it could not take the requests",
            )


def _why(sink: ProviderSink, moved: Sequence[Delivery]) -> str:
    if any(not d.held for d in moved):
        return "unanswered"
    return "account" if sink.account_down else "unavailable"
