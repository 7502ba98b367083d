"""Outcomes (§7) filtered and followed, and one fallback's whole story across the topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from service.config import Settings
from service.core.models import FINAL_STATUSES, Status
from service.kafka.admin import partition_count
from service.kafka.options import keyed_partition
from service.ops import Refused
from service.ops.dlq import DeadLetter, dead_letter_of, event_fallback_id
from service.ops.records import scan


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

    @property
    def final(self) -> dict[str, Any] | None:
        """Its final outcome (§7): DELIVERED, UNDELIVERED or EXPIRED; the first one written, as
        a consumer of the events topic keeps it."""
        return next((o for o in self.outcomes if o.get("status") in FINAL_STATUSES), None)

    def answer(self) -> str:
        """The answer to "did the customer get it?": the final outcome, or where it stands."""
        final = self.final
        if final is not None:
            delivery = final.get("delivery") or {}
            if final["status"] == Status.EXPIRED:
                return f"EXPIRED: no result came by the deadline ({final.get('processedAt')})"
            how = " ".join(
                str(part)
                for part in (
                    delivery.get("provider"),
                    delivery.get("resultCode"),
                    delivery.get("resultMessage"),
                    delivery.get("telecom"),
                )
                if part
            )
            return (
                f"{final['status']} at {delivery.get('reportedAt')}, "
                f"{delivery.get('latencyMs')} ms after the AlimTalk failure ({how})"
            )
        statuses = {o.get("status") for o in self.outcomes}
        failed = [o for o in self.outcomes if o.get("status") == Status.FAILED]
        if failed:
            name = (failed[-1].get("provider") or {}).get("name") or "the provider"
            return f"not sent: {name} answered FAILED {failed[-1].get('reason')}"
        sent = [o for o in self.outcomes if o.get("status") == Status.SENT]
        if sent:
            # With failover the provider that took it is not always the first listed (§10).
            name = (sent[-1].get("provider") or {}).get("name") or "the provider"
            return f"sent by {name}, no delivery result yet (or results are off)"
        if statuses & {Status.REQUESTED}:
            return "handed over, no delivery result yet (or results are off)"
        if self.outcomes:
            return f"not sent: {self.outcomes[-1].get('status')} {self.outcomes[-1].get('reason')}"
        if self.dead_letters:
            return "not sent: its event is in the dead-letter topic"
        return "unknown"


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
        owner = keyed_partition(fid.encode(), partitions)
        async for record in scan(settings, topic, since=since, partitions=[owner]):
            if record.key == fid.encode():
                into.append(orjson.loads(record.value or b"{}"))
    async for record in scan(settings, settings.dlq_topic, since=since):
        if record.key == fid.encode() or event_fallback_id(record.value) == fid:
            story.dead_letters.append(dead_letter_of(record))
    return story
