"""What the fallbacks of each owned partition await (§11): the awaited set, 24 bytes a fallback
in memory, the EXPIRED ones, the early results, and the sweep's place in the changelog.

The awaited set is one numpy structured array sorted by the first 64 bits of the fallbackId's
digest (the dedupe state's, `service.state.digests`): the failure's time (for `latencyMs`), the
deadline, the channel (an index into the replica's interned sender keys) and the type. The id
itself is not kept: a result names it, and the expiry sweep reads it back from the changelog
(`service.runtime.sweep`). Additions wait in a small dict and join the array in sorted batches;
removals clear a flag and are compacted away in bulk.
"""

from __future__ import annotations

import contextlib
import gc
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import orjson

from service.core.models import MessageKind
from service.core.results import Awaited, Deadlines
from service.pipeline.seams import ResultChanges
from service.state.digests import Digest, DigestSet, digest_of

ENTRY = np.dtype(
    [
        ("key", "<u8"),  # the first half of the fallbackId's BLAKE2b-128 digest
        ("failed_ms", "<i8"),
        ("deadline", "<u4"),  # epoch seconds
        ("channel", "<u2"),
        ("kind", "u1"),
        ("alive", "u1"),
    ]
)
assert ENTRY.itemsize == 24

KINDS = (MessageKind.SMS, MessageKind.LMS)
_KIND_INDEX = {kind.value: i for i, kind in enumerate(KINDS)}
_MERGE_EVERY = 4096


class Channels:
    """Sender keys interned to two bytes: a replica awaits results for few channels."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def index(self, sender_key: str) -> int:
        found = self._index.get(sender_key)
        if found is None:
            if len(self.names) >= 65_535:
                raise OverflowError("more than 65,535 channels awaiting results")
            found = self._index[sender_key] = len(self.names)
            self.names.append(sender_key)
        return found


class AwaitedSet:
    """The awaited fallbacks of one owned partition, by the first half of their digest."""

    def __init__(self, channels: Channels) -> None:
        self.channels = channels
        self._entries = np.empty(0, ENTRY)
        self._recent: dict[int, tuple[int, int, int, int]] = {}
        self._dead = 0

    def __len__(self) -> int:
        return len(self._entries) - self._dead + len(self._recent)

    @property
    def nbytes(self) -> int:
        """The array's memory, and an estimate for recent additions not merged yet."""
        return int(self._entries.nbytes) + 200 * len(self._recent)

    def add(self, key: int, awaited: Awaited) -> None:
        """Await `awaited` under `key` (a fallback already awaited keeps its first entry)."""
        if self._find(key) is None:
            self._add_new(key, awaited)

    def add_many(self, items: list[tuple[int, Awaited]]) -> None:
        """`add` for a batch's new requests: which are awaited already is looked up in the
        array for all of them at once (one search instead of one per request)."""
        entries = self._entries
        if len(entries) and items:
            keys = np.fromiter((k for k, _ in items), np.uint64, len(items))
            at = np.minimum(np.searchsorted(entries["key"], keys), len(entries) - 1)
            same = entries["key"][at] == keys
            alive = entries["alive"][at] == 1
            for (key, awaited), found, live in zip(items, same, alive, strict=True):
                # A dead first entry may have a live one after it: the exact search decides.
                if not found or (not live and self._find(key) is None):
                    self._add_new(key, awaited)
        else:
            for key, awaited in items:
                self._add_new(key, awaited)

    def _add_new(self, key: int, awaited: Awaited) -> None:
        if key in self._recent:
            return
        self._recent[key] = (
            awaited.failed_at_ms,
            awaited.deadline_s,
            self.channels.index(awaited.sender_key),
            _KIND_INDEX[awaited.kind],
        )
        if len(self._recent) >= _MERGE_EVERY:
            self._merge()

    def load(self, rows: np.ndarray) -> None:
        """Take in many entries at once (a restore), sorted here in one go."""
        self._merge()
        rows = np.concatenate([self._entries[self._entries["alive"] == 1], rows])
        # By the key column alone: sorting a structured array by `order` compares whole
        # records, several times slower at a million entries.
        self._entries, self._dead = rows[np.argsort(rows["key"], kind="stable")], 0

    def get(self, key: int, fallback_id: str) -> Awaited | None:
        """What `fallback_id` (digest half `key`) awaits, or None."""
        found = self._recent.get(key)
        if found is None:
            i = self._find(key)
            if i is None:
                return None
            row = self._entries[i]
            found = (
                int(row["failed_ms"]),
                int(row["deadline"]),
                int(row["channel"]),
                int(row["kind"]),
            )
        failed_ms, deadline, channel, kind = found
        return Awaited(fallback_id, self.channels.names[channel], KINDS[kind], failed_ms, deadline)

    def pop(self, key: int) -> bool:
        """No longer await `key`; whether it was awaited."""
        if self._recent.pop(key, None) is not None:
            return True
        i = self._find(key)
        if i is None:
            return False
        self._entries["alive"][i] = 0
        self._dead += 1
        if self._dead > 1024 and self._dead * 4 > len(self._entries):
            self._entries = self._entries[self._entries["alive"] == 1]
            self._dead = 0
        return True

    def due(self, now_s: int) -> int:
        """How many awaited fallbacks are past their deadline."""
        self._merge()
        entries = self._entries
        return int(np.count_nonzero((entries["alive"] == 1) & (entries["deadline"] <= now_s)))

    def _find(self, key: int) -> int | None:
        entries = self._entries
        i = int(np.searchsorted(entries["key"], np.uint64(key)))
        while i < len(entries) and int(entries["key"][i]) == key:
            if entries["alive"][i]:
                return i
            i += 1
        return None

    def _merge(self) -> None:
        if not self._recent:
            return
        rows = np.empty(len(self._recent), ENTRY)
        rows["key"] = np.fromiter(self._recent, np.uint64, len(self._recent))
        values = np.array(list(self._recent.values()), dtype=np.int64).reshape(-1, 4)
        rows["failed_ms"], rows["deadline"] = values[:, 0], values[:, 1]
        rows["channel"], rows["kind"], rows["alive"] = values[:, 2], values[:, 3], 1
        self._recent = {}
        rows = rows[np.argsort(rows["key"])]
        at = np.searchsorted(self._entries["key"], rows["key"])
        self._entries = np.insert(self._entries, at, rows)


@dataclass(slots=True)
class PartitionResults:
    """What one owned partition's fallbacks await, and what the sweep has read of its
    changelog (per type: the offset from which markers may still be due)."""

    awaited: AwaitedSet
    expired: DigestSet = field(default_factory=DigestSet)
    # Early results: digest → (the result record's value, until when it waits, epoch ms).
    early: dict[Digest, tuple[bytes, int]] = field(default_factory=dict)
    cursors: dict[MessageKind, int] = field(default_factory=dict)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector paused: many small containers that all live until the block
    ends (parsed JSON, fetched records) make it run again and again for nothing: they hold no
    cycles, and reference counting frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Loading:
    """One partition's results state as a restore reads it, record by record (pure)."""

    # Await arrays parsed per chunk: one JSON document of 50,000 instead of 50,000 documents,
    # and at most a chunk of their bytes held at once (about 4 MB).
    CHUNK = 50_000

    def __init__(self, channels: Channels, now_ms: int) -> None:
        self.channels = channels
        self.now_ms = now_ms
        self.keys = array("Q")
        self.failed = array("q")
        self.deadlines = array("I")
        self.channel = array("H")
        self.kinds = array("B")
        self.cursors: dict[MessageKind, int] = {}
        self._fields: list[bytes] = []
        self._offsets = array("q")
        self.finished = array("Q")
        self.expired = bytearray()
        self.expired_at = array("I")
        self.early: dict[Digest, tuple[bytes, int]] = {}

    def awaiting(self, raw: bytes, offset: int, field: bytes) -> None:
        """A requested marker awaiting its result: `raw` is its 16-byte digest, `field` its
        `await` array's JSON (`markers.awaits_field`)."""
        self.keys.append(int.from_bytes(raw[:8]))
        self._offsets.append(offset)
        self._fields.append(field)
        if len(self._fields) >= self.CHUNK:
            self._parse()

    def _parse(self) -> None:
        if not self._fields:
            return
        with collector_paused():
            parsed = orjson.loads(b"[" + b",".join(self._fields) + b"]")
            kinds, failed, deadlines, senders = zip(*parsed, strict=True)
            del parsed
        channel = {name: self.channels.index(name) for name in set(senders)}
        self.failed.extend(failed)
        self.deadlines.extend(deadlines)
        self.channel.extend([channel[s] for s in senders])
        index = [_KIND_INDEX[k] for k in kinds]
        self.kinds.extend(index)
        for i, kind in enumerate(KINDS):
            # The sweep reads each type's markers from the first one that awaits.
            if kind not in self.cursors and i in index:
                self.cursors[kind] = self._offsets[index.index(i)]
        self._fields, self._offsets = [], array("q")

    def final(self, digest: Digest, raw: bytes, status: str, at_s: int) -> None:
        self.finished.append(digest[0])
        self.early.pop(digest, None)
        if status == "EXPIRED":
            self.expired += raw
            self.expired_at.append(at_s)

    def early_result(self, digest: Digest, result: bytes, until_ms: int) -> None:
        if until_ms > self.now_ms:
            self.early.setdefault(digest, (result, until_ms))

    def requested(self, raw: bytes) -> None:
        """A requested marker that awaits nothing: an early result for it is moot."""
        if self.early:
            self.early.pop(digest_of(raw), None)

    def state(self, end: int) -> PartitionResults:
        """The partition's state; `end` is the changelog's end offset when it was read."""
        self._parse()
        rows = np.empty(len(self.keys), ENTRY)
        rows["key"] = np.frombuffer(self.keys, np.uint64)
        rows["failed_ms"] = np.frombuffer(self.failed, np.int64)
        rows["deadline"] = np.frombuffer(self.deadlines, np.uint32)
        rows["channel"] = np.frombuffer(self.channel, np.uint16)
        rows["kind"] = np.frombuffer(self.kinds, np.uint8)
        rows["alive"] = 1
        if self.early:
            # A request after its early result makes it moot (`requested`, `final` do the same).
            awaited = set(self.keys)
            self.early = {d: e for d, e in self.early.items() if d[0] not in awaited}
        if len(self.finished):
            rows = rows[~np.isin(rows["key"], np.frombuffer(self.finished, np.uint64))]
        awaited_set = AwaitedSet(self.channels)
        awaited_set.load(rows)
        expired = DigestSet()
        expired.load(bytes(self.expired), np.frombuffer(self.expired_at, np.uint32))
        cursors = {kind: self.cursors.get(kind, end) for kind in KINDS}
        return PartitionResults(awaited_set, expired, self.early, cursors)


class Results:
    """The results state of the partitions this replica owns (§11), beside the dedupe state."""

    def __init__(self, deadlines: Deadlines, early_window_ms: int) -> None:
        self.deadlines = deadlines
        self.early_window_ms = early_window_ms
        self.channels = Channels()
        self.partitions: dict[int, PartitionResults] = {}

    def awaited(self, partition: int, digest: Digest, fallback_id: str) -> Awaited | None:
        state = self.partitions.get(partition)
        return None if state is None else state.awaited.get(digest[0], fallback_id)

    def expired(self, partition: int, digest: Digest) -> bool:
        state = self.partitions.get(partition)
        return state is not None and digest in state.expired

    def early(self, partition: int, digest: Digest) -> bytes | None:
        state = self.partitions.get(partition)
        found = None if state is None else state.early.get(digest)
        return None if found is None else found[0]

    def apply(self, changes: ResultChanges, now_ms: int) -> None:
        """Take in what a committed batch changed (early results first: a request or a final
        outcome of the same batch makes them moot)."""
        for partition, digest, result in changes.early:
            state = self.partitions.get(partition)
            if state is not None:
                state.early.setdefault(digest, (result, now_ms + self.early_window_ms))
        adding: dict[int, list[tuple[int, Awaited]]] = {}
        for partition, digest, awaited in changes.awaiting:
            state = self.partitions.get(partition)
            if state is not None:
                adding.setdefault(partition, []).append((digest[0], awaited))
                if state.early:
                    state.early.pop(digest, None)
        for partition, items in adding.items():
            self.partitions[partition].awaited.add_many(items)
        for partition, digest, status in changes.finals:
            state = self.partitions.get(partition)
            if state is not None:
                state.awaited.pop(digest[0])
                state.early.pop(digest, None)
                if status == "EXPIRED":
                    state.expired.add(digest, now_ms // 1000)

    def prune_early(self, now_ms: int) -> int:
        """Forget early results whose window has passed; how many (never requested, §11)."""
        gone = 0
        for state in self.partitions.values():
            late = [d for d, (_, until) in state.early.items() if until <= now_ms]
            for d in late:
                del state.early[d]
            gone += len(late)
        return gone

    def loading(self, now_ms: int) -> Loading:
        """A fresh reader of one partition's changelog for a restore."""
        return Loading(self.channels, now_ms)

    def install(self, states: dict[int, PartitionResults]) -> None:
        self.partitions.update(states)

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.partitions.pop(p, None)

    def __len__(self) -> int:
        return sum(len(s.awaited) for s in self.partitions.values())

    @property
    def nbytes(self) -> int:
        return sum(s.awaited.nbytes for s in self.partitions.values())
