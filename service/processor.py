"""One batch of input records → the sink, the writer, the commit, in that order (§8, §9).

The conversion itself is `service.core.rules.decide`. This module turns records into
deliveries and writes, hands them to the sink and the writer in the order the guarantees need,
commits, and only then has what was done observed (metrics, outcome logs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from aiokafka import ConsumerRecord, TopicPartition

from service.core.models import (
    DLQ_ERROR,
    DLQ_ERROR_DETAIL,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_SIZE,
    DLQ_ORIGINAL_TOPIC,
    DLQ_VALUE_TRUNCATED,
    ChannelSettings,
    Malformed,
    Outcome,
    SenderNumberStatus,
    outcome_with_event,
    parse_failure_event,
    to_json,
)
from service.core.rules import Decision, Policy, decide, timestamp
from service.core.settle import SettledOutcome, counts_as_requested, settle
from service.observe import Observer
from service.records import header_key_for_output
from service.sinks import Delivery, Sink
from service.writer import Write, Writer

_OWN_HEADERS = frozenset(
    {
        DLQ_ERROR,
        DLQ_ERROR_DETAIL,
        DLQ_ORIGINAL_TOPIC,
        DLQ_ORIGINAL_PARTITION,
        DLQ_ORIGINAL_OFFSET,
        DLQ_VALUE_TRUNCATED,
        DLQ_ORIGINAL_SIZE,
    }
)
# Room left in a record for the record and batch framing around key, value and headers.
_RECORD_OVERHEAD = 1024
# Records per part of a pipelined batch: small enough that the first part's writes start soon,
# large enough that each write still fills record batches.
PART_RECORDS = 250


class Dedupe(Protocol):
    """Which fallbacks already count as requested (§5.1 rule 1), kept in a changelog topic
    partitioned like the input: each fallback has an owner partition."""

    @property
    def topic(self) -> str: ...

    def owner(self, fallback_id: str) -> int:
        """The input partition that owns `fallback_id` (its state and its processing)."""
        ...

    def contains(self, partition: int, fallback_id: str) -> bool: ...

    def outcomes_in_flight(
        self, source: tuple[str, int, int], fallback_id: str
    ) -> list[bytes] | None:
        """The outcomes written for `fallback_id` by this very input record before a crash cut
        its batch short (its marker was written, its offset not committed), else None; less
        the event's own fields (`outcome_with_event`)."""
        ...

    def forget_in_flight(self, sources: Iterable[tuple[str, int, int]]) -> None: ...

    async def catch_up(self) -> None: ...

    def remember(self, marked: list[tuple[int, str]], now_ms: int) -> None: ...

    @staticmethod
    def marker(
        fallback_id: str,
        requested_at: str,
        source: tuple[str, int, int],
        outcomes: Sequence[bytes],
    ) -> bytes: ...


@dataclass(slots=True)
class Batch:
    """What one batch of input records causes, in the order it must be written."""

    deliveries: list[Delivery] = field(default_factory=list)
    # Dead letters, and events forwarded to the partition that owns them (repartition topic).
    dead_letters: list[Write] = field(default_factory=list)
    routed: int = 0
    outcomes: list[Write] = field(default_factory=list)
    # Index in `outcomes` of each REQUESTED outcome → its delivery (for settlement), the
    # outcome, and its input record's offset (for the marker).
    requested_at: dict[int, tuple[Delivery, Outcome, int]] = field(default_factory=dict)
    # Index in `outcomes` of a REQUESTED outcome → its SENT/FAILED outcome (delivering sinks).
    settlements: dict[int, Write] = field(default_factory=dict)
    # Records whose outcomes were written again, as before a crash (`Dedupe.outcomes_in_flight`).
    replayed: list[tuple[str, int, int]] = field(default_factory=list)
    replayed_outcomes: list[bytes] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    malformed: list[tuple[ConsumerRecord, Malformed]] = field(default_factory=list)
    settled: list[SettledOutcome] = field(default_factory=list)
    # Owner partition and id of each fallback whose marker was written.
    marked: list[tuple[int, str]] = field(default_factory=list)
    owners: dict[str, int] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def absorb(self, part: Batch) -> None:
        """Take in what a later part of the same batch decided (its writes stay with it)."""
        self.deliveries += part.deliveries
        self.routed += part.routed
        self.decisions += part.decisions
        self.malformed += part.malformed
        self.replayed += part.replayed
        self.replayed_outcomes += part.replayed_outcomes
        self.offsets.update(part.offsets)


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
        rewind: dict[TopicPartition, int],
        done: set[tuple[TopicPartition, int]],
        held: int,
    ) -> None:
        super().__init__(f"{held} requests held back: {reason}")
        self.reason = reason
        self.retry_after = retry_after
        self.rewind = rewind
        self.done = done
        self.held = held


def dead_letter(
    record: ConsumerRecord, malformed: Malformed, topic: str, max_bytes: int = 1_048_576
) -> Write:
    """The input record unchanged, with why and where it came from (§8).

    The service's own headers replace incoming ones of the same names: a producer cannot forge
    where a dead letter came from. A value too large for the DLQ topic (`max_bytes`, its
    `max.message.bytes`) is cut to fit and says so; the original stays at its input offset.
    """
    headers = _copied_headers(record, _OWN_HEADERS)
    headers += [
        (DLQ_ERROR, malformed.error.value.encode()),
        (DLQ_ERROR_DETAIL, malformed.detail.encode()),
        (DLQ_ORIGINAL_TOPIC, record.topic.encode()),
        (DLQ_ORIGINAL_PARTITION, str(record.partition).encode()),
        (DLQ_ORIGINAL_OFFSET, str(record.offset).encode()),
    ]
    value = record.value
    if value is not None:
        room = (
            max_bytes
            - len(record.key or b"")
            - sum(len(k) + len(v or b"") + 64 for k, v in headers)
            - _RECORD_OVERHEAD
        )
        if len(value) > room:
            headers += [
                (DLQ_VALUE_TRUNCATED, b"true"),
                (DLQ_ORIGINAL_SIZE, str(len(value)).encode()),
            ]
            value = value[: max(room, 0)]
    return Write(topic, record.key, value, headers, TopicPartition(record.topic, record.partition))


def _copied_headers(record: ConsumerRecord, replaced: Container[str]) -> list[tuple[str, bytes]]:
    """The record's headers for a copy of it, less those the service writes itself; a key that
    is not UTF-8 written as text (`service.records`)."""
    return [(header_key_for_output(k), v) for k, v in (record.headers or ()) if k not in replaced]


ROUTED_FROM = "x-fallback-routed-from"


def routed(record: ConsumerRecord, fallback_id: str, owner: int, topic: str) -> Write:
    """The input record, keyed by its fallbackId, for the owner partition's repartition topic.

    Its headers stay; one more says where it came from (`topic/partition/offset`).
    """
    headers = _copied_headers(record, {ROUTED_FROM})
    headers.append((ROUTED_FROM, f"{record.topic}/{record.partition}/{record.offset}".encode()))
    return Write(
        topic,
        fallback_id.encode(),
        record.value,
        headers,
        TopicPartition(record.topic, record.partition),
        owner,
    )


class Processor:
    """Turns batches of failure events into SMS requests, outcomes and dead letters."""

    def __init__(
        self,
        *,
        policy: Policy,
        events_topic: str,
        dlq_topic: str,
        repartition_topic: str,
        channels: Mapping[str, ChannelSettings],
        sender_numbers: Mapping[str, SenderNumberStatus],
        requested: Dedupe,
        sink: Sink,
        writer: Writer,
        observer: Observer,
        clock: Callable[[], datetime],
    ) -> None:
        self.policy = policy
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.repartition_topic = repartition_topic
        self.channels = channels
        self.sender_numbers = sender_numbers
        self.requested = requested
        self.sink = sink
        self.writer = writer
        self.observer = observer
        self.clock = clock
        # The DLQ topic's record limit, read at start-up (`service.kafka.max_message_bytes`).
        self.dlq_max_bytes = 1_048_576

    def convert(
        self, records: Sequence[ConsumerRecord], now: datetime, pending: set[str] | None = None
    ) -> Batch:
        """Decide every record of the batch, in order. No I/O: nothing is written or counted.

        `pending` holds the fallbacks requested earlier in the same batch (parts of one batch
        converted one after the other share it); it gains this part's.
        """
        batch = Batch()
        pending = set() if pending is None else pending
        channels = self.channels
        sender_numbers = self.sender_numbers
        requested = self.requested
        events_topic = self.events_topic
        for record in records:
            source = TopicPartition(record.topic, record.partition)
            batch.offsets[source] = record.offset + 1
            event = parse_failure_event(record.value)
            if isinstance(event, Malformed):
                batch.dead_letters.append(
                    dead_letter(record, event, self.dlq_topic, self.dlq_max_bytes)
                )
                batch.malformed.append((record, event))
                continue
            fid = event.fallback_id
            owner = requested.owner(fid)
            if owner != record.partition:
                # Not this partition's fallback: its state lives with its owner. Forward it
                # there, as it is; the owner decides it (and its offset here is done).
                batch.dead_letters.append(routed(record, fid, owner, self.repartition_topic))
                batch.routed += 1
                continue
            batch.owners[fid] = owner
            if fid not in pending and requested.contains(owner, fid):
                at = (record.topic, record.partition, record.offset)
                again = requested.outcomes_in_flight(at, fid)
                if again is not None:
                    # This record's own marker, from a batch cut short: its outcomes again.
                    outcomes = [outcome_with_event(rest, event) for rest in again]
                    batch.replayed.append(at)
                    batch.replayed_outcomes += outcomes
                    batch.outcomes += [
                        Write(events_topic, fid.encode(), o, source=source) for o in outcomes
                    ]
                    continue
            decision = decide(
                event,
                channels.get(event.senderKey),
                sender_numbers,
                already_requested=fid in pending or requested.contains(owner, fid),
                now=now,
                policy=self.policy,
                received_ms=record.timestamp,
            )
            if decision.request is not None:
                pending.add(fid)
                delivery = Delivery(decision.request, source)
                batch.deliveries.append(delivery)
                batch.requested_at[len(batch.outcomes)] = (
                    delivery,
                    decision.outcome,
                    record.offset,
                )
            batch.outcomes.append(
                Write(events_topic, fid.encode(), to_json(decision.outcome), source=source)
            )
            batch.decisions.append(decision)
        return batch

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        """Hand over, write and commit everything `records` cause, then observe it.

        The steps, each acknowledged before the next: requests to the sink; the "requested"
        markers with the dead letters; the outcomes; the commit of the input offsets. So a marker
        never exists for a request that was lost, and a REQUESTED outcome that anyone can see
        always has its marker. The in-memory dedupe state learns the batch's fallbacks after
        the commit. Raises `writer.Stopping` when stopped part-way (nothing is committed then).
        """
        started = time.monotonic()
        # Markers written by other replicas before this batch count: read up to them.
        await self.requested.catch_up()
        now = self.clock()
        held: Held | None = None
        if self.sink.delivers or len(records) <= PART_RECORDS:
            batch = self.convert(records, now)
            if batch.deliveries:
                await self.sink.deliver(batch.deliveries)
                if any(d.held for d in batch.deliveries):
                    batch, held = self._without_held(records, batch, now)
            await self._write(batch, now)
        else:
            batch = await self._pipelined(records, now)
        await self.writer.commit(batch.offsets)
        # Only now are the markers final (in exactly-once mode they were part of a transaction).
        self.requested.remember(batch.marked, _ms(now))
        if batch.replayed:
            self.requested.forget_in_flight(batch.replayed)
        done = len(records) - (held.held if held is not None else 0)
        self.observer.observe(batch, done, time.monotonic() - started)
        if held is not None:
            raise held

    async def _pipelined(self, records: Sequence[ConsumerRecord], now: datetime) -> Batch:
        """Convert a batch of more than PART_RECORDS a part at a time, each part's steps running
        while the next part converts; the whole batch, once every part is written.

        The conversion is most of the CPU, and each step waits for a round trip to the broker:
        overlapped, a batch costs about its conversion instead of both. A part's step starts
        once the part before has finished the same step, so every output topic receives the
        parts in input order, retries included; a failure stops the parts after it.
        """
        pending: set[str] = set()
        whole = Batch()
        parts: list[Batch] = []
        chained: list[asyncio.Task[None]] = []
        before: list[asyncio.Future[None]] | None = None
        gates: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        try:
            for first in range(0, len(records), PART_RECORDS):
                part = self.convert(records[first : first + PART_RECORDS], now, pending)
                whole.absorb(part)
                parts.append(part)
                mine = [loop.create_future() for _ in range(3)]
                gates += mine
                chained.append(asyncio.create_task(self._write_part(part, now, before, mine)))
                before = mine
                await asyncio.sleep(0)  # let it send before the next part converts
            results = await asyncio.gather(*chained, return_exceptions=True)
        except BaseException:
            # Cancelled (or failed) while converting: no part goes on writing on its own.
            for task in chained:
                task.cancel()
            await asyncio.gather(*chained, return_exceptions=True)
            raise
        finally:
            for gate in gates:  # a failure reaches every later gate: all of them are seen here
                if gate.done() and not gate.cancelled():
                    gate.exception()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for part in parts:  # a part knows its markers once written
            whole.marked += part.marked
        return whole

    async def _write_part(
        self,
        part: Batch,
        now: datetime,
        before: list[asyncio.Future[None]] | None,
        mine: list[asyncio.Future[None]],
    ) -> None:
        """The three steps of `_write` for one part, each after the previous part's."""
        steps = (
            lambda: self._deliver(part),
            lambda: self._mark(part, now),
            lambda: self.writer.write(self._with_settlements(part)),
        )
        try:
            for step, gate in enumerate(mine):
                if before is not None:
                    await before[step]
                await steps[step]()
                gate.set_result(None)
        except asyncio.CancelledError:
            for gate in mine:
                gate.cancel()
            raise
        except BaseException as exc:
            for gate in mine:
                if not gate.done():
                    gate.set_exception(exc)
            raise

    def _without_held(
        self, records: Sequence[ConsumerRecord], batch: Batch, now: datetime
    ) -> tuple[Batch, Held]:
        """The batch again without the records whose requests the sink held back, with the
        answers the sink gave for the others, and what to read again.

        A record that repeats a held fallbackId in the same batch is held too: it was decided
        as a duplicate of a request that has not happened yet.
        """
        held_ids = {d.request.fallbackId for d in batch.deliveries if d.held}
        answered = {d.request.fallbackId: d.answer for d in batch.deliveries if not d.held}
        kept: list[ConsumerRecord] = []
        rewind: dict[TopicPartition, int] = {}
        held = 0
        for record in records:
            if _fallback_id(record) in held_ids:
                tp = TopicPartition(record.topic, record.partition)
                rewind[tp] = min(rewind.get(tp, record.offset), record.offset)
                held += 1
            else:
                kept.append(record)
        again = self.convert(kept, now)
        for delivery in again.deliveries:
            delivery.answer = answered[delivery.request.fallbackId]
        done = {
            (tp, r.offset)
            for r in kept
            if (tp := TopicPartition(r.topic, r.partition)) in rewind and r.offset > rewind[tp]
        }
        for tp, offset in rewind.items():
            again.offsets[tp] = offset
        reason = self.sink.unavailable() or "the SMS provider is unavailable"
        return again, Held(reason, self.sink.retry_in(), rewind, done, held)

    async def _write(self, batch: Batch, now: datetime) -> None:
        """After the requests (already with the sink): markers and dead letters, then outcomes."""
        if not batch.deliveries:
            await self.writer.write(batch.dead_letters + batch.outcomes)
            return
        await self._mark(batch, now)
        await self.writer.write(self._with_settlements(batch))

    async def _deliver(self, batch: Batch) -> None:
        if batch.deliveries:
            await self.sink.deliver(batch.deliveries)

    async def _mark(self, batch: Batch, now: datetime) -> None:
        """The "requested" markers of the batch's requested fallbacks (at their owners), with
        the dead letters and forwarded events: neither depends on the other, so one round
        trip acknowledges both.

        A marker names its input record and carries the outcomes about to be written for it,
        so that a crash before they are cannot leave the event without them (`service.dedupe`).
        """
        self._settle(batch)
        stamp = timestamp(now)
        requested = [
            (index, d, offset)
            for index, (d, _, offset) in batch.requested_at.items()
            if counts_as_requested(d.answer)
        ]
        topic = self.requested.topic
        owners = batch.owners
        markers = []
        for index, d, offset in requested:
            fid = d.request.fallbackId
            outcomes = [batch.outcomes[index].value or b""]
            settled = batch.settlements.get(index)
            if settled is not None:
                outcomes.append(settled.value or b"")
            value = self.requested.marker(
                fid, stamp, (d.source.topic, d.source.partition, offset), outcomes
            )
            markers.append(Write(topic, fid.encode(), value, [], d.source, owners[fid]))
        if markers or batch.dead_letters:
            await self.writer.write(markers + batch.dead_letters)
        batch.marked = [
            (owners[d.request.fallbackId], d.request.fallbackId) for _, d, _ in requested
        ]

    def _settle(self, batch: Batch) -> None:
        """The SENT/FAILED outcome of each request a delivering sink answered (§7)."""
        answered = [
            (i, d, o) for i, (d, o, _) in batch.requested_at.items() if d.answer is not None
        ]
        if not answered:
            return
        settled_at = timestamp(self.clock())
        for index, delivery, outcome in answered:
            assert delivery.answer is not None
            settled = settle(outcome, delivery.answer, settled_at)
            batch.settled.append(settled)
            batch.settlements[index] = Write(
                self.events_topic,
                outcome.fallbackId.encode(),
                to_json(settled),
                source=delivery.source,
            )

    def _with_settlements(self, batch: Batch) -> list[Write]:
        """The outcomes, each SENT/FAILED one right after its REQUESTED one (same key)."""
        if not batch.settlements:
            return batch.outcomes
        outcomes: list[Write] = []
        for index, write in enumerate(batch.outcomes):
            outcomes.append(write)
            settled = batch.settlements.get(index)
            if settled is not None:
                outcomes.append(settled)
        return outcomes


def _fallback_id(record: ConsumerRecord) -> str | None:
    """The fallbackId of a well-formed input record (parsed again: only when a sink held)."""
    event = parse_failure_event(record.value)
    return None if isinstance(event, Malformed) else event.fallback_id


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
