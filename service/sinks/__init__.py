"""The sink seam: where SMS requests are handed over (contract §6, §10).

A sink takes the REQUESTED fallbacks of a batch. A publishing sink (`kafka`) hands them to the
SMS service and leaves `Delivery.answer` empty; a delivering sink (`nhn`) sends them
itself and sets the provider's answer, which `service.core.settle` turns into SENT or FAILED.
A delivering sink whose provider is unavailable leaves a delivery `held`: nothing is recorded for
it, its input record is read again, and the shell pauses its input until the sink may try again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition

from service.core.models import SmsRequest
from service.core.settle import ProviderAnswer


@dataclass(slots=True)
class Delivery:
    """One request to hand over, the input partition that caused it, and the provider's answer."""

    request: SmsRequest
    source: TopicPartition
    answer: ProviderAnswer | None = None
    # Not settled: the provider is unavailable. Its input record must be read again later.
    held: bool = False


class Sink(Protocol):
    """Where REQUESTED fallbacks go."""

    name: str
    # A delivering sink (answers, may hold) gets each batch's deliveries in one call; a
    # publishing one gets them a part at a time, each part written on while the next converts.
    delivers: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Hand every request over; return once each is acknowledged (and answered, for a
        delivering sink, in `Delivery.answer`) or `held`. The same fallbackId never appears
        twice in one call."""
        ...

    def unavailable(self) -> str | None:
        """Why the sink cannot take requests now (shown on /readyz), or None."""
        ...

    def retry_in(self) -> float:
        """Seconds to wait, after a delivery was held, before `probe()`."""
        ...

    def probe(self) -> None:
        """Let the next delivery try the provider again."""
        ...
