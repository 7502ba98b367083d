"""The dedupe changelog's marker format: one record per requested fallback, key fallbackId.

A marker names the input record that requested it (`source`, the value's first field, so that a
restore finds it without parsing JSON), when, and the outcomes written for it, less the event's
own fields (`service.core.models.outcome_without_event`): markers are read on every restore.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from service.core.models import outcome_without_event
from service.pipeline.seams import Source

# A marker's value begins with its input record's `topic/partition/offset` (topic names have
# no `/` and no `"`).
_SOURCE = b'{"source":"'


def marker(fallback_id: str, requested_at: str, source: Source, outcomes: Sequence[bytes]) -> bytes:
    """The changelog value of one requested fallback (its key is the fallbackId)."""
    topic, partition, offset = source
    return orjson.dumps(
        {
            "source": f"{topic}/{partition}/{offset}",
            "fallbackId": fallback_id,
            "requestedAt": requested_at,
            "outcomes": [orjson.Fragment(outcome_without_event(o)) for o in outcomes],
        }
    )


def marker_source(value: bytes) -> Source | None:
    """The input record a marker names, read from its first field; None for markers written
    before markers named their input record."""
    if not value.startswith(_SOURCE):
        return None
    end = value.find(b'"', len(_SOURCE))
    topic, partition, offset = value[len(_SOURCE) : end].decode().rsplit("/", 2)
    return topic, int(partition), int(offset)


def marker_outcomes(value: bytes) -> list[bytes] | None:
    """The outcomes a marker carries, or None when it is not a marker this service wrote."""
    try:
        outcomes = orjson.loads(value).get("outcomes") or []
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return [orjson.dumps(o) for o in outcomes]
