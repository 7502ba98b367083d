"""One batch of input records → the sink, the writer, the commit, in that order (§8, §9).

The conversion itself is `service.core.rules.decide`. The processor turns records into
deliveries and writes, hands them to the sink and the writer in the order the guarantees need,
commits, and only then reports what was done (`Committed`) to the observer. It knows neither
which writer, which sink nor which guarantee it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from service.core.models import (
    OUTCOME,
    ChannelSettings,
    FailureEvent,
    Malformed,
    SenderNumberStatus,
    outcome_with_event,
    parse_failure_event,
    to_json,
)
from service.core.results import (
    Awaited,
    Deadlines,
    DeliveryResult,
    deadline_s,
    parse_delivery_result,
)
from service.core.rules import Policy, decide, failed_at, timestamp
from service.pipeline.batch import Batch, Held, Seen
from service.pipeline.held import without_held
from service.pipeline.observe import Observer
from service.pipeline.outputs import dead_letter, routed
from service.pipeline.parts import PART_RECORDS, in_parts
from service.pipeline.results import ResultSteps
from service.pipeline.seams import Dedupe, Delivery, InputRecord, Partition, Sink, Write, Writer


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
        results: ResultSteps | None = None,
        deadlines: Deadlines | None = None,
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
        # With delivery results on (§11): result and expiry records, and the deadlines.
        self.results = results
        self.deadlines = deadlines or Deadlines()
        self._seen = Seen()
        # The DLQ topic's record limit, read at start-up (`service.kafka.admin`).
        self.dlq_max_bytes = 1_048_576

    def convert(
        self, records: Sequence[InputRecord], now: datetime, pending: set[str] | None = None
    ) -> Batch:
        """Decide every record of the batch, in order. No I/O: nothing is written or counted.

        `pending` holds the fallbacks requested earlier in the same batch (parts of one batch
        converted one after the other share it); it gains this part's.
        """
        batch = Batch()
        if pending is None:
            pending, self._seen = set(), Seen()
        batch.results.seen = self._seen
        requested = self.requested
        events_topic = self.events_topic
        steps = self.results
        for record in records:
            source = Partition(record.topic, record.partition)
            batch.offsets[source] = record.offset + 1
            if steps is not None:
                kind = steps.reads(record)
                if kind is not None:
                    steps.read(kind, record, batch, now)
                    continue
            owned = self._owned_event(batch, record)
            if owned is None:
                continue
            event, key, owner = owned
            fid = event.fallback_id
            earlier = fid in pending
            digest = requested.digest(key)
            remembered = not earlier and requested.contains(owner, digest)
            if remembered and self._replayed(batch, record, event, key):
                continue
            decision = decide(
                event,
                self.channels.get(event.senderKey),
                self.sender_numbers,
                already_requested=earlier or remembered,
                now=now,
                policy=self.policy,
                received_ms=record.timestamp,
            )
            if decision.request is not None:
                pending.add(fid)
                delivery = Delivery(
                    decision.request,
                    source,
                    outcome=decision.outcome,
                    offset=record.offset,
                    key=key,
                    owner=owner,
                    digest=digest,
                )
                if steps is not None:
                    self._awaits(batch, delivery, event, record.timestamp, now)
                batch.deliveries.append(delivery)
                batch.requested_at[len(batch.outcomes)] = delivery
            batch.outcomes.append(
                Write(events_topic, key, to_json(decision.outcome), source=source)
            )
            batch.decisions.append(decision)
        return batch

    def _awaits(
        self, batch: Batch, delivery: Delivery, event: FailureEvent, received_ms: int, now: datetime
    ) -> None:
        """What a new request will await (§11), and a result that came before it."""
        request = delivery.request
        failed = failed_at(event, received_ms)
        delivery.awaits = Awaited(
            request.fallbackId,
            event.senderKey,
            request.type,
            int(failed.timestamp() * 1000) if failed is not None else received_ms,
            deadline_s(now, request.type, self.deadlines),
        )
        seen = batch.results.seen
        seen.requested[request.fallbackId] = delivery
        early: DeliveryResult | None = seen.early.pop(request.fallbackId, None)
        if early is None and self.results is not None:
            kept = self.results.awaiting.early(delivery.owner, delivery.digest)
            if kept is not None:  # rare: most requests have no early result
                parsed = parse_delivery_result(kept)
                early = parsed if isinstance(parsed, DeliveryResult) else None
        if early is not None:
            delivery.early = early
            seen.finished.add(request.fallbackId)

    def _owned_event(
        self, batch: Batch, record: InputRecord
    ) -> tuple[FailureEvent, bytes, int] | None:
        """The record's event, its fallbackId's bytes and owner partition when this partition
        owns it; otherwise None, and the record is a dead letter (§8) or forwarded to its
        owner through the repartition topic (its offset here is done either way)."""
        event = parse_failure_event(record.value)
        if isinstance(event, Malformed):
            batch.dead_letters.append(
                dead_letter(record, event, self.dlq_topic, self.dlq_max_bytes)
            )
            batch.malformed.append(((record.topic, record.partition, record.offset), event))
            return None
        key = event.fallback_id.encode()
        owner = self.requested.owner(key)
        if owner != record.partition:
            # Not this partition's fallback: its state lives with its owner, which decides it.
            batch.dead_letters.append(routed(record, key, owner, self.repartition_topic))
            batch.routed += 1
            return None
        return event, key, owner

    def _replayed(self, batch: Batch, record: InputRecord, event: FailureEvent, key: bytes) -> bool:
        """Whether `record` is one a crash cut short after its marker: then its outcomes are
        written again, as they were (§7), and nothing else happens for it."""
        at = (record.topic, record.partition, record.offset)
        again = self.requested.outcomes_in_flight(at, event.fallback_id)
        if again is None:
            return False
        outcomes = [outcome_with_event(rest, event) for rest in again]
        batch.replayed.append(at)
        batch.replayed_outcomes += [OUTCOME.validate_json(o) for o in outcomes]
        source = Partition(record.topic, record.partition)
        batch.outcomes += [Write(self.events_topic, key, o, source=source) for o in outcomes]
        return True

    async def process(self, records: Sequence[InputRecord]) -> None:
        """Hand over, write and commit everything `records` cause, then report it.

        The steps, each acknowledged before the next: requests to the sink; the "requested"
        markers with the dead letters; the outcomes; the commit of the input offsets. So a marker
        never exists for a request that was lost, and a REQUESTED outcome that anyone can see
        always has its marker. The in-memory dedupe state learns the batch's fallbacks after
        the commit. Raises `Stopping` when stopped part-way (nothing is committed then), and
        `Held` after committing what was settled when the sink held requests back.
        """
        started = time.monotonic()
        # Markers written by other replicas before this batch count: read up to them.
        await self.requested.catch_up()
        now = self.clock()
        self._seen = Seen()
        held: Held | None = None
        if self.sink.delivers or len(records) <= PART_RECORDS:
            batch = self.convert(records, now)
            if batch.deliveries:
                await self.sink.deliver(batch.deliveries)
                if any(d.held for d in batch.deliveries):
                    batch, held = without_held(
                        records, batch, lambda kept: self.convert(kept, now), self.sink
                    )
            await self._write(batch, now)
        else:
            batch = await in_parts(
                records,
                lambda part, pending: self.convert(part, now, pending),
                (self._deliver, lambda part: self._mark(part, now), self._write_outcomes),
            )
        await self.writer.commit(batch.offsets)
        # Only now are the markers final (in exactly-once mode they were part of a transaction).
        self.requested.remember(batch.marked, int(now.timestamp() * 1000))
        if self.results is not None:
            self.results.awaiting.apply(batch.results.changes, int(now.timestamp() * 1000))
        if batch.replayed:
            self.requested.forget_in_flight(batch.replayed)
        done = len(records) - (held.held if held is not None else 0)
        self.observer.observe(batch.committed(done, time.monotonic() - started))
        if held is not None:
            raise held

    async def _write(self, batch: Batch, now: datetime) -> None:
        """After the requests (already with the sink): markers and dead letters, then outcomes."""
        if not batch.deliveries and not batch.results.markers:
            await self.writer.write(batch.dead_letters + batch.outcomes_in_order())
            return
        await self._mark(batch, now)
        await self._write_outcomes(batch)

    async def _deliver(self, batch: Batch) -> None:
        if batch.deliveries:
            await self.sink.deliver(batch.deliveries)

    async def _mark(self, batch: Batch, now: datetime) -> None:
        """The "requested" markers of the batch's requested fallbacks (at their owners), with
        the dead letters and forwarded events: neither depends on the other, so one round
        trip acknowledges both.

        A marker names its input record and carries the outcomes about to be written for it,
        so that a crash before they are cannot leave the event without them (`service.state`).
        """
        batch.settle(self.events_topic, lambda: timestamp(self.clock()))
        if self.results is not None:
            batch.finish_early(self.events_topic, self.clock())
        markers = batch.markers(self.requested.topic, timestamp(now), self.requested.marker)
        if markers or batch.dead_letters:
            await self.writer.write(markers + batch.dead_letters)

    async def _write_outcomes(self, batch: Batch) -> None:
        await self.writer.write(batch.outcomes_in_order())
