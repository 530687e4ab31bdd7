"""The append-only, hash-chained ledger.

Each entry stores the sha256 of its canonical JSON payload and the hash of
the entry before it::

    entry_hash = sha256(seq | kind | provider | ref | payload_hash | prev_hash)

so changing, inserting or removing any entry breaks every hash after it.
Erasing a payload after its retention sets ``payload`` to NULL but keeps
``payload_hash``, so the chain still verifies. Appends take the
``ledger_head`` row in the same transaction, which serialises writers on
PostgreSQL (row lock) as SQLite's single writer already does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from chengxin.store.repo import Bulk
from chengxin.store.schema import ledger, ledger_head

GENESIS = "0" * 64


def canonical_json(payload: Any) -> str:
    """The one JSON text a payload hashes to: sorted keys, no spaces, UTF-8 kept.

    orjson writes exactly what ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` writes for the types a payload holds (text, integers,
    booleans, null, lists, objects), several times faster.
    """
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def sha256_hex(text: str) -> str:
    """Hex sha256 of UTF-8 text."""
    return hashlib.sha256(text.encode()).hexdigest()


def entry_hash(
    seq: int, kind: str, provider: str | None, ref: str | None, payload_hash: str, prev: str
) -> str:
    """The hash that links entry ``seq`` to the one before it."""
    return sha256_hex(f"{seq}|{kind}|{provider or ''}|{ref or ''}|{payload_hash}|{prev}")


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to append (the ledger assigns seq and hashes)."""

    kind: str
    payload: str  # canonical JSON
    provider: str | None = None
    ref: str | None = None
    subject_id: int | None = None
    payload_hash: str | None = None  # computed if not given


@dataclass(frozen=True, slots=True)
class Head:
    """The newest entry's sequence number and hash."""

    seq: int
    entry_hash: str


def _create_head(session: Session) -> None:
    """Insert the genesis head row unless a concurrent writer already did."""
    dialect = session.get_bind().dialect.name
    values = {"id": 1, "seq": 0, "entry_hash": GENESIS}
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(ledger_head).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(ledger_head).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - chengxin runs on SQLite and PostgreSQL only
        stmt = insert(ledger_head).values(values)
    session.execute(stmt)


def head(session: Session, *, lock: bool = False) -> Head:
    """The current head (locking it for an append when ``lock``; reading never writes)."""
    stmt = select(ledger_head.c.seq, ledger_head.c.entry_hash).where(ledger_head.c.id == 1)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = session.execute(stmt).first()
    if row is None:
        if not lock:
            return Head(0, GENESIS)
        # The first append creates the row; two first appenders on PostgreSQL
        # both find it missing, so insert-if-absent and then take the lock.
        _create_head(session)
        row = session.execute(stmt).one()
    return Head(int(row.seq), str(row.entry_hash))


def append(session: Session, entries: Sequence[NewEntry], *, now: datetime) -> list[int]:
    """Append entries in order; return their sequence numbers."""
    if not entries:
        return []
    first = append_rows(
        Bulk(session),
        [
            (
                e.kind,
                e.provider,
                e.ref,
                e.subject_id,
                e.payload,
                e.payload_hash or sha256_hex(e.payload),
            )
            for e in entries
        ],
        top=head(session, lock=True),
        now=now,
    )
    return list(range(first, first + len(entries)))


LEDGER_COLUMNS = (
    "seq",
    "kind",
    "provider",
    "ref",
    "subject_id",
    "payload",
    "payload_hash",
    "prev_hash",
    "entry_hash",
    "recorded_at",
)

Row = tuple[str, str | None, str | None, int | None, str, str]
"""An entry to append: kind, provider, ref, subject_id, payload (canonical JSON), payload_hash."""


def append_rows(bulk: Bulk, rows: Sequence[Row], *, top: Head, now: datetime) -> int:
    """Append entries after the locked head ``top``; return the first one's sequence number.

    The caller took ``top`` with ``head(session, lock=True)`` in this transaction.
    The chain is hashed in one tight loop: :func:`entry_hash`'s formula, written
    out (a bulk import spends a noticeable share of its time here).
    """
    seq, prev = top.seq, top.entry_hash
    first = seq + 1
    recorded = bulk.stamp(now)
    out: list[tuple[Any, ...]] = []
    append = out.append
    sha256 = hashlib.sha256
    for kind, provider, ref, subject_id, payload, ph in rows:
        seq += 1
        h = sha256(f"{seq}|{kind}|{provider or ''}|{ref or ''}|{ph}|{prev}".encode()).hexdigest()
        append((seq, kind, provider, ref, subject_id, payload, ph, prev, h, recorded))
        prev = h
    if out:
        bulk.insert("ledger", LEDGER_COLUMNS, out)
        bulk.execute("UPDATE ledger_head SET seq = ?, entry_hash = ? WHERE id = 1", (seq, prev))
    return first


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of walking the chain."""

    entries: int
    head_hash: str
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when every entry links and every kept payload matches its hash."""
        return self.broken_at is None


def _rows(session: Session, batch: int) -> Iterator[Any]:
    last = 0
    cols = (
        ledger.c.seq,
        ledger.c.kind,
        ledger.c.provider,
        ledger.c.ref,
        ledger.c.payload,
        ledger.c.payload_hash,
        ledger.c.prev_hash,
        ledger.c.entry_hash,
    )
    while True:
        rows = session.execute(
            select(*cols).where(ledger.c.seq > last).order_by(ledger.c.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = int(rows[-1].seq)


def verify(
    session: Session, *, progress: Callable[[int], None] | None = None, batch: int = 50_000
) -> VerifyResult:
    """Walk the whole chain; name the first entry that does not verify."""
    prev = GENESIS
    expected_seq = 0
    count = 0
    for row in _rows(session, batch):
        expected_seq += 1
        count += 1
        if row.seq != expected_seq:
            return VerifyResult(count, prev, expected_seq, f"entry {expected_seq} is missing")
        if row.prev_hash != prev:
            return VerifyResult(
                count, prev, row.seq, f"entry {row.seq} does not link to entry {row.seq - 1}"
            )
        if row.payload is not None and sha256_hex(row.payload) != row.payload_hash:
            return VerifyResult(
                count, prev, row.seq, f"entry {row.seq}'s payload does not match its hash"
            )
        h = entry_hash(row.seq, row.kind, row.provider, row.ref, row.payload_hash, prev)
        if h != row.entry_hash:
            return VerifyResult(count, prev, row.seq, f"entry {row.seq}'s hash does not match")
        prev = h
        if progress is not None and count % batch == 0:
            progress(count)
    top = head(session)
    if top.seq != expected_seq:
        # Entries past the head, or a head past the last entry: the first entry
        # the two disagree on is the one after the shorter of them.
        return VerifyResult(
            count,
            prev,
            min(top.seq, expected_seq) + 1,
            f"the head says entry {top.seq}, the chain ends at entry {expected_seq}",
        )
    if top.entry_hash != prev:
        return VerifyResult(
            count, prev, top.seq, f"the head's hash does not match entry {top.seq}'s"
        )
    if progress is not None:
        progress(count)
    return VerifyResult(count, prev)
