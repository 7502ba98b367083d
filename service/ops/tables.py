"""The two tables operators change (§3, §4): channels and sender numbers, read as the service
reads them, written only when valid and only when something changes, each change audited."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from service.config import Settings
from service.core.models import ChannelSettings, SenderNumber, SenderNumberStatus, describe_errors
from service.core.rules import Registry, sender_number, unsubscribe_number
from service.kafka.options import client_options
from service.ops import Refused
from service.ops.audit import Actor, audit_record
from service.ops.records import producer
from service.state.tables import Table, decode_channel, decode_sender_number

CHANNELS = "channels"
SENDER_NUMBERS = "sender_numbers"


async def read_table(settings: Settings, which: str) -> dict[str, Any]:
    """The channel settings (`channels`) or sender-number table as the service sees it now."""
    options = client_options(settings.kafka())
    if which == CHANNELS:
        table: Table[Any] = Table(
            CHANNELS, settings.channel_settings_topic, decode_channel, options
        )
    else:
        table = Table(SENDER_NUMBERS, settings.sender_numbers_topic, decode_sender_number, options)
    await table.start()
    try:
        await asyncio.wait_for(table.wait_loaded(), 60)
        return dict(table.entries)
    finally:
        await table.stop()


async def _write(
    settings: Settings,
    actor: Actor,
    table: str,
    key: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """The table record (a tombstone when `after` is None) and its audit record."""
    topic = settings.channel_settings_topic if table == CHANNELS else settings.sender_numbers_topic
    value = None if after is None else orjson.dumps(after)
    audit = audit_record(actor, table, key, before, after, datetime.now(UTC))
    async with producer(settings) as p:
        written = await p.send(topic, value, key=key.encode())
        audited = await p.send(settings.audit_topic, audit, key=key.encode())
        await asyncio.gather(written, audited)


def _number(raw: str, what: str, field: str) -> str:
    digits = sender_number(raw)
    if digits is None:
        raise Refused(f"{what} {raw!r} is not a phone number of 8-12 digits", field=field)
    return digits


def _channel_value(channel: ChannelSettings) -> dict[str, Any]:
    return channel.model_dump(exclude_none=True, mode="json")


@dataclass
class ChannelChange:
    """A channel as it is after a put, whether the put changed it, and what an operator should
    know about it."""

    sender_key: str
    settings: ChannelSettings
    warnings: list[str] = field(default_factory=list)
    changed: bool = True


async def put_channel(
    settings: Settings,
    sender_key: str,
    changes: dict[str, Any],
    *,
    replace: bool,
    strict: bool,
    actor: Actor,
) -> ChannelChange:
    """Write a channel's settings, merged over the current value unless `replace`.

    Validated with the service's own model and number rules before anything is written; nothing
    is written when nothing would change (`changed` is then False).
    """
    if not sender_key or len(sender_key) > 64:
        raise Refused("a sender key is 1-64 characters", field="senderKey")
    existing = (await read_table(settings, CHANNELS)).get(sender_key)
    current = _channel_value(existing) if existing is not None and not replace else {}
    value = {**current, **changes}
    if "enabled" not in value:
        raise Refused(
            f"channel {sender_key} is new: say whether it is enabled (--enabled or --disabled)",
            field="enabled",
        )
    if value.get("sendNo"):
        value["sendNo"] = _number(value["sendNo"], "sender number", "sendNo")
    unsubscribe = value.get("unsubscribeNo")
    if unsubscribe:
        digits = unsubscribe_number(unsubscribe)
        if digits is None:
            raise Refused(
                f"opt-out number {unsubscribe!r} is not 080 and 7-8 more digits",
                field="unsubscribeNo",
            )
        value["unsubscribeNo"] = digits
    try:
        model = ChannelSettings.model_validate(value)
    except ValidationError as exc:
        where = exc.errors()[0]["loc"]
        raise Refused(
            f"channel {sender_key}: {describe_errors(exc, 'value')}",
            field=str(where[0]) if where else None,
        ) from None
    if existing is not None and _channel_value(existing) == _channel_value(model):
        return ChannelChange(sender_key, existing, changed=False)
    warnings = []
    if model.sendNo and settings.sendno_registry is Registry.ENFORCE:
        status = (await read_table(settings, SENDER_NUMBERS)).get(model.sendNo)
        if status is not SenderNumberStatus.ACTIVE:
            problem = (
                f"sender number {model.sendNo} is "
                + ("not registered" if status is None else "BLOCKED")
                + ": fallbacks of this channel will be REJECTED until it is ACTIVE"
            )
            if strict:
                raise Refused(problem, field="sendNo")
            warnings.append(problem)
    before = _channel_value(existing) if existing is not None else None
    await _write(settings, actor, CHANNELS, sender_key, before, _channel_value(model))
    return ChannelChange(sender_key, model, warnings)


async def delete_channel(settings: Settings, sender_key: str, *, actor: Actor) -> None:
    """Remove a channel (a tombstone); refused when there is no such channel."""
    existing = (await read_table(settings, CHANNELS)).get(sender_key)
    if existing is None:
        raise Refused(f"no channel {sender_key!r}")
    await _write(settings, actor, CHANNELS, sender_key, _channel_value(existing), None)


@dataclass
class SenderNumberChange:
    """A sender number after a put, and whether the put changed it."""

    number: str
    status: SenderNumberStatus
    changed: bool = True


async def put_sendno(
    settings: Settings, raw: str, status: str, *, actor: Actor
) -> SenderNumberChange:
    """Register a sender number (digits only, as the service keys them) as ACTIVE or BLOCKED;
    nothing is written when it already has that status."""
    number = _number(raw, "sender number", "number")
    try:
        checked = SenderNumber.model_validate({"status": status.upper()}).status
    except (ValidationError, ValueError):
        raise Refused(f"status {status!r} is not ACTIVE or BLOCKED", field="status") from None
    existing = (await read_table(settings, SENDER_NUMBERS)).get(number)
    if existing is checked:
        return SenderNumberChange(number, checked, changed=False)
    before = None if existing is None else {"status": existing.value}
    await _write(settings, actor, SENDER_NUMBERS, number, before, {"status": checked.value})
    return SenderNumberChange(number, checked)


async def delete_sendno(settings: Settings, raw: str, *, actor: Actor) -> str:
    """Unregister a sender number (a tombstone); refused when it is not registered."""
    number = _number(raw, "sender number", "number")
    existing = (await read_table(settings, SENDER_NUMBERS)).get(number)
    if existing is None:
        raise Refused(f"sender number {number} is not registered")
    await _write(settings, actor, SENDER_NUMBERS, number, {"status": existing.value}, None)
    return number
