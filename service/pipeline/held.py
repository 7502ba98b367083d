"""A batch some of whose requests the sink held back (its provider is unavailable, §10): the
batch again without them, and where to read again."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from service.core.models import Malformed, parse_failure_event
from service.pipeline.batch import Batch, Held
from service.pipeline.seams import InputRecord, Partition, Sink


def without_held(
    records: Sequence[InputRecord],
    batch: Batch,
    convert: Callable[[Sequence[InputRecord]], Batch],
    sink: Sink,
) -> tuple[Batch, Held]:
    """The batch converted again without the records whose requests the sink held back, with
    the answers the sink gave for the others, and the `Held` that says what to read again.

    A record that repeats a held fallbackId in the same batch is held too: it was decided as a
    duplicate of a request that has not happened yet.
    """
    held_ids = {d.key for d in batch.deliveries if d.held}
    answered = {d.key: d.answer for d in batch.deliveries if not d.held}
    kept: list[InputRecord] = []
    rewind: dict[Partition, int] = {}
    held = 0
    for record in records:
        if _fallback_key(record) in held_ids:
            tp = Partition(record.topic, record.partition)
            rewind[tp] = min(rewind.get(tp, record.offset), record.offset)
            held += 1
        else:
            kept.append(record)
    again = convert(kept)
    for delivery in again.deliveries:
        delivery.answer = answered[delivery.key]
    done = {
        (tp, r.offset)
        for r in kept
        if (tp := Partition(r.topic, r.partition)) in rewind and r.offset > rewind[tp]
    }
    again.offsets.update(rewind)
    reason = sink.unavailable() or "the SMS provider is unavailable"
    return again, Held(reason, sink.retry_in(), rewind, done, held)


def _fallback_key(record: InputRecord) -> bytes | None:
    """The fallbackId of a well-formed input record (parsed again: only when a sink held)."""
    event = parse_failure_event(record.value)
    return None if isinstance(event, Malformed) else event.fallback_id.encode()
