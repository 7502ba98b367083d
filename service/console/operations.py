"""What the console's pages do to the topics, behind one seam: the tables as the service reads
them (followed live), the operator writes of `service.ops`, and the bounded request read."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from service.config import Settings
from service.console.follow import Budget, read_request
from service.core.models import ChannelSettings, SenderNumberStatus
from service.kafka.options import client_options
from service.ops import tables
from service.ops.audit import Actor
from service.ops.dlq import DeadLetter, replay
from service.state.tables import Table, decode_channel, decode_sender_number

# How long a page waits after a write for the followed table to show it.
_SHOWN_WITHIN = 5.0


class Operations(Protocol):
    """The console's seam to Kafka (a fake in the quick tests)."""

    def channels(self) -> dict[str, ChannelSettings]: ...

    def sender_numbers(self) -> dict[str, SenderNumberStatus]: ...

    async def put_channel(
        self, sender_key: str, changes: dict[str, Any], actor: Actor
    ) -> tables.ChannelChange: ...

    async def delete_channel(self, sender_key: str, actor: Actor) -> None: ...

    async def put_sendno(
        self, number: str, status: str, actor: Actor
    ) -> tables.SenderNumberChange: ...

    async def delete_sendno(self, number: str, actor: Actor) -> str: ...

    async def replay(self, letters: list[DeadLetter], actor: Actor) -> int: ...

    async def request(self, fid: str, near_ms: int) -> dict[str, Any] | None: ...


class KafkaOperations:
    """`Operations` on the real topics, through the functions the CLI verbs use."""

    def __init__(self, settings: Settings, budget: Budget) -> None:
        self._settings = settings
        self._budget = budget
        options = client_options(settings.kafka())
        self._channels: Table[ChannelSettings] = Table(
            tables.CHANNELS, settings.channel_settings_topic, decode_channel, options
        )
        self._sendnos: Table[SenderNumberStatus] = Table(
            tables.SENDER_NUMBERS, settings.sender_numbers_topic, decode_sender_number, options
        )

    async def start(self) -> None:
        await self._channels.start()
        await self._sendnos.start()
        await asyncio.wait_for(
            asyncio.gather(self._channels.wait_loaded(), self._sendnos.wait_loaded()), 60
        )

    async def stop(self) -> None:
        await self._channels.stop()
        await self._sendnos.stop()

    def channels(self) -> dict[str, ChannelSettings]:
        return dict(self._channels.entries)

    def sender_numbers(self) -> dict[str, SenderNumberStatus]:
        return dict(self._sendnos.entries)

    async def _shown(self, table: Table[Any], key: str, value: Any) -> None:
        # The page after a write reads the followed table: wait until the write is in it.
        deadline = time.monotonic() + _SHOWN_WITHIN
        # The table has no event per key; a page waits this way for a moment, once per write.
        while table.entries.get(key) != value and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def put_channel(
        self, sender_key: str, changes: dict[str, Any], actor: Actor
    ) -> tables.ChannelChange:
        change = await tables.put_channel(
            self._settings, sender_key, changes, replace=False, strict=False, actor=actor
        )
        await self._shown(self._channels, sender_key, change.settings)
        return change

    async def delete_channel(self, sender_key: str, actor: Actor) -> None:
        await tables.delete_channel(self._settings, sender_key, actor=actor)
        await self._shown(self._channels, sender_key, None)

    async def put_sendno(self, number: str, status: str, actor: Actor) -> tables.SenderNumberChange:
        change = await tables.put_sendno(self._settings, number, status, actor=actor)
        await self._shown(self._sendnos, change.number, change.status)
        return change

    async def delete_sendno(self, number: str, actor: Actor) -> str:
        digits = await tables.delete_sendno(self._settings, number, actor=actor)
        await self._shown(self._sendnos, digits, None)
        return digits

    async def replay(self, letters: list[DeadLetter], actor: Actor) -> int:
        return await replay(self._settings, letters, actor=actor)

    async def request(self, fid: str, near_ms: int) -> dict[str, Any] | None:
        return await read_request(self._settings, self._budget, fid, near_ms)
