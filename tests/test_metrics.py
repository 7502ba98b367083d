"""The bulk histogram (a collector of its own) exports what a Histogram with the same
repeated observations would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from service.metrics import BatchHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1)


def samples(histogram_of: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in histogram_of.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize("amount", [0.0, 0.005, 0.0051, 0.1, 0.2, 7.5])
@pytest.mark.parametrize("count", [0, 1, 3, 1000])
def test_observe_many_is_count_observations(amount: float, count: int) -> None:
    bulk, single = CollectorRegistry(), CollectorRegistry()
    h_bulk = BatchHistogram("h", "h", buckets=BUCKETS, registry=bulk)
    h_single = Histogram("h", "h", buckets=BUCKETS, registry=single)
    h_bulk.observe_many(amount, count)
    for _ in range(count):
        h_single.observe(amount)
    assert samples(bulk) == pytest.approx(samples(single))
