"""Tables kept from compacted topics: channel settings and sender numbers (§3, §4).

Each replica reads every partition from the beginning with a group-less consumer, is *loaded*
once its positions reach the end offsets captured at start, and then keeps following.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from service.compat import refresh_metadata
from service.core.models import (
    ChannelSettings,
    SenderNumber,
    SenderNumberStatus,
    describe_errors,
)
from service.core.rules import phone_digits
from service.logs import mask_number, mask_numbers_in

log = logging.getLogger("fallback.tables")

V = TypeVar("V")


class InvalidRecord(ValueError):
    """A table record that does not validate; the previous value stays in force (§3)."""


class Table(Generic[V]):
    """A key → value map following one compacted topic. Tombstones delete."""

    def __init__(
        self,
        name: str,
        topic: str,
        decode: Callable[[ConsumerRecord], tuple[str, V | None]],
        consumer_options: Mapping[str, Any],
        *,
        on_invalid: Callable[[str, str], None] = lambda table, detail: None,
        on_change: Callable[[str, int, int], None] = lambda table, size, read: None,
    ) -> None:
        self.name = name
        self.topic = topic
        self.entries: dict[str, V] = {}
        self._decode = decode
        self._options = dict(consumer_options)
        self._on_invalid = on_invalid
        self._on_change = on_change
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._partitions: list[TopicPartition] = []
        self.loaded = asyncio.Event()

    def get(self, key: str) -> V | None:
        return self.entries.get(key)

    def __len__(self) -> int:
        return len(self.entries)

    async def start(self) -> None:
        """Assign every partition from the beginning and start following; see `wait_loaded`."""
        consumer = AIOKafkaConsumer(
            **self._options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Short fetch waits: a channel or sender-number change applies within milliseconds.
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await self._wait_for_partitions(consumer)
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        ends = await consumer.end_offsets(self._partitions)
        self._task = asyncio.create_task(self._follow(consumer, ends), name=f"table-{self.name}")

    async def _wait_for_partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        # The topic is created by whoever deploys the service: wait for it, saying so. A new
        # consumer knows no topic until it has asked, so the first refresh comes before a warning.
        await refresh_metadata(consumer)
        warned = False
        while True:
            partitions = consumer.partitions_for_topic(self.topic)
            if partitions:
                return set(partitions)
            if not warned:
                log.warning("table %s: waiting for topic %s to exist", self.name, self.topic)
                warned = True
            await asyncio.sleep(0.5)
            await refresh_metadata(consumer)

    async def wait_loaded(self) -> None:
        await self.loaded.wait()

    async def _follow(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            except KafkaError as exc:
                log.error("table %s: reading %s failed, retrying: %s", self.name, self.topic, exc)
                await asyncio.sleep(1)
                continue
            read = 0
            for records in batches.values():
                read += len(records)
                for record in records:
                    self._apply(record)
            if not self.loaded.is_set() and await _at_end(consumer, ends):
                log.info("table %s loaded: %d entries", self.name, len(self.entries))
                self.loaded.set()
            if batches:
                self._on_change(self.name, len(self.entries), read)

    def _apply(self, record: ConsumerRecord) -> None:
        try:
            key, value = self._decode(record)
        except InvalidRecord as exc:
            log.error(
                "table %s: ignored invalid record at %s[%d]@%d: %s",
                self.name,
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            self._on_invalid(self.name, str(exc))
            return
        if value is None:
            self.entries.pop(key, None)
        else:
            self.entries[key] = value

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    # Positions, not the offsets of records seen: compaction leaves gaps before the end.
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def _key(record: ConsumerRecord) -> str:
    if record.key is None:
        raise InvalidRecord("record has no key")
    try:
        return bytes(record.key).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRecord("key is not UTF-8") from None


def _json(record: ConsumerRecord) -> Any:
    try:
        return orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value is not JSON: {exc}") from None


def decode_channel(record: ConsumerRecord) -> tuple[str, ChannelSettings | None]:
    """senderKey → channel settings (§3)."""
    key = _key(record)
    if record.value is None:
        return key, None
    try:
        return key, ChannelSettings.model_validate(_json(record))
    except ValidationError as exc:
        raise InvalidRecord(f"channel {key!r}: {describe_errors(exc, 'value')}") from None


def decode_sender_number(record: ConsumerRecord) -> tuple[str, SenderNumberStatus | None]:
    """Sender number digits → ACTIVE/BLOCKED (§4). Keys are normalised like event numbers."""
    raw = _key(record)
    key = phone_digits(raw)
    if key is None:
        raise InvalidRecord(f"sender number key {mask_numbers_in(raw)!r} is not a phone number")
    if record.value is None:
        return key, None
    try:
        return key, SenderNumber.model_validate(_json(record)).status
    except ValidationError as exc:
        raise InvalidRecord(
            f"sender number {mask_number(key)}: {describe_errors(exc, 'value')}"
        ) from None
