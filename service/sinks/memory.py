"""A sink that keeps what it is given in a list: the test double of the sink seam."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from service.core.settle import ProviderAnswer
from service.pipeline.seams import Delivery


class ListSink:
    """Collects every delivered request; `answer` (optional) plays a delivering provider, and
    `hold` (optional) one that is unavailable for the deliveries it names."""

    name = "list"

    def __init__(
        self,
        answer: Callable[[Delivery], ProviderAnswer | None] | None = None,
        *,
        hold: Callable[[Delivery], bool] | None = None,
    ) -> None:
        self.delivered: list[Delivery] = []
        self.held: list[Delivery] = []
        self._answer = answer
        self._hold = hold
        self.delivers = answer is not None or hold is not None
        self.started = False
        self.probes = 0

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if self._hold is not None and self._hold(d):
                d.held = True
                self.held.append(d)
                continue
            if self._answer is not None:
                d.answer = self._answer(d)
            self.delivered.append(d)

    def unavailable(self) -> str | None:
        return "held by the test" if self.held and self._hold is not None else None

    def retry_in(self) -> float:
        return 0.01

    def probe(self) -> None:
        self.probes += 1
