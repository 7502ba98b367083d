"""The rebalance listener: the batch in flight finishes, state follows the partitions (§9)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from service.pipeline.seams import Partition, Writer
from service.runtime.positions import Positions

log = logging.getLogger("fallback.service")


class Restorable(Protocol):
    """The dedupe state as the listener moves it (`service.state.dedupe.PartitionedDedupe`)."""

    def drop(self, partitions: Iterable[int]) -> None: ...

    async def restore(
        self, partitions: Iterable[int], committed: Mapping[Any, int | None] = ...
    ) -> None: ...


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked: finish the batch (under `lock`), commit, drop the partitions' state.
    Assigned: fence and read the floors (writer), restore the state, open the gate."""

    def __init__(
        self,
        *,
        lock: asyncio.Lock,
        writer: Writer,
        requested: Restorable,
        positions: Positions,
        restored: asyncio.Event,
        committed: Callable[[set[Partition]], Awaitable[dict[Partition, int | None]]],
        reads_in_flight_markers: bool,
    ) -> None:
        self.lock = lock
        self.writer = writer
        self.requested = requested
        self.positions = positions
        self.restored = restored
        self.committed = committed
        self.reads_in_flight_markers = reads_in_flight_markers

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # aiokafka fetches for a new assignment before on_partitions_assigned has finished:
        # close the gate now, so no batch is handled until the changelog is caught up.
        self.restored.clear()
        # The batch in flight writes its markers and commits before another member takes over.
        async with self.lock:
            await self.writer.revoked(revoked)
            # The state of partitions given up goes with them; the next owner restores it.
            self.requested.drop({tp.partition for tp in revoked})
            self.positions.revoked({Partition(*tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Exactly-once: fence the previous owners first, then read where they committed.
        self.positions.assigned(await self.writer.assigned(assigned))
        # The previous owner committed (or was fenced) before this: its markers are final, and
        # (at-least-once) those of records past the committed offsets were cut short by a
        # crash. Exactly-once reads no such marker: it was in an aborted transaction.
        partitions = {Partition(*tp) for tp in assigned}
        committed = await self.committed(partitions) if self.reads_in_flight_markers else {}
        await self.requested.restore({tp.partition for tp in assigned}, committed)
        self.restored.set()
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
