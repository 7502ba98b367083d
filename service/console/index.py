"""The console's search index (§12): a SQLite file of fallbacks, outcomes, dead letters and
audit records, fed from their topics, with the position reached in each partition."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.core.models import DLQ_ERROR, DLQ_ERROR_DETAIL, FINAL_STATUSES, Status
from service.ops.dlq import event_fallback_id

# Bumped whenever the tables change: an index of another version is rebuilt from the topics.
SCHEMA = 1

_SEND_STATUSES = frozenset({Status.SENT, Status.FAILED})

_TABLES = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions(
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY(topic, partition));
CREATE TABLE IF NOT EXISTS fallbacks(
    fallback_id TEXT PRIMARY KEY, request_id TEXT, sender_key TEXT, type TEXT,
    request_status TEXT, send_status TEXT, final_status TEXT, status TEXT, rank INTEGER,
    reason TEXT, provider TEXT, first_at INTEGER NOT NULL, last_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS fallbacks_time ON fallbacks(first_at, fallback_id);
CREATE INDEX IF NOT EXISTS fallbacks_request ON fallbacks(request_id);
CREATE INDEX IF NOT EXISTS fallbacks_channel ON fallbacks(sender_key, first_at);
CREATE INDEX IF NOT EXISTS fallbacks_status ON fallbacks(status, first_at);
CREATE INDEX IF NOT EXISTS fallbacks_reason ON fallbacks(reason, first_at);
CREATE TABLE IF NOT EXISTS outcomes(
    fallback_id TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    at INTEGER NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY(fallback_id, partition, offset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters(
    partition INTEGER NOT NULL, offset INTEGER NOT NULL, at INTEGER NOT NULL,
    error TEXT NOT NULL, detail TEXT NOT NULL, key BLOB, value BLOB, headers BLOB NOT NULL,
    fallback_id TEXT, PRIMARY KEY(partition, offset));
CREATE INDEX IF NOT EXISTS dead_letters_time ON dead_letters(at);
CREATE INDEX IF NOT EXISTS dead_letters_fallback ON dead_letters(fallback_id);
CREATE TABLE IF NOT EXISTS audit(
    partition INTEGER NOT NULL, offset INTEGER NOT NULL, at INTEGER NOT NULL,
    actor TEXT, via TEXT, tbl TEXT, key TEXT, before TEXT, after TEXT,
    PRIMARY KEY(partition, offset));
CREATE INDEX IF NOT EXISTS audit_time ON audit(at);
"""

_UPSERT = """
INSERT INTO fallbacks(fallback_id, request_id, sender_key, type, request_status, send_status,
    final_status, status, rank, reason, provider, first_at, last_at)
VALUES(:fallback_id, :request_id, :sender_key, :type, :request_status, :send_status,
    :final_status, :status, :rank, :reason, :provider, :at, :at)
ON CONFLICT(fallback_id) DO UPDATE SET
    request_id = COALESCE(request_id, excluded.request_id),
    sender_key = COALESCE(sender_key, excluded.sender_key),
    type = COALESCE(type, excluded.type),
    request_status = COALESCE(request_status, excluded.request_status),
    send_status = COALESCE(send_status, excluded.send_status),
    final_status = COALESCE(final_status, excluded.final_status),
    status = CASE WHEN excluded.rank >= rank THEN excluded.status ELSE status END,
    reason = CASE WHEN excluded.rank >= rank THEN COALESCE(excluded.reason, reason)
             ELSE reason END,
    rank = MAX(rank, excluded.rank),
    provider = COALESCE(excluded.provider, provider),
    first_at = MIN(first_at, excluded.first_at),
    last_at = MAX(last_at, excluded.last_at)
"""

_COLUMNS = (
    "fallback_id, request_id, sender_key, type, request_status, send_status, final_status, "
    "status, reason, provider, first_at, last_at"
)


def _rank(status: str) -> int:
    if status in FINAL_STATUSES:
        return 3
    if status in _SEND_STATUSES:
        return 2
    return 1


def outcome_row(value: bytes | None, at: int) -> dict[str, Any] | None:
    """What one outcome record (§7) adds to its fallback's row; None for a record that is not
    an outcome (the index skips it, as readers of the topic must)."""
    try:
        outcome = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(outcome, dict):
        return None
    fid, status = outcome.get("fallbackId"), outcome.get("status")
    if not isinstance(fid, str) or not isinstance(status, str) or status not in Status.__members__:
        return None
    provider = outcome.get("provider") or {}
    delivery = outcome.get("delivery") or {}
    name = (provider.get("name") if isinstance(provider, dict) else None) or (
        delivery.get("provider") if isinstance(delivery, dict) else None
    )
    rank = _rank(status)
    return {
        "fallback_id": fid,
        "request_id": _text(outcome.get("requestId")),
        "sender_key": _text(outcome.get("senderKey")),
        "type": _text(outcome.get("type")),
        "request_status": status if rank == 1 else None,
        "send_status": status if rank == 2 else None,
        "final_status": status if rank == 3 else None,
        "status": status,
        "rank": rank,
        "reason": _text(outcome.get("reason")),
        "provider": _text(name),
        "at": at,
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def dead_letter_fallback(key: bytes | None, value: bytes | None) -> str | None:
    """The fallbackId of a dead letter: of its event when the value still has one, else its
    key when that looks like one (`{requestId}:{recipientSeq}`)."""
    found = event_fallback_id(value)
    if found is None and key:
        text = key.decode("utf-8", "replace")
        if ":" in text:
            return text
    return found


def encode_headers(headers: Iterable[tuple[str, bytes | None]]) -> bytes:
    return orjson.dumps([[k, base64.b64encode(v or b"").decode()] for k, v in headers])


def decode_headers(raw: bytes) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in orjson.loads(raw)]


def dead_letter_row(
    partition: int,
    offset: int,
    at: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]],
) -> tuple[Any, ...]:
    """The dead_letters row of one DLQ record (§8)."""
    found = {k: (v or b"") for k, v in headers}
    return (
        partition,
        offset,
        at,
        found.get(DLQ_ERROR, b"").decode("utf-8", "replace"),
        found.get(DLQ_ERROR_DETAIL, b"").decode("utf-8", "replace"),
        key,
        value,
        encode_headers(headers),
        dead_letter_fallback(key, value),
    )


def audit_row(partition: int, offset: int, at: int, value: bytes | None) -> tuple[Any, ...] | None:
    """The audit row of one audit record (§10); None for one that is not."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None

    def shown(part: Any) -> str | None:
        return None if part is None else orjson.dumps(part, option=orjson.OPT_SORT_KEYS).decode()

    return (
        partition,
        offset,
        at,
        _text(data.get("actor")),
        _text(data.get("via")),
        _text(data.get("table")),
        _text(data.get("key")),
        shown(data.get("before")),
        shown(data.get("after")),
    )


@dataclass(frozen=True)
class Query:
    """A send query (§12): by requestId or fallbackId, or by time range and filters."""

    request_id: str | None = None
    fallback_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    sender_key: str | None = None
    status: str | None = None
    reason: str | None = None

    @property
    def by_id(self) -> bool:
        return bool(self.request_id or self.fallback_id)


@dataclass(frozen=True)
class Row:
    """A fallback as the search shows it: request status and send result side by side."""

    fallback_id: str
    request_id: str | None
    sender_key: str | None
    type: str | None
    request_status: str | None
    send_status: str | None
    final_status: str | None
    status: str | None
    reason: str | None
    provider: str | None
    first_at: int
    last_at: int


@dataclass(frozen=True)
class DeadLetterRow:
    partition: int
    offset: int
    at: int
    error: str
    detail: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    fallback_id: str | None


@dataclass(frozen=True)
class AuditRow:
    partition: int
    offset: int
    at: int
    actor: str | None
    via: str | None
    table: str | None
    key: str | None
    before: str | None
    after: str | None


@dataclass
class Batch:
    """Records of one read, by topic role, with the positions they bring each partition to."""

    outcomes: list[tuple[int, int, int, bytes | None]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.outcomes) + len(self.dead_letters) + len(self.audit)


class Index:
    """The index file: one writer (the follower, from one thread at a time) and readers on
    their own connections (WAL: reads never wait for the writer)."""

    def __init__(self, path: str, identity: str) -> None:
        self.path = path
        self.identity = identity
        self._local = threading.local()
        self._writer = self._connect()
        self.rebuilt = self._prepare()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        # The topics are the truth: a crash loses at most the last transactions, which are
        # read again from the positions that committed with them.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=5000")
        return connection

    def _prepare(self) -> bool:
        """Create the tables; wipe an index of another schema or other topics. True when the
        index starts empty (new or wiped)."""
        db = self._writer
        db.executescript(_TABLES)
        found = dict(db.execute("SELECT key, value FROM meta").fetchall())
        wanted = {"schema": str(SCHEMA), "topics": self.identity}
        if found == wanted:
            return not db.execute("SELECT 1 FROM positions LIMIT 1").fetchone()
        self.wipe()
        return True

    def wipe(self) -> None:
        """Forget everything; the follower reads the topics again from their beginning."""
        db = self._writer
        db.execute("BEGIN")
        for table in ("meta", "positions", "fallbacks", "outcomes", "dead_letters", "audit"):
            db.execute(f"DELETE FROM {table}")
        db.executemany(
            "INSERT INTO meta VALUES(?, ?)", [("schema", str(SCHEMA)), ("topics", self.identity)]
        )
        db.execute("COMMIT")

    def positions(self) -> dict[tuple[str, int], int]:
        rows = self._writer.execute("SELECT topic, partition, next FROM positions").fetchall()
        return {(topic, partition): nxt for topic, partition, nxt in rows}

    def apply(self, batch: Batch) -> None:
        """Write one read's rows and positions in one transaction."""
        db = self._writer
        db.execute("BEGIN")
        try:
            rows = []
            kept = []
            for partition, offset, at, value in batch.outcomes:
                row = outcome_row(value, at)
                if row is not None:
                    rows.append(row)
                    kept.append((row["fallback_id"], partition, offset, at, value))
            db.executemany(_UPSERT, rows)
            db.executemany("INSERT OR REPLACE INTO outcomes VALUES(?, ?, ?, ?, ?)", kept)
            db.executemany(
                "INSERT OR REPLACE INTO dead_letters VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch.dead_letters,
            )
            db.executemany(
                "INSERT OR REPLACE INTO audit VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)", batch.audit
            )
            db.executemany(
                "INSERT OR REPLACE INTO positions VALUES(?, ?, ?)",
                [(t, p, n) for (t, p), n in batch.positions.items()],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def prune(self, older_than_ms: int) -> int:
        """Drop fallbacks last seen before `older_than_ms` (past the topic's retention), with
        their outcomes, and dead letters and audit records as old."""
        db = self._writer
        db.execute("BEGIN")
        old = "SELECT fallback_id FROM fallbacks WHERE last_at < ?"
        db.execute(f"DELETE FROM outcomes WHERE fallback_id IN ({old})", (older_than_ms,))
        gone = db.execute("DELETE FROM fallbacks WHERE last_at < ?", (older_than_ms,)).rowcount
        db.execute("DELETE FROM dead_letters WHERE at < ?", (older_than_ms,))
        db.execute("DELETE FROM audit WHERE at < ?", (older_than_ms,))
        db.execute("COMMIT")
        return int(gone)

    # Reads: each thread its own connection.

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            connection.execute("PRAGMA busy_timeout=5000")
            self._local.connection = connection
        yield connection

    def search(
        self, query: Query, *, limit: int, before: tuple[int, str] | None = None
    ) -> list[Row]:
        """Fallbacks matching `query`, newest first, `limit` at most, from just after the
        cursor `before` (first_at, fallbackId) of the previous page."""
        where, params = _where(query)
        if before is not None:
            where.append("(first_at < ? OR (first_at = ? AND fallback_id < ?))")
            params += [before[0], before[0], before[1]]
        sql = f"SELECT {_COLUMNS} FROM fallbacks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY first_at DESC, fallback_id DESC LIMIT ?"
        with self._reader() as db:
            return [Row(*r) for r in db.execute(sql, [*params, limit])]

    def story(self, fid: str) -> tuple[Row | None, list[tuple[int, dict[str, Any]]]]:
        """A fallback's row and its outcomes in the order they were written."""
        with self._reader() as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM fallbacks WHERE fallback_id = ?", (fid,)
            ).fetchone()
            outcomes = db.execute(
                "SELECT at, value FROM outcomes WHERE fallback_id = ? ORDER BY at, offset", (fid,)
            ).fetchall()
        return (Row(*found) if found else None), [(at, orjson.loads(v)) for at, v in outcomes]

    def dead_letters(
        self,
        *,
        error: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        fid: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetterRow]:
        """Dead letters, oldest first (the order a replay writes them back in)."""
        where, params = [], []
        for column, op, value in (
            ("error", "=", error),
            ("at", ">=", since_ms),
            ("at", "<=", until_ms),
            ("fallback_id", "=", fid),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        sql = "SELECT * FROM dead_letters"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at, partition, offset"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._reader() as db:
            rows = db.execute(sql, params).fetchall()
        return [
            DeadLetterRow(p, o, at, e, d, k, v, decode_headers(h), f)
            for p, o, at, e, d, k, v, h, f in rows
        ]

    def audit(self, *, limit: int, table: str | None = None) -> list[AuditRow]:
        """The newest audit records first."""
        sql = "SELECT * FROM audit"
        params: list[Any] = []
        if table:
            sql += " WHERE tbl = ?"
            params.append(table)
        sql += " ORDER BY at DESC, partition, offset DESC LIMIT ?"
        with self._reader() as db:
            return [AuditRow(*r) for r in db.execute(sql, [*params, limit])]

    def counts(self) -> dict[str, int]:
        with self._reader() as db:
            return {
                table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("fallbacks", "outcomes", "dead_letters", "audit")
            }

    def close(self) -> None:
        self._writer.close()


def _where(query: Query) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.fallback_id:
        where.append("fallback_id = ?")
        params.append(query.fallback_id)
    if query.request_id:
        where.append("request_id = ?")
        params.append(query.request_id)
    if query.since_ms is not None:
        where.append("first_at >= ?")
        params.append(query.since_ms)
    if query.until_ms is not None:
        where.append("first_at <= ?")
        params.append(query.until_ms)
    for column, value in (
        ("sender_key", query.sender_key),
        ("status", query.status),
        ("reason", query.reason),
    ):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params


def remove(path: str) -> None:
    """Delete an index file and its WAL companions."""
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
