"""The audit trail: who read whose data, or asked for a decision, why and when.

Every read of personal data and every decision appends an event: the
principal, its role, the action, the stated purpose, the subject (by internal
id) and the time. Events are append-only and hash-chained like the ledger
(:mod:`chengxin.store.ledger`)::

    entry_hash = sha256(seq | at | principal | role | action | purpose | subject_id
                        | sha256(detail) | prev_hash)

so changing, inserting or removing an event breaks every hash after it.
Appends take the ``audit_head`` row in the caller's transaction, which
serialises writers on PostgreSQL (row lock) as SQLite's single writer does.

Details hold no personal data: internal subject ids, measure codes, decisions,
list codes, counts -- never a name or an identifier (an 18-character
identifier-shaped value is refused). A subject sees its consultations -- who
checked it, for which measure, when -- as credit reports list their inquiries
(FCRA §604, §609(a)(3)).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from chengxin.domain.decisions import Decision
from chengxin.domain.identifiers import SubjectId
from chengxin.service.principals import Principal
from chengxin.store import repo
from chengxin.store.ledger import GENESIS, Head, VerifyResult, canonical_json, sha256_hex
from chengxin.store.schema import audit_events, audit_head, subjects

# cn-rid (17 digits + check) and cn-uscc (18 characters of GB 32100's alphabet).
_IDENTIFIER = re.compile(
    r"(?<![0-9A-Za-z])(?:[0-9]{17}[0-9Xx]|[0-9A-HJ-NP-RTUW-Y]{18})(?![0-9A-Za-z])"
)


def instant(at: datetime) -> str:
    """The one text an event's time hashes to: UTC, microseconds (SQLite drops the zone)."""
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds")


def event_hash(
    seq: int,
    at: str,
    principal: str,
    role: str,
    action: str,
    purpose: str | None,
    subject_id: int | None,
    detail: str,
    prev: str,
) -> str:
    """The hash that links event ``seq`` to the one before it."""
    sid = "" if subject_id is None else str(subject_id)
    return sha256_hex(
        f"{seq}|{at}|{principal}|{role}|{action}|{purpose or ''}|{sid}|{sha256_hex(detail)}|{prev}"
    )


def _check_detail(value: Any, where: str = "detail") -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_detail(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_detail(v, f"{where}[{i}]")
    elif isinstance(value, str) and _IDENTIFIER.search(value):
        raise ValueError(f"{where} looks like an identifier: audit details hold no personal data")
    elif not isinstance(value, str | int | bool | None):
        raise TypeError(f"{where} must be text, a number, true/false or null")


# Built once: a check appends an event on every call.
_HEAD = select(audit_head.c.seq, audit_head.c.entry_hash).where(audit_head.c.id == 1)
_HEAD_LOCKED = _HEAD.with_for_update()
_SUBJECT_ID = select(subjects.c.id).where(
    subjects.c.scheme == bindparam("scheme"), subjects.c.value == bindparam("value")
)


def head(session: Session, *, lock: bool = False) -> Head:
    """The newest event's sequence number and hash (locked for an append when ``lock``)."""
    stmt = _HEAD_LOCKED if lock and session.get_bind().dialect.name == "postgresql" else _HEAD
    row = session.execute(stmt).first()
    if row is None:
        if not lock:
            return Head(0, GENESIS)
        values = {"id": 1, "seq": 0, "entry_hash": GENESIS}
        session.execute(repo.upsert(session, audit_head).values(values).on_conflict_do_nothing())
        row = session.execute(stmt).one()
    return Head(int(row.seq), str(row.entry_hash))


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An audit event before it joins the chain: its sequence number and hashes come at append."""

    principal: str
    role: str
    action: str
    purpose: str | None
    subject_id: int | None
    detail: str
    """Canonical JSON, already checked to hold no personal data."""
    at: datetime


def draft(
    *,
    principal: Principal,
    action: str,
    purpose: str | None,
    subject_id: int | None,
    detail: Mapping[str, Any],
    now: datetime,
) -> EventDraft:
    """An event ready to append (:class:`ValueError` if ``detail`` holds an identifier)."""
    _check_detail(detail)
    text = canonical_json(dict(detail))
    return EventDraft(principal.name, principal.role, action, purpose, subject_id, text, now)


_COLUMNS = (
    "seq",
    "at",
    "principal",
    "role",
    "action",
    "purpose",
    "subject_id",
    "detail",
    "prev_hash",
    "entry_hash",
)
_ROW = "(" + ",".join("?" * len(_COLUMNS)) + ")"
_INSERT = f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) VALUES "
_PER_INSERT = 1000  # rows per INSERT: 10,000 parameters, under both databases' bounds


def append(session: Session, drafts: Sequence[EventDraft]) -> list[int]:
    """Append events in order in the caller's transaction (one head lock); their seq numbers."""
    return append_bulk(repo.Bulk(session), drafts)


def append_bulk(bulk: repo.Bulk, drafts: Sequence[EventDraft]) -> list[int]:
    """:func:`append` in plain SQL on a :class:`~chengxin.store.repo.Bulk` of the transaction.

    The head row is locked first (``FOR UPDATE`` on PostgreSQL; SQLite's
    writer lock is held from ``BEGIN IMMEDIATE``), so appends are serialised.
    """
    if not drafts:
        return []
    lock = "" if bulk.sqlite else " FOR UPDATE"
    found = bulk.rows("SELECT seq, entry_hash FROM audit_head WHERE id = 1" + lock)
    if not found:  # the first event ever
        bulk.execute(
            "INSERT INTO audit_head (id, seq, entry_hash) VALUES (1, 0, ?) ON CONFLICT DO NOTHING",
            [GENESIS],
        )
        found = bulk.rows("SELECT seq, entry_hash FROM audit_head WHERE id = 1" + lock)
    top_seq, prev = int(found[0][0]), str(found[0][1])
    seq = top_seq
    rows: list[tuple[Any, ...]] = []
    for d in drafts:
        seq += 1
        at, who = instant(d.at), d.principal
        h = event_hash(seq, at, who, d.role, d.action, d.purpose, d.subject_id, d.detail, prev)
        stamp = bulk.stamp(d.at)
        rows.append((seq, stamp, who, d.role, d.action, d.purpose, d.subject_id, d.detail, prev, h))
        prev = h
    for part in repo.chunks(rows, _PER_INSERT):
        bulk.execute(_INSERT + ",".join([_ROW] * len(part)), list(chain.from_iterable(part)))
    bulk.execute("UPDATE audit_head SET seq = ?, entry_hash = ? WHERE id = 1", [seq, prev])
    return list(range(top_seq + 1, seq + 1))


def record_many(
    session: Session,
    *,
    principal: Principal,
    action: str,
    purpose: str | None,
    subject_ids: Sequence[int | None],
    detail: Mapping[str, Any],
    now: datetime,
) -> list[int]:
    """Append one event per subject (same action, purpose and detail); their sequence numbers."""
    if not subject_ids:
        return []
    one = draft(
        principal=principal, action=action, purpose=purpose, subject_id=None, detail=detail, now=now
    )
    return append(session, [replace(one, subject_id=sid) for sid in subject_ids])


def record(
    session: Session,
    *,
    principal: Principal,
    action: str,
    purpose: str | None,
    subject_id: int | None,
    detail: Mapping[str, Any],
    now: datetime,
) -> int:
    """Append one audit event in the caller's transaction; its sequence number."""
    (seq,) = record_many(
        session,
        principal=principal,
        action=action,
        purpose=purpose,
        subject_ids=[subject_id],
        detail=detail,
        now=now,
    )
    return seq


def subject_id_of(session: Session, subject: SubjectId) -> int | None:
    """The internal id audit events carry for a subject (None if nothing is held on it)."""
    found = session.execute(
        _SUBJECT_ID, {"scheme": subject.scheme, "value": subject.value}
    ).scalar()
    return None if found is None else int(found)


def check_detail(principal: Principal, decision: Decision) -> dict[str, Any]:
    """What the audit event of a decision holds: measure, outcome, reasons, policy, service kind."""
    return _decision_detail(principal.service_kind, decision)


def _decision_detail(service_kind: str | None, decision: Decision) -> dict[str, Any]:
    return {
        "measure": decision.measure,
        "decision": decision.outcome,
        "reasons": list(decision.reasons),
        "policy_version": decision.policy_version,
        "service_kind": service_kind,
    }


@lru_cache(maxsize=4096)
def _check_text(service_kind: str | None, decision: Decision) -> str:
    """The checked, canonical detail of a decision (most checks share a handful of them)."""
    detail = _decision_detail(service_kind, decision)
    _check_detail(detail)
    return canonical_json(detail)


def draft_check(
    *,
    principal: Principal,
    purpose: str | None,
    subject_id: int | None,
    decision: Decision,
    now: datetime,
) -> EventDraft:
    """The event of a decision given to ``principal``: :func:`draft` of :func:`check_detail`."""
    text = _check_text(principal.service_kind, decision)
    return EventDraft(principal.name, principal.role, "check", purpose, subject_id, text, now)


def record_check(
    session: Session,
    *,
    principal: Principal,
    subject: SubjectId,
    decision: Decision,
    purpose: str,
    now: datetime,
) -> int:
    """Audit a decision given to a service (an unknown subject is audited with no subject)."""
    return record(
        session,
        principal=principal,
        action="check",
        purpose=purpose,
        subject_id=subject_id_of(session, subject),
        detail=check_detail(principal, decision),
        now=now,
    )


def record_reads(
    session: Session,
    *,
    principal: Principal,
    action: str,
    purpose: str | None,
    subjects: Sequence[SubjectId],
    detail: Mapping[str, Any],
    now: datetime,
) -> list[int]:
    """Audit a read of several subjects' data: one event each, so each subject sees it."""
    ids = repo.subject_ids(session, [(s.scheme, s.value) for s in subjects])
    found = [ids[(s.scheme, s.value)][0] for s in subjects if (s.scheme, s.value) in ids]
    return record_many(
        session,
        principal=principal,
        action=action,
        purpose=purpose,
        subject_ids=found,
        detail=detail,
        now=now,
    )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event of the audit trail."""

    seq: int
    at: datetime
    principal: str
    role: str
    action: str
    purpose: str | None
    subject_id: int | None
    detail: dict[str, Any]
    entry_hash: str


def _event(row: Any) -> AuditEvent:
    at = row.at.replace(tzinfo=UTC) if row.at.tzinfo is None else row.at.astimezone(UTC)
    return AuditEvent(
        int(row.seq),
        at,
        row.principal,
        row.role,
        row.action,
        row.purpose,
        None if row.subject_id is None else int(row.subject_id),
        json.loads(row.detail),
        row.entry_hash,
    )


def events(
    session: Session,
    *,
    subject_id: int | None = None,
    principal: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Events matching every filter given, newest first (page with ``before`` = a seq)."""
    stmt = select(audit_events).order_by(audit_events.c.seq.desc()).limit(max(0, limit))
    if subject_id is not None:
        stmt = stmt.where(audit_events.c.subject_id == subject_id)
    if principal is not None:
        stmt = stmt.where(audit_events.c.principal == principal)
    if action is not None:
        stmt = stmt.where(audit_events.c.action == action)
    if since is not None:
        stmt = stmt.where(audit_events.c.at >= since)
    if before is not None:
        stmt = stmt.where(audit_events.c.seq < before)
    return [_event(r) for r in session.execute(stmt)]


@dataclass(frozen=True, slots=True)
class Consultation:
    """Someone other than the subject consulted the subject's data: who, why, when."""

    at: datetime
    principal: str
    role: str
    action: str
    purpose: str | None
    measure: str | None
    decision: str | None


def consultations(session: Session, *, subject_id: int, limit: int = 1000) -> list[Consultation]:
    """Who checked or read this subject, for which measure and purpose, newest first."""
    stmt = (
        select(audit_events)
        .where(audit_events.c.subject_id == subject_id, audit_events.c.role != "subject")
        .order_by(audit_events.c.seq.desc())
        .limit(limit)
    )
    out = []
    for r in session.execute(stmt):
        e = _event(r)
        measure, decision = e.detail.get("measure"), e.detail.get("decision")
        out.append(
            Consultation(
                e.at,
                e.principal,
                e.role,
                e.action,
                e.purpose,
                measure if isinstance(measure, str) else None,
                decision if isinstance(decision, str) else None,
            )
        )
    return out


def _rows(session: Session, batch: int) -> Iterator[Any]:
    last = 0
    while True:
        rows = session.execute(
            select(audit_events)
            .where(audit_events.c.seq > last)
            .order_by(audit_events.c.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = int(rows[-1].seq)


def verify_audit(session: Session, *, batch: int = 50_000) -> VerifyResult:
    """Walk the audit chain; name the first event that does not verify."""
    prev = GENESIS
    expected = 0
    for row in _rows(session, batch):
        expected += 1
        if row.seq != expected:
            return VerifyResult(expected, prev, expected, f"event {expected} is missing")
        if row.prev_hash != prev:
            return VerifyResult(
                expected, prev, row.seq, f"event {row.seq} does not link to event {row.seq - 1}"
            )
        h = event_hash(
            row.seq,
            instant(row.at),
            row.principal,
            row.role,
            row.action,
            row.purpose,
            None if row.subject_id is None else int(row.subject_id),
            row.detail,
            prev,
        )
        if h != row.entry_hash:
            return VerifyResult(expected, prev, row.seq, f"event {row.seq}'s hash does not match")
        prev = h
    top = head(session)
    if top.seq != expected:
        return VerifyResult(
            expected,
            prev,
            min(top.seq, expected) + 1,
            f"the head says event {top.seq}, the chain ends at event {expected}",
        )
    if top.entry_hash != prev:
        return VerifyResult(
            expected, prev, top.seq, f"the head's hash does not match event {top.seq}'s"
        )
    return VerifyResult(expected, prev)
