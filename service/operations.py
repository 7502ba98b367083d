"""What operators do to the service's topics: channels, sender numbers, topics, dead letters,
outcomes, one fallback's story. Functions that read or write Kafka and return data; the CLI
verbs (`service.cli`) print it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic
from pydantic import ValidationError

from service.config import Settings
from service.core.models import (
    DLQ_ERROR,
    DLQ_ERROR_DETAIL,
    ChannelSettings,
    SenderNumber,
    SenderNumberStatus,
    describe_errors,
    fallback_id,
)
from service.core.rules import phone_digits
from service.dedupe import owner_partition
from service.kafka import (
    admin_client,
    client_options,
    internal_topics,
    partition_count,
    refresh_metadata,
)
from service.tables import Table, decode_channel, decode_sender_number


class Refused(Exception):
    """The operation was refused (bad input, not found); nothing was written."""


# ---- writing ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """An acks=all producer with the service's connection and security options."""
    p = AIOKafkaProducer(**client_options(settings.kafka()), acks="all")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def _put(settings: Settings, topic: str, key: str, value: bytes | None) -> None:
    async with producer(settings) as p:
        await p.send_and_wait(topic, value, key=key.encode())


# ---- the tables (§3, §4) -------------------------------------------------------------------


async def read_table(settings: Settings, which: str) -> dict[str, Any]:
    """The channel settings or sender-number table as the service sees it now."""
    options = client_options(settings.kafka())
    if which == "channels":
        table: Table[Any] = Table(
            "channels", settings.channel_settings_topic, decode_channel, options
        )
    else:
        table = Table(
            "sender_numbers", settings.sender_numbers_topic, decode_sender_number, options
        )
    await table.start()
    try:
        await asyncio.wait_for(table.wait_loaded(), 60)
        return dict(table.entries)
    finally:
        await table.stop()


def _number(raw: str, what: str) -> str:
    digits = phone_digits(raw)
    if digits is None or not 8 <= len(digits) <= 12:
        raise Refused(f"{what} {raw!r} is not a phone number of 8-12 digits")
    return digits


@dataclass
class ChannelChange:
    """A channel as written, and what an operator should know about it."""

    sender_key: str
    settings: ChannelSettings
    warnings: list[str]


async def put_channel(
    settings: Settings,
    sender_key: str,
    changes: dict[str, Any],
    *,
    replace: bool,
    strict: bool,
) -> ChannelChange:
    """Write a channel's settings, merged over the current value unless `replace`.

    Validated with the service's own model and number rules before anything is written.
    """
    if not sender_key or len(sender_key) > 64:
        raise Refused("a sender key is 1-64 characters")
    current: dict[str, Any] = {}
    if not replace:
        existing = (await read_table(settings, "channels")).get(sender_key)
        if existing is not None:
            current = existing.model_dump(exclude_none=True)
            current.pop("resultCodes", None)
            if existing.resultCodes:
                current["resultCodes"] = list(existing.resultCodes)
    value = {**current, **changes}
    if "enabled" not in value:
        raise Refused(f"channel {sender_key} is new: say --enabled or --disabled")
    if value.get("sendNo"):
        value["sendNo"] = _number(value["sendNo"], "sender number")
    unsubscribe = value.get("unsubscribeNo")
    if unsubscribe:
        digits = phone_digits(unsubscribe)
        if digits is None or not (digits.startswith("080") and 10 <= len(digits) <= 11):
            raise Refused(f"opt-out number {unsubscribe!r} is not 080 and 7-8 more digits")
        value["unsubscribeNo"] = digits
    try:
        model = ChannelSettings.model_validate(value)
    except ValidationError as exc:
        raise Refused(f"channel {sender_key}: {describe_errors(exc, 'value')}") from None
    warnings = []
    if model.sendNo and settings.sendno_registry.value == "enforce":
        status = (await read_table(settings, "sendnos")).get(model.sendNo)
        if status is not SenderNumberStatus.ACTIVE:
            problem = (
                f"sender number {model.sendNo} is "
                + ("not registered" if status is None else "BLOCKED")
                + ": fallbacks of this channel will be REJECTED until it is ACTIVE"
            )
            if strict:
                raise Refused(problem)
            warnings.append(problem)
    body = model.model_dump(exclude_none=True, mode="json")
    await _put(settings, settings.channel_settings_topic, sender_key, orjson.dumps(body))
    return ChannelChange(sender_key, model, warnings)


async def delete_channel(settings: Settings, sender_key: str) -> None:
    """Remove a channel (a tombstone); refused when there is no such channel."""
    if sender_key not in await read_table(settings, "channels"):
        raise Refused(f"no channel {sender_key!r}")
    await _put(settings, settings.channel_settings_topic, sender_key, None)


async def put_sendno(settings: Settings, raw: str, status: str) -> tuple[str, SenderNumberStatus]:
    """Register a sender number (digits only, as the service keys them) as ACTIVE or BLOCKED."""
    number = _number(raw, "sender number")
    try:
        checked = SenderNumber.model_validate({"status": status.upper()}).status
    except (ValidationError, ValueError):
        raise Refused(f"status {status!r} is not ACTIVE or BLOCKED") from None
    await _put(settings, settings.sender_numbers_topic, number, orjson.dumps({"status": checked}))
    return number, checked


async def delete_sendno(settings: Settings, raw: str) -> str:
    """Unregister a sender number (a tombstone); refused when it is not registered."""
    number = _number(raw, "sender number")
    if number not in await read_table(settings, "sendnos"):
        raise Refused(f"sender number {number} is not registered")
    await _put(settings, settings.sender_numbers_topic, number, None)
    return number


# ---- topics (§1) ------------------------------------------------------------------------------


def wanted_topics(settings: Settings, partitions: int, replication: int) -> list[NewTopic]:
    """The six topics of the contract and the service's two internal ones."""
    data = (settings.input_topic, settings.output_topic, settings.events_topic, settings.dlq_topic)
    return (
        [NewTopic(t, partitions, replication) for t in data]
        + [
            NewTopic(t, 1, replication, topic_configs={"cleanup.policy": "compact"})
            for t in (settings.channel_settings_topic, settings.sender_numbers_topic)
        ]
        + [
            NewTopic(t.name, partitions, replication, topic_configs=t.config)
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


# ---- reading topics ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def reader(settings: Settings, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less consumer of `topic` (committed records only), all partitions known."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka()),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        for _ in range(100):
            if consumer.partitions_for_topic(topic):
                break
            await refresh_metadata(consumer)
            await asyncio.sleep(0.1)
        else:
            raise Refused(f"topic {topic} does not exist")
        yield consumer
    finally:
        await consumer.stop()


async def scan(
    settings: Settings,
    topic: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    partitions: Iterable[int] | None = None,
    follow: bool = False,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[ConsumerRecord]:
    """Records of `topic` from `since` (or the beginning) to its end now, or on with `follow`."""
    async with reader(settings, topic) as consumer:
        numbers = sorted(
            partitions if partitions is not None else consumer.partitions_for_topic(topic)
        )
        tps = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if since is not None:
            found = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in tps}
            )
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
        ends = await consumer.end_offsets(tps)
        until_ms = int(until.timestamp() * 1000) if until is not None else None
        while True:
            if stop is not None and stop.is_set():
                return
            if not follow:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind:
                    return
            batches = await consumer.getmany(timeout_ms=300, max_records=5000)
            for tp in sorted(batches):
                for record in batches[tp]:
                    if until_ms is not None and record.timestamp > until_ms:
                        continue
                    yield record


# ---- dead letters (§8) ------------------------------------------------------------------------


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


def _dead_letter(record: ConsumerRecord) -> DeadLetter:
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
        letter = _dead_letter(record)
        if error is None or letter.error == error:
            found.append(letter)
    return found


def replay_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original record's headers: without what the service added (x-fallback-*,
    x-original-*)."""
    return [(k, v) for k, v in letter.headers if not k.startswith(("x-fallback-", "x-original-"))]


async def replay(settings: Settings, letters: list[DeadLetter]) -> int:
    """Re-publish dead letters to the input topic, original key, value and headers."""
    async with producer(settings) as p:
        futures = [
            await p.send(settings.input_topic, d.value, key=d.key, headers=replay_headers(d))
            for d in letters
        ]
        await asyncio.gather(*futures)
    return len(futures)


# ---- outcomes and one fallback (§6, §7) -----------------------------------------------------


def outcome_filter(
    status: str | None, reason: str | None, sender_key: str | None
) -> Callable[[dict[str, Any]], bool]:
    def keep(outcome: dict[str, Any]) -> bool:
        return (
            (status is None or outcome.get("status") == status)
            and (reason is None or outcome.get("reason") == reason)
            and (sender_key is None or outcome.get("senderKey") == sender_key)
        )

    return keep


async def outcomes(
    settings: Settings,
    keep: Callable[[dict[str, Any]], bool],
    *,
    since: datetime | None = None,
    follow: bool = False,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[tuple[datetime, dict[str, Any]]]:
    """Outcome events (with their record time) that `keep` accepts."""
    async for record in scan(
        settings, settings.events_topic, since=since, follow=follow, stop=stop
    ):
        try:
            outcome = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(outcome, dict) and keep(outcome):
            yield datetime.fromtimestamp(record.timestamp / 1000, UTC), outcome


@dataclass
class Story:
    """Everything the topics say about one fallback."""

    fallback_id: str
    outcomes: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    dead_letters: list[DeadLetter]

    @property
    def found(self) -> bool:
        return bool(self.outcomes or self.requests or self.dead_letters)


async def find(settings: Settings, fid: str, *, since: datetime | None = None) -> Story:
    """The outcomes, SMS requests and dead letters of fallback `fid`.

    Outputs are keyed by fallbackId, so only one partition of each is read; dead letters keep
    the input's key, so the DLQ is read whole and matched on the event's ids.
    """
    story = Story(fid, [], [], [])
    outputs = ((settings.events_topic, story.outcomes), (settings.output_topic, story.requests))
    for topic, into in outputs:
        partitions = await partition_count(settings, topic)
        if partitions is None:
            raise Refused(f"topic {topic} does not exist")
        owner = owner_partition(fid, partitions)
        async for record in scan(settings, topic, since=since, partitions=[owner]):
            if record.key == fid.encode():
                into.append(orjson.loads(record.value or b"{}"))
    async for record in scan(settings, settings.dlq_topic, since=since):
        if record.key == fid.encode() or _event_id(record.value) == fid:
            story.dead_letters.append(_dead_letter(record))
    return story


def _event_id(value: bytes | None) -> str | None:
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and "requestId" in data and "recipientSeq" in data:
        return fallback_id(str(data["requestId"]), data["recipientSeq"])
    return None
