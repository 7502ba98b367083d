"""The nhn result collector (§11): NHN's delivery results, polled and received by webhook, written
to the results topic keyed by the fallback they belong to.

One replica collects at a time: the one that owns partition 0 of the input (Kafka's group
protocol elects it; a brief overlap during a rebalance writes a result twice, which the owner
counts `later`). Its state lives in the collector topic (`{group_id}.nhn-results`, one
partition): webhook calls, as any replica received them (answered 200 once written there), and
after each cycle a progress record (the window finished and the webhook calls read), from which
the next collector resumes. A result names NHN's requestId; the fallback it belongs to is found
in the sink's SENT outcomes, which the collector follows on the events topic (`SentIndex`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from service.compat import refresh_metadata
from service.config import NhnApi
from service.core import nhn_results
from service.core.nhn_results import NhnResult
from service.metrics import Metrics

log = logging.getLogger("fallback.results.nhn")

HOOK = b"hook"
PROGRESS = b"window"


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


class NhnCollector:
    """Polls NHN's `message-results` and reads the webhook calls, while it leads."""

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
        self.api = api
        self.results_topic = results_topic
        self.collector_topic = collector_topic
        self.poll_seconds = poll_seconds
        self.signature = signature
        self.index = index
        self._options = dict(consumer_options)
        self._make_producer = make_producer
        self.metrics = metrics
        self.leads = leads
        self._transport = transport
        self.page_size = page_size
        self._clock = wall_clock
        # An update NHN records a little late still falls in the next window.
        self.overlap = timedelta(seconds=2 * poll_seconds + 60)
        self._producer: AIOKafkaProducer | None = None
        self._client: httpx.AsyncClient | None = None
        self._hooks: AIOKafkaConsumer | None = None
        self.finished_until: datetime | None = None
        self.hooks_offset = 0
        self._leading = False
        # Results written lately (the windows overlap: they come again), and those whose
        # fallback is not known yet (tried again for a few cycles).
        self._written: dict[tuple[str, int], float] = {}
        self._unmatched: dict[tuple[str, int], tuple[NhnResult, str, int]] = {}
        self._tries: dict[tuple[str, int], int] = {}
        self.cycles = 0

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.api.base_url,
            headers={"X-Secret-Key": self.api.secret_key.get_secret_value()},
            timeout=self.api.timeout_seconds,
            transport=self._transport,
        )

    async def stop(self) -> None:
        await self._step_down()
        if self._client is not None:
            await self._client.aclose()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Collect every `poll_seconds` while this replica leads, until `stopping`."""
        while not stopping.is_set():
            try:
                if self.leads():
                    await self.cycle()
                elif self._leading:
                    await self._step_down()
            except (KafkaError, httpx.HTTPError, ValueError) as exc:
                log.warning("collecting NHN's results failed (%s); trying again", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.poll_seconds)

    async def cycle(self) -> int:
        """One round: the webhook calls received, then the next window; returns the results
        written."""
        if not self._leading:
            await self._take_over()
        now = self._clock()
        await self.index.catch_up(now)
        found: list[tuple[NhnResult, str]] = [(r, via) for r, via, _ in self._unmatched.values()]
        self._unmatched.clear()
        hooks, next_offset = await self._read_hooks()
        found += [(r, "webhook") for r in hooks]
        start, end = nhn_results.next_window(
            self.finished_until, datetime.fromtimestamp(now, UTC), self.overlap
        )
        found += [(r, "poll") for r in await self._poll(start, end)]
        written = await self._write(found, now)
        self.finished_until, self.hooks_offset = end, next_offset
        await self._save_progress()
        self.cycles += 1
        return written

    async def _poll(self, start: datetime, end: datetime) -> list[NhnResult]:
        assert self._client is not None
        found: list[NhnResult] = []
        page = 1
        while True:
            response = await self._client.get(
                nhn_results.results_path(self.api.app_key),
                params=nhn_results.results_query(start, end, page, self.page_size),
            )
            response.raise_for_status()
            parsed = nhn_results.parse_page(response.json(), page, self.page_size)
            found += parsed.results
            if not parsed.more:
                return found
            page += 1

    async def _write(self, found: list[tuple[NhnResult, str]], now: float) -> int:
        records = []
        for result, via in found:
            key = (result.request_id, result.recipient_seq)
            if key in self._written:
                continue  # read again in an overlapping window, or by poll and by webhook
            fid = self.index.fallback_of(result)
            if fid is None:
                tries = self._tries.get(key, 0) + 1
                if tries < 5:
                    self._unmatched[key] = (result, via, tries)
                    self._tries[key] = tries
                else:
                    self._tries.pop(key, None)
                    self._written[key] = now  # not tried again when an overlap reads it again
                    self.metrics.results_unmatched.labels("nhn").inc()
                    log.warning("NHN result of request %s matches no SENT fallback", key[0])
                continue
            self._tries.pop(key, None)
            self._written[key] = now
            records.append((fid, nhn_results.delivery_result(result, fid), via))
        if records:
            producer = await self._producer_started()
            sent = [
                await producer.send(self.results_topic, orjson.dumps(value), key=fid.encode())
                for fid, value, _ in records
            ]
            await asyncio.gather(*sent)
            for _, _, via in records:
                self.metrics.collected.labels("nhn", via).inc()
        horizon = now - self.overlap.total_seconds() * 2
        self._written = {k: t for k, t in self._written.items() if t >= horizon}
        return len(records)

    async def webhook(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """`POST /webhooks/nhn`: 401 without the signature; 200 once the call is written to the
        collector topic (NHN calls again otherwise)."""
        given = headers.get("x-toast-webhook-signature")
        if not nhn_results.signature_ok(given, self.signature):
            self.metrics.webhook_calls.labels("nhn", "401").inc()
            return 401, b"signature missing or wrong\n"
        try:
            nhn_results.parse_webhook(orjson.loads(body))
        except (orjson.JSONDecodeError, ValueError) as exc:
            self.metrics.webhook_calls.labels("nhn", "400").inc()
            return 400, f"not a webhook call: {exc}\n".encode()
        try:
            producer = await self._producer_started()
            await producer.send_and_wait(self.collector_topic, body, key=HOOK, partition=0)
        except KafkaError as exc:
            self.metrics.webhook_calls.labels("nhn", "503").inc()
            log.warning("webhook call not written (%s): answered 503, NHN calls again", exc)
            return 503, b"not written; call again\n"
        self.metrics.webhook_calls.labels("nhn", "200").inc()
        return 200, b"ok\n"

    async def _take_over(self) -> None:
        """Resume from the last progress record of the collector topic."""
        consumer = await self._hooks_started()
        tp = TopicPartition(self.collector_topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, max(0, end - 10_000))
        progress: dict[str, Any] | None = None
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
            for r in batch.get(tp, []):
                if r.key == PROGRESS and r.value:
                    progress = orjson.loads(r.value)
        if progress is not None:
            self.finished_until = datetime.fromisoformat(progress["until"])
            self.hooks_offset = int(progress["hooks"])
        else:
            self.finished_until, self.hooks_offset = None, 0
        self._leading = True
        log.info(
            "collecting NHN's results from %s (webhook calls from offset %d)",
            self.finished_until.isoformat() if self.finished_until else "now",
            self.hooks_offset,
        )

    async def _read_hooks(self) -> tuple[list[NhnResult], int]:
        consumer = await self._hooks_started()
        tp = TopicPartition(self.collector_topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, self.hooks_offset)
        found: list[NhnResult] = []
        position = self.hooks_offset
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
            records = batch.get(tp, [])
            if not records:
                break
            for r in records:
                position = r.offset + 1
                if r.key == HOOK and r.value:
                    with contextlib.suppress(orjson.JSONDecodeError, ValueError):
                        found += nhn_results.parse_webhook(orjson.loads(r.value))
        return found, position

    async def _save_progress(self) -> None:
        assert self.finished_until is not None
        value = {"until": self.finished_until.isoformat(), "hooks": self.hooks_offset}
        producer = await self._producer_started()
        await producer.send_and_wait(
            self.collector_topic, orjson.dumps(value), key=PROGRESS, partition=0
        )

    async def _step_down(self) -> None:
        if self._leading:
            log.info("no longer collecting NHN's results (this replica no longer owns partition 0)")
        self._leading = False
        for client in (self._hooks,):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._hooks = None
        await self.index.stop()

    async def _hooks_started(self) -> AIOKafkaConsumer:
        if self._hooks is None:
            consumer = AIOKafkaConsumer(**self._options, group_id=None, enable_auto_commit=False)
            await consumer.start()
            consumer.assign([TopicPartition(self.collector_topic, 0)])
            self._hooks = consumer
        return self._hooks

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._make_producer()
            await producer.start()
            self._producer = producer
        return self._producer


def leads_by(assignment: Callable[[], Collection[Any]], input_topic: str) -> Callable[[], bool]:
    """Leadership as the collector asks it: this replica owns partition 0 of the input."""
    return lambda: any(tp[0] == input_topic and tp[1] == 0 for tp in assignment())
