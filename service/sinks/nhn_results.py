"""The nhn result collector (§11): NHN's delivery results, polled and received by webhook, written
to the results topic keyed by the fallback they belong to.

How one replica collects, and where its progress lives, is `service.sinks.collector`'s. A
result names NHN's requestId; the fallback it belongs to is found in the sink's SENT outcomes,
which the collector follows on the events topic (`SentIndex`).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service.compat import refresh_metadata
from service.config import NhnApi
from service.core import nhn_results
from service.core.nhn_results import NhnResult
from service.metrics import Metrics
from service.sinks.collector import ResultCollector


class SentIndex:
    """NHN requestId → fallbackId of the nhn sink's SENT outcomes, followed on the events topic
    from `keep` seconds back (the longest deadline: no result comes later)."""

    def __init__(self, options: Mapping[str, Any], topic: str, keep: float) -> None:
        self._options = dict(options)
        self.topic = topic
        self.keep = keep
        self.found: dict[str, str] = {}
        self._order: deque[tuple[float, str]] = deque()
        self._consumer: AIOKafkaConsumer | None = None

    async def catch_up(self, now: float) -> None:
        """Read the events topic up to its end now."""
        consumer = self._consumer
        if consumer is None:
            consumer = AIOKafkaConsumer(**self._options, group_id=None, enable_auto_commit=False)
            await consumer.start()
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:  # the metadata of a consumer just started may not have it yet
                await refresh_metadata(consumer)
                partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                await consumer.stop()
                raise ValueError(f"events topic {self.topic} has no partitions yet")
            self._consumer = consumer
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            since = int((now - self.keep) * 1000)
            starts = await consumer.offsets_for_times({tp: since for tp in tps})
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                found = starts.get(tp)
                # None: nothing that recent; its end now (a lazy seek_to_end would resolve
                # later, past outcomes written meanwhile).
                consumer.seek(tp, ends[tp] if found is None else found.offset)
        tps = list(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for r in records:
                    self._take(r.value, r.timestamp / 1000)
        self._prune(now)

    def _take(self, value: bytes | None, at: float) -> None:
        # Most outcomes are not the nhn sink's SENT ones: skip them before parsing.
        if not value or b'"status":"SENT"' not in value or b'"name":"nhn"' not in value:
            return
        outcome = orjson.loads(value)
        request_id = (outcome.get("provider") or {}).get("requestId")
        if request_id:
            self.found[request_id] = outcome["fallbackId"]
            self._order.append((at, request_id))

    def _prune(self, now: float) -> None:
        while self._order and self._order[0][0] < now - self.keep:
            _, request_id = self._order.popleft()
            self.found.pop(request_id, None)

    def fallback_of(self, result: NhnResult) -> str | None:
        # One recipient per call (the sink's): NHN's requestId names one fallback.
        return self.found.get(result.request_id)

    async def stop(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None


class NhnCollector(ResultCollector[NhnResult]):
    """Polls NHN's `message-results` and reads the `MESSAGE_RESULT_UPDATE` webhook calls."""

    provider = "nhn"
    webhook_path = "/webhooks/nhn"

    def __init__(
        self,
        api: NhnApi,
        *,
        results_topic: str,
        collector_topic: str,
        poll_seconds: float,
        signature: str | None,
        index: SentIndex,
        consumer_options: Mapping[str, Any],
        make_producer: Callable[[], AIOKafkaProducer],
        metrics: Metrics,
        leads: Callable[[], bool],
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = nhn_results.PAGE_SIZE,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            results_topic=results_topic,
            collector_topic=collector_topic,
            poll_seconds=poll_seconds,
            consumer_options=consumer_options,
            make_producer=make_producer,
            metrics=metrics,
            leads=leads,
            wall_clock=wall_clock,
        )
        self.api = api
        self.signature = signature
        self.index = index
        self._transport = transport
        self.page_size = page_size

    def make_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api.base_url,
            headers={"X-Secret-Key": self.api.secret_key.get_secret_value()},
            timeout=self.api.pressure.timeout_seconds,
            transport=self._transport,
        )

    async def poll(
        self, client: httpx.AsyncClient, start: datetime, end: datetime
    ) -> list[NhnResult]:
        found: list[NhnResult] = []
        page = 1
        while True:
            response = await client.get(
                nhn_results.results_path(self.api.app_key),
                params=nhn_results.results_query(start, end, page, self.page_size),
            )
            response.raise_for_status()
            parsed = nhn_results.parse_page(response.json(), page, self.page_size)
            found += parsed.results
            if not parsed.more:
                return found
            page += 1

    def webhook_ok(self, headers: Mapping[str, str]) -> bool:
        return nhn_results.signature_ok(headers.get("x-toast-webhook-signature"), self.signature)

    def parse_webhook(self, document: Any) -> list[NhnResult]:
        return nhn_results.parse_webhook(document)

    def key(self, result: NhnResult) -> Hashable:
        return (result.request_id, result.recipient_seq)

    def fallback_of(self, result: NhnResult) -> str | None:
        return self.index.fallback_of(result)

    def record(self, result: NhnResult, fallback_id: str, now: datetime) -> dict[str, Any]:
        return nhn_results.delivery_result(result, fallback_id)

    async def catch_up(self, now: float) -> None:
        await self.index.catch_up(now)

    async def forget(self) -> None:
        await self.index.stop()
