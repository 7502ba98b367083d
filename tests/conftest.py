"""Shared fixtures: the real brokers (Tansu and Apache Kafka), each started once per session.

Every test that takes `bootstrap` or `broker` runs on both; Apache Kafka needs Java and Maven
(fetched jars are cached in `.cache/kafka`). Without them its tests are skipped with one line in
the report header, unless FALLBACK_TEST_REQUIRE_KAFKA=1 (CI), which makes them fail instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from service import compat
from service.dev.apache_kafka import ApacheKafka, ensure_jars, missing_tools
from service.dev.broker import start_broker
from service.dev.nhn_server import NhnServer
from service.dev.solapi_server import SolapiServer
from tests.kafka_helpers import Broker, Topics

REQUIRE_KAFKA = os.environ.get("FALLBACK_TEST_REQUIRE_KAFKA") == "1"


def pytest_report_header(config: pytest.Config) -> str:
    why = missing_tools()
    if why is None:
        return "Apache Kafka tests: on (java and mvn found)"
    if REQUIRE_KAFKA:
        return f"Apache Kafka tests: REQUIRED but cannot run: {why}"
    return f"Apache Kafka tests: skipped, {why} (FALLBACK_TEST_REQUIRE_KAFKA=1 makes this fail)"


@pytest.fixture(scope="session", autouse=True)
def _process_entry() -> None:
    """What `fallback-service` installs at its entry (`service.cli.main`), for services the
    tests run in-process."""
    compat.self_check()
    compat.install()


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FALLBACK_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tansu() -> Iterator[Broker]:
    started = start_broker()
    yield Broker("tansu", started.bootstrap, transactions=False, overrides={})
    started.stop()


def _kafka_or_skip() -> None:
    why = missing_tools()
    if why is not None:
        if REQUIRE_KAFKA:
            pytest.fail(f"FALLBACK_TEST_REQUIRE_KAFKA=1 but Apache Kafka cannot run: {why}")
        pytest.skip(f"Apache Kafka: {why}")


def start_kafka(directory: Path) -> ApacheKafka:
    """A fresh Apache Kafka broker with its data in `directory` (tests that kill it use this)."""
    _kafka_or_skip()
    broker = ApacheKafka(directory=directory, lib=ensure_jars())
    broker.start()
    return broker


# On Apache Kafka the at-least-once mode runs with idempotent producers, as users run it.
KAFKA_OVERRIDES: dict[str, Any] = {"kafka_enable_idempotence": True}


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started = start_kafka(tmp_path_factory.mktemp("kafka"))
    yield Broker(
        "kafka",
        started.bootstrap,
        transactions=True,
        overrides=KAFKA_OVERRIDES,
        started_in=started.started_in,
    )
    started.stop()


@pytest.fixture(params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each broker test runs once on Tansu and once on Apache Kafka."""
    found: Broker = request.getfixturevalue(request.param)
    return found


@pytest.fixture
def bootstrap(broker: Broker) -> str:
    return broker.bootstrap


@pytest.fixture
def topics(broker: Broker) -> Topics:
    return Topics.fresh(broker.overrides)


@pytest.fixture
async def nhn_server() -> AsyncIterator[NhnServer]:
    """The local NHN-compatible SMS API (`service.dev.nhn_server`), app key APP, secret SECRET."""
    stand_in = NhnServer(app_key="APP", secret_key="SECRET")
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def solapi_server() -> AsyncIterator[SolapiServer]:
    """The local Solapi-compatible messages API (`service.dev.solapi_server`), key KEY, secret
    SECRET."""
    stand_in = SolapiServer(api_key="KEY", api_secret="SECRET")
    await stand_in.start()
    yield stand_in
    await stand_in.stop()
