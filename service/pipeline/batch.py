"""What one batch of input records causes, and the `Committed` report of it for observation.

`Batch` is filled by `Processor.convert` (pure) and written by the processor's steps; once its
offsets are committed it becomes a `Committed` report, the only thing the observer sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from service.core.models import Malformed, Outcome, to_json
from service.core.results import DeliveryResult, FinalOutcome, Ignored, judge_awaited
from service.core.rules import Decision
from service.core.settle import SettledOutcome, counts_as_requested, settle
from service.pipeline.seams import Delivery, Partition, ResultChanges, Source, Write

# Makes a requested marker: fallbackId, requestedAt, source, outcomes, awaits, final.
MarkerFormat = Callable[..., bytes]


@dataclass(slots=True)
class BatchResults:
    """What the delivery results and expiries of one batch do (§11; `service.pipeline.results`)."""

    # Final markers and early records, written with the requested markers.
    markers: list[Write] = field(default_factory=list)
    # Final outcomes of results and expiries, written after the batch's other outcomes.
    outcomes: list[Write] = field(default_factory=list)
    finals: list[FinalOutcome] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    replayed: int = 0
    changes: ResultChanges = field(default_factory=ResultChanges)
    seen: Seen = field(default_factory=lambda: Seen())

    def merge(self, part: BatchResults) -> None:
        """Take in what a part of the same batch did, once its markers are written."""
        self.finals += part.finals
        self.ignored += part.ignored
        self.replayed += part.replayed
        self.changes.early += part.changes.early
        self.changes.awaiting += part.changes.awaiting
        self.changes.finals += part.changes.finals


@dataclass(slots=True)
class Seen:
    """What the parts of one batch share about results: the fallbacks requested in it
    (fallbackId → delivery), the early results read in it, and those it made final."""

    requested: dict[str, Delivery] = field(default_factory=dict)
    early: dict[str, DeliveryResult] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)


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
    results: BatchResults = field(default_factory=BatchResults)
    # Index in `outcomes` of a REQUESTED outcome → the final outcome its early result made.
    early_finals: dict[int, tuple[Write, str]] = field(default_factory=dict)

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

    def finish_early(self, events_topic: str, now: datetime) -> None:
        """The final outcome of each request of the batch whose result came first (§11), once
        it is settled: only a fallback that counts as requested awaits one."""
        for index, d in self.requested_at.items():
            if d.early is None or d.awaits is None:
                continue
            if not counts_as_requested(d.answer):
                self.results.ignored.append(Ignored.NEVER_REQUESTED)
                continue
            final = judge_awaited(d.early, d.awaits, now)
            if isinstance(final, Ignored):
                self.results.ignored.append(final)
                continue
            self.results.finals.append(final)
            write = Write(events_topic, d.key, orjson.dumps(final), source=d.source)
            self.early_finals[index] = (write, final.status.value)

    def markers(self, topic: str, stamp: str, marker: MarkerFormat) -> list[Write]:
        """The "requested" marker of each fallback that counts as requested (§5.1 rule 1), for
        its owner partition of `topic`, carrying the outcomes about to be written for it, and
        what it awaits with results on; they are `marked` from now on. Then the final markers
        and early records of the batch's results."""
        markers = []
        for index, d in self.requested_at.items():
            d.marked = True
            if not counts_as_requested(d.answer):
                continue
            outcomes = [self.outcomes[index].value or b""]
            settled = self.settlements.get(index)
            if settled is not None:
                outcomes.append(settled.value or b"")
            final = self.early_finals.get(index)
            status = None
            if final is not None:
                outcomes.append(final[0].value or b"")
                status = final[1]
                self.results.changes.finals.append((d.owner, d.digest, status))
            elif d.awaits is not None:
                self.results.changes.awaiting.append((d.owner, d.digest, d.awaits))
            source = (d.source.topic, d.source.partition, d.offset)
            value = marker(d.request.fallbackId, stamp, source, outcomes, d.awaits, status)
            markers.append(Write(topic, d.key, value, [], d.source, d.owner))
            self.marked.append((d.owner, d.digest))
        return markers + self.results.markers

    def outcomes_in_order(self) -> list[Write]:
        """The outcomes, each SENT/FAILED one right after its REQUESTED one (same key)."""
        finals = self.results.outcomes
        if not self.settlements and not self.early_finals:
            return self.outcomes + finals if finals else self.outcomes
        outcomes: list[Write] = []
        for index, write in enumerate(self.outcomes):
            outcomes.append(write)
            settled = self.settlements.get(index)
            if settled is not None:
                outcomes.append(settled)
            final = self.early_finals.get(index)
            if final is not None:
                outcomes.append(final[0])
        return outcomes + finals

    def committed(self, records: int, elapsed: float) -> Committed:
        """The report of this batch once its offsets are committed."""
        return Committed(
            decisions=self.decisions,
            settled=self.settled,
            replayed=self.replayed_outcomes,
            malformed=self.malformed,
            routed=self.routed,
            finals=self.results.finals,
            ignored=self.results.ignored,
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
    # With delivery results on: the final outcomes written, and the results ignored (§11).
    finals: list[FinalOutcome] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)


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
