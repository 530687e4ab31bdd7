"""Repository functions: the queries the service layer needs, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Insert, Table, bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from chengxin.domain.identifiers import SubjectId
from chengxin.domain.scoring import RecordFact
from chengxin.store.schema import memberships, records, snapshots, subjects

CHUNK = 900  # stays under SQLite's bound-parameter limit for IN lists


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


def subject_ids(session: Session, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
    """Map (scheme, value) to (id, kind) for the keys already stored."""
    out: dict[tuple[str, str], tuple[int, str]] = {}
    for part in chunks(list(keys), 400):
        rows = session.execute(
            select(subjects.c.id, subjects.c.scheme, subjects.c.value, subjects.c.kind).where(
                tuple_(subjects.c.scheme, subjects.c.value).in_(part)
            )
        )
        for r in rows:
            out[(r.scheme, r.value)] = (int(r.id), r.kind)
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
    out: dict[int, list[RecordFact]] = {i: [] for i in ids}
    cols = (
        records.c.id,
        records.c.subject_id,
        records.c.type,
        records.c.occurred_at,
        records.c.attributes,
        records.c.status,
    )
    for part in chunks(list(ids)):
        rows = session.execute(
            select(*cols).where(
                records.c.subject_id.in_(part), records.c.status.in_(("active", "disputed"))
            )
        )
        for r in rows:
            attrs = json.loads(r.attributes) if r.attributes != "{}" else {}
            out[int(r.subject_id)].append(
                RecordFact(int(r.id), r.type, r.occurred_at, attrs, r.status)
            )
    return out


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
    out: dict[int, SnapshotRow] = {}
    for part in chunks(list(ids)):
        for r in session.execute(select(snapshots).where(snapshots.c.subject_id.in_(part))):
            out[int(r.subject_id)] = SnapshotRow(
                int(r.subject_id), r.policy_hash, r.score, r.grade, r.as_of, r.next_change, r.stale
            )
    return out


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
    out: dict[int, list[MembershipRow]] = {i: [] for i in ids}
    for part in chunks(list(ids)):
        rows = session.execute(
            select(memberships).where(
                memberships.c.subject_id.in_(part), memberships.c.left_at.is_(None)
            )
        )
        for r in rows:
            out[int(r.subject_id)].append(
                MembershipRow(int(r.id), int(r.subject_id), r.list_code, r.kind, r.since, r.until)
            )
    return out


def save_snapshots(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or replace snapshots."""
    if not rows:
        return
    stmt = upsert(session, snapshots)
    stmt = stmt.on_conflict_do_update(
        index_elements=["subject_id"],
        set_={
            c: stmt.excluded[c]
            for c in ("policy_hash", "score", "grade", "as_of", "next_change", "computed_at", "stale")
        },
    )
    session.execute(stmt, rows)


def close_memberships(session: Session, ids: Sequence[int], *, now: datetime) -> None:
    """Mark memberships as left."""
    if ids:
        session.execute(
            update(memberships)
            .where(memberships.c.id == bindparam("mid"))
            .values(left_at=now)
            .execution_options(synchronize_session=False),
            [{"mid": i} for i in ids],
        )


def update_membership_until(session: Session, changes: list[tuple[int, date | None]]) -> None:
    """Update the end date of open memberships."""
    if changes:
        session.execute(
            update(memberships)
            .where(memberships.c.id == bindparam("mid"))
            .values(until=bindparam("new_until"))
            .execution_options(synchronize_session=False),
            [{"mid": i, "new_until": u} for i, u in changes],
        )


def insert_memberships(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new memberships."""
    if rows:
        session.execute(memberships.insert(), rows)
