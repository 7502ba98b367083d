"""A sink that keeps what it is given in a list: the test double of the sink seam."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from service.core.settle import ProviderAnswer
from service.sinks import Delivery


class ListSink:
    """Collects every delivered request; `answer` (optional) plays a delivering provider."""

    name = "list"

    def __init__(self, answer: Callable[[Delivery], ProviderAnswer | None] | None = None) -> None:
        self.delivered: list[Delivery] = []
        self._answer = answer
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if self._answer is not None:
                d.answer = self._answer(d)
            self.delivered.append(d)
