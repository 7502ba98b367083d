"""What one batch of input records causes, and the `Committed` report of it for observation.

`Batch` is filled by `Processor.convert` (pure) and written by the processor's steps; once its
offsets are committed it becomes a `Committed` report, the only thing the observer sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from service.core.models import Malformed, Outcome, to_json
from service.core.rules import Decision
from service.core.settle import SettledOutcome, counts_as_requested, settle
from service.pipeline.seams import Delivery, Partition, Source, Write


@dataclass(slots=True)
class Batch:
    """What one batch of input records causes, in the order it must be written."""

    deliveries: list[Delivery] = field(default_factory=list)
    # Dead letters, and events forwarded to the partition that owns them (repartition topic).
    dead_letters: list[Write] = field(default_factory=list)
    routed: int = 0
    outcomes: list[Write] = field(default_factory=list)
    # Index in `outcomes` of each REQUESTED outcome → its delivery.
    requested_at: dict[int, Delivery] = field(default_factory=dict)
    # Index in `outcomes` of a REQUESTED outcome → its SENT/FAILED outcome (delivering sinks).
    settlements: dict[int, Write] = field(default_factory=dict)
    # Records whose outcomes were written again, as before a crash (`Dedupe.outcomes_in_flight`),
    # and those outcomes (counted once committed: they never were before the crash).
    replayed: list[Source] = field(default_factory=list)
    replayed_outcomes: list[Outcome] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    malformed: list[tuple[Source, Malformed]] = field(default_factory=list)
    settled: list[SettledOutcome] = field(default_factory=list)
    # Owner partition and id of each fallback whose marker was written.
    marked: list[tuple[int, tuple[int, int]]] = field(default_factory=list)
    offsets: dict[Partition, int] = field(default_factory=dict)

    def absorb(self, part: Batch) -> None:
        """Take in what a later part of the same batch decided (its writes stay with it)."""
        self.deliveries += part.deliveries
        self.routed += part.routed
        self.decisions += part.decisions
        self.malformed += part.malformed
        self.replayed += part.replayed
        self.replayed_outcomes += part.replayed_outcomes
        self.offsets.update(part.offsets)

    def settle(self, events_topic: str, now: Callable[[], str]) -> None:
        """The SENT/FAILED outcome of each request a delivering sink answered (§7), stamped
        with `now()` (taken once, when there is one)."""
        settled_at: str | None = None
        for index, delivery in self.requested_at.items():
            if delivery.answer is None or delivery.outcome is None:
                continue
            settled_at = settled_at or now()
            settled = settle(delivery.outcome, delivery.answer, settled_at)
            self.settled.append(settled)
            self.settlements[index] = Write(
                events_topic, delivery.key, to_json(settled), source=delivery.source
            )

    def markers(
        self,
        topic: str,
        stamp: str,
        marker: Callable[[str, str, Source, Sequence[bytes]], bytes],
    ) -> list[Write]:
        """The "requested" marker of each fallback that counts as requested (§5.1 rule 1), for
        its owner partition of `topic`, carrying the outcomes about to be written for it; they
        are `marked` from now on."""
        markers = []
        for index, d in self.requested_at.items():
            if not counts_as_requested(d.answer):
                continue
            outcomes = [self.outcomes[index].value or b""]
            settled = self.settlements.get(index)
            if settled is not None:
                outcomes.append(settled.value or b"")
            source = (d.source.topic, d.source.partition, d.offset)
            value = marker(d.request.fallbackId, stamp, source, outcomes)
            markers.append(Write(topic, d.key, value, [], d.source, d.owner))
            self.marked.append((d.owner, d.digest))
        return markers

    def outcomes_in_order(self) -> list[Write]:
        """The outcomes, each SENT/FAILED one right after its REQUESTED one (same key)."""
        if not self.settlements:
            return self.outcomes
        outcomes: list[Write] = []
        for index, write in enumerate(self.outcomes):
            outcomes.append(write)
            settled = self.settlements.get(index)
            if settled is not None:
                outcomes.append(settled)
        return outcomes

    def committed(self, records: int, elapsed: float) -> Committed:
        """The report of this batch once its offsets are committed."""
        return Committed(
            decisions=self.decisions,
            settled=self.settled,
            replayed=self.replayed_outcomes,
            malformed=self.malformed,
            routed=self.routed,
            records=records,
            elapsed=elapsed,
        )


@dataclass(frozen=True, slots=True)
class Committed:
    """What a committed batch did: the input of `service.pipeline.observe`."""

    decisions: list[Decision]
    settled: list[SettledOutcome]
    # Outcomes written again for records a crash cut short (never observed before).
    replayed: list[Outcome]
    malformed: list[tuple[Source, Malformed]]
    routed: int
    records: int
    elapsed: float


class Held(Exception):
    """The sink held some deliveries back: its provider is unavailable (§10).

    What could be settled was written and committed up to `rewind`, each partition's first held
    record; read the partitions again from there after `retry_after` seconds. The records in
    `done` lie past a held one but were fully handled (outcomes written): skip them when they
    come again.
    """

    def __init__(
        self,
        reason: str,
        retry_after: float,
        rewind: dict[Partition, int],
        done: set[tuple[Partition, int]],
        held: int,
    ) -> None:
        super().__init__(f"{held} requests held back: {reason}")
        self.reason = reason
        self.retry_after = retry_after
        self.rewind = rewind
        self.done = done
        self.held = held
