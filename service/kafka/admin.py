"""Topic administration: the internal topics, partition counts, record limits, leaders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from service.config import ConfigError, KafkaConnection, Settings
from service.kafka.options import client_options

log = logging.getLogger("fallback.kafka")


@contextlib.asynccontextmanager
async def admin_client(kafka: KafkaConnection) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed on exit."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@dataclass(frozen=True, slots=True)
class InternalTopic:
    """A topic the service owns, partitioned like the input, and the variable that names it."""

    variable: str
    name: str
    config: dict[str, str]
    # Partitioned like the input (None), or with this many partitions.
    partitions: int | None = None


def internal_topics(settings: Settings) -> list[InternalTopic]:
    """The dedupe changelog (compacted) and the repartition topic, kept as long as the dedupe
    state remembers; with a result collector, its topic."""
    retention = str(int(settings.dedupe_retention_days * 86400 * 1000))
    return [
        InternalTopic(
            "FALLBACK_DEDUPE_TOPIC",
            settings.dedupe_topic_name,
            {"cleanup.policy": "compact,delete", "retention.ms": retention},
        ),
        InternalTopic(
            "FALLBACK_REPARTITION_TOPIC",
            settings.repartition_topic_name,
            {"cleanup.policy": "delete", "retention.ms": retention},
        ),
    ] + [
        # A result collector's webhook calls and progress (§11): one history each.
        InternalTopic(
            "FALLBACK_GROUP_ID",
            name,
            {"cleanup.policy": "delete", "retention.ms": retention},
            partitions=1,
        )
        for name, collects in (
            (settings.nhn_results_topic_name, settings.collects_nhn_results),
            (settings.solapi_results_topic_name, settings.collects_solapi_results),
        )
        if collects
    ]


async def ensure_internal_topic(
    settings: Settings, variable: str, name: str, *, partitions: int, config: dict[str, str]
) -> None:
    """Create an internal topic partitioned like the input when it is missing.

    An existing one must have the input's partition count: a fallback's owner partition is
    `murmur2(fallbackId) % partitions`, so another count would put its state elsewhere.
    """
    async with admin_client(settings.kafka()) as admin:
        if name in await admin.list_topics():
            described = await admin.describe_topics([name])
            found = len(described[0].get("partitions", [])) if described else 0
            if found and found != partitions:
                raise ConfigError(
                    f"{variable}: topic {name} has {found} partitions but the input topic has "
                    f"{partitions}; they must match (docs/reliability.md, "
                    "changing the input's partition count)"
                )
            return
        replication = settings.internal_topic_replication
        if replication is None:
            brokers = (await admin.describe_cluster()).get("brokers", [])
            replication = max(1, min(3, len(brokers)))
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication, topic_configs=config)]
        )
        for topic, code, message in _topic_errors(response):
            if code and code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"cannot create topic {topic}: error {code} {message}")
        log.info("created internal topic %s with %d partitions", name, partitions)


# What one produced record may be at most: aiokafka's default max_request_size, which the
# service's producers keep, and Kafka's default max.message.bytes.
PRODUCER_MAX_REQUEST_BYTES = 1_048_576


async def max_message_bytes(settings: Settings, topic: str) -> int:
    """The largest record `topic` takes from the service: its `max.message.bytes` (when the
    broker says), never more than the producer's request limit."""
    limit = PRODUCER_MAX_REQUEST_BYTES
    try:
        async with admin_client(settings.kafka()) as admin:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:
                    if entry[0] == "max.message.bytes" and entry[1]:
                        limit = min(limit, int(entry[1]))
    except Exception as exc:  # a broker without DescribeConfigs: keep the producer's limit
        log.info("cannot read max.message.bytes of %s (%r); using %d", topic, exc, limit)
    return limit


async def partition_count(settings: Settings, topic: str) -> int | None:
    """How many partitions `topic` has, or None when it does not exist."""
    async with admin_client(settings.kafka()) as admin:
        described = await admin.describe_topics([topic])
    for item in described:
        if item.get("topic") == topic and not item.get("error_code"):
            return len(item.get("partitions", [])) or None
    return None


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    errors = []
    for item in response.topic_errors:
        topic, code = item[0], item[1]
        message = item[2] if len(item) > 2 else None
        errors.append((topic, code, message))
    return errors


async def wait_for_leaders(settings: Settings, topics: list[str], within: float = 15.0) -> None:
    """Wait until every partition of `topics` (those that exist) has a leader.

    A topic created a moment before has none for a while, and a write to it then waits for the
    producer's request timeout before failing with NotLeaderForPartition: half a minute for the
    first batch. Past `within` seconds it logs which partitions lack one and returns (the
    writer's retries take over).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    leaderless: list[str] = []
    async with admin_client(settings.kafka()) as admin:
        while True:
            leaderless = []
            for item in await admin.describe_topics(list(dict.fromkeys(topics))):
                if item.get("error_code"):
                    continue  # missing: the service does not create the contract's topics
                leaderless += [
                    f"{item.get('topic')}[{p.get('partition')}]"
                    for p in item.get("partitions", [])
                    if p.get("leader", -1) < 0
                ]
            if not leaderless or loop.time() >= deadline:
                break
            await asyncio.sleep(0.2)
    if leaderless:
        log.warning("no leader yet for %s after %.0fs", ", ".join(leaderless), within)
