"""Prometheus metrics of the service, in a registry of its own (one per service instance)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class BatchHistogram(Collector):
    """A histogram that takes many equal observations at once (`observe_many`): one per record
    of a batch through `Histogram.observe` cost more than the rest of the batch's bookkeeping,
    and prometheus_client has no bulk observation. A collector of its own, through the public
    collector API; it exports exactly what a `Histogram` of the same name would."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = [float(b) for b in buckets if b != math.inf] + [math.inf]
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        self.observe_many(amount, 1)

    def observe_many(self, amount: float, count: int) -> None:
        """`count` observations of `amount`, as `count` calls of `observe` would make them."""
        if count <= 0:
            return
        self._sum += amount * count
        for i, bound in enumerate(self._bounds):
            if amount <= bound:
                self._counts[i] += count
                break

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, self._counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        family.add_metric([], buckets, self._sum)
        return [family]


class Metrics:
    """Every metric the service exports beyond FastStream's own consume/publish metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.outcomes = Counter(
            "fallback_outcomes", "Outcomes by status and reason", ["status", "reason"], registry=r
        )
        self.messages = Counter(
            "fallback_messages", "SMS requests published, by type", ["type"], registry=r
        )
        self.truncations = Counter(
            "fallback_truncations", "Requests whose body or title was cut", registry=r
        )
        self.replaced_chars = Counter(
            "fallback_replaced_chars",
            "Grapheme clusters replaced or dropped because CP949 cannot carry them",
            registry=r,
        )
        self.dead_letters = Counter(
            "fallback_dead_letters", "Input records sent to the DLQ", ["error"], registry=r
        )
        self.processing = BatchHistogram(
            "fallback_processing_seconds",
            "Time each input record's batch took in the processor, from its conversion to its "
            "commit (observed once per record)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_size = Histogram(
            "fallback_batch_records",
            "Input records per processed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.table_entries = Gauge(
            "fallback_table_entries", "Entries in each table", ["table"], registry=r
        )
        self.table_records = Counter(
            "fallback_table_records",
            "Table records read (changes, deletions and ignored ones): a change an operator "
            "wrote has reached the service once this counts it",
            ["table"],
            registry=r,
        )
        self.table_invalid = Counter(
            "fallback_table_invalid_records",
            "Table records ignored because they do not validate",
            ["table"],
            registry=r,
        )
        self.publish_errors = Counter(
            "fallback_publish_errors", "Failed output writes (retried)", registry=r
        )
        self.commit_failures = Counter(
            "fallback_commit_failures",
            "Offset commits refused (rebalance); the records are processed again",
            registry=r,
        )
        self.ready = Gauge("fallback_ready", "1 when the service is consuming", registry=r)
        self.consumer_lag = Gauge(
            "fallback_consumer_lag",
            "Records between the consumer's position and the end of each assigned partition "
            "(updated every 2 s)",
            ["topic", "partition"],
            registry=r,
        )
        self.dedupe_entries = Gauge(
            "fallback_dedupe_entries",
            "Requested fallbacks remembered, per owned input partition",
            ["partition"],
            registry=r,
        )
        self.dedupe_bytes = Gauge(
            "fallback_dedupe_bytes",
            "Memory of the remembered fallbacks (all partitions)",
            registry=r,
        )
        self.unwritable = Counter(
            "fallback_unwritable_batches",
            "Batches no retry could write (the service stopped instead of stalling)",
            registry=r,
        )
        self.routed = Counter(
            "fallback_routed",
            "Events forwarded to the partition that owns their fallbackId (not keyed by it)",
            registry=r,
        )
        # The delivering sinks (nhn, solapi) and failover between them (§10)
        self.provider_requests = Counter(
            "fallback_provider_requests",
            "Calls to an SMS provider by provider, endpoint and result (the provider's code, or "
            "the transport's trouble: http_503, timeout, connection_error)",
            ["provider", "endpoint", "result"],
            registry=r,
        )
        self.provider_messages = Counter(
            "fallback_provider_messages",
            "Messages an SMS provider answered for, by provider and verdict (accepted, "
            "rejected); a call to solapi carries many",
            ["provider", "verdict"],
            registry=r,
        )
        self.provider_retries = Counter(
            "fallback_provider_retries",
            "Calls to an SMS provider repeated after transient trouble",
            ["provider", "endpoint"],
            registry=r,
        )
        self.provider_in_flight = Gauge(
            "fallback_provider_in_flight",
            "Calls to an SMS provider waiting for an answer",
            ["provider"],
            registry=r,
        )
        self.provider_latency = Histogram(
            "fallback_provider_request_seconds",
            "Time for one call to an SMS provider to be answered (or to fail)",
            ["provider", "endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.provider_unavailable = Gauge(
            "fallback_provider_unavailable",
            "1 while an SMS provider is unavailable (its circuit breaker is open)",
            ["provider"],
            registry=r,
        )
        self.provider_lookups = Counter(
            "fallback_provider_lookups",
            "Lookups at a provider after an ambiguous attempt, by what it said (taken, "
            "not_taken, unknown)",
            ["provider", "result"],
            registry=r,
        )
        self.provider_failovers = Counter(
            "fallback_provider_failovers",
            "Requests handed from one provider to the next (reason: unavailable, refused, "
            "account) or back to the first (reason: recovered)",
            ["from", "to", "reason"],
            registry=r,
        )
        self.sink_paused = Gauge(
            "fallback_sink_paused",
            "1 while every listed SMS provider is unavailable and the input is paused",
            registry=r,
        )
        self.sink_held = Counter(
            "fallback_sink_held",
            "Requests held back (read again later) because the SMS API was unavailable",
            registry=r,
        )
        # Delivery results (§11)
        self.results = Counter(
            "fallback_results",
            "Final outcomes by status (DELIVERED, UNDELIVERED, EXPIRED) and the provider that "
            "reported the result (empty for EXPIRED and results that name none)",
            ["status", "provider"],
            registry=r,
        )
        self.results_ignored = Counter(
            "fallback_results_ignored",
            "Results that made no outcome: later (the fallback was final already), expired "
            "(after its deadline), never_requested (unknown past the early window)",
            ["why"],
            registry=r,
        )
        self.result_latency = Histogram(
            "fallback_result_latency_seconds",
            "From the failure to the handset's result (latencyMs of DELIVERED and UNDELIVERED)",
            buckets=(
                1,
                2,
                5,
                10,
                30,
                60,
                120,
                300,
                600,
                1800,
                3600,
                6 * 3600,
                25 * 3600,
                80 * 3600,
            ),
            registry=r,
        )
        self.awaited = Gauge(
            "fallback_results_awaited",
            "Requested fallbacks awaiting their result, on the partitions this replica owns",
            registry=r,
        )
        self.awaited_bytes = Gauge(
            "fallback_results_awaited_bytes",
            "Memory of the awaited set (all owned partitions)",
            registry=r,
        )
        self.delivery_rate_threshold = Gauge(
            "fallback_delivery_rate_threshold",
            "FALLBACK_ALERT_DELIVERY_RATE: the alert fires when the last hour's DELIVERED share "
            "of final outcomes falls below it",
            registry=r,
        )
        self.collected = Counter(
            "fallback_results_collected",
            "Results a collector wrote to the results topic, by provider and how they came "
            "(poll, webhook)",
            ["provider", "via"],
            registry=r,
        )
        self.webhook_calls = Counter(
            "fallback_webhook_calls",
            "Provider webhook calls by provider and answer (200, 401, 400, 503)",
            ["provider", "code"],
            registry=r,
        )
        self.results_unmatched = Counter(
            "fallback_results_unmatched",
            "Provider results a collector could match to no SENT fallback (dropped after a few "
            "tries: a request whose SENT outcome a crash kept from being written)",
            ["provider"],
            registry=r,
        )
