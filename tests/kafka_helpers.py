"""Helpers for tests on the real broker: topics, producing, reading outputs, running the service."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from service.compat import refresh_metadata
from service.config import Settings, load_settings
from service.core.models import FINAL_STATUSES
from service.dev.broker import free_port
from service.ops.topics import create_topics as create_all_topics
from service.runtime.compose import build_service
from service.runtime.service import FallbackService
from tests.factories import SEND_NO, SENDER_KEY, UNSUBSCRIBE_NO, event_dict
from tests.waiting import eventually


@dataclass
class Broker:
    """A running broker the tests use, and the settings the service needs on it."""

    name: str
    bootstrap: str
    transactions: bool
    overrides: dict[str, Any]
    started_in: float = 0.0


@dataclass
class Topics:
    """A fresh set of the six topics of §1 for one test, and the broker's setting overrides."""

    input: str
    output: str
    events: str
    dlq: str
    channels: str
    senders: str
    results: str
    audit: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fresh(cls, overrides: dict[str, Any] | None = None) -> Topics:
        tag = uuid.uuid4().hex[:8]
        return cls(
            input=f"in-{tag}",
            output=f"sms-{tag}",
            events=f"events-{tag}",
            dlq=f"dlq-{tag}",
            channels=f"channels-{tag}",
            senders=f"senders-{tag}",
            results=f"results-{tag}",
            audit=f"audit-{tag}",
            overrides=dict(overrides or {}),
        )

    def settings(self, bootstrap: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": bootstrap,
            "group_id": f"group-{self.input}",
            "input_topic": self.input,
            "output_topic": self.output,
            "events_topic": self.events,
            "dlq_topic": self.dlq,
            "channel_settings_topic": self.channels,
            "sender_numbers_topic": self.senders,
            "results_topic": self.results,
            "audit_topic": self.audit,
            "http_port": 0,
            "ad_quiet_hours": "",
            "batch_timeout_ms": 20,
            # Tansu forms a group in about half the session timeout: keep tests quick.
            "kafka_session_timeout_ms": 2000,
            "kafka_heartbeat_interval_ms": 300,
        }
        values.update(self.overrides)
        values.update(overrides)
        return load_settings(**values)

    def env(self, bootstrap: str, **overrides: str) -> dict[str, str]:
        env = {
            "FALLBACK_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FALLBACK_GROUP_ID": f"group-{self.input}",
            "FALLBACK_INPUT_TOPIC": self.input,
            "FALLBACK_OUTPUT_TOPIC": self.output,
            "FALLBACK_EVENTS_TOPIC": self.events,
            "FALLBACK_DLQ_TOPIC": self.dlq,
            "FALLBACK_CHANNEL_SETTINGS_TOPIC": self.channels,
            "FALLBACK_SENDER_NUMBERS_TOPIC": self.senders,
            "FALLBACK_RESULTS_TOPIC": self.results,
            "FALLBACK_AUDIT_TOPIC": self.audit,
            "FALLBACK_AD_QUIET_HOURS": "",
            "FALLBACK_BATCH_TIMEOUT_MS": "20",
            "FALLBACK_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "FALLBACK_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        }
        env.update({f"FALLBACK_{k.upper()}": _env_value(v) for k, v in self.overrides.items()})
        env.update(overrides)
        return env


def _env_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


async def create_topics(bootstrap: str, topics: Topics, *, partitions: int = 3) -> None:
    """The contract's topics and the service's internal ones, as `topics create` makes them."""
    await create_all_topics(topics.settings(bootstrap), partitions=partitions, replication=1)


@contextlib.asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def put(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | str | None, Any]]
) -> None:
    """Produce (key, value) pairs; dict values are JSON, None is a tombstone, bytes are raw."""
    async with producer(bootstrap) as p:
        for key, value in records:
            k = key.encode() if isinstance(key, str) else key
            v = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
            await p.send_and_wait(topic, v, key=k)


async def prepare(bootstrap: str, topics: Topics, *, partitions: int = 3, **channel: Any) -> Topics:
    """The topics made as `topics create` makes them, and a configured channel with its active
    sender number (`seed`): what most broker tests start from."""
    await create_topics(bootstrap, topics, partitions=partitions)
    await seed(bootstrap, topics, **channel)
    return topics


async def seed(bootstrap: str, topics: Topics, **channel: Any) -> None:
    """A configured channel and its active sender number."""
    settings_value = {"enabled": True, "sendNo": SEND_NO, "unsubscribeNo": UNSUBSCRIBE_NO}
    settings_value.update(channel)
    await put(bootstrap, topics.channels, [(SENDER_KEY, settings_value)])
    await put(bootstrap, topics.senders, [(SEND_NO, {"status": "ACTIVE"})])


async def read(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    within: float = 20.0,
    isolation_level: str = "read_committed",
) -> list[ConsumerRecord]:
    """Read at least `count` records of `topic` from the beginning (all partitions).

    A downstream consumer reads what was committed (`read_committed`, as the contract asks of
    readers in exactly-once mode); the kill tests also look at `read_uncommitted`.
    """
    async with from_beginning(bootstrap, topic, isolation_level) as (consumer, _):
        got: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(got) < count and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                got.extend(records)
        return got


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The partitions of `topic`, once the consumer's metadata knows it (a new topic may lag)."""

    async def known() -> bool:
        if consumer.partitions_for_topic(topic):
            return True
        await refresh_metadata(consumer)
        return bool(consumer.partitions_for_topic(topic))

    await eventually(known, 20, f"topic {topic} in the metadata")
    return set(consumer.partitions_for_topic(topic))


def values(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = await partitions_of(consumer, topic)
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in sorted(parts)}
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[FallbackService]:
    """The service in this process, started and ready; stopped cleanly afterwards."""
    service = build_service(settings)
    await asyncio.wait_for(service.start(), 30)
    # Assigned, and its dedupe state restored.
    await eventually(lambda: service.readiness() is None, 30, lambda: f"{service.readiness()}")
    try:
        yield service
    finally:
        await service.stop()


async def fill(
    bootstrap: str, topic: str, count: int, *, prefix: str = "R", first: int = 0
) -> None:
    """Produce `count` well-formed OTP failure events, keyed by fallbackId, as fast as possible;
    numbered from `first` (the number is in the requestId and the OTP of the body)."""
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=10, max_batch_size=512 * 1024
    )
    await p.start()
    try:
        futures = []
        for i in range(first, first + count):
            value = orjson.dumps(
                event_dict(requestId=f"{prefix}{i}", content=f"[마이브랜드] 인증번호 {i:06d}")
            )
            futures.append(await p.send(topic, value, key=f"{prefix}{i}:1".encode()))
        await asyncio.gather(*futures)
    finally:
        await p.stop()


async def read_to_end(
    bootstrap: str, topic: str, *, isolation_level: str = "read_committed"
) -> list[ConsumerRecord]:
    """Every record of `topic` up to its current end (the last stable offset, read_committed)."""
    async with from_beginning(bootstrap, topic, isolation_level) as (consumer, tps):
        ends = await consumer.end_offsets(tps)
        got: list[ConsumerRecord] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                got.extend(records)
        return got


@contextlib.asynccontextmanager
async def from_beginning(
    bootstrap: str, topic: str, isolation_level: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A group-less consumer assigned every partition of `topic`, at the beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer, tps
    finally:
        await consumer.stop()


async def backlog(
    bootstrap: str, overrides: dict[str, Any], count: int, guarantee: str, **env: str
) -> tuple[Topics, int, dict[str, str]]:
    """Fresh topics (3 partitions), a configured channel and `count` events waiting; and the
    environment of a service process to drain them: its HTTP port and FALLBACK_* variables."""
    topics = Topics.fresh(overrides)
    await prepare(bootstrap, topics, partitions=3)
    await fill(bootstrap, topics.input, count)
    port = free_port()
    variables = topics.env(
        bootstrap,
        FALLBACK_HTTP_PORT=str(port),
        FALLBACK_PROCESSING_GUARANTEE=guarantee,
        FALLBACK_LOG_OUTCOMES="false",
        **env,
    )
    return topics, port, variables


async def finals(bootstrap: str, topic: str) -> dict[str, list[dict[str, Any]]]:
    """Each fallback's final outcomes (§7: DELIVERED, UNDELIVERED, EXPIRED), as a
    read_committed reader of the events topic sees them now."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for outcome in values(await read_to_end(bootstrap, topic)):
        if outcome["status"] in FINAL_STATUSES:
            found[outcome["fallbackId"]].append(outcome)
    return found
