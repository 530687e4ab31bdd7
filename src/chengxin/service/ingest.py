"""Ingest: checked lines become ledger entries, records and fresh scores, in one transaction.

For a batch of lines (one API call, or one chunk of a file import):

1. each line is checked against the active policy (domain/records.py, by way
   of service/checking.py, which may have run on worker processes);
2. ``(provider, ref)`` is the idempotency key: a line whose key is already
   stored with the same content is a *duplicate* (reported, nothing added);
   with different content it is a *conflict* (rejected, the stored entry
   kept); the ledger head is locked before the keys are looked up, so
   concurrent batches are serialised and see each other's lines;
3. a retraction or amendment must name a record of the same provider that
   still counts;
4. accepted lines are appended to the hash-chained ledger, projected into
   ``records``, and every affected subject is rescored -- or, for a bulk
   import, marked stale, to be rescored when the import ends -- all in the
   caller's transaction, so a crash leaves either all of the batch or none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from chengxin.domain.policy import Policy
from chengxin.domain.records import RecordRejected
from chengxin.domain.scoring import RecordFact
from chengxin.service.checking import (
    Checked,
    CheckedLines,
    LineResult,
    Status,
    check_lines,
)
from chengxin.service.prefetch import Prefetched
from chengxin.service.rescore import RescoreSummary, Scored, mark_stale, rescore_subjects
from chengxin.store import ledger, repo
from chengxin.store.repo import Bulk

__all__ = ["BatchReport", "LineResult", "Status", "ingest_batch", "store_checked"]

RECORD_COLUMNS = (
    "id",
    "subject_id",
    "type",
    "domain",
    "occurred_at",
    "recorded_at",
    "provider",
    "ref",
    "attributes",
    "evidence",
    "status",
    "supersedes",
    "status_seq",
)


@dataclass
class BatchReport:
    """What became of a batch."""

    results: list[LineResult] = field(default_factory=list)
    rescore: RescoreSummary = field(default_factory=RescoreSummary)
    uncounted: dict[str, int] = field(default_factory=dict)
    """Lines counted by status but left out of ``results`` (a bulk import's good lines)."""
    subjects: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    """(id, kind) of the subjects the batch looked up or created, by (scheme, value): those
    its lines name, less the ``known_subjects`` it was given."""

    def count(self, status: Status) -> int:
        """How many lines ended with ``status``."""
        return self.uncounted.get(status, 0) + sum(1 for r in self.results if r.status == status)

    @property
    def rejected(self) -> list[LineResult]:
        """The rejected lines."""
        return [r for r in self.results if r.status == "rejected"]


@dataclass(frozen=True, slots=True)
class _Target:
    id: int
    subject_id: int
    status: str


def _stored_hashes(
    bulk: Bulk, keys: Mapping[str, Iterable[str]]
) -> dict[tuple[str, str], tuple[str, int]]:
    # One lookup per provider: (provider, ref) is the unique index.
    out: dict[tuple[str, str], tuple[str, int]] = {}
    for provider, refs in keys.items():
        found = bulk.rows_by_ref("ledger", ("payload_hash", "seq"), provider, list(refs))
        for ref, phash, seq in found:
            out[(provider, ref)] = (phash, int(seq))
    return out


def _targets(bulk: Bulk, keys: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], _Target]:
    # Through the ledger's unique (provider, ref): a record's id is its entry's seq.
    out: dict[tuple[str, str], _Target] = {}
    for provider, refs in keys.items():
        found = bulk.rows_by_ref(
            "ledger",
            ("r.id", "r.subject_id", "r.status"),
            provider,
            list(refs),
            join=" JOIN records r ON r.id = k.seq",
        )
        for ref, rid, sid, status in found:
            out[(provider, ref)] = _Target(int(rid), int(sid), status)
    return out


def _reject(c: Checked, code: str, message: str, where: str) -> LineResult:
    return LineResult(c.line, "rejected", c.ref, code=code, message=message, field=where)


def _trusted(
    bulk: Bulk, prefetched: Prefetched, *, top: ledger.Head, affected: set[int], created: set[int]
) -> set[int]:
    """The affected subjects whose records before the batch are known without reading them:
    prefetched, none of them changed since (see service/prefetch.py), or none at all, for
    a subject the batch created (records are written under the lock alone)."""
    held = prefetched.facts
    if top.seq == prefetched.seq:  # nothing was appended since the prefetch
        stale: set[int] = set()
    else:
        stale = repo.changed_since(bulk, sorted(affected.intersection(held)), prefetched.seq)
    return {sid for sid in affected if (sid in held and sid not in stale) or sid in created}


def _facts_after(
    bulk: Bulk,
    prefetched: Prefetched,
    *,
    wanted: set[int],
    trusted: set[int],
    new_rows: Sequence[tuple[Any, ...]],
    ended: set[int],
) -> dict[int, list[RecordFact]]:
    """The records that can count of the ``wanted`` subjects once the batch is stored.

    Called under the lock, before the batch's rows are stored: a subject's
    records are those before the batch (prefetched, or none, for the
    ``trusted``; read otherwise), less the ones the batch retracts or amends
    (``ended``), plus the batch's own (``new_rows``, in RECORD_COLUMNS order),
    which come last in id order.
    """
    held = prefetched.facts
    facts: dict[int, list[RecordFact]] = {}
    unread: list[int] = []
    for sid in wanted:
        if sid not in trusted:
            unread.append(sid)
        else:
            facts[sid] = [f for f in held.get(sid, ()) if f.id not in ended]
    for sid, read in repo.record_facts_bulk(bulk, sorted(unread)).items():
        facts[sid] = [f for f in read if f.id not in ended]
    for row in new_rows:
        rid, sid, rtype, occurred, attributes = row[0], row[1], row[2], row[4], row[8]
        if sid in facts and rid not in ended:
            facts[sid].append(repo.record_fact(rid, rtype, repo.iso_day(occurred), attributes))
    return facts


def _prescored(
    prefetched: Prefetched,
    *,
    trusted: set[int],
    targeted: set[int],
    stored_lines: Mapping[int, set[int]],
    subject_of: Callable[[tuple[str, str]], int | None],
) -> dict[int, Scored]:
    """The prefetch's scores that hold (see service/prefetch.py), by subject id."""
    out: dict[int, Scored] = {}
    for key, (lines, result) in prefetched.scored.items():
        sid = subject_of(key)
        if (
            sid is not None
            and sid in trusted
            and sid not in targeted
            and frozenset(stored_lines.get(sid, ())) == lines
        ):
            out[sid] = result
    return out


def ingest_batch(
    session: Session,
    *,
    policy: Policy,
    lines: Sequence[tuple[int, Mapping[str, Any] | RecordRejected]],
    now: datetime,
    today: date | None = None,
    rescore: bool = True,
) -> BatchReport:
    """Check, store and score a batch of submitted lines in the caller's transaction.

    With ``rescore=False`` the affected subjects are marked stale instead of
    rescored (see :func:`chengxin.service.rescore.mark_stale`); the caller
    then owes a :func:`chengxin.service.refresh.refresh_stale`.
    """
    today = today or now.date()
    checked = check_lines(lines, policy, today)
    return store_checked(
        session, policy=policy, batch=checked, now=now, today=today, rescore=rescore
    )


def store_checked(
    session: Session,
    *,
    policy: Policy,
    batch: CheckedLines,
    now: datetime,
    today: date,
    rescore: bool = True,
    line_results: bool = True,
    known_subjects: Mapping[tuple[str, str], tuple[int, str]] | None = None,
    prefetched: Prefetched | None = None,
) -> BatchReport:
    """Store a checked batch in the caller's transaction; see :func:`ingest_batch`.

    A file import passes ``line_results=False`` (the report then lists only
    the rejected lines and counts the others) and ``known_subjects``: the
    (id, kind) of subjects its earlier chunks found or created, which never
    change, so they are not looked up again; the report's ``subjects`` holds
    the ones this batch looked up or created, to add to them once the transaction
    commits.

    ``prefetched`` (:func:`chengxin.service.prefetch.prefetch`, read before this
    transaction) spares the rescoring the records it still holds good.
    """
    report = BatchReport(results=list(batch.rejected))
    checked = batch.checked
    if not checked:
        report.results.sort(key=lambda r: r.line)
        return report
    bulk = Bulk(session)
    # Take the ledger head (a row lock on PostgreSQL; SQLite's writer lock is already
    # held) before looking for stored keys, so a batch racing another with the same
    # lines sees them as duplicates rather than failing on the unique key.
    top = ledger.head(session, lock=True)
    # One pass: the keys to look up, by provider, and each line's subject key (None
    # for a retraction).
    refs: dict[str, set[str]] = {}
    target_refs: dict[str, set[str]] = {}
    skeys: list[tuple[str, str] | None] = []
    add_skey = skeys.append
    for c in checked:
        provider_refs = refs.get(c.provider)
        if provider_refs is None:
            provider_refs = refs[c.provider] = set()
        provider_refs.add(c.ref)
        if c.target is not None:
            target_refs.setdefault(c.provider, set()).add(c.target)
        add_skey(None if c.scheme is None or c.value is None else (c.scheme, c.value))
    stored = _stored_hashes(bulk, refs)
    targets = _targets(bulk, target_refs)
    known = known_subjects or {}
    if prefetched is not None:  # a stored subject never changes: its id holds
        known = {**known, **prefetched.subjects}
    unknown = {k for k in skeys if k is not None and k not in known}
    subject_map = repo.subject_ids_bulk(bulk, unknown)
    # Subjects are created only for accepted lines: a refused line stores nothing.
    new_subjects: dict[tuple[str, str], Checked] = {}  # the first line naming each

    accepted: list[tuple[Checked, tuple[str, str] | None]] = []
    add_accepted = accepted.append
    pending: dict[tuple[str, str], str] = {}
    pending_records: set[tuple[str, str]] = set()  # accepted lines that create a record
    pending_targets: set[tuple[str, str]] = set()
    duplicates = 0
    for c, skey in zip(checked, skeys, strict=True):
        key = (c.provider, c.ref)
        old = stored.get(key)
        old_hash = pending.get(key) if old is None else old[0]
        if old_hash is not None:
            if old_hash == c.payload_hash:
                if line_results:
                    seq = None if old is None else old[1]
                    report.results.append(LineResult(c.line, "duplicate", c.ref, seq))
                else:
                    duplicates += 1
            else:
                report.results.append(
                    _reject(
                        c,
                        "conflict",
                        f"({c.provider}, {c.ref}) is already stored with different "
                        "content; send a correction with its own ref and 'amends'",
                        "ref",
                    )
                )
            continue
        found = None
        if skey is not None:
            found = known.get(skey) or subject_map.get(skey)
            if found is not None:
                stored_kind: str | None = found[1]
            elif skey in new_subjects:  # created by an earlier line of this batch
                stored_kind = new_subjects[skey].subject_kind
            else:
                stored_kind = c.subject_kind
            if stored_kind != c.subject_kind:
                report.results.append(
                    _reject(
                        c,
                        "wrong_subject_kind",
                        f"subject {c.scheme}:{c.value} is registered as a {stored_kind}, "
                        f"not a {c.subject_kind}",
                        "subject.kind",
                    )
                )
                continue
        if c.target is not None:
            tkey = (c.provider, c.target)
            problem = None
            if tkey in pending_targets:
                problem = f"record {c.target} is already retracted or amended in this batch"
            elif tkey in pending_records:
                pass  # retracting or amending a record earlier in the same batch
            elif tkey not in targets:
                problem = f"provider {c.provider} has no record with ref {c.target}"
            elif targets[tkey].status not in ("active", "disputed"):
                problem = f"record {c.target} is already {targets[tkey].status}"
            if problem is not None:
                where = "retracts" if c.kind == "retraction" else "amends"
                report.results.append(_reject(c, "bad_reference", problem, where))
                continue
            pending_targets.add(tkey)
        pending[key] = c.payload_hash
        if skey is not None:
            pending_records.add(key)
            if found is None and skey not in new_subjects:
                new_subjects[skey] = c
        add_accepted((c, skey))
    if duplicates:
        report.uncounted["duplicate"] = duplicates

    if not accepted:
        report.results.sort(key=lambda r: r.line)
        return report
    created = bulk.stamp(now)
    inserted: dict[tuple[str, str], tuple[int, str]] = {}
    if new_subjects:
        # Dates travel as ISO text: what SQLAlchemy's Date stores on SQLite, and
        # what PostgreSQL casts to a date.
        inserted = repo.insert_subject_rows(
            bulk,
            [
                (s.scheme, s.value, s.subject_kind, s.name, s.region, s.birth_date, created)
                for s in new_subjects.values()
            ],
        )
        subject_map.update(inserted)

    report.subjects = subject_map
    if not line_results:
        report.uncounted["accepted"] = len(accepted)
    # Sequence numbers follow the locked head: the ledger and records rows in one pass.
    entries: list[ledger.Row] = []
    new_rows: list[tuple[Any, ...]] = []
    status_updates: list[tuple[str, int, int]] = []
    affected: set[int] = set()
    targeted: set[int] = set()  # subjects of the records the batch retracts or amends
    stored_lines: dict[int, set[int]] = {}  # the lines of each subject the batch stores
    by_key: dict[tuple[str, str], tuple[int, int]] = {}  # records of this batch: id, subject
    add_entry, add_row, add_affected = entries.append, new_rows.append, affected.add
    # Records of this batch that a later line of it retracts or amends.
    wanted = {(provider, t) for provider, named_refs in target_refs.items() for t in named_refs}
    seq = top.seq
    for c, skey in accepted:
        seq += 1
        if line_results:
            report.results.append(LineResult(c.line, "accepted", c.ref, seq))
        target_id: int | None = None
        target_subject: int | None = None
        if c.target is not None:
            tkey = (c.provider, c.target)
            if tkey in by_key:
                target_id, target_subject = by_key[tkey]
            else:
                target_id, target_subject = targets[tkey].id, targets[tkey].subject_id
            new_status = "retracted" if c.kind == "retraction" else "superseded"
            status_updates.append((new_status, seq, target_id))
            add_affected(target_subject)
            targeted.add(target_subject)
        if skey is None:  # a retraction: the ledger entry names the retracted record's subject
            add_entry((c.kind, c.provider, c.ref, target_subject, c.payload, c.payload_hash))
            continue
        subject_id = (subject_map.get(skey) or known[skey])[0]
        add_entry((c.kind, c.provider, c.ref, subject_id, c.payload, c.payload_hash))
        add_row(
            (
                seq,
                subject_id,
                c.type,
                c.domain,
                c.occurred_at,
                created,
                c.provider,
                c.ref,
                c.attributes,
                c.evidence,
                "active",
                target_id if c.kind == "amendment" else None,
                seq,
            )
        )
        if wanted and (c.provider, c.ref) in wanted:
            by_key[(c.provider, c.ref)] = (seq, subject_id)
        add_affected(subject_id)
        stored_lines.setdefault(subject_id, set()).add(c.line)
    facts = None
    scored: dict[int, Scored] = {}
    if rescore and prefetched is not None:  # before the batch's rows are stored
        trusted = _trusted(
            bulk,
            prefetched,
            top=top,
            affected=affected,
            created={sid for sid, _ in inserted.values()},
        )
        if (prefetched.policy_hash, prefetched.as_of) == (policy.content_hash, today):
            scored = _prescored(
                prefetched,
                trusted=trusted,
                targeted=targeted,
                stored_lines=stored_lines,
                subject_of=lambda key: (subject_map.get(key) or known.get(key) or (None,))[0],
            )
        facts = _facts_after(
            bulk,
            prefetched,
            wanted=affected.difference(scored),
            trusted=trusted,
            new_rows=new_rows,
            ended={target for _, _, target in status_updates},
        )
    first = ledger.append_rows(bulk, entries, top=top, now=now)
    assert first == top.seq + 1
    bulk.insert("records", RECORD_COLUMNS, new_rows)
    bulk.executemany("UPDATE records SET status = ?, status_seq = ? WHERE id = ?", status_updates)
    if rescore:
        report.rescore = rescore_subjects(
            session,
            policy=policy,
            subject_ids=sorted(affected),
            as_of=today,
            now=now,
            facts=facts,
            scored=scored,
        )
    else:
        mark_stale(session, policy=policy, subject_ids=sorted(affected), as_of=today, now=now)
    report.results.sort(key=lambda r: r.line)
    return report
