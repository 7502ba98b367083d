"""The seams the pipeline works through: records in, writes out, the sink, the dedupe state.

Each is a Protocol with its real adapter elsewhere (`service.kafka`, `service.sinks`,
`service.state`) and a test double in `service.sinks.memory` and `tests.fakes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from service.core.models import Outcome, SmsRequest
from service.core.results import Awaited, DeliveryResult
from service.core.settle import ProviderAnswer


class Partition(NamedTuple):
    """A topic partition. Equal to (and hashed as) aiokafka's `TopicPartition` of the same
    topic and number, so either can key the same dict; Kafka adapters convert at their edge."""

    topic: str
    partition: int


# An input record: topic, partition, offset.
Source = tuple[str, int, int]


class InputRecord(Protocol):
    """What the pipeline reads of a consumed record (aiokafka's `ConsumerRecord` has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class Stopping(Exception):
    """The service is stopping while a batch could not be written; it stays uncommitted."""


class Unwritable(Exception):
    """A write that no retry can make succeed (too large, not authorised): the service stops,
    loudly, rather than stall retrying it; the batch stays uncommitted."""


class PartitionsNotCommitted(Exception):
    """Some partitions' transactions did not commit: read those partitions again.

    The others did commit; their outputs are final.
    """

    def __init__(self, failed: dict[Partition, BaseException], committed: set[Partition]) -> None:
        super().__init__(
            "transactions not committed for "
            + ", ".join(f"{tp.topic}[{tp.partition}]: {exc!r}" for tp, exc in failed.items())
        )
        self.failed = failed
        self.committed = committed


@dataclass(slots=True)
class Write:
    """One record to produce, the input partition that caused it, and (when the key's
    partitioner must not choose) the output partition."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    source: Partition | None = None
    partition: int | None = None


class Writer(Protocol):
    """How the processor's outputs and input offsets reach Kafka (contract §9)."""

    async def start(self) -> None:
        """Connect; retried by the caller until the broker answers."""
        ...

    async def stop(self) -> None: ...

    def attach(self, consumer: Any) -> None:
        """The group consumer whose offsets `commit` commits, once it runs."""
        ...

    async def assigned(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """Take over `partitions`; returns, per partition, the offset below which records
        already fetched belong to a previous owner (none when there is nothing to drop)."""
        ...

    async def revoked(self, partitions: Iterable[Partition]) -> None:
        """Give `partitions` up; the batch in flight has finished."""
        ...

    async def write(self, writes: Sequence[Write]) -> None:
        """Produce `writes` in order; return once every one is acknowledged (or, in a
        transaction, sent: nothing is visible before `commit`).

        Raises `Stopping` when the service stops before they could be written.
        """
        ...

    async def commit(self, offsets: dict[Partition, int]) -> None:
        """Make the batch final: commit the next input offset of each partition."""
        ...

    async def abandon(self) -> None:
        """Forget a batch that will be read again (rewound, or stopping)."""
        ...


@dataclass(slots=True)
class Delivery:
    """One request to hand over, the input partition that caused it, and the provider's answer.

    It is the one record of a requested fallback through its batch: the outcome decided for it,
    its input offset and its fallbackId's bytes travel with it (set by the processor).
    """

    request: SmsRequest
    source: Partition
    answer: ProviderAnswer | None = None
    # Not settled: the provider is unavailable. Its input record must be read again later.
    held: bool = False
    # Set by the processor: the REQUESTED outcome, the input offset, the fallbackId's UTF-8
    # bytes (the key of every record about it) and the partition that owns it.
    outcome: Outcome | None = None
    offset: int = -1
    key: bytes = b""
    owner: int = 0
    digest: tuple[int, int] = (0, 0)
    # With delivery results on (§11): what it will await once requested, and a result that
    # came before it (applied as soon as its marker is written). `marked`: its marker is.
    awaits: Awaited | None = None
    early: DeliveryResult | None = None
    marked: bool = False


class Sink(Protocol):
    """Where REQUESTED fallbacks go (contract §6, §10).

    A publishing sink (`kafka`) hands them to the SMS service and leaves `Delivery.answer` empty;
    a delivering sink (`nhn`) sends them itself and sets the provider's answer, which
    `service.core.settle` turns into SENT or FAILED. A delivering sink whose provider is
    unavailable leaves a delivery `held`: nothing is recorded for it, its input record is read
    again, and the runtime pauses its input until the sink may try again.
    """

    name: str
    # A delivering sink (answers, may hold) gets each batch's deliveries in one call; a
    # publishing one gets them a part at a time, each part written on while the next converts.
    delivers: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Hand every request over; return once each is acknowledged (and answered, for a
        delivering sink, in `Delivery.answer`) or `held`. The same fallbackId never appears
        twice in one call."""
        ...

    def unavailable(self) -> str | None:
        """Why the sink cannot take requests now (shown on /readyz), or None."""
        ...

    def retry_in(self) -> float:
        """Seconds to wait, after a delivery was held, before `probe()`."""
        ...

    def probe(self) -> None:
        """Let the next delivery try the provider again."""
        ...


class Dedupe(Protocol):
    """Which fallbacks already count as requested (§5.1 rule 1), kept in a changelog topic
    partitioned like the input: each fallback has an owner partition (`service.state`)."""

    @property
    def topic(self) -> str: ...

    def owner(self, key: bytes) -> int:
        """The input partition that owns the fallback whose id's UTF-8 bytes are `key`."""
        ...

    def digest(self, key: bytes) -> tuple[int, int]:
        """What the state keeps of a fallbackId (`key`, its UTF-8 bytes): computed once per
        record, for the lookup and for remembering it."""
        ...

    def contains(self, partition: int, fallback_id: str | tuple[int, int]) -> bool: ...

    def outcomes_in_flight(self, source: Source, fallback_id: str) -> list[bytes] | None:
        """The outcomes written for `fallback_id` by this very input record before a crash cut
        its batch short (its marker was written, its offset not committed), else None; less
        the event's own fields (`outcome_with_event`)."""
        ...

    def forget_in_flight(self, sources: Iterable[Source]) -> None: ...

    async def catch_up(self) -> None: ...

    def remember(self, marked: Sequence[tuple[int, str | tuple[int, int]]], now_ms: int) -> None:
        """Remember the fallbacks (ids or digests) whose markers are committed, by owner."""
        ...

    @staticmethod
    def marker(
        fallback_id: str,
        requested_at: str,
        source: Source,
        outcomes: Sequence[bytes],
        awaits: Awaited | None = None,
        final: str | None = None,
    ) -> bytes: ...


@dataclass(slots=True)
class ResultChanges:
    """What a batch changes in the results state (§11), applied once it is committed: by owner
    partition and digest, the fallbacks now awaited, those now final (with their status), and
    early results (their record's value) kept for their request."""

    awaiting: list[tuple[int, tuple[int, int], Awaited]] = field(default_factory=list)
    finals: list[tuple[int, tuple[int, int], str]] = field(default_factory=list)
    early: list[tuple[int, tuple[int, int], bytes]] = field(default_factory=list)


class Awaiting(Protocol):
    """What the owned fallbacks await (§11): `service.state.awaited.Results`."""

    def awaited(
        self, partition: int, digest: tuple[int, int], fallback_id: str
    ) -> Awaited | None: ...

    def expired(self, partition: int, digest: tuple[int, int]) -> bool: ...

    def early(self, partition: int, digest: tuple[int, int]) -> bytes | None: ...

    def apply(self, changes: ResultChanges, now_ms: int) -> None: ...
