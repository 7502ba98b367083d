"""Kafka adapters over aiokafka: client options with TLS/SASL, producer, topic administration."""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from service.config import ConfigError, KafkaConnection, SaslMechanism, Settings

log = logging.getLogger("fallback.kafka")


def _ssl_context(kafka: KafkaConnection) -> ssl.SSLContext:
    # A file that cannot be read stops start-up naming its variable, not with a traceback.
    try:
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"FALLBACK_KAFKA_SSL_CAFILE: cannot be read ({exc})") from None
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile:
        password = kafka.ssl_key_password
        try:
            context.load_cert_chain(
                kafka.ssl_certfile,
                kafka.ssl_keyfile,
                password.get_secret_value() if password else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "FALLBACK_KAFKA_SSL_CERTFILE / FALLBACK_KAFKA_SSL_KEYFILE: "
                f"cannot be read ({type(exc).__name__})"
            ) from None
    return context


def client_options(kafka: KafkaConnection) -> dict[str, Any]:
    """Keyword arguments every aiokafka client shares: servers, client id, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol.value,
        "client_id": kafka.client_id,
    }
    if kafka.uses_ssl:
        options["ssl_context"] = _ssl_context(kafka)
    if kafka.uses_sasl:
        assert kafka.sasl_password is not None  # checked by Settings
        options["sasl_mechanism"] = kafka.sasl_mechanism.value
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def faststream_security(kafka: KafkaConnection, options: dict[str, Any]) -> BaseSecurity | None:
    """The same security as `options` (built once by `client_options`), in FastStream's terms."""
    ssl_context = options.get("ssl_context")
    if not kafka.uses_sasl:
        return BaseSecurity(ssl_context=ssl_context) if ssl_context else None
    kind = {
        SaslMechanism.PLAIN: SASLPlaintext,
        SaslMechanism.SCRAM_SHA_256: SASLScram256,
        SaslMechanism.SCRAM_SHA_512: SASLScram512,
    }[kafka.sasl_mechanism]
    return kind(
        options["sasl_plain_username"],
        options["sasl_plain_password"],
        ssl_context=ssl_context,
        use_ssl=ssl_context is not None,
    )


def keyed_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java clients, aiokafka) gives a record keyed
    `key` in a topic of `partitions` partitions: murmur2 of the key."""
    return _key_hash(key) % partitions


# aiokafka's murmur2 is pure Python (microseconds a key), and one fallbackId is hashed for its
# owner partition, its request and its outcome within the same batch.
@functools.lru_cache(maxsize=16_384)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key) & 0x7FFFFFFF)


def make_producer(
    settings: Settings, options: dict[str, Any] | None = None, transactional_id: str | None = None
) -> AIOKafkaProducer:
    """A producer for the outputs: acks=all, so an ack means the write is durable (§9).

    With a `transactional_id` it is transactional (idempotent, acks=all forced by aiokafka).
    """
    extra: dict[str, Any] = {}
    if transactional_id is not None:
        extra = {
            "transactional_id": transactional_id,
            "transaction_timeout_ms": settings.kafka_transaction_timeout_ms,
        }
    return AIOKafkaProducer(
        **(options if options is not None else client_options(settings.kafka())),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence or transactional_id is not None,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
        **extra,
    )


async def refresh_metadata(consumer: Any) -> None:
    """Ask the cluster for fresh metadata (a topic created a moment ago may not be known yet).

    The consumer has no public call for it; its client does.
    """
    await consumer._client.force_metadata_update()


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


def internal_topics(settings: Settings) -> list[InternalTopic]:
    """The dedupe changelog (compacted) and the repartition topic, kept as long as the dedupe
    state remembers."""
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
