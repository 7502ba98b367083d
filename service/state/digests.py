"""Fallback ids remembered compactly: 128-bit digests in sorted numpy arrays, 20 bytes each."""

from __future__ import annotations

import bisect
import hashlib

import numpy as np

_MERGE_EVERY = 4096  # recent additions kept in a dict before they join the sorted arrays


DIGEST_SIZE = 16
"""Bytes of a fallbackId's BLAKE2b digest (`digest_key`)."""

# A fallbackId's 128-bit BLAKE2b digest, as two 64-bit halves.
Digest = tuple[int, int]


def digest(key: bytes) -> Digest:
    """The digest of a fallbackId's UTF-8 bytes, as the set keeps it (computed once per record
    of a batch: the lookup and the later `add` share it)."""
    return digest_of(digest_key(key))


def digest_of(raw: bytes) -> Digest:
    """The digest whose 16 bytes (`digest_key`) are `raw`."""
    return int.from_bytes(raw[:8]), int.from_bytes(raw[8:])


class DigestSet:
    """Fallback ids remembered as 128-bit digests (BLAKE2b) with the second they were requested.

    Three parallel numpy arrays sorted by digest (two 64-bit halves, a 32-bit timestamp): 20
    bytes a fallback, looked up by binary search. Additions wait in a small dict and join the
    arrays in sorted batches; a restore builds the arrays in one sort.
    """

    def __init__(self) -> None:
        self._store(np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint32))
        self._recent: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._hi) + len(self._recent)

    @property
    def nbytes(self) -> int:
        """Memory of the arrays, and an estimate for the recent additions' dict."""
        return self._hi.nbytes + self._lo.nbytes + self._at.nbytes + 160 * len(self._recent)

    def __contains__(self, fallback_id: object) -> bool:
        if isinstance(fallback_id, str):
            hi, lo = digest(fallback_id.encode())
        elif isinstance(fallback_id, tuple):
            hi, lo = fallback_id
        else:
            return False
        return (hi, lo) in self._recent or self._index(hi, lo) >= 0

    def _index(self, hi: int, lo: int) -> int:
        # A memoryview hands out plain ints: bisecting it beats a numpy call per lookup.
        his = self._his_view
        i = bisect.bisect_left(his, hi)
        n = len(his)
        while i < n and his[i] == hi:  # the same upper half: 1 in 2**64 of the time
            if self._los_view[i] == lo:
                return i
            i += 1
        return -1

    def add(self, fallback_id: str | Digest, at_seconds: int) -> None:
        """Remember `fallback_id` (or its digest) as requested at `at_seconds` (keeps the latest
        time)."""
        hi, lo = digest(fallback_id.encode()) if isinstance(fallback_id, str) else fallback_id
        at = max(int(at_seconds), 1)
        i = self._index(hi, lo)
        if i >= 0:
            self._at[i] = max(int(self._at[i]), at)
            return
        key = (hi, lo)
        self._recent[key] = max(self._recent.get(key, 0), at)
        if len(self._recent) >= _MERGE_EVERY:
            self._merge()

    def _merge(self) -> None:
        """Insert the recent additions at their sorted places (a copy, not a re-sort)."""
        if not self._recent:
            return
        keys = np.array(list(self._recent), dtype=np.uint64).reshape(-1, 2)
        ats = np.fromiter(self._recent.values(), np.uint32, len(self._recent))
        self._recent = {}
        order = np.argsort(keys[:, 0], kind="stable")
        new_hi, new_lo, new_at = keys[order, 0], keys[order, 1], ats[order]
        at = np.searchsorted(self._hi, new_hi)
        self._store(
            np.insert(self._hi, at, new_hi),
            np.insert(self._lo, at, new_lo),
            np.insert(self._at, at, new_at),
        )

    def _store(self, his: np.ndarray, los: np.ndarray, ats: np.ndarray) -> None:
        self._hi, self._lo, self._at = his, los, ats
        self._his_view = memoryview(his.data)
        self._los_view = memoryview(los.data)

    def load(self, digests: bytes, at_seconds: np.ndarray) -> None:
        """Add many at once: `digests` is 16 bytes (a BLAKE2b digest of the id) per entry."""
        self._merge()
        halves = np.frombuffer(digests, dtype=">u8").astype(np.uint64).reshape(-1, 2)
        his = np.concatenate([self._hi, halves[:, 0]])
        los = np.concatenate([self._lo, halves[:, 1]])
        ats = np.concatenate([self._at, at_seconds.astype(np.uint32)])
        # Sort by digest, then by time, so that the last of equal digests is the latest.
        order = np.lexsort((ats, los, his))
        his, los, ats = his[order], los[order], ats[order]
        last = np.ones(len(his), dtype=bool)
        last[:-1] = (his[1:] != his[:-1]) | (los[1:] != los[:-1])
        self._store(his[last], los[last], ats[last])

    def prune(self, horizon_seconds: int) -> int:
        """Forget entries requested before `horizon_seconds`; returns how many."""
        before = len(self)
        self._merge()
        keep = self._at >= horizon_seconds
        if not keep.all():
            self._store(self._hi[keep], self._lo[keep], self._at[keep])
        return before - len(self)


def digest_key(key: bytes) -> bytes:
    """The 16-byte digest `DigestSet.load` takes for a fallbackId's UTF-8 bytes."""
    return hashlib.blake2b(key, digest_size=DIGEST_SIZE).digest()
