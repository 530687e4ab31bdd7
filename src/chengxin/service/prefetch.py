"""What a batch reads before it takes the ledger head: its subjects and their records.

Rescoring reads the records of every subject a batch touches. Read while the
batch holds the ledger head (SQLite's writer lock, a row lock on PostgreSQL),
that read serialises writers; :func:`prefetch` makes it beforehand, in a
read-only transaction, after noting the head's sequence number ``seq``.
:func:`chengxin.service.ingest.store_checked` then, under the lock, trusts a
subject's prefetched records only if none of its ``records`` rows changed
since ``seq``, and reads the others again:

* records change only by ingest, under the head lock, and every change of a
  row (its insert, a retraction, an amendment) stamps ``status_seq`` with
  the sequence number of the ledger entry that made it; so a subject none of
  whose rows has ``status_seq > seq`` holds the records it held at ``seq``
  (:func:`chengxin.store.repo.changed_since`);
* the head is read before the records: on PostgreSQL each statement of a
  read-committed transaction sees the newest commits, so the records read
  are at least as new as ``seq`` (a change after it is caught as above);
* a stored subject never changes (identifier, kind), so its id is known.

It also scores each subject whose lines are all new records (no amendment)
as if every one of them were stored (:attr:`Prefetched.scored`). What a
rescore stores (score, grade, next change, lists and their dates) does not
depend on the records' ids, only on their contents; so under the lock that
score stands for a subject whose records before the batch were trusted as
above, none of which the batch retracts or amends, and whose accepted lines
are exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.orm import Session

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import RecordFact, ScoreResult, score
from chengxin.service.checking import Checked, CheckedLines
from chengxin.store import ledger, repo
from chengxin.store.repo import Bulk


@dataclass(frozen=True, slots=True)
class Prefetched:
    """A batch's stored subjects and their records that can count, as of ledger entry ``seq``."""

    seq: int
    subjects: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    """(id, kind) of the stored subjects the batch's lines name, by (scheme, value)."""
    facts: dict[int, list[RecordFact]] = field(default_factory=dict)
    """Their records that can count (active or disputed), by subject id, in id order."""
    scored: dict[tuple[str, str], tuple[frozenset[int], ScoreResult]] = field(default_factory=dict)
    """By (scheme, value): the numbers of the lines naming the subject, all new records,
    and its score with all of them stored."""
    policy_hash: str | None = None
    as_of: date | None = None
    """The policy and day the scores are for."""


def prefetch(session: Session, batch: CheckedLines, *, policy: Policy, as_of: date) -> Prefetched:
    """Read the stored subjects of ``batch`` and their records, in a read-only ``session``,
    and score the subjects as if the batch were stored."""
    seq = ledger.head(session).seq  # first: what is read next is at least this new
    named: dict[tuple[str, str], list[Checked]] = {}
    for c in batch.checked:
        key = c.subject_key
        if key is not None:
            named.setdefault(key, []).append(c)
    bulk = Bulk(session)
    subjects = repo.subject_ids_bulk(bulk, named)
    facts = repo.record_facts_bulk(bulk, sorted({sid for sid, _ in subjects.values()}))
    scored: dict[tuple[str, str], tuple[frozenset[int], ScoreResult]] = {}
    for key, lines in named.items():
        if any(c.target is not None for c in lines):
            continue  # an amendment ends another record: scored under the lock
        found = subjects.get(key)
        held = facts[found[0]] if found is not None else []
        # Ids after any stored: the order the records will have (ids themselves do not count).
        new = [
            repo.record_fact(seq + n, c.type, repo.iso_day(c.occurred_at), c.attributes)  # type: ignore[arg-type]
            for n, c in enumerate(lines, start=1)
        ]
        result = score(policy, [*held, *new], as_of, explain=False)
        scored[key] = (frozenset(c.line for c in lines), result)
    return Prefetched(seq, subjects, facts, scored, policy.content_hash, as_of)
