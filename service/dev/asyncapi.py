"""Generates `docs/asyncapi.yaml` from the running app's FastStream broker (development only).

FastStream describes what the service consumes (the input and repartition topics, with their
Kafka bindings). Two things are added before it renders: publishers that document what the
service writes (SMS requests, outcome events, dead letters; the service itself writes through
its writer, not through FastStream publishers), and the input's payload schema, which FastStream
cannot infer because the handler takes raw records. Settings are the defaults, never the
environment, so the document does not change with the machine that generates it.

`python -m service.dev.asyncapi` writes the file; `--check` exits 1 when it is out of date.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from aiokafka import TopicPartition
from faststream.specification import AsyncAPI
from pydantic import TypeAdapter

from service.config import Settings
from service.core.models import FailureEvent, Outcome, SmsRequest
from service.core.results import DeliveryResult, FinalOutcome
from service.core.settle import SettledOutcome
from service.pipeline.seams import Write
from service.runtime.compose import build_service
from service.sinks.memory import ListSink

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
VERSION = "0.1.0"


class _NoWriter:
    """The generator builds the app but never runs it: no producer is made."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def attach(self, consumer: Any) -> None: ...

    async def assigned(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None: ...

    async def write(self, writes: Sequence[Write]) -> None: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    async def abandon(self) -> None: ...


async def _render() -> str:
    settings = Settings.model_construct()
    service = build_service(settings, writer=_NoWriter(), sink=ListSink())
    broker = service.broker
    broker.publisher(
        settings.output_topic,
        title="SMS requests",
        description="Contract §6: one SMS or LMS request per REQUESTED fallback (sink kafka); "
        "key and header idempotency-key: the fallbackId.",
        schema=SmsRequest,
    )
    broker.publisher(
        settings.events_topic,
        title="Outcome events",
        description="Contract §7: exactly one REQUESTED, SKIPPED or REJECTED outcome per "
        "well-formed failure event, key fallbackId; a delivering sink adds SENT or FAILED "
        "(with a provider object); with delivery results on (§11) each REQUESTED fallback "
        "ends with one DELIVERED, UNDELIVERED or EXPIRED outcome (with a delivery object).",
        schema=Outcome | SettledOutcome | FinalOutcome,
    )
    broker.publisher(
        settings.results_topic,
        title="Delivery results",
        description="Contract §11: one handset result per SMS request, key fallbackId; written "
        "by the team's SMS service (sink kafka) or the service's own result collectors (sinks "
        "nhn and solapi), read with FALLBACK_DELIVERY_RESULTS=on.",
        schema=DeliveryResult,
    )
    broker.publisher(
        settings.dlq_topic,
        title="Dead letters",
        description="Contract §8: the input record's key and value unchanged, with headers "
        "x-fallback-error, x-fallback-error-detail, x-original-topic, x-original-partition, "
        "x-original-offset (and x-fallback-value-truncated, x-fallback-original-size).",
        schema=bytes,
    )
    document = (
        AsyncAPI(
            broker,
            title="fallback-service",
            version=VERSION,
            description="AlimTalk to SMS/LMS fallback (대체발송): reads AlimTalk failure events "
            "and delivery results, writes SMS requests, outcome events and dead letters "
            "(docs/contract.md).",
        )
        .to_specification()
        .to_jsonable()
    )
    assert isinstance(document, dict)
    # FastStream infers payloads from handler signatures and mis-references dataclass schemas;
    # the contract's own models say what each message carries.
    payloads: dict[str, Any] = {
        "AlimTalk failure events": list[FailureEvent],
        "SMS requests": SmsRequest,
        "Outcome events": Outcome | SettledOutcome | FinalOutcome,
        "Delivery results": DeliveryResult,
        "Dead letters": bytes,
    }
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in [n for n in schemas if n.endswith(":Message:Payload")]:
        del schemas[name]
    for key, message in components.get("messages", {}).items():
        title = key.split(":", 1)[0]
        schema = TypeAdapter(payloads[title]).json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        payload = f"{title}:Payload"
        schemas[payload] = schema
        message["payload"] = {"$ref": "#/components/schemas/" + payload.replace(" ", "%20")}
    await service.broker.stop()
    rendered: str = yaml.safe_dump(document, allow_unicode=True, sort_keys=True, width=100)
    return rendered


def render() -> str:
    """The AsyncAPI document as YAML."""
    return asyncio.run(_render())


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOCUMENT.exists() or DOCUMENT.read_text(encoding="utf-8") != text:
            print(f"{DOCUMENT} is out of date: run python -m service.dev.asyncapi", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
