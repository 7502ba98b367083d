"""Kafka client options: TLS/SASL, the producer the writers use, and the default partitioner."""

from __future__ import annotations

import functools
import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from service.config import ConfigError, KafkaConnection, SaslMechanism, Settings


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
