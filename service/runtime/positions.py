"""Where each input partition stands for this replica: what it owns, what is done, where to
read again. Pure: plain records and partitions in, decisions out; the runtime applies them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from service.pipeline.seams import InputRecord, Partition

R = TypeVar("R", bound=InputRecord)


def first_offsets(records: Iterable[InputRecord]) -> dict[Partition, int]:
    """The first offset of each partition among `records`: where to read them again."""
    first: dict[Partition, int] = {}
    for record in records:
        first.setdefault(Partition(record.topic, record.partition), record.offset)
    return first


class Positions:
    """Per partition, the offset below which fetched records are already done (`floors`):
    committed by a previous owner (exactly-once, set on assignment) or by this replica's last
    batch, so a batch fetched before a seek is not handled twice. And the records past a held
    one that were fully handled (`done`): skipped when they are read again (§10)."""

    def __init__(self) -> None:
        self.floors: dict[Partition, int] = {}
        self.done: set[tuple[Partition, int]] = set()

    def assigned(self, floors: Mapping[Partition, int]) -> None:
        """Take the floors a new assignment starts from (previous owners' commits)."""
        self.floors = {Partition(*tp): offset for tp, offset in floors.items()}

    def revoked(self, partitions: Collection[Partition]) -> None:
        self.done = {(tp, off) for tp, off in self.done if tp not in partitions}

    def owned(self, records: Sequence[R], assignment: Collection[Partition]) -> list[R] | None:
        """The records this replica still owns and has not handled yet, or None when that is
        all of them (the usual case, decided from each partition's first record)."""
        floors = self.floors
        done = self.done
        if not done and all(
            tp in assignment and offset >= floors.get(tp, 0)
            for tp, offset in first_offsets(records).items()
        ):
            return None
        kept = [
            r
            for r in records
            if (tp := Partition(r.topic, r.partition)) in assignment
            and r.offset >= floors.get(tp, 0)
            and (tp, r.offset) not in done
        ]
        if done:
            seen = {(Partition(r.topic, r.partition), r.offset) for r in records}
            self.done = {(tp, o) for tp, o in done if o >= floors.get(tp, 0)} - seen
        return kept

    def advance(self, records: Iterable[InputRecord]) -> None:
        """`records` are committed: the next batch starts after them."""
        floors = self.floors
        for r in records:
            floors[Partition(r.topic, r.partition)] = r.offset + 1

    def held(
        self,
        records: Sequence[InputRecord],
        rewind: Mapping[Partition, int],
        done: Iterable[tuple[Partition, int]],
    ) -> dict[Partition, int]:
        """A batch partly held back: advance past what was committed (before each partition's
        first held record), remember what lies past it but is done; where to read again."""
        self.advance(
            r
            for r in records
            if r.offset < rewind.get(Partition(r.topic, r.partition), r.offset + 1)
        )
        self.done |= set(done)
        return {Partition(*tp): offset for tp, offset in rewind.items()}

    def partly_committed(
        self, records: Sequence[InputRecord], committed: Collection[Partition]
    ) -> dict[Partition, int]:
        """Some partitions' transactions committed, the others not: advance the first, and
        where to read the others again."""
        self.advance(r for r in records if (r.topic, r.partition) in committed)
        return first_offsets(r for r in records if (r.topic, r.partition) not in committed)
