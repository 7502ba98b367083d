"""The dedupe changelog's record formats, key fallbackId: the "requested" marker of each requested
fallback, and with delivery results on (§11) its final marker and the early results kept for it.

Every value begins with the input record that wrote it (`source`, so that a restore finds it
without parsing JSON); the next field says what it is: `await` (a requested fallback awaiting
its result: type, failure time, deadline, channel), `final` (its final outcome is written),
`early` (a result that came before its request), or `fallbackId` (a requested fallback that
awaits nothing: results off, or a marker from before they existed). A marker carries the
outcomes written for it, less the event's own fields (`outcome_without_event`) when an event
wrote it, whole when a result or an expiry did: markers are read on every restore.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import orjson

from service.core.models import MessageKind, outcome_without_event
from service.core.results import Awaited
from service.pipeline.seams import Source

# A marker's value begins with its input record's `topic/partition/offset` (topic names have
# no `/` and no `"`).
_SOURCE = b'{"source":"'


class MarkerKind(StrEnum):
    """What a changelog record says of its fallback (the field after `source`)."""

    REQUESTED = "fallbackId"
    AWAITING = "await"
    FINAL = "final"
    EARLY = "early"


def marker(
    fallback_id: str,
    requested_at: str,
    source: Source,
    outcomes: Sequence[bytes],
    awaits: Awaited | None = None,
    final: str | None = None,
) -> bytes:
    """The changelog value of one requested fallback (its key is the fallbackId): awaiting a
    result (`awaits`), final already (`final`, an early result applied), or neither."""
    value: dict[str, object] = {"source": _source(source)}
    if final is not None:
        value["final"] = final
    elif awaits is not None:
        value["await"] = [
            awaits.kind.value,
            awaits.failed_at_ms,
            awaits.deadline_s,
            awaits.sender_key,
        ]
    value.update(
        fallbackId=fallback_id,
        requestedAt=requested_at,
        outcomes=[orjson.Fragment(outcome_without_event(o)) for o in outcomes],
    )
    return orjson.dumps(value)


def final_marker(fallback_id: str, final: str, source: Source, outcome: bytes) -> bytes:
    """The record that ends a fallback's wait: its final outcome (whole) was written by the
    result or expiry at `source`."""
    return orjson.dumps(
        {
            "source": _source(source),
            "final": final,
            "fallbackId": fallback_id,
            "outcomes": [orjson.Fragment(outcome)],
        }
    )


def early_marker(fallback_id: str, source: Source, result: bytes) -> bytes:
    """A result that came before its fallback was requested, kept for the early window."""
    return orjson.dumps(
        {
            "source": _source(source),
            "early": orjson.Fragment(result),
            "fallbackId": fallback_id,
            "outcomes": [],
        }
    )


def _source(source: Source) -> str:
    topic, partition, offset = source
    return f"{topic}/{partition}/{offset}"


# The second field's name and colon, eight bytes for each kind that is not REQUESTED.
_BY_HEAD = {
    b'"await":': MarkerKind.AWAITING,
    b'"final":': MarkerKind.FINAL,
    b'"early":': MarkerKind.EARLY,
}


def marker_head(value: bytes) -> tuple[MarkerKind, int]:
    """What a changelog value is, from the name of its second field (no JSON parsed), and
    where that field's value begins (restores read a million of these: one pass each)."""
    if not value.startswith(_SOURCE):
        return MarkerKind.REQUESTED, -1
    at = value.find(b'"', len(_SOURCE)) + 2
    return _BY_HEAD.get(value[at : at + 8], MarkerKind.REQUESTED), at + 8


# An early result's source field ends where its `early` field begins. Nowhere else in a
# changelog value can these bytes occur: the source holds no `"`, a JSON string holds none
# unescaped, and no other field is named `early`. The source ends within the first 300 bytes
# (topic names are at most 249 characters).
_EARLY_AFTER_SOURCE = b'","early":'
_SOURCE_END_WITHIN = 320


def marker_is_early(value: bytes) -> bool:
    """Whether a changelog value is an early result, the one kind that is no requested fallback
    (`marker_head` in one search, for restores with delivery results off)."""
    return (
        value.startswith(_SOURCE)
        and value.find(_EARLY_AFTER_SOURCE, len(_SOURCE), _SOURCE_END_WITHIN) >= 0
    )


def marker_kind(value: bytes) -> MarkerKind:
    """What a changelog value is, from the name of its second field (no JSON parsed)."""
    return marker_head(value)[0]


# What follows a requested marker's `await` array: its last element is the channel, a JSON
# string, inside which an unescaped `"` cannot occur, so this ends the array unambiguously.
_AWAIT_END = b'"],"fallbackId":'


def awaits_field(value: bytes, at: int) -> bytes:
    """The JSON of the `await` array that begins at `at` (`marker_head`): type, failure time
    (ms), deadline (s), channel."""
    return value[at : value.index(_AWAIT_END, at) + 2]


def marker_awaits(value: bytes) -> tuple[MessageKind, int, int, str]:
    """The `await` field of an AWAITING marker: type, failure time (ms), deadline (s), channel."""
    kind, failed_ms, deadline, sender_key = orjson.loads(awaits_field(value, marker_head(value)[1]))
    return MessageKind(kind), int(failed_ms), int(deadline), str(sender_key)


def marker_final(value: bytes) -> str:
    """The final status a FINAL marker names."""
    at = marker_head(value)[1] + 1  # past the opening quote
    return value[at : value.index(b'"', at)].decode()


def marker_early(value: bytes) -> bytes:
    """The result an EARLY record keeps."""
    early = orjson.loads(value)["early"]
    return orjson.dumps(early)


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
