"""Repository functions: the queries the service layer needs, on SQLite and PostgreSQL alike.

The queries that run once per chunk of an import go through :class:`Bulk`:
plain SQL on the session's own DB-API connection, in its transaction.
SQLAlchemy compiles an expanding ``IN`` list, and processes every row of an
executemany, on each call, which cost more than the database's own work on
those paths; the values bound are still the ones SQLAlchemy's column types
would write (on SQLite, dates and timestamps as its text forms), so rows
written either way read back alike.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, ClassVar

import orjson
from sqlalchemy import Boolean, Connection, Date, DateTime, Insert, Table, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from chengxin.domain.identifiers import SubjectId
from chengxin.domain.scoring import RecordFact
from chengxin.store.schema import subjects

CHUNK = 900  # stays under SQLite's bound-parameter limit for IN lists


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _identity(value: Any) -> Any:
    return value


class Bulk:
    """Plain SQL on the DB-API connection of a session (or Core connection), in its transaction.

    Statements are written with ``?`` placeholders (none may appear in a
    literal); on PostgreSQL they become ``%s``. ``IN`` lists are bound as a
    list of ``?`` on SQLite and as one array (``= ANY(%s)``) on PostgreSQL.
    """

    # SQLite (3.32+) binds at most 32766 parameters per statement, PostgreSQL 65535.
    _MAX_PARAMS: ClassVar[dict[str, int]] = {"sqlite": 32_766, "postgresql": 65_535}
    IN_CHUNK = 5_000  # keys per IN list

    # Per dialect: how SQLAlchemy's column types write and read values (built once).
    _CONVERTERS: ClassVar[dict[str, tuple[Callable[[Any], Any], ...]]] = {}

    def __init__(self, session: Session | Connection) -> None:
        # A session's connection begins the session's transaction if need be.
        conn = session.connection() if isinstance(session, Session) else session
        dialect = conn.dialect
        self.dialect: str = dialect.name
        if self.dialect not in self._MAX_PARAMS:  # pragma: no cover - SQLite and PostgreSQL only
            raise NotImplementedError(f"no bulk statements for dialect {self.dialect}")
        self.sqlite = self.dialect == "sqlite"
        self._dbapi: Any = conn.connection.dbapi_connection
        self._error: type[Exception] = dialect.loaded_dbapi.Error
        self._dialect = dialect
        self.max_params = self._MAX_PARAMS[self.dialect]
        converters = self._CONVERTERS.get(self.dialect)
        if converters is None:
            converters = self._CONVERTERS[self.dialect] = self._converters(dialect)
        # Values as SQLAlchemy's column types write and read them.
        self.stamp: Callable[[datetime | None], Any] = converters[0]
        self.day: Callable[[date | None], Any] = converters[1]
        self.read_day: Callable[[Any], date | None] = converters[2]
        self.read_stamp: Callable[[Any], datetime | None] = converters[3]
        self.read_bool: Callable[[Any], bool | None] = converters[4]

    @staticmethod
    def _converters(dialect: Any) -> tuple[Callable[[Any], Any], ...]:
        def bind(t: Any) -> Callable[[Any], Any]:
            return t.dialect_impl(dialect).bind_processor(dialect) or _identity

        def result(t: Any) -> Callable[[Any], Any]:
            return t.dialect_impl(dialect).result_processor(dialect, None) or _identity

        return (
            bind(DateTime(timezone=True)),
            bind(Date()),
            result(Date()),
            result(DateTime(timezone=True)),
            result(Boolean()),
        )

    def sql(self, text: str) -> str:
        """``text`` in the driver's parameter style."""
        return text if self.sqlite else text.replace("?", "%s")

    @contextmanager
    def _cursor(self, text: str) -> Iterator[Any]:
        """A cursor; driver errors come out as SQLAlchemy's, as from ``session.execute``."""
        cur = self._dbapi.cursor()
        try:
            yield cur
        except self._error as exc:
            raise DBAPIError.instance(
                text, None, exc, self._error, hide_parameters=True, dialect=self._dialect
            ) from exc
        finally:
            cur.close()

    def rows(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row ``text`` returns."""
        text = self.sql(text)
        with self._cursor(text) as cur:
            cur.execute(text, params)
            return list(cur.fetchall())

    def execute(self, text: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the rows it changed."""
        text = self.sql(text)
        with self._cursor(text) as cur:
            cur.execute(text, params)
            return int(cur.rowcount)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""
        if rows:
            text = self.sql(text)
            with self._cursor(text) as cur:
                cur.executemany(text, rows)

    def _in_parts(self, keys: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        """``IN (?, ...)`` or ``= ANY(?)`` for ``keys``, in parts, with their parameters."""
        for part in chunks(list(keys), self.IN_CHUNK):
            if self.sqlite:
                yield f" IN ({','.join('?' * len(part))})", list(part)
            else:
                yield " = ANY(?)", [list(part)]

    def rows_in(
        self, text: str, keys: Sequence[Any], params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Rows of ``text`` (which ends in the column to match) for ``keys``, in parts.

        ``text`` holds ``params``' placeholders before the column, e.g.
        ``SELECT ref, seq FROM ledger WHERE provider = ? AND ref``.
        """
        out: list[tuple[Any, ...]] = []
        for match, values in self._in_parts(keys):
            out += self.rows(text + match, [*params, *values])
        return out

    def rows_by_ref(
        self,
        table: str,
        columns: Sequence[str],
        provider: str,
        refs: Sequence[str],
        *,
        join: str = "",
    ) -> list[tuple[Any, ...]]:
        """``(ref, *columns)`` of ``table``'s rows keyed ``(provider, ref)``, for ``refs``.

        ``table`` is aliased ``k``; ``join`` (`` JOIN records r ON r.id = k.seq``)
        adds tables whose columns ``columns`` may name.

        On PostgreSQL each ref is its own equality lookup of the ``(provider,
        ref)`` unique index, sent in one pipeline. With ``ref = ANY(?)`` (or a
        join to the array) the planner, whose statistics do not yet know a new
        provider, scans every row that provider has, once per ingest, until
        the next ANALYZE: 15 ms a lookup at 28,000 rows, and growing.
        """
        if not refs:
            return []
        cols = ", ".join(columns)
        text = f"SELECT k.ref, {cols} FROM {table} k{join} WHERE k.provider = ? AND k.ref"
        if self.sqlite:
            return self.rows_in(text, refs, (provider,))
        text = self.sql(text + " = ?")
        out: list[tuple[Any, ...]] = []
        with self._cursor(text) as cur:
            cur.executemany(text, [(provider, ref) for ref in refs], returning=True)
            while True:
                out += cur.fetchall()
                if not cur.nextset():
                    break
        return out

    def execute_in(
        self,
        text: str,
        keys: Sequence[Any],
        params: Sequence[Any] = (),
        *,
        after: str = "",
        after_params: Sequence[Any] = (),
    ) -> None:
        """Run ``text`` (ending in the column to match) ``after`` for ``keys``, in parts."""
        for match, values in self._in_parts(keys):
            self.execute(text + match + after, [*params, *values, *after_params])

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        suffix: str = "",
    ) -> list[tuple[Any, ...]]:
        """Insert rows with multi-row ``VALUES`` statements; return what ``suffix`` returns.

        ``suffix`` follows the values: an ``ON CONFLICT`` clause, a ``RETURNING`` list.
        Plain inserts on PostgreSQL use ``COPY``, which psycopg feeds several
        times faster than it binds parameters.
        """
        out: list[tuple[Any, ...]] = []
        if not rows:
            return out
        if not self.sqlite and not suffix:
            self._copy(table, columns, rows)
            return out
        one = "(" + ",".join("?" * len(columns)) + ")"
        per = max(1, min(2_000, self.max_params // len(columns)))
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        full = ""
        returning = "RETURNING" in suffix
        with self._cursor(head) as cur:
            for part in chunks(rows, per):
                if len(part) == per and full:
                    text = full
                else:
                    text = self.sql(head + ",".join([one] * len(part)) + suffix)
                    if len(part) == per:
                        full = text
                cur.execute(text, list(itertools.chain.from_iterable(part)))
                if returning:
                    out += cur.fetchall()
        return out

    def _copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        text = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self._cursor(text) as cur, cur.copy(text) as copy:
            for row in rows:
                copy.write_row(row)


def update_statistics(session: Session, tables: Sequence[str]) -> None:
    """Refresh the query planner's statistics for ``tables`` (PostgreSQL; SQLite needs none).

    A bulk load grows tables far faster than autovacuum analyses them, and
    PostgreSQL then keeps planning lookups for the near-empty tables it last
    saw: scans that grow with the table, chunk after chunk.
    """
    if session.get_bind().dialect.name == "postgresql":
        for table in tables:
            session.execute(text(f'ANALYZE "{table}"'))


def upsert(session: Session, table: Table) -> Any:
    """The dialect's INSERT that supports ON CONFLICT."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for dialect {name}")


@dataclass(frozen=True, slots=True)
class SubjectRow:
    """A stored subject."""

    id: int
    scheme: str
    value: str
    kind: str
    name: str | None
    region: str | None
    birth_date: date | None


def find_subject(session: Session, sid: SubjectId) -> SubjectRow | None:
    """The stored subject with this identifier, if any."""
    row = session.execute(
        select(subjects).where(subjects.c.scheme == sid.scheme, subjects.c.value == sid.value)
    ).first()
    return None if row is None else _subject(row)


def get_subject(session: Session, subject_id: int) -> SubjectRow | None:
    """The stored subject with this internal id, if any."""
    row = session.execute(select(subjects).where(subjects.c.id == subject_id)).first()
    return None if row is None else _subject(row)


def _subject(row: Any) -> SubjectRow:
    return SubjectRow(
        int(row.id), row.scheme, row.value, row.kind, row.name, row.region, row.birth_date
    )


def subject_ids(
    session: Session, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, str]]:
    """Map (scheme, value) to (id, kind) for the keys already stored."""
    return subject_ids_bulk(Bulk(session), keys)


def subject_ids_bulk(
    bulk: Bulk, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, str]]:
    """:func:`subject_ids` on a :class:`Bulk`: one IN list per scheme (the unique key's prefix)."""
    by_scheme: dict[str, list[str]] = {}
    for scheme, value in keys:
        by_scheme.setdefault(scheme, []).append(value)
    out: dict[tuple[str, str], tuple[int, str]] = {}
    for scheme, values in by_scheme.items():
        found = bulk.rows_in(
            "SELECT value, id, kind FROM subjects WHERE scheme = ? AND value", values, (scheme,)
        )
        for value, sid, kind in found:
            out[(scheme, value)] = (int(sid), kind)
    return out


SUBJECT_COLUMNS = ("scheme", "value", "kind", "name", "region", "birth_date", "created_at")
"""The columns of the rows :func:`insert_subject_rows` takes, in order."""


def insert_subject_rows(
    bulk: Bulk, rows: Sequence[Sequence[Any]]
) -> dict[tuple[str, str], tuple[int, str]]:
    """Insert subjects given as SUBJECT_COLUMNS tuples, values bound as is; map every
    (scheme, value) to (id, kind), whether inserted now or by another writer meanwhile."""
    out = {
        (scheme, value): (int(sid), kind)
        for scheme, value, sid, kind in bulk.insert(
            "subjects",
            SUBJECT_COLUMNS,
            rows,
            suffix=" ON CONFLICT (scheme, value) DO NOTHING RETURNING scheme, value, id, kind",
        )
    }
    if len(out) < len(rows):
        out.update(subject_ids_bulk(bulk, [(r[0], r[1]) for r in rows if (r[0], r[1]) not in out]))
    return out


def insert_subjects(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new subjects (ignoring ones another writer added meanwhile)."""
    if rows:
        stmt: Insert = upsert(session, subjects).on_conflict_do_nothing(
            index_elements=["scheme", "value"]
        )
        session.execute(stmt, rows)


def record_facts(session: Session, ids: Sequence[int]) -> dict[int, list[RecordFact]]:
    """The records that can count (active or disputed) of each subject, by subject id."""
    return record_facts_bulk(Bulk(session), ids)


def record_facts_bulk(bulk: Bulk, ids: Sequence[int]) -> dict[int, list[RecordFact]]:
    """:func:`record_facts` on a :class:`Bulk`."""
    out: dict[int, list[RecordFact]] = {i: [] for i in ids}
    read_day = lru_cache(maxsize=None)(bulk.read_day)  # records share few days: each once
    found = bulk.rows_in(
        "SELECT id, subject_id, type, occurred_at, attributes, status FROM records "
        "WHERE status IN ('active', 'disputed') AND subject_id",
        ids,
    )
    found.sort(key=itemgetter(0))  # record id order on every backend: reasons list rules in it
    for rid, sid, rtype, occurred, attributes, status in found:
        out[int(sid)].append(record_fact(int(rid), rtype, read_day(occurred), attributes, status))  # type: ignore[arg-type]
    return out


@lru_cache(maxsize=4096)
def iso_day(text: str) -> date:
    """An ISO date as a Date column reads it back (memoised: records share few days)."""
    return date.fromisoformat(text)


def record_fact(
    rid: int, rtype: str, occurred: date, attributes: str, status: str = "active"
) -> RecordFact:
    """The :class:`RecordFact` of a records row, its attributes given as their stored JSON text."""
    return RecordFact(
        rid, rtype, occurred, _attributes(attributes) if attributes != "{}" else {}, status
    )


def changed_since(bulk: Bulk, ids: Sequence[int], seq: int) -> set[int]:
    """The subjects among ``ids`` with a records row that a ledger entry after ``seq`` changed.

    A row's insert, retraction or amendment stamps ``status_seq`` with the
    sequence number of the entry that made it.
    """
    found = bulk.rows_in(
        "SELECT DISTINCT subject_id FROM records WHERE status_seq > ? AND subject_id", ids, (seq,)
    )
    return {int(sid) for (sid,) in found}


def _attributes(text: str) -> dict[str, Any]:
    """A record's attributes from their stored JSON text, as ``json.loads`` reads them.

    Attributes are flat: 64-bit integers, booleans and text (domain/records.py),
    which orjson reads alike, several times faster. It reads an integer beyond
    64 bits as a float, and refuses what the standard parser accepts (NaN); such
    text, never written by chengxin, goes to the standard parser.
    """
    try:
        attrs = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # type: ignore[no-any-return]
    if type(attrs) is not dict or float in map(type, attrs.values()):
        return json.loads(text)  # type: ignore[no-any-return]
    return attrs


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """A stored score snapshot."""

    subject_id: int
    policy_hash: str
    score: int
    grade: str
    as_of: date
    next_change: date | None
    stale: bool


def snapshots_for(session: Session, ids: Sequence[int]) -> dict[int, SnapshotRow]:
    """Stored snapshots by subject id."""
    return snapshots_bulk(Bulk(session), ids)


def snapshots_bulk(bulk: Bulk, ids: Sequence[int]) -> dict[int, SnapshotRow]:
    """:func:`snapshots_for` on a :class:`Bulk`."""
    day, flag = bulk.read_day, bulk.read_bool
    found = bulk.rows_in(
        "SELECT subject_id, policy_hash, score, grade, as_of, next_change, stale "
        "FROM snapshots WHERE subject_id",
        ids,
    )
    return {
        int(sid): SnapshotRow(int(sid), ph, sc, gr, day(a), day(n), flag(st))  # type: ignore[arg-type]
        for sid, ph, sc, gr, a, n, st in found
    }


def grades_bulk(bulk: Bulk, ids: Sequence[int]) -> dict[int, str]:
    """The grade of each stored snapshot, by subject id."""
    found = bulk.rows_in("SELECT subject_id, grade FROM snapshots WHERE subject_id", ids)
    return {int(sid): grade for sid, grade in found}


@dataclass(frozen=True, slots=True)
class MembershipRow:
    """An open list membership."""

    id: int
    subject_id: int
    list_code: str
    kind: str
    since: date | None
    until: date | None


def open_memberships(session: Session, ids: Sequence[int]) -> dict[int, list[MembershipRow]]:
    """Open (not left) memberships by subject id."""
    return open_memberships_bulk(Bulk(session), ids)


def open_memberships_bulk(bulk: Bulk, ids: Sequence[int]) -> dict[int, list[MembershipRow]]:
    """:func:`open_memberships` on a :class:`Bulk`."""
    out: dict[int, list[MembershipRow]] = {i: [] for i in ids}
    day = bulk.read_day
    found = bulk.rows_in(
        "SELECT id, subject_id, list_code, kind, since, until FROM memberships "
        "WHERE left_at IS NULL AND subject_id",
        ids,
    )
    for mid, sid, code, kind, since, until in sorted(found):
        out[int(sid)].append(MembershipRow(int(mid), int(sid), code, kind, day(since), day(until)))
    return out


SNAPSHOT_COLUMNS = (
    "subject_id",
    "policy_hash",
    "score",
    "grade",
    "as_of",
    "next_change",
    "computed_at",
    "stale",
)
MEMBERSHIP_COLUMNS = (
    "subject_id",
    "list_code",
    "kind",
    "since",
    "until",
    "policy_hash",
    "entered_at",
)


def save_snapshots(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or replace snapshots."""
    bulk = Bulk(session)
    day, stamp = bulk.day, bulk.stamp
    save_snapshot_rows(
        bulk,
        [
            (
                r["subject_id"],
                r["policy_hash"],
                r["score"],
                r["grade"],
                day(r["as_of"]),
                day(r["next_change"]),
                stamp(r["computed_at"]),
                bool(r["stale"]),
            )
            for r in rows
        ],
    )


def save_snapshot_rows(bulk: Bulk, rows: Sequence[Sequence[Any]]) -> None:
    """Insert or replace snapshots given as SNAPSHOT_COLUMNS tuples, values bound as is."""
    updated = ", ".join(f"{c} = excluded.{c}" for c in SNAPSHOT_COLUMNS[1:])
    bulk.insert(
        "snapshots",
        SNAPSHOT_COLUMNS,
        rows,
        suffix=f" ON CONFLICT (subject_id) DO UPDATE SET {updated}",
    )


def close_memberships(session: Session, ids: Sequence[int], *, now: datetime) -> None:
    """Mark memberships as left."""
    if ids:
        bulk = Bulk(session)
        left = bulk.stamp(now)
        rows = [(left, i) for i in ids]
        bulk.executemany("UPDATE memberships SET left_at = ? WHERE id = ?", rows)


def update_membership_until(session: Session, changes: list[tuple[int, date | None]]) -> None:
    """Update the end date of open memberships."""
    if changes:
        bulk = Bulk(session)
        bulk.executemany(
            "UPDATE memberships SET until = ? WHERE id = ?",
            [(bulk.day(u), i) for i, u in changes],
        )


def insert_memberships(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new memberships."""
    if rows:
        bulk = Bulk(session)
        day, stamp = bulk.day, bulk.stamp
        bulk.insert(
            "memberships",
            MEMBERSHIP_COLUMNS,
            [
                (
                    r["subject_id"],
                    r["list_code"],
                    r["kind"],
                    day(r["since"]),
                    day(r["until"]),
                    r["policy_hash"],
                    stamp(r["entered_at"]),
                )
                for r in rows
            ],
        )
