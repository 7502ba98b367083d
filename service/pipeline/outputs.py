"""The records an input record becomes besides its request: dead letters (§8) and forwards.

Pure functions of the input record; the writer sends what they return.
"""

from __future__ import annotations

from collections.abc import Container

from service.core.models import (
    DLQ_ERROR,
    DLQ_ERROR_DETAIL,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_SIZE,
    DLQ_ORIGINAL_TOPIC,
    DLQ_VALUE_TRUNCATED,
    Malformed,
)
from service.pipeline.seams import InputRecord, Partition, Write

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

ROUTED_FROM = "x-fallback-routed-from"


def dead_letter(
    record: InputRecord, malformed: Malformed, topic: str, max_bytes: int = 1_048_576
) -> Write:
    """The input record unchanged, with why and where it came from (§8).

    The service's own headers replace incoming ones of the same names: a producer cannot forge
    where a dead letter came from. A value too large for the DLQ topic (`max_bytes`, its
    `max.message.bytes`) is cut to fit and says so; the original stays at its input offset.
    """
    headers = copied_headers(record, _OWN_HEADERS)
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
    return Write(topic, record.key, value, headers, Partition(record.topic, record.partition))


def routed(record: InputRecord, key: bytes, owner: int, topic: str) -> Write:
    """The input record, keyed by its fallbackId (`key`), for the owner partition's
    repartition topic.

    Its headers stay; one more says where it came from (`topic/partition/offset`).
    """
    headers = copied_headers(record, {ROUTED_FROM})
    headers.append((ROUTED_FROM, f"{record.topic}/{record.partition}/{record.offset}".encode()))
    return Write(
        topic, key, record.value, headers, Partition(record.topic, record.partition), owner
    )


def copied_headers(record: InputRecord, replaced: Container[str]) -> list[tuple[str, bytes]]:
    """The record's headers for a copy of it, less those the service writes itself; a key that
    is not UTF-8 written as text (`header_key_for_output`)."""
    return [(header_key_for_output(k), v) for k, v in (record.headers or ()) if k not in replaced]


def header_key_for_output(key: str) -> str:
    """A header key as a producer can write it: undecodable bytes (kept by the tolerant reader
    of `service.compat` as surrogate escapes, PEP 383) as `\\xNN`."""
    if key.isascii():
        return key
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return key
