"""Delivery results and expiries read as input (§11): each becomes a final outcome, an early
result kept for its request, a counted ignored result, a dead letter or a forward to its owner.

Pure like `Processor.convert`: it fills the batch; the processor's steps write it. A result's
final outcome is written with a final marker in the owner's changelog partition (before the
outcome, as a requested marker is before REQUESTED), so a crash between the two writes the
outcome again, unchanged, when the result is read again, and never makes a second one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import orjson

from service.core.models import Malformed
from service.core.results import (
    Early,
    FinalOutcome,
    Ignored,
    expired_outcome,
    judge,
    judge_awaited,
    parse_delivery_result,
    parse_expiry,
)
from service.pipeline.batch import Batch, BatchResults
from service.pipeline.outputs import dead_letter, routed
from service.pipeline.seams import Awaiting, Dedupe, InputRecord, Partition, Write

# Header of a repartition-topic record that is not a forwarded event.
RECORD_KIND = "x-fallback-record"
RESULT = b"result"
EXPIRY = b"expiry"


def record_kind(record: InputRecord) -> bytes | None:
    """`result` or `expiry` for such repartition records; None for a forwarded event."""
    for key, value in record.headers or ():
        if key == RECORD_KIND:
            return value
    return None


class ResultSteps:
    """Reads result and expiry records for the processor."""

    def __init__(
        self,
        *,
        results_topic: str,
        repartition_topic: str,
        events_topic: str,
        dlq_topic: str,
        requested: Dedupe,
        awaiting: Awaiting,
        final_marker: Callable[[str, str, tuple[str, int, int], bytes], bytes],
        early_marker: Callable[[str, tuple[str, int, int], bytes], bytes],
    ) -> None:
        self.results_topic = results_topic
        self.repartition_topic = repartition_topic
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.requested = requested
        self.awaiting = awaiting
        self.final_marker = final_marker
        self.early_marker = early_marker
        self.dlq_max_bytes = 1_048_576  # the processor's, set with it

    def reads(self, record: InputRecord) -> bytes | None:
        """Whether `record` is a result or an expiry (which), rather than a failure event."""
        if record.topic == self.results_topic:
            return RESULT
        if record.topic == self.repartition_topic:
            return record_kind(record)
        return None

    def read(self, kind: bytes, record: InputRecord, batch: Batch, now: datetime) -> None:
        """Take in one result or expiry record."""
        if kind == EXPIRY:
            self._expiry(record, batch, now)
        else:
            self._result(record, batch, now)

    def _result(self, record: InputRecord, batch: Batch, now: datetime) -> None:
        into = batch.results
        seen = into.seen
        result = parse_delivery_result(record.value)
        if isinstance(result, Malformed):
            batch.dead_letters.append(
                dead_letter(record, result, self.dlq_topic, self.dlq_max_bytes)
            )
            batch.malformed.append(((record.topic, record.partition, record.offset), result))
            return
        fid = result.fallbackId
        key = fid.encode()
        owner = self.requested.owner(key)
        if owner != record.partition:
            forward = routed(record, key, owner, self.repartition_topic)
            forward.headers = [h for h in forward.headers if h[0] != RECORD_KIND]
            forward.headers.append((RECORD_KIND, RESULT))
            batch.dead_letters.append(forward)
            batch.routed += 1
            return
        if self._replayed(record, fid, key, batch):
            return
        here = seen.requested.get(fid)
        if here is not None and here.early is None and fid not in seen.finished:
            if not here.marked:
                here.early = result  # decided once its request is settled and marked
                seen.finished.add(fid)
                return
            if here.awaits is not None:  # marked in an earlier part, awaiting for sure
                seen.finished.add(fid)
                self._final(
                    record, key, owner, here.digest, judge_awaited(result, here.awaits, now), into
                )
                return
        if fid in seen.finished or fid in seen.early:
            into.ignored.append(Ignored.LATER)
            return
        digest = self.requested.digest(key)
        verdict = judge(
            result,
            self.awaiting.awaited(owner, digest, fid),
            requested=self.requested.contains(owner, digest),
            expired=self.awaiting.expired(owner, digest),
            now=now,
        )
        if isinstance(verdict, FinalOutcome):
            seen.finished.add(fid)
            self._final(record, key, owner, digest, verdict, into)
        elif verdict is Early.KEPT:
            if self.awaiting.early(owner, digest) is not None:
                into.ignored.append(Ignored.LATER)
                return
            seen.early[fid] = result
            value = record.value or b""
            source = (record.topic, record.partition, record.offset)
            into.markers.append(
                Write(
                    self.requested.topic,
                    key,
                    self.early_marker(fid, source, value),
                    source=Partition(record.topic, record.partition),
                    partition=owner,
                )
            )
            into.changes.early.append((owner, digest, value))
        else:
            into.ignored.append(verdict)

    def _expiry(self, record: InputRecord, batch: Batch, now: datetime) -> None:
        into = batch.results
        seen = into.seen
        expiry = parse_expiry(record.value)
        if expiry is None or expiry.fallbackId in seen.finished:
            return  # not one the sweep wrote, or final already: nothing to expire
        key = expiry.fallbackId.encode()
        owner = record.partition
        if self._replayed(record, expiry.fallbackId, key, batch):
            return
        digest = self.requested.digest(key)
        awaited = self.awaiting.awaited(owner, digest, expiry.fallbackId)
        if awaited is None or not awaited.expired(now):
            return  # a result came first, or a sweep ran twice: the fallback is final already
        seen.finished.add(expiry.fallbackId)
        self._final(record, key, owner, digest, expired_outcome(awaited, now), into)

    def _final(
        self,
        record: InputRecord,
        key: bytes,
        owner: int,
        digest: tuple[int, int],
        outcome: FinalOutcome | Ignored,
        into: BatchResults,
    ) -> None:
        if isinstance(outcome, Ignored):
            into.ignored.append(outcome)
            return
        value = orjson.dumps(outcome)
        source = (record.topic, record.partition, record.offset)
        where = Partition(record.topic, record.partition)
        marker = self.final_marker(outcome.fallbackId, outcome.status.value, source, value)
        into.markers.append(Write(self.requested.topic, key, marker, source=where, partition=owner))
        into.outcomes.append(Write(self.events_topic, key, value, source=where))
        into.finals.append(outcome)
        into.changes.finals.append((owner, digest, outcome.status.value))

    def _replayed(self, record: InputRecord, fid: str, key: bytes, batch: Batch) -> bool:
        """A result or expiry whose final marker a crash left uncommitted: its outcome is
        written again as it was (the marker keeps it whole), and nothing else."""
        at = (record.topic, record.partition, record.offset)
        again = self.requested.outcomes_in_flight(at, fid)
        if again is None:
            return False
        batch.replayed.append(at)
        where = Partition(record.topic, record.partition)
        batch.results.outcomes += [Write(self.events_topic, key, o, source=where) for o in again]
        batch.results.replayed += len(again)
        return True
