"""A delivering sink's result collector (contract §11): a provider's delivery results, polled and
received by webhook, written to the results topic keyed by the fallback they belong to.

One replica collects at a time: the one that owns partition 0 of the input (Kafka's group
protocol elects it; a brief overlap during a rebalance writes a result twice, which the owner
counts `later`). Its state lives in the collector topic (`{group_id}.{provider}-results`, one
partition): webhook calls, as any replica received them (answered 200 once written there), and
after each cycle a progress record (the window finished and the webhook calls read), from which
the next collector resumes. Each provider (`service.sinks.nhn_results`,
`service.sinks.solapi_results`) says how to poll, read a webhook call and find the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Hashable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from service.core.nhn_results import next_window
from service.metrics import Metrics

HOOK = b"hook"
PROGRESS = b"window"

R = TypeVar("R")


class ResultCollector(Generic[R]):
    """Polls a provider and reads its webhook calls, while this replica leads."""

    provider = "provider"
    webhook_path = "/webhooks/provider"

    def __init__(
        self,
        *,
        results_topic: str,
        collector_topic: str,
        poll_seconds: float,
        consumer_options: Mapping[str, Any],
        make_producer: Callable[[], AIOKafkaProducer],
        metrics: Metrics,
        leads: Callable[[], bool],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.results_topic = results_topic
        self.collector_topic = collector_topic
        self.poll_seconds = poll_seconds
        self._options = dict(consumer_options)
        self._make_producer = make_producer
        self.metrics = metrics
        self.leads = leads
        self._clock = wall_clock
        self.log = logging.getLogger(f"fallback.results.{self.provider}")
        # An update the provider records a little late still falls in the next window.
        self.overlap = timedelta(seconds=2 * poll_seconds + 60)
        self._producer: AIOKafkaProducer | None = None
        self._client: httpx.AsyncClient | None = None
        self._hooks: AIOKafkaConsumer | None = None
        self.finished_until: datetime | None = None
        self.hooks_offset = 0
        self._leading = False
        # Results written lately (the windows overlap: they come again), and those whose
        # fallback is not known yet (tried again for a few cycles).
        self._written: dict[Hashable, float] = {}
        self._unmatched: dict[Hashable, tuple[R, str, int]] = {}
        self._tries: dict[Hashable, int] = {}
        self.cycles = 0

    # What each provider says.

    def make_client(self) -> httpx.AsyncClient:
        raise NotImplementedError

    async def poll(self, client: httpx.AsyncClient, start: datetime, end: datetime) -> list[R]:
        """The final results whose status changed in [start, end)."""
        raise NotImplementedError

    def webhook_ok(self, headers: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def parse_webhook(self, document: Any) -> list[R]:
        """The final results of one webhook call; raises ValueError when it is not one."""
        raise NotImplementedError

    def key(self, result: R) -> Hashable:
        raise NotImplementedError

    def fallback_of(self, result: R) -> str | None:
        raise NotImplementedError

    def record(self, result: R, fallback_id: str, now: datetime) -> dict[str, Any]:
        """The results-topic record (§11) of `result`."""
        raise NotImplementedError

    async def catch_up(self, now: float) -> None:
        """Learn what `fallback_of` needs, before a cycle (NHN: the SENT outcomes)."""

    async def forget(self) -> None:
        """Drop what `catch_up` learnt, on stepping down."""

    # The collecting itself.

    async def start(self) -> None:
        self._client = self.make_client()

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
                self.log.warning(
                    "collecting %s's results failed (%s); trying again", self.provider, exc
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.poll_seconds)

    async def cycle(self) -> int:
        """One round: the webhook calls received, then the next window; returns the results
        written."""
        if not self._leading:
            await self._take_over()
        assert self._client is not None
        now = self._clock()
        await self.catch_up(now)
        found: list[tuple[R, str]] = [(r, via) for r, via, _ in self._unmatched.values()]
        self._unmatched.clear()
        hooks, next_offset = await self._read_hooks()
        found += [(r, "webhook") for r in hooks]
        start, end = next_window(
            self.finished_until, datetime.fromtimestamp(now, UTC), self.overlap
        )
        found += [(r, "poll") for r in await self.poll(self._client, start, end)]
        written = await self._write(found, now)
        self.finished_until, self.hooks_offset = end, next_offset
        await self._save_progress()
        self.cycles += 1
        return written

    async def _write(self, found: list[tuple[R, str]], now: float) -> int:
        records = []
        moment = datetime.fromtimestamp(now, UTC)
        for result, via in found:
            key = self.key(result)
            if key in self._written:
                continue  # read again in an overlapping window, or by poll and by webhook
            fid = self.fallback_of(result)
            if fid is None:
                tries = self._tries.get(key, 0) + 1
                if tries < 5:
                    self._unmatched[key] = (result, via, tries)
                    self._tries[key] = tries
                else:
                    self._tries.pop(key, None)
                    self._written[key] = now  # not tried again when an overlap reads it again
                    self.metrics.results_unmatched.labels(self.provider).inc()
                    self.log.warning("%s result %s matches no SENT fallback", self.provider, key)
                continue
            self._tries.pop(key, None)
            self._written[key] = now
            records.append((fid, self.record(result, fid, moment), via))
        if records:
            producer = await self._producer_started()
            sent = [
                await producer.send(self.results_topic, orjson.dumps(value), key=fid.encode())
                for fid, value, _ in records
            ]
            await asyncio.gather(*sent)
            for _, _, via in records:
                self.metrics.collected.labels(self.provider, via).inc()
        horizon = now - self.overlap.total_seconds() * 2
        self._written = {k: t for k, t in self._written.items() if t >= horizon}
        return len(records)

    async def webhook(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """`POST /webhooks/{provider}`: 401 without the signature or secret; 200 once the call
        is written to the collector topic (the provider calls again otherwise)."""
        calls = self.metrics.webhook_calls
        if not self.webhook_ok(headers):
            calls.labels(self.provider, "401").inc()
            return 401, b"signature missing or wrong\n"
        try:
            self.parse_webhook(orjson.loads(body))
        except (orjson.JSONDecodeError, ValueError) as exc:
            calls.labels(self.provider, "400").inc()
            return 400, f"not a webhook call: {exc}\n".encode()
        try:
            producer = await self._producer_started()
            await producer.send_and_wait(self.collector_topic, body, key=HOOK, partition=0)
        except KafkaError as exc:
            calls.labels(self.provider, "503").inc()
            self.log.warning("webhook call not written (%s): answered 503, it comes again", exc)
            return 503, b"not written; call again\n"
        calls.labels(self.provider, "200").inc()
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
        self.log.info(
            "collecting %s's results from %s (webhook calls from offset %d)",
            self.provider,
            self.finished_until.isoformat() if self.finished_until else "now",
            self.hooks_offset,
        )

    async def _read_hooks(self) -> tuple[list[R], int]:
        consumer = await self._hooks_started()
        tp = TopicPartition(self.collector_topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, self.hooks_offset)
        found: list[R] = []
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
                        found += self.parse_webhook(orjson.loads(r.value))
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
            self.log.info(
                "no longer collecting %s's results (this replica no longer owns partition 0)",
                self.provider,
            )
        self._leading = False
        if self._hooks is not None:
            with contextlib.suppress(Exception):
                await self._hooks.stop()
        self._hooks = None
        await self.forget()

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
