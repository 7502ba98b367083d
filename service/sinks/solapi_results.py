"""The solapi result collector (§11): Solapi's report webhook (`POST /webhooks/solapi`, its
`X-Solapi-Secret` checked) and a poll of its message list for the statuses that changed, written
to the results topic. The fallback is the message's `customFields.fallbackId`, which the sink
sets; how one replica collects is `service.sinks.collector`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from service.config import SolapiApi
from service.core import solapi
from service.core.solapi import Listed
from service.metrics import Metrics
from service.sinks.collector import ResultCollector
from service.sinks.solapi import client

# Pages of the message list read per cycle, at most (500 messages each); the rest next cycle.
_POLL_PAGES = 200


class SolapiCollector(ResultCollector[Listed]):
    """Reads Solapi's reports and polls its message list, while this replica leads."""

    provider = "solapi"
    webhook_path = "/webhooks/solapi"

    def __init__(
        self,
        api: SolapiApi,
        *,
        results_topic: str,
        collector_topic: str,
        poll_seconds: float,
        secret: str | None,
        consumer_options: Mapping[str, Any],
        make_producer: Callable[[], AIOKafkaProducer],
        metrics: Metrics,
        leads: Callable[[], bool],
        transport: httpx.AsyncBaseTransport | None = None,
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
        self.secret = secret
        self._transport = transport

    def make_client(self) -> httpx.AsyncClient:
        return client(self.api, transport=self._transport, wall_clock=self._clock)

    async def poll(self, client: httpx.AsyncClient, start: datetime, end: datetime) -> list[Listed]:
        found: list[Listed] = []
        start_key: str | None = None
        for _ in range(_POLL_PAGES):
            response = await client.get(
                solapi.LIST_PATH, params=solapi.updated_query(start, end, start_key)
            )
            response.raise_for_status()
            page = solapi.parse_list(response.json())
            found += [m for m in page.messages if m.final and m.fallback_id is not None]
            start_key = page.next_key
            if start_key is None:
                break
        return found

    def webhook_ok(self, headers: Mapping[str, str]) -> bool:
        return solapi.secret_ok(headers.get("x-solapi-secret"), self.secret)

    def parse_webhook(self, document: Any) -> list[Listed]:
        return solapi.parse_report(document)

    def key(self, result: Listed) -> Hashable:
        return result.message_id

    def fallback_of(self, result: Listed) -> str | None:
        return result.fallback_id

    def record(self, result: Listed, fallback_id: str, now: datetime) -> dict[str, Any]:
        return solapi.delivery_result(result, fallback_id, now)
