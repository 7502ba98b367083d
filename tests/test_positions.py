"""Positions on plain records: ownership, floors, records done past a held one, rewinds."""

from __future__ import annotations

from dataclasses import dataclass

from service.pipeline.seams import Partition
from service.runtime.positions import Positions, first_offsets

A0, A1 = Partition("in", 0), Partition("in", 1)


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    timestamp: int = 0
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def recs(partition: int, *offsets: int) -> list[Rec]:
    return [Rec("in", partition, o) for o in offsets]


def test_a_batch_wholly_owned_and_new_is_taken_as_it_is() -> None:
    positions = Positions()
    assert positions.owned(recs(0, 0, 1, 2), {A0}) is None


def test_records_of_partitions_no_longer_assigned_are_dropped() -> None:
    positions = Positions()
    batch = recs(0, 5, 6) + recs(1, 3)
    assert positions.owned(batch, {A1}) == recs(1, 3)


def test_records_below_the_floor_are_dropped_the_rest_kept() -> None:
    positions = Positions()
    positions.assigned({A0: 6})  # a previous owner committed up to 6
    assert positions.owned(recs(0, 4, 5, 6, 7), {A0}) == recs(0, 6, 7)


def test_advance_moves_the_floor_past_the_last_record_of_each_partition() -> None:
    positions = Positions()
    positions.advance(recs(0, 1, 2) + recs(1, 9))
    assert positions.floors == {A0: 3, A1: 10}
    assert positions.owned(recs(0, 2, 3), {A0}) == recs(0, 3)


def test_a_held_batch_commits_before_the_first_held_record_and_skips_the_done_after() -> None:
    positions = Positions()
    batch = recs(0, 10, 11, 12, 13)
    # 11 was held; 13 lies past it but was fully handled.
    seek = positions.held(batch, {A0: 11}, {(A0, 13)})
    assert seek == {A0: 11}
    assert positions.floors == {A0: 11}
    again = positions.owned(recs(0, 11, 12, 13, 14), {A0})
    assert again == recs(0, 11, 12, 14)
    assert positions.done == set()  # seen again once: forgotten


def test_done_records_below_the_floor_are_forgotten() -> None:
    positions = Positions()
    positions.held(recs(0, 1, 2, 3), {A0: 2}, {(A0, 3)})
    positions.advance(recs(0, 5))
    assert positions.owned(recs(0, 6), {A0}) == recs(0, 6)
    assert positions.done == set()


def test_revoked_partitions_lose_their_done_records() -> None:
    positions = Positions()
    positions.held(recs(0, 1, 2) + recs(1, 1, 2), {A0: 1, A1: 1}, {(A0, 2), (A1, 2)})
    positions.revoked({A1})
    assert positions.done == {(A0, 2)}


def test_partly_committed_advances_the_committed_and_rewinds_the_others() -> None:
    positions = Positions()
    batch = recs(0, 4, 5) + recs(1, 7, 8)
    seek = positions.partly_committed(batch, {A0})
    assert seek == {A1: 7}
    assert positions.floors == {A0: 6}


def test_floors_keyed_by_aiokafka_partitions_match_plain_ones() -> None:
    from aiokafka import TopicPartition

    positions = Positions()
    positions.assigned({TopicPartition("in", 0): 3})
    assert positions.owned(recs(0, 2, 3), {TopicPartition("in", 0)}) == recs(0, 3)


def test_first_offsets() -> None:
    assert first_offsets(recs(0, 3, 4) + recs(1, 9) + recs(0, 5)) == {A0: 3, A1: 9}
