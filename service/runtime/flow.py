"""Flow control: the input paused while the sink cannot take requests, resumed with a probe."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class Pausable(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Probe(Protocol):
    def probe(self) -> None: ...


class Flow:
    """Takes no events until the sink may try again: the partitions stay assigned (the consumer
    keeps polling, so the group keeps them here), only their fetching stops."""

    def __init__(self, consumer: Pausable, sink: Probe, stopping: asyncio.Event) -> None:
        self.consumer = consumer
        self.sink = sink
        self.stopping = stopping
        self._resume: asyncio.Task[None] | None = None

    def pause(self, retry_after: float) -> None:
        self.consumer.pause()
        if self._resume is None or self._resume.done():
            self._resume = asyncio.create_task(self._resume_after(retry_after), name="resume")

    async def _resume_after(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        if self.stopping.is_set():
            return
        # The next request is the probe: it closes the breaker, or the batch is held again.
        self.sink.probe()
        self.consumer.resume()

    def cancel(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
