"""Dead letters (§8): listed with what the service said of them, and replayed to the input."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import ConsumerRecord

from service.config import Settings
from service.core.models import DLQ_ERROR, DLQ_ERROR_DETAIL, fallback_id
from service.ops.audit import Actor, audit_record
from service.ops.records import producer, scan

DEAD_LETTERS = "dead_letters"


@dataclass
class DeadLetter:
    """One record of the DLQ, with what the service said about it."""

    partition: int
    offset: int
    timestamp: datetime
    error: str
    detail: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter_of(record: ConsumerRecord) -> DeadLetter:
    """A DLQ record as a `DeadLetter`."""
    headers = [(k, v or b"") for k, v in (record.headers or ())]
    found = dict(headers)
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        error=found.get(DLQ_ERROR, b"").decode("utf-8", "replace"),
        detail=found.get(DLQ_ERROR_DETAIL, b"").decode("utf-8", "replace"),
        key=record.key,
        value=record.value,
        headers=headers,
    )


async def dead_letters(
    settings: Settings,
    *,
    error: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[DeadLetter]:
    """The dead letters of the DLQ topic, filtered by error and time."""
    found = []
    async for record in scan(settings, settings.dlq_topic, since=since, until=until):
        letter = dead_letter_of(record)
        if error is None or letter.error == error:
            found.append(letter)
    return found


def event_fallback_id(value: bytes | None) -> str | None:
    """The fallbackId of a dead letter's event, when its value is still an object with
    `requestId` and `recipientSeq`."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and "requestId" in data and "recipientSeq" in data:
        return fallback_id(str(data["requestId"]), data["recipientSeq"])
    return None


def replay_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original record's headers: without what the service added (x-fallback-*,
    x-original-*)."""
    return [(k, v) for k, v in letter.headers if not k.startswith(("x-fallback-", "x-original-"))]


async def replay(settings: Settings, letters: list[DeadLetter], *, actor: Actor) -> int:
    """Re-publish dead letters to the input topic, original key, value and headers; each one
    replayed is audited (table `dead_letters`, key `partition@offset`, §10)."""
    now = datetime.now(UTC)
    async with producer(settings) as p:
        futures = []
        for d in letters:
            futures.append(
                await p.send(settings.input_topic, d.value, key=d.key, headers=replay_headers(d))
            )
            where = f"{d.partition}@{d.offset}"
            audit = audit_record(
                actor,
                DEAD_LETTERS,
                where,
                {"topic": settings.dlq_topic, "error": d.error},
                {"replayedTo": settings.input_topic},
                now,
            )
            futures.append(await p.send(settings.audit_topic, audit, key=where.encode()))
        await asyncio.gather(*futures)
    return len(letters)
