"""Ingest: checked lines become ledger entries, records and fresh scores, in one transaction.

For a batch of lines (one API call, or one chunk of a file import):

1. each line is checked against the active policy (domain/records.py);
2. ``(provider, ref)`` is the idempotency key: a line whose key is already
   stored with the same content is a *duplicate* (reported, nothing added);
   with different content it is a *conflict* (rejected, the stored entry
   kept); the ledger head is locked before the keys are looked up, so
   concurrent batches are serialised and see each other's lines;
3. a retraction or amendment must name a record of the same provider that
   still counts;
4. accepted lines are appended to the hash-chained ledger, projected into
   ``records``, and every affected subject is rescored, all in the caller's
   transaction, so a crash leaves either all of the batch or none of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import bindparam, insert, select, tuple_, update
from sqlalchemy.orm import Session

from chengxin.domain.identifiers import region_of, rid_birth_date
from chengxin.domain.policy import Policy
from chengxin.domain.records import RecordRejected, Submission, check_submission
from chengxin.service.rescore import RescoreSummary, rescore_subjects
from chengxin.store import ledger, repo
from chengxin.store.schema import records

Status = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class LineResult:
    """What became of one submitted line."""

    line: int
    status: Status
    ref: str | None = None
    seq: int | None = None
    code: str | None = None
    message: str | None = None
    field: str | None = None


@dataclass
class BatchReport:
    """What became of a batch."""

    results: list[LineResult] = field(default_factory=list)
    rescore: RescoreSummary = field(default_factory=RescoreSummary)

    def count(self, status: Status) -> int:
        """How many lines ended with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def rejected(self) -> list[LineResult]:
        """The rejected lines."""
        return [r for r in self.results if r.status == "rejected"]


@dataclass(frozen=True, slots=True)
class _Target:
    id: int
    subject_id: int
    status: str


def _reject(line: int, exc: RecordRejected, ref: str | None = None) -> LineResult:
    return LineResult(line, "rejected", ref, code=exc.code, message=str(exc), field=exc.field)


def _targets(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], _Target]:
    out: dict[tuple[str, str], _Target] = {}
    for part in repo.chunks(keys, 400):
        rows = session.execute(
            select(
                records.c.id,
                records.c.provider,
                records.c.ref,
                records.c.subject_id,
                records.c.status,
            ).where(tuple_(records.c.provider, records.c.ref).in_(part))
        )
        for r in rows:
            out[(r.provider, r.ref)] = _Target(int(r.id), int(r.subject_id), r.status)
    return out


def _stored_hashes(
    session: Session, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, int]]:
    from chengxin.store.schema import ledger as ledger_table

    out: dict[tuple[str, str], tuple[str, int]] = {}
    for part in repo.chunks(keys, 400):
        rows = session.execute(
            select(
                ledger_table.c.provider,
                ledger_table.c.ref,
                ledger_table.c.payload_hash,
                ledger_table.c.seq,
            ).where(tuple_(ledger_table.c.provider, ledger_table.c.ref).in_(part))
        )
        for r in rows:
            out[(r.provider, r.ref)] = (r.payload_hash, int(r.seq))
    return out


def _subject_row(sub: Submission, now: datetime) -> dict[str, Any]:
    assert sub.subject is not None
    sid = sub.subject.id
    return {
        "scheme": sid.scheme,
        "value": sid.value,
        "kind": sub.subject.kind,
        "name": sub.subject.name,
        "region": region_of(sid),
        "birth_date": rid_birth_date(sid.value) if sid.scheme == "cn-rid" else None,
        "created_at": now,
    }


def ingest_batch(
    session: Session,
    *,
    policy: Policy,
    lines: Sequence[tuple[int, Mapping[str, Any] | RecordRejected]],
    now: datetime,
    today: date | None = None,
    rescore: bool = True,
) -> BatchReport:
    """Check, store and score a batch of submitted lines in the caller's transaction."""
    today = today or now.date()
    report = BatchReport()
    checked: list[tuple[int, Submission, str]] = []
    for line_no, raw in lines:
        if isinstance(raw, RecordRejected):
            report.results.append(_reject(line_no, raw))
            continue
        try:
            sub = check_submission(raw, policy, today=today)
        except RecordRejected as exc:
            ref = raw.get("ref") if isinstance(raw.get("ref"), str) else None
            report.results.append(_reject(line_no, exc, ref))
            continue
        checked.append((line_no, sub, ledger.canonical_json(sub.payload())))

    if checked:
        # Take the ledger head (a row lock on PostgreSQL; SQLite's writer lock is already
        # held) before looking for stored keys, so a batch racing another with the same
        # lines sees them as duplicates rather than failing on the unique key.
        ledger.head(session, lock=True)
    keys = list({(s.provider, s.ref) for _, s, _ in checked})
    stored = _stored_hashes(session, keys)
    target_keys = list(
        {
            (s.provider, s.retracts or s.amends or "")
            for _, s, _ in checked
            if s.retracts or s.amends
        }
    )
    targets = _targets(session, target_keys)
    subject_map = repo.subject_ids(
        session,
        sorted({(s.subject.id.scheme, s.subject.id.value) for _, s, _ in checked if s.subject}),
    )
    # Subjects are created only for accepted lines: a refused line stores nothing.
    new_subjects: dict[tuple[str, str], dict[str, Any]] = {}

    accepted: list[tuple[int, Submission, str, str]] = []
    pending: dict[tuple[str, str], str] = {}
    pending_records: set[tuple[str, str]] = set()  # accepted lines that create a record
    pending_targets: dict[tuple[str, str], Submission] = {}
    for line_no, sub, payload in checked:
        key = (sub.provider, sub.ref)
        phash = ledger.sha256_hex(payload)
        if key in stored or key in pending:
            old_hash = stored[key][0] if key in stored else pending[key]
            if old_hash == phash:
                seq = stored[key][1] if key in stored else None
                report.results.append(LineResult(line_no, "duplicate", sub.ref, seq))
            else:
                report.results.append(
                    LineResult(
                        line_no,
                        "rejected",
                        sub.ref,
                        code="conflict",
                        message=f"({sub.provider}, {sub.ref}) is already stored with different "
                        "content; send a correction with its own ref and 'amends'",
                        field="ref",
                    )
                )
            continue
        skey = None
        if sub.subject is not None:
            skey = (sub.subject.id.scheme, sub.subject.id.value)
            if skey in subject_map:
                stored_kind = subject_map[skey][1]
            elif skey in new_subjects:  # created by an earlier line of this batch
                stored_kind = new_subjects[skey]["kind"]
            else:
                stored_kind = sub.subject.kind
            if stored_kind != sub.subject.kind:
                report.results.append(
                    LineResult(
                        line_no,
                        "rejected",
                        sub.ref,
                        code="wrong_subject_kind",
                        message=f"subject {sub.subject.id} is registered as a {stored_kind}, "
                        f"not a {sub.subject.kind}",
                        field="subject.kind",
                    )
                )
                continue
        target_ref = sub.retracts or sub.amends
        if target_ref is not None:
            tkey = (sub.provider, target_ref)
            problem = None
            if tkey in pending_targets:
                problem = f"record {target_ref} is already retracted or amended in this batch"
            elif tkey in pending_records:
                pass  # retracting or amending a record earlier in the same batch
            elif tkey not in targets:
                problem = f"provider {sub.provider} has no record with ref {target_ref}"
            elif targets[tkey].status not in ("active", "disputed"):
                problem = f"record {target_ref} is already {targets[tkey].status}"
            if problem is not None:
                report.results.append(
                    LineResult(
                        line_no,
                        "rejected",
                        sub.ref,
                        code="bad_reference",
                        message=problem,
                        field="retracts" if sub.retracts else "amends",
                    )
                )
                continue
            pending_targets[tkey] = sub
        pending[key] = phash
        if skey is not None:
            pending_records.add(key)
            if skey not in subject_map and skey not in new_subjects:
                new_subjects[skey] = _subject_row(sub, now)
        accepted.append((line_no, sub, payload, phash))

    if not accepted:
        report.results.sort(key=lambda r: r.line)
        return report
    if new_subjects:
        repo.insert_subjects(session, list(new_subjects.values()))
        subject_map.update(repo.subject_ids(session, list(new_subjects)))

    entries = []
    batch_subjects: dict[tuple[str, str], int] = {}
    for _, sub, payload, phash in accepted:
        subject_id = None
        if sub.subject is not None:
            subject_id = subject_map[(sub.subject.id.scheme, sub.subject.id.value)][0]
            batch_subjects[(sub.provider, sub.ref)] = subject_id
        else:
            tkey = (sub.provider, sub.retracts or "")
            subject_id = targets[tkey].subject_id if tkey in targets else batch_subjects.get(tkey)
        entries.append(
            ledger.NewEntry(
                kind=sub.kind,
                payload=payload,
                provider=sub.provider,
                ref=sub.ref,
                subject_id=subject_id,
                payload_hash=phash,
            )
        )
    seqs = ledger.append(session, entries, now=now)
    new_rows: list[dict[str, Any]] = []
    status_updates: list[dict[str, Any]] = []
    affected: set[int] = set()
    by_key: dict[tuple[str, str], tuple[int, int]] = {}
    for (line_no, sub, _payload, _h), seq, entry in zip(accepted, seqs, entries, strict=True):
        report.results.append(LineResult(line_no, "accepted", sub.ref, seq))
        target_ref = sub.retracts or sub.amends
        target_id: int | None = None
        if target_ref is not None:
            tkey = (sub.provider, target_ref)
            if tkey in by_key:
                target_id, target_subject = by_key[tkey]
            else:
                target_id, target_subject = targets[tkey].id, targets[tkey].subject_id
            status_updates.append(
                {
                    "rid": target_id,
                    "new_status": "retracted" if sub.retracts else "superseded",
                    "sseq": seq,
                }
            )
            affected.add(target_subject)
        if sub.subject is None:
            continue
        assert entry.subject_id is not None and sub.type and sub.domain and sub.occurred_at
        new_rows.append(
            {
                "id": seq,
                "subject_id": entry.subject_id,
                "type": sub.type,
                "domain": sub.domain,
                "occurred_at": sub.occurred_at,
                "recorded_at": now,
                "provider": sub.provider,
                "ref": sub.ref,
                "attributes": ledger.canonical_json(dict(sub.attributes)),
                "evidence": sub.evidence,
                "status": "active",
                "supersedes": target_id if sub.amends else None,
                "status_seq": seq,
            }
        )
        by_key[(sub.provider, sub.ref)] = (seq, entry.subject_id)
        affected.add(entry.subject_id)
    if new_rows:
        session.execute(insert(records), new_rows)
    if status_updates:
        session.execute(
            update(records)
            .where(records.c.id == bindparam("rid"))
            .values(status=bindparam("new_status"), status_seq=bindparam("sseq"))
            .execution_options(synchronize_session=False),
            status_updates,
        )
    if rescore and affected:
        report.rescore = rescore_subjects(
            session, policy=policy, subject_ids=sorted(affected), as_of=today, now=now
        )
    report.results.sort(key=lambda r: r.line)
    return report
