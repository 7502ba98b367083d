"""The `kafka` sink: SMS requests published to the output topic for the SMS service (§6)."""

from __future__ import annotations

from collections.abc import Sequence

from service.core.models import IDEMPOTENCY_KEY, to_json
from service.pipeline.seams import Delivery, Write, Writer


class KafkaSink:
    """Publishes each request, key and `idempotency-key` header `fallbackId`, through the writer
    (so in exactly-once mode the request joins its input partition's transaction)."""

    name = "kafka"
    delivers = False

    def __init__(self, writer: Writer, topic: str) -> None:
        self.writer = writer
        self.topic = topic

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def unavailable(self) -> str | None:
        return None  # the writer's own trouble shows as failing writes

    def retry_in(self) -> float:
        return 0.0

    def probe(self) -> None:
        return None

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        writes = []
        for d in deliveries:
            key = d.key or d.request.fallbackId.encode()
            writes.append(
                Write(self.topic, key, to_json(d.request), [(IDEMPOTENCY_KEY, key)], d.source)
            )
        await self.writer.write(writes)
