"""Fetched record batches whose header keys are not UTF-8, read instead of failing (§8).

The Kafka protocol calls a header key a string; aiokafka decodes it strictly as UTF-8, in its
compiled reader, and a key that is not UTF-8 failed the whole fetch over and over: the partition
stalled and the consumer task crashed in a loop. Headers are the producer's business. So the
fetcher gets batches that are read with aiokafka's own reader as usual and, only for a batch
that reader refuses, read again with its pure-Python reader, whose header keys keep undecodable
bytes as surrogate escapes (PEP 383). `header_key_for_output` turns such a key back into text a
producer can write (`\\xNN` for each undecodable byte) when a dead letter or a forwarded event
copies the headers.

`install()` replaces the `MemoryRecords` name aiokafka's fetcher uses; aiokafka is pinned below
0.15, and `tests/test_records.py` proves the patch on a real broker.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import aiokafka.consumer.fetcher as fetcher
from aiokafka.record import default_records
from aiokafka.record.memory_records import MemoryRecords

# baseOffset (int64) and batchLength (int32) frame every batch of every message format.
_FRAME = struct.Struct(">qi")
_MAGIC_OFFSET = 16  # baseOffset, batchLength, partitionLeaderEpoch
_PY_BATCH: Any = getattr(default_records, "_DefaultRecordBatchPy")  # noqa: B009


class _EscapingSlice(bytearray):
    """A slice of a record buffer whose `decode` keeps undecodable bytes as escapes."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytearray.decode(self, encoding, "surrogateescape")


class _EscapingBuffer(bytearray):
    """A decompressed batch whose slices decode tolerantly (header keys)."""

    def __getitem__(self, index: Any) -> Any:
        got = bytearray.__getitem__(self, index)
        return _EscapingSlice(got) if isinstance(index, slice) else got


class _Batch:
    """A fetched batch as aiokafka reads it; read again tolerantly if that reader refuses it."""

    def __init__(self, batch: Any, raw: bytes) -> None:
        self._batch = batch
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        try:
            records = list(self._batch)
        except UnicodeDecodeError:
            records = list(_tolerant(self._raw))
        return iter(records)

    def __next__(self) -> Any:  # control batches are read with next()
        return next(self._batch)


def _tolerant(raw: bytes) -> Any:
    batch = _PY_BATCH(raw)
    batch._maybe_uncompress()
    batch._buffer = _EscapingBuffer(batch._buffer)
    return batch


class TolerantMemoryRecords:
    """aiokafka's `MemoryRecords`, handing out batches that survive non-UTF-8 header keys."""

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._data = memoryview(data)
        self._position = 0

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._position
        _, length = _FRAME.unpack_from(self._data, start)
        self._position = start + _FRAME.size + length
        if self._data[start + _MAGIC_OFFSET] != 2:
            return batch  # message formats 0 and 1 have no headers
        return _Batch(batch, bytes(self._data[start : self._position]))


def install() -> None:
    """Make aiokafka's fetcher read batches through `TolerantMemoryRecords`."""
    fetcher.MemoryRecords = TolerantMemoryRecords


def header_key_for_output(key: str) -> str:
    """A header key as a producer can write it: undecodable bytes as `\\xNN`."""
    if key.isascii():
        return key
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return key
