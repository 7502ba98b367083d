"""Shared fixtures: one real Kafka-protocol broker (Tansu) for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from service.dev.broker import EmbeddedBroker, start_broker
from tests.kafka_helpers import Topics


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FALLBACK_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    started = start_broker()
    yield started
    started.stop()


@pytest.fixture
def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap


@pytest.fixture
def topics() -> Topics:
    return Topics.fresh()
