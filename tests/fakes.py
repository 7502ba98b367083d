"""Test doubles for the shell's seams: a recording writer, a dedupe state, scripted producers,
and a producer that writes header keys that are not UTF-8."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.producer import message_accumulator
from aiokafka.producer import producer as producer_module
from aiokafka.record import default_records

from service.pipeline.seams import Write
from service.state.dedupe import PartitionedDedupe
from service.state.digests import DigestSet
from service.state.restore import Restore
from tests.factories import record


class RecordingWriter:
    """Keeps every acknowledged step and commit, in order; can fail a chosen step once."""

    def __init__(self, *, fail_step: int | None = None, round_trip: float = 0.0) -> None:
        self.steps: list[list[Write]] = []
        self.round_trip = round_trip  # seconds each write waits, as for a broker's ack
        self.commits: list[dict[TopicPartition, int]] = []
        self.abandoned = 0
        self.started = False
        self.consumer: Any = None
        self._fail_step = fail_step
        self._calls = 0

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def attach(self, consumer: Any) -> None:
        self.consumer = consumer

    async def assigned(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        return None

    async def write(self, writes: Sequence[Write]) -> None:
        self._calls += 1
        call = self._calls
        if self.round_trip:
            await asyncio.sleep(self.round_trip)
        if self._fail_step == call:
            raise RuntimeError("injected write failure")
        self.steps.append(list(writes))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def abandon(self) -> None:
        self.abandoned += 1

    def topics(self) -> list[set[str]]:
        """The topics written at each step."""
        return [{w.topic for w in step} for step in self.steps]


class MemoryDedupe(PartitionedDedupe):
    """The real dedupe state owning every partition, with its changelog reader left out."""

    def __init__(self, partitions: int = 1, topic: str = "dedupe") -> None:
        super().__init__(topic, {}, retention_seconds=7 * 86400)
        self.start(partitions)
        self.states = {p: DigestSet() for p in range(partitions)}
        self.catch_ups = 0

    async def catch_up(self) -> None:
        self.catch_ups += 1

    def restore_from(
        self, markers: Sequence[Write], committed: Mapping[tuple[str, int], int]
    ) -> None:
        """What `restore` makes of `markers` (as a restarted replica reads them), given the
        input offsets the group had `committed`."""
        restore = Restore(
            self.states, horizon_ms=0, floors=committed, tails={}, room=self.in_flight_limit
        )
        for m in markers:
            owner = self.owner(m.key or b"")
            self.states[owner].add((m.key or b"").decode(), 1)
            restore.feed(owner, [record(m.value, key=m.key, headers=tuple(m.headers))])
        self.in_flight.update(restore.in_flight)


@dataclass
class _Builder:
    capacity: int
    records: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    closed: bool = False

    def close(self) -> None:
        self.closed = True

    def append(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        timestamp: int | None,
        headers: list[tuple[str, bytes]],
    ) -> object | None:
        if self.closed or len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


@dataclass
class ScriptedProducer:
    """An aiokafka-like producer whose sends fail as scripted, with `send` and the batch API
    (`create_batch`, `send_batch`, `partitions_for`).

    `outcomes` is consumed one entry per submission (a `send`, or a `send_batch` of up to
    `capacity` records): None acknowledges it, an exception fails its future, ("refuse", exc)
    makes the call itself raise, "pending" leaves the future to the test. With one partition
    and a capacity of one, every write is a submission of its own, in order.
    """

    outcomes: list[Any] = field(default_factory=list)
    sent: list[tuple[str, bytes | None]] = field(default_factory=list)
    started: bool = False
    stopped: bool = False
    capacity: int = 1
    partitions: int = 1
    batches: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = field(
        default_factory=list
    )
    # Whether each submitted batch was closed (a closed batch does not linger for more).
    closed: list[bool] = field(default_factory=list)
    # Futures of submissions scripted "pending": the test acknowledges or fails them.
    pending: list[asyncio.Future[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def _submitted(self, topic: str, keys: list[bytes | None]) -> asyncio.Future[None]:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, tuple) and outcome[0] == "refuse":
            raise outcome[1]
        self.sent.extend((topic, key) for key in keys)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if outcome == "pending":
            self.pending.append(future)
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(None)
        return future

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[None]:
        return self._submitted(topic, [key])

    def create_batch(self) -> _Builder:
        return _Builder(self.capacity)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    async def send_batch(
        self, batch: _Builder, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        future = self._submitted(topic, [key for key, _ in batch.records])
        self.batches.append((topic, partition, list(batch.records)))
        self.closed.append(batch.closed)
        return future


@dataclass
class ScriptedTransactionalProducer(ScriptedProducer):
    """A `ScriptedProducer` with aiokafka's transaction calls, recorded in `calls`."""

    calls: list[str] = field(default_factory=list)

    async def begin_transaction(self) -> None:
        await asyncio.sleep(0)  # as aiokafka may, waiting for the producer id
        self.calls.append("begin")

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group_id: str) -> None:
        self.calls.append(f"offsets {sorted(offsets.values())}")

    async def commit_transaction(self) -> None:
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")


# aiokafka's pure-Python batch builder: it writes a header key with the key's own `encode`.
PY_BUILDER: Any = getattr(default_records, "_DefaultRecordBatchBuilderPy")  # noqa: B009
BAD = b"\xff\xfetrace"  # a header key that is not UTF-8


class RawKey(str):
    """A header key that writes bytes that are not UTF-8, as a misbehaving producer would."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawKey:
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return bytes(self.raw)


@contextmanager
def misbehaving_producer() -> Iterator[None]:
    """aiokafka's pure-Python batch builder, which lets `RawKey` write its raw bytes."""
    modules = (message_accumulator, producer_module)
    originals = [m.DefaultRecordBatchBuilder for m in modules]
    for module in modules:
        module.DefaultRecordBatchBuilder = PY_BUILDER
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.DefaultRecordBatchBuilder = original
