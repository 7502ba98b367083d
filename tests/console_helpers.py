"""What the console's tests share: a fake of its Kafka seam (the ops rules applied to
dictionaries), an index filled from plain outcomes, and logging in over HTTP."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from service.console.index import Batch, Index, dead_letter_row
from service.core.models import ChannelSettings, SenderNumberStatus
from service.core.rules import sender_number
from service.ops import Refused
from service.ops.audit import Actor
from service.ops.dlq import DeadLetter
from service.ops.tables import ChannelChange, SenderNumberChange

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class FakeOperations:
    """The console's seam with the tables in memory; each write is kept with its actor."""

    channel_table: dict[str, ChannelSettings] = field(default_factory=dict)
    sendno_table: dict[str, SenderNumberStatus] = field(default_factory=dict)
    writes: list[tuple[str, str, str]] = field(default_factory=list)  # (what, key, actor)
    replayed: list[DeadLetter] = field(default_factory=list)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def channels(self) -> dict[str, ChannelSettings]:
        return dict(self.channel_table)

    def sender_numbers(self) -> dict[str, SenderNumberStatus]:
        return dict(self.sendno_table)

    async def put_channel(
        self, sender_key: str, changes: dict[str, Any], actor: Actor
    ) -> ChannelChange:
        if not sender_key:
            raise Refused("a sender key is 1-64 characters", field="senderKey")
        existing = self.channel_table.get(sender_key)
        value = {**(existing.model_dump(exclude_none=True) if existing else {}), **changes}
        if value.get("sendNo") and sender_number(value["sendNo"]) is None:
            raise Refused("not a phone number", field="sendNo")
        try:
            model = ChannelSettings.model_validate(value)
        except ValidationError as exc:
            raise Refused(str(exc), field=str(exc.errors()[0]["loc"][0])) from None
        if existing == model:
            return ChannelChange(sender_key, model, changed=False)
        self.channel_table[sender_key] = model
        self.writes.append(("channel", sender_key, f"{actor.name}/{actor.via}"))
        return ChannelChange(sender_key, model)

    async def delete_channel(self, sender_key: str, actor: Actor) -> None:
        if self.channel_table.pop(sender_key, None) is None:
            raise Refused(f"no channel {sender_key!r}")
        self.writes.append(("channel-delete", sender_key, f"{actor.name}/{actor.via}"))

    async def put_sendno(self, number: str, status: str, actor: Actor) -> SenderNumberChange:
        digits = sender_number(number)
        if digits is None:
            raise Refused("not a phone number", field="number")
        try:
            checked = SenderNumberStatus(status.upper())
        except ValueError:
            raise Refused("not ACTIVE or BLOCKED", field="status") from None
        self.sendno_table[digits] = checked
        self.writes.append(("sendno", digits, f"{actor.name}/{actor.via}"))
        return SenderNumberChange(digits, checked)

    async def delete_sendno(self, number: str, actor: Actor) -> str:
        if self.sendno_table.pop(number, None) is None:
            raise Refused("not registered")
        self.writes.append(("sendno-delete", number, f"{actor.name}/{actor.via}"))
        return number

    async def replay(self, letters: list[DeadLetter], actor: Actor) -> int:
        self.replayed.extend(letters)
        self.writes.append(("replay", str(len(letters)), f"{actor.name}/{actor.via}"))
        return len(letters)

    async def request(self, fid: str, near_ms: int) -> dict[str, Any] | None:
        return self.requests.get(fid)


def outcome(fid: str, status: str, **fields: Any) -> dict[str, Any]:
    """An outcome event (§7) of fallback `fid` (`{requestId}:{seq}`)."""
    request_id, _, seq = fid.rpartition(":")
    return {
        "fallbackId": fid,
        "requestId": request_id,
        "recipientSeq": int(seq),
        "senderKey": fields.pop("senderKey", "CHANNEL"),
        "status": status,
        "reason": fields.pop("reason", None),
        "type": "SMS",
        "processedAt": "2026-12-02T10:00:00.000+09:00",
        **fields,
    }


def fill(index: Index, outcomes: list[tuple[int, dict[str, Any]]], *, start: int = 0) -> None:
    """Index `outcomes` (record time in ms, outcome) as partition 0 from offset `start`."""
    batch = Batch()
    for i, (at, value) in enumerate(outcomes, start):
        batch.outcomes.append((0, i, at, orjson.dumps(value)))
    batch.positions[("events", 0)] = start + len(outcomes)
    index.apply(batch)


def add_dead_letter(
    index: Index, offset: int, at: int, value: bytes, *, key: bytes | None = b"K", error: str = ""
) -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("x-fallback-error", (error or "invalid_event").encode()),
        ("x-fallback-error-detail", b"recipientNo: 01099998888 is not valid"),
        ("trace", b"t-1"),
    ]
    batch = Batch()
    batch.dead_letters.append(dead_letter_row(0, offset, at, key, value, headers))
    batch.positions[("dlq", 0)] = offset + 1
    index.apply(batch)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)
