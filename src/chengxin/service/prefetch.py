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
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from chengxin.domain.scoring import RecordFact
from chengxin.service.checking import CheckedLines
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


def prefetch(session: Session, batch: CheckedLines) -> Prefetched:
    """Read the stored subjects of ``batch`` and their records, in a read-only ``session``."""
    seq = ledger.head(session).seq  # first: what is read next is at least this new
    keys = {key for c in batch.checked if (key := c.subject_key) is not None}
    bulk = Bulk(session)
    subjects = repo.subject_ids_bulk(bulk, keys)
    ids = sorted({sid for sid, _ in subjects.values()})
    return Prefetched(seq, subjects, repo.record_facts_bulk(bulk, ids))
