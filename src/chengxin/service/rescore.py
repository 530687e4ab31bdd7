"""Rescoring on the real-time path: score subjects with the pure scorer and store what changed.

A rescore writes, in the caller's transaction, the subject's snapshot (with
the date it next changes), opens and closes list memberships, and appends a
notification to the outbox for every grade change, list entry and list exit.

A bulk import does not rescore as it goes: each chunk marks the subjects it
touched *stale* in its own transaction (:func:`mark_stale`; a subject new to
chengxin gets a placeholder snapshot at the base score, stale), and
:func:`chengxin.service.refresh.refresh_stale` rescores every stale subject
afterwards, a chunk per transaction. Readers never trust a stale snapshot, so a crash in between
loses no freshness: the next refresh, or the next read, rescores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy.orm import Session

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import RecordFact, score
from chengxin.store import repo
from chengxin.store.repo import Bulk


@dataclass
class RescoreSummary:
    """How many subjects were scored and what changed."""

    subjects: int = 0
    grade_changes: int = 0
    entered: int = 0
    left: int = 0

    def add(self, other: RescoreSummary) -> None:
        """Accumulate another summary into this one."""
        self.subjects += other.subjects
        self.grade_changes += other.grade_changes
        self.entered += other.entered
        self.left += other.left


class Listed(Protocol):
    """A subject's place on a list, as a scorer reports it."""

    @property
    def kind(self) -> str:
        """``red`` or ``black``."""
        ...

    @property
    def since(self) -> date | None:
        """The day the listing began (None for a list entered by grade)."""
        ...

    @property
    def until(self) -> date | None:
        """The day it ends (None: while the grade holds, or for ever)."""
        ...


class Scored(Protocol):
    """What :func:`store_results` needs of a subject's score (a ScoreResult, or a batch row)."""

    @property
    def as_of(self) -> date:
        """The scoring date."""
        ...

    @property
    def score(self) -> int:
        """The clamped score."""
        ...

    @property
    def grade(self) -> str:
        """The grade band holding the score."""
        ...

    @property
    def next_change(self) -> date | None:
        """The first day after ``as_of`` on which the result can change."""
        ...

    @property
    def lists(self) -> Mapping[str, Listed]:
        """The lists the subject is on, by code, in policy order."""
        ...


def _event(topic: str, subject_id: int, created: Any, **data: Any) -> tuple[Any, ...]:
    payload = {"topic": topic, "subject_id": subject_id, **data}
    text = json.dumps(payload, sort_keys=True, default=str)
    return (created, topic, subject_id, text, 0, created)


OUTBOX_COLUMNS = ("created_at", "topic", "subject_id", "payload", "attempts", "next_attempt_at")


def store_results(
    session: Session,
    *,
    policy: Policy,
    results: Mapping[int, Scored],
    now: datetime,
) -> RescoreSummary:
    """Write snapshots, membership changes and notifications for scored subjects."""
    bulk = Bulk(session)
    ids = list(results)
    old_grades = repo.grades_bulk(bulk, ids)
    old_lists = repo.open_memberships_bulk(bulk, ids)
    summary = RescoreSummary(subjects=len(ids))
    # Snapshots share few distinct days: convert each once.
    day = lru_cache(maxsize=None)(bulk.day)
    computed = bulk.stamp(now)
    base_grade = policy.grade_of(policy.scale.base)
    snaps: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    new_members: list[tuple[Any, ...]] = []
    closed: list[tuple[Any, int]] = []
    moved: list[tuple[Any, int]] = []
    for sid, res in results.items():
        snaps.append(
            (
                sid,
                policy.content_hash,
                res.score,
                res.grade,
                day(res.as_of),
                day(res.next_change),
                computed,
                False,
            )
        )
        # A placeholder (a subject new to a bulk import) stands at the base grade.
        old_grade = old_grades.get(sid, base_grade)
        if old_grade != res.grade:
            summary.grade_changes += 1
            events.append(
                _event(
                    "grade.changed",
                    sid,
                    computed,
                    policy=policy.label,
                    old=old_grade,
                    new=res.grade,
                )
            )
        current = {m.list_code: m for m in old_lists.get(sid, [])}
        for code, member in res.lists.items():
            was = current.pop(code, None)
            if was is None:
                summary.entered += 1
                new_members.append(
                    (
                        sid,
                        code,
                        member.kind,
                        day(member.since),
                        day(member.until),
                        policy.content_hash,
                        computed,
                    )
                )
                events.append(
                    _event(
                        "list.entered",
                        sid,
                        computed,
                        policy=policy.label,
                        list=code,
                        until=member.until,
                    )
                )
            elif was.until != member.until:
                moved.append((day(member.until), was.id))
        for code, was in current.items():
            summary.left += 1
            closed.append((computed, was.id))
            events.append(_event("list.left", sid, computed, policy=policy.label, list=code))
    repo.save_snapshot_rows(bulk, snaps)
    bulk.executemany("UPDATE memberships SET left_at = ? WHERE id = ?", closed)
    bulk.executemany("UPDATE memberships SET until = ? WHERE id = ?", moved)
    bulk.insert("memberships", repo.MEMBERSHIP_COLUMNS, new_members)
    bulk.insert("outbox", OUTBOX_COLUMNS, events)
    return summary


def rescore_subjects(
    session: Session,
    *,
    policy: Policy,
    subject_ids: Sequence[int],
    as_of: date,
    now: datetime,
    facts: Mapping[int, Sequence[RecordFact]] | None = None,
    scored: Mapping[int, Scored] | None = None,
) -> RescoreSummary:
    """Score subjects from their stored records and store what changed.

    ``facts``, when given, holds every subject's records that can count, as
    :func:`chengxin.store.repo.record_facts` would read them; they are not read again.
    ``scored`` holds subjects already scored from those records.
    """
    done = scored or {}
    total = RescoreSummary()
    bulk = Bulk(session)
    for part in repo.chunks(list(subject_ids), 5000):
        held = repo.record_facts_bulk(bulk, part) if facts is None else facts
        # What is stored needs no contributions: the scorer skips listing them.
        results = {
            sid: done[sid]
            if sid in done
            else score(policy, held.get(sid, ()), as_of, explain=False)
            for sid in part
        }
        total.add(store_results(session, policy=policy, results=results, now=now))
    return total


def mark_stale(
    session: Session,
    *,
    policy: Policy,
    subject_ids: Sequence[int],
    as_of: date,
    now: datetime,
) -> None:
    """Mark subjects' snapshots stale in the caller's transaction, to be rescored later.

    A subject without a snapshot gets a placeholder: the base score and grade
    under ``policy``, stale, so that readers rescore it and
    :func:`chengxin.service.refresh.refresh_stale` finds it.
    """
    if not subject_ids:
        return
    bulk = Bulk(session)
    base = policy.scale.base
    # One parameter per subject; a snapshot already stale is left as it is.
    bulk.execute_in(
        "INSERT INTO snapshots (subject_id, policy_hash, score, grade, as_of, next_change, "
        "computed_at, stale) SELECT id, ?, ?, ?, ?, CAST(NULL AS DATE), ?, ? FROM subjects "
        "WHERE id",
        subject_ids,
        (
            policy.content_hash,
            base,
            policy.grade_of(base),
            bulk.day(as_of),
            bulk.stamp(now),
            True,
        ),
        after=" ON CONFLICT (subject_id) DO UPDATE SET stale = excluded.stale "
        "WHERE snapshots.stale = ?",
        after_params=(False,),
    )
