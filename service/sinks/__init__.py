"""The sink seam: where SMS requests are handed over (contract §6, §10).

A sink takes the REQUESTED fallbacks of a batch. A publishing sink (`kafka`) hands them to the
SMS service and leaves `Delivery.answer` empty; a delivering sink (`nhn`, later) sends them
itself and sets the provider's answer, which `service.core.settle` turns into SENT or FAILED.
A sink that cannot take more now raises `SinkUnavailable`, and the shell pauses its input.
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


class SinkUnavailable(Exception):
    """The sink cannot take requests now; try again after `retry_after` seconds."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Sink(Protocol):
    """Where REQUESTED fallbacks go."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Hand every request over; return once each is acknowledged (and answered, for a
        delivering sink, in `Delivery.answer`). Order within one recipient is kept."""
        ...
