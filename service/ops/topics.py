"""The topics of the contract (§1) and the service's internal ones, created when missing."""

from __future__ import annotations

from aiokafka.admin import NewTopic

from service.config import Settings
from service.kafka.admin import admin_client, internal_topics
from service.ops import Refused


def wanted_topics(settings: Settings, partitions: int, replication: int) -> list[NewTopic]:
    """The eight topics of the contract and the service's two internal ones.

    The audit topic has one partition: operators read it as one history, in order.
    """
    data = (
        settings.input_topic,
        settings.output_topic,
        settings.events_topic,
        settings.dlq_topic,
        settings.results_topic,
    )
    return (
        [NewTopic(t, partitions, replication) for t in data]
        + [NewTopic(settings.audit_topic, 1, replication)]
        + [
            NewTopic(t, 1, replication, topic_configs={"cleanup.policy": "compact"})
            for t in (settings.channel_settings_topic, settings.sender_numbers_topic)
        ]
        + [
            NewTopic(t.name, t.partitions or partitions, replication, topic_configs=t.config)
            for t in internal_topics(settings)
        ]
    )


async def create_topics(settings: Settings, *, partitions: int, replication: int) -> dict[str, str]:
    """Create the topics that are missing; says, per topic, "created" or "exists"."""
    wanted = wanted_topics(settings, partitions, replication)
    async with admin_client(settings.kafka()) as admin:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            for item in response.topic_errors:
                name, code = item[0], item[1]
                if code and name not in existing:
                    raise Refused(f"cannot create topic {name}: error {code} {item[2:]}")
    return {t.name: ("exists" if t.name in existing else "created") for t in wanted}
