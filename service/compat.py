"""Every reach into the internals of aiokafka, FastStream and click, in one place.

Each reach says why it is needed, the upstream issue, the versions it was checked against and
when to remove it. `self_check()` runs at the process entry (`service.cli.main`, before any
verb, `run` included): when an upgrade has moved a target, start-up stops naming this module,
instead of the workaround silently doing nothing. The dependency pins in `pyproject.toml`
carry the same reasons.

1. aiokafka's fetcher, for header keys that are not UTF-8 (contract §8). The Kafka protocol
   calls a header key a string; aiokafka decodes it strictly as UTF-8 in its compiled reader, and
   a key that is not UTF-8 failed the whole fetch over and over: the partition stalled and the
   consumer task crashed in a loop. The fetcher gets batches read with aiokafka's own reader as
   usual and, only for a batch that reader refuses, read again with its pure-Python reader, whose
   header keys keep undecodable bytes as surrogate escapes (PEP 383);
   `service.pipeline.outputs.header_key_for_output` writes them back as `\\xNN`.
   Upstream: none filed yet (aiokafka `consumer/fetcher.py` imports `MemoryRecords` by name).
   Checked: aiokafka 0.14.0. Remove when aiokafka decodes header keys tolerantly or as bytes.
2. aiokafka's consumer has no public call to refresh metadata; its client has one
   (`refresh_metadata`). Checked: aiokafka 0.14.0. Remove when the consumer offers one.
3. FastStream's batch parser decodes every header value as UTF-8 for its own message, and a
   value that is not UTF-8 (or null) fails the whole batch before the handler runs
   (ag2ai/faststream#2458, open; a fix is proposed in PR #2459). `tolerant_headers` is a
   two-argument custom parser: FastStream parses copies with readable headers, the handler gets
   the records as they came. Checked: FastStream 0.7.8. Remove when #2458 is fixed in the
   pinned range.
4. Typer 0.2x vendors its own click (`typer._click`): its usage errors are not click's class.
   `USAGE_ERRORS` holds both families. Checked: typer 0.27.1, click 8.5.1. Remove when the
   CLI is plain Typer or plain click.
5. FastStream warns "Auto create topics is disabled. Make sure the topics exist." at every start
   when topic creation is off, whether the topics exist or not. The service checks its topics
   itself and says only what is true (`service.runtime.service`), so `quiet_topic_warning` drops
   that one line (matched by its text). Checked: FastStream 0.7.8
   (`faststream/kafka/subscriber/usecase.py`, `_ensure_topics`). Remove when FastStream checks
   before it warns. Not self-checked: should the text change, the warning merely shows again.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiokafka.consumer.fetcher as fetcher
import click
from aiokafka.record import default_records
from aiokafka.record.memory_records import MemoryRecords


class CompatError(RuntimeError):
    """A third-party internal this service relies on is not where it was."""


def self_check() -> None:
    """Fail loudly, naming this module, when a target of a workaround is gone."""
    problems = []
    if not hasattr(fetcher, "MemoryRecords"):
        problems.append("aiokafka.consumer.fetcher.MemoryRecords (1)")
    if _PY_BATCH is None or not hasattr(_PY_BATCH, "_maybe_uncompress"):
        problems.append("aiokafka.record.default_records._DefaultRecordBatchPy (1)")
    from aiokafka.client import AIOKafkaClient

    if not hasattr(AIOKafkaClient, "force_metadata_update"):
        problems.append("aiokafka.client.AIOKafkaClient.force_metadata_update (2)")
    from faststream.kafka.parser import AioKafkaBatchParser

    if not hasattr(AioKafkaBatchParser, "parse_batch"):
        problems.append("faststream.kafka.parser.AioKafkaBatchParser.parse_batch (3)")
    if _typer_usage_error() is None:
        problems.append("typer's vendored click UsageError (4)")
    if problems:
        raise CompatError(
            "service.compat: a library internal this service relies on has moved (an upgrade "
            "outside the pinned versions?): " + ", ".join(problems)
        )


# baseOffset (int64) and batchLength (int32) frame every batch of every message format.
_FRAME = struct.Struct(">qi")
_MAGIC_OFFSET = 16  # baseOffset, batchLength, partitionLeaderEpoch
_PY_BATCH: Any = getattr(default_records, "_DefaultRecordBatchPy", None)


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

    def __init__(self, batch: Any, raw: memoryview) -> None:
        self._batch = batch
        self._raw = raw  # a view into the fetched buffer: copied only when read again

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        try:
            records = list(self._batch)
        except UnicodeDecodeError:
            records = list(_tolerant(bytes(self._raw)))
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
        return _Batch(batch, self._data[start : self._position])


def install() -> None:
    """Make aiokafka's fetcher read batches through `TolerantMemoryRecords`."""
    fetcher.MemoryRecords = TolerantMemoryRecords


async def refresh_metadata(consumer: Any) -> None:
    """Ask the cluster for fresh metadata (a topic created a moment ago may not be known yet)."""
    await consumer._client.force_metadata_update()


def _readable(value: object) -> bool:
    if not isinstance(value, bytes):
        return False
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


async def tolerant_headers(records: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """A FastStream batch parser that survives header values that are not UTF-8 (see 3)."""
    if all(_readable(v) for r in records for _, v in r.headers):
        return await original(records)
    readable = tuple(
        dataclasses.replace(r, headers=[(k, v) for k, v in r.headers if _readable(v)])
        for r in records
    )
    message = await original(readable)
    message.raw_message = records
    return message


def _typer_usage_error() -> type[Exception] | None:
    try:
        vendored = importlib.import_module("typer._click.exceptions")
    except ImportError:
        return click.UsageError  # a Typer on plain click again: one family
    found = getattr(vendored, "UsageError", None)
    return found if isinstance(found, type) and issubclass(found, Exception) else None


USAGE_ERRORS: tuple[type[Exception], ...] = tuple(
    {click.UsageError, *([t] if (t := _typer_usage_error()) is not None else [])}
)


_AUTO_CREATE_WARNING = "Auto create topics is disabled"


class _NotTheTopicWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_AUTO_CREATE_WARNING)


def quiet_topic_warning(logger: logging.Logger) -> None:
    """Drop FastStream's unconditional topic warning from `logger` (see 5); once per logger."""
    if not any(isinstance(f, _NotTheTopicWarning) for f in logger.filters):
        logger.addFilter(_NotTheTopicWarning())
