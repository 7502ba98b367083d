"""Metrics and outcome logs for what was written and committed, never for what was only planned.

The processor hands `Observer.observe` a `Committed` report after a batch's writes are
acknowledged and its offsets committed, so a batch that is rewound or abandoned is counted when
it is finally done, once.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from service.core.models import MessageKind, Outcome, Status
from service.core.results import FinalOutcome
from service.core.rules import Decision
from service.logs import mask_number
from service.metrics import Metrics
from service.pipeline.batch import Committed

outcome_log = logging.getLogger("fallback.outcomes")
dlq_log = logging.getLogger("fallback.processor")


class Observer:
    """Counts outcomes, messages and dead letters, and logs one line per outcome."""

    def __init__(self, metrics: Metrics, *, log_outcomes: bool) -> None:
        self.metrics = metrics
        self.log_outcomes = log_outcomes
        self._outcome_counters: dict[tuple[str, str], Counter] = {}

    def observe(self, done: Committed) -> None:
        """Record one committed batch."""
        metrics = self.metrics
        log_them = self.log_outcomes and outcome_log.isEnabledFor(logging.INFO)
        for decision in done.decisions:
            self._count(decision.outcome)
            request = decision.request
            if request is not None:
                self._count_message(request.type, request.truncated, request.replacedChars)
            if log_them:
                _log_outcome(decision)
        for settled in done.settled:
            self._count(settled)
        for outcome in done.replayed:
            # Written again as it was before a crash: never counted then, so counted now.
            self._count(outcome)
            if outcome.status is Status.REQUESTED and outcome.type is not None:
                self._count_message(outcome.type, outcome.truncated, outcome.replacedChars)
        for (topic, partition, offset), malformed in done.malformed:
            metrics.dead_letters.labels(malformed.error.value).inc()
            dlq_log.warning(
                "dead-lettered %s[%d]@%d: %s: %s",
                topic,
                partition,
                offset,
                malformed.error.value,
                malformed.detail,
            )
        if done.routed:
            metrics.routed.inc(done.routed)
        for final in done.finals:
            self._count(final)
            delivery = final.delivery
            provider = (delivery.provider or "") if delivery is not None else ""
            metrics.results.labels(final.status.value, provider).inc()
            if delivery is not None:
                metrics.result_latency.observe(delivery.latencyMs / 1000)
        for why in done.ignored:
            metrics.results_ignored.labels(why.value).inc()
        metrics.batch_size.observe(done.records)
        metrics.processing.observe_many(done.elapsed, done.records)

    def _count_message(self, kind: MessageKind, truncated: bool, replaced_chars: int) -> None:
        metrics = self.metrics
        metrics.messages.labels(kind.value).inc()
        if truncated:
            metrics.truncations.inc()
        if replaced_chars:
            metrics.replaced_chars.inc(replaced_chars)

    def _count(self, outcome: Outcome | FinalOutcome) -> None:
        reason = outcome.reason.value if outcome.reason else ""
        counter = self._outcome_counters.get((outcome.status, reason))
        if counter is None:
            counter = self.metrics.outcomes.labels(outcome.status.value, reason)
            self._outcome_counters[(outcome.status, reason)] = counter
        counter.inc()


def _log_outcome(decision: Decision) -> None:
    outcome = decision.outcome
    request = decision.request
    fields: dict[str, object] = {
        "fallbackId": outcome.fallbackId,
        "status": outcome.status.value,
        "reason": outcome.reason.value if outcome.reason else None,
    }
    if request is not None:
        masked = mask_number(request.recipientNo)
        fields.update(type=request.type.value, bodyBytes=request.bodyBytes, recipientNo=masked)
        outcome_log.info(
            "%s %s %s %dB to %s",
            outcome.fallbackId,
            outcome.status.value,
            request.type.value,
            request.bodyBytes,
            masked,
            extra={"fields": fields},
        )
    else:
        outcome_log.info(
            "%s %s %s",
            outcome.fallbackId,
            outcome.status.value,
            fields["reason"] or "",
            extra={"fields": fields},
        )
