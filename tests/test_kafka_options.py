"""Kafka connection options (§10): TLS and SASL reach aiokafka clients and FastStream alike.

Clients are built inside async tests because aiokafka binds them to the running loop.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.config import ConfigError, load_settings
from service.kafka.options import client_options, faststream_security, make_producer
from service.metrics import Metrics
from service.runtime.compose import build_broker


def settings(**overrides: Any) -> Any:
    return load_settings(kafka_bootstrap_servers="k1:9093,k2:9093", **overrides)


def test_plaintext() -> None:
    options = client_options(settings().kafka())
    assert options == {
        "bootstrap_servers": "k1:9093,k2:9093",
        "security_protocol": "PLAINTEXT",
        "client_id": "fallback-service",
    }
    assert faststream_security(settings().kafka(), options) is None


async def test_sasl_ssl_reaches_aiokafka_and_faststream() -> None:
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_check_hostname=False,
    )
    options = client_options(s.kafka())
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname is False
    producer = make_producer(s, options)
    consumer = AIOKafkaConsumer(**options)
    for client in (producer.client, consumer._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "svc"
        assert client._sasl_plain_password == "pw"
        assert client._ssl_context is options["ssl_context"]
    broker = build_broker(s, options, Metrics())
    fast = broker._connection_kwargs
    assert fast["security_protocol"] == "SASL_SSL"
    assert fast["sasl_mechanism"] == "SCRAM-SHA-512"
    assert fast["sasl_plain_username"] == "svc"
    assert fast["ssl_context"] is options["ssl_context"]


@pytest.mark.parametrize(
    ("mechanism", "protocol"),
    [("PLAIN", "SASL_PLAINTEXT"), ("SCRAM-SHA-256", "SASL_PLAINTEXT")],
)
def test_sasl_without_tls(mechanism: str, protocol: str) -> None:
    s = settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    options = client_options(s.kafka())
    assert "ssl_context" not in options
    assert options["sasl_mechanism"] == mechanism
    security = faststream_security(s.kafka(), options)
    assert security is not None and security.use_ssl is False
    assert build_broker(s, options, Metrics())._connection_kwargs["sasl_mechanism"] == mechanism


async def test_ssl_only() -> None:
    s = settings(kafka_security_protocol="SSL")
    options = client_options(s.kafka())
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert AIOKafkaProducer(**options).client._ssl_context is options["ssl_context"]
    assert build_broker(s, options, Metrics())._connection_kwargs["security_protocol"] == "SSL"


def test_unreadable_tls_files_name_their_variable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="FALLBACK_KAFKA_SSL_CAFILE"):
        client_options(settings(kafka_security_protocol="SSL", kafka_ssl_cafile=missing).kafka())
    with pytest.raises(ConfigError, match="FALLBACK_KAFKA_SSL_CERTFILE"):
        client_options(settings(kafka_security_protocol="SSL", kafka_ssl_certfile=missing).kafka())
