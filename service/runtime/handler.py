"""The batch handler: one consumed batch through the processor, and what each way it can end
means for the input (commit, hold and pause, rewind, stop).

The error ladder, in order: a held batch (the SMS provider is unavailable) commits what was
settled and pauses the input; stopping abandons the batch uncommitted; an `Unwritable` write
stops the service (exit 1) rather than stall every partition; partitions whose transactions
did not commit are read again, the others advance; anything else rewinds the whole batch and
backs off for a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from service.pipeline.batch import Held
from service.pipeline.seams import (
    InputRecord,
    Partition,
    PartitionsNotCommitted,
    Stopping,
    Unwritable,
)
from service.runtime.positions import Positions, first_offsets

log = logging.getLogger("fallback.service")

# After a batch failed unexpectedly, wait this long before it is read again (outside the lock).
FAILED_BATCH_BACKOFF_SECONDS = 1.0


class Consumer(Protocol):
    """What the handler asks of the group consumer (`service.kafka.consumer.GroupConsumer`)."""

    def assignment(self) -> Collection[Partition]: ...

    def seek(self, targets: Mapping[Partition, int]) -> None: ...


class Process(Protocol):
    async def process(self, records: Sequence[InputRecord]) -> None: ...


class Abandon(Protocol):
    async def abandon(self) -> None: ...


class BatchHandler:
    """Handles batches one at a time (under `lock`, which a rebalance also takes)."""

    def __init__(
        self,
        *,
        processor: Process,
        writer: Abandon,
        consumer: Consumer,
        positions: Positions,
        stopping: asyncio.Event,
        restored: asyncio.Event,
        pause: Callable[[float], None],
        on_progress: Callable[[], None] = lambda: None,
        on_held: Callable[[int], None] = lambda held: None,
        on_unwritable: Callable[[], None] = lambda: None,
        backoff: float = FAILED_BATCH_BACKOFF_SECONDS,
    ) -> None:
        self.processor = processor
        self.writer = writer
        self.consumer = consumer
        self.positions = positions
        self.stopping = stopping
        self.restored = restored
        self.pause = pause
        self.on_progress = on_progress
        self.on_held = on_held
        self.on_unwritable = on_unwritable
        self.backoff = backoff
        self.lock = asyncio.Lock()
        self.failed = asyncio.Event()  # set when the service cannot go on (serve stops it)

    async def __call__(self, records: tuple[Any, ...]) -> None:
        if not records or self.stopping.is_set():
            return  # left uncommitted: the next owner reads them again
        await self.restored.wait()
        if self.stopping.is_set():
            return
        async with self.lock:
            failed = await self._handle(records)
        if failed:
            # Back off outside the lock, so that a rebalance or a stop never waits for it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.backoff)

    async def _handle(self, records: Sequence[InputRecord]) -> bool:
        """Handle one batch; True when it failed and is to be read again after a backoff."""
        kept = self.positions.owned(records, self.consumer.assignment())
        owned: Sequence[InputRecord] = records if kept is None else kept
        if len(owned) < len(records):
            log.info(
                "dropped %d fetched records already done or owned elsewhere",
                len(records) - len(owned),
            )
        if not owned:
            return False
        try:
            await self.processor.process(owned)
        except Held as exc:
            # The SMS provider is unavailable: what was settled is committed; the rest is read
            # again once the sink may try, and nothing new is taken meanwhile.
            self.consumer.seek(self.positions.held(owned, exc.rewind, exc.done))
            self.on_held(exc.held)
            self.pause(exc.retry_after)
            self.on_progress()
        except Stopping as exc:
            log.warning("%s", exc)
            await self.writer.abandon()
        except Unwritable as exc:
            # Retrying would stall every partition forever: stop, loudly, uncommitted.
            log.critical("%s; stopping the service (nothing of the batch is committed)", exc)
            self.on_unwritable()
            await self.writer.abandon()
            self.failed.set()
        except PartitionsNotCommitted as exc:
            log.warning("%s; they will be read again", exc)
            await self.writer.abandon()
            self.consumer.seek(self.positions.partly_committed(owned, exc.committed))
            return True
        except Exception:
            # A later commit would cover these records: read them again instead of losing
            # them. A record that fails every time stalls its partition, loudly.
            log.exception("batch failed; it will be read again")
            await self.writer.abandon()
            self.consumer.seek(first_offsets(owned))
            return True
        else:
            self.positions.advance(owned)
            self.on_progress()
        return False
