"""Kafka connection settings, producer and topic administration (adapters over aiokafka)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from service.config import SecurityProtocol, Settings

log = logging.getLogger("fallback.kafka")


def connection_options(settings: Settings) -> dict[str, Any]:
    """Options every aiokafka client of the service shares: servers, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol.value,
        "client_id": settings.kafka_client_id,
    }
    protocol = settings.kafka_security_protocol
    if protocol in {SecurityProtocol.SSL, SecurityProtocol.SASL_SSL}:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        context.check_hostname = settings.kafka_ssl_check_hostname
        if settings.kafka_ssl_certfile:
            password = settings.kafka_ssl_key_password
            context.load_cert_chain(
                settings.kafka_ssl_certfile,
                settings.kafka_ssl_keyfile,
                password.get_secret_value() if password else None,
            )
        options["ssl_context"] = context
    if protocol in {SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL}:
        assert settings.kafka_sasl_password is not None  # checked by Settings
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism.value
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The producer for every output: acks=all, so an ack means the write is durable (§9)."""
    return AIOKafkaProducer(
        **connection_options(settings),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )


async def ensure_topic(
    settings: Settings, name: str, *, partitions: int, config: dict[str, str]
) -> None:
    """Create an internal topic when it is missing; an existing one is left as it is."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        if name in await admin.list_topics():
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
    finally:
        await admin.close()


async def create_contract_topics(settings: Settings, *, partitions: int) -> None:
    """Create the six topics of §1 that are missing, as a deployer would (dev runner, tests)."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        data = (
            settings.input_topic,
            settings.output_topic,
            settings.events_topic,
            settings.dlq_topic,
        )
        tables = (settings.channel_settings_topic, settings.sender_numbers_topic)
        wanted = [NewTopic(t, partitions, 1) for t in data] + [
            NewTopic(t, 1, 1, topic_configs={"cleanup.policy": "compact"}) for t in tables
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


async def partition_count(settings: Settings, topic: str) -> int | None:
    """How many partitions `topic` has, or None when it does not exist."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
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
