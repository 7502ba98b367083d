"""The health watch: every few seconds, does the broker answer, do records wait? Said in
`fallback_ready` and `fallback_consumer_lag`, the same verdict as /readyz."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiokafka.admin import AIOKafkaAdminClient

from service.config import KafkaConnection
from service.kafka.options import client_options
from service.metrics import Metrics
from service.pipeline.seams import Partition
from service.runtime.health import Health


async def watch(
    kafka: KafkaConnection,
    health: Health,
    metrics: Metrics,
    lag: Callable[[], Awaitable[dict[Partition, int]]],
    readiness: Callable[[], str | None],
    stopping: asyncio.Event,
    every: float = 2.0,
) -> None:
    """Until `stopping`: ask the broker, update the lag and the readiness gauge."""
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=3000)
    started = False
    try:
        while not stopping.is_set():
            try:
                if not started:
                    await asyncio.wait_for(admin.start(), 3)
                    started = True
                await asyncio.wait_for(admin.describe_cluster(), 3)
                health.broker_answered(True)
            except Exception:
                health.broker_answered(False)
            lags = await lag()
            metrics.consumer_lag.clear()
            for tp, behind in lags.items():
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(behind)
            health.waiting(any(lags.values()))
            metrics.ready.set(1 if readiness() is None else 0)
            await asyncio.sleep(every)
    finally:
        if started:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), 2)
