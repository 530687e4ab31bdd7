"""Rescoring on the real-time path: score subjects with the pure scorer and store what changed.

A rescore writes, in the caller's transaction, the subject's snapshot (with
the date it next changes), opens and closes list memberships, and appends a
notification to the outbox for every grade change, list entry and list exit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import ScoreResult, score
from chengxin.store import repo
from chengxin.store.schema import outbox


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


def _event(topic: str, subject_id: int, now: datetime, **data: Any) -> dict[str, Any]:
    payload = {"topic": topic, "subject_id": subject_id, **data}
    return {
        "created_at": now,
        "topic": topic,
        "subject_id": subject_id,
        "payload": json.dumps(payload, sort_keys=True, default=str),
        "attempts": 0,
        "next_attempt_at": now,
    }


def store_results(
    session: Session,
    *,
    policy: Policy,
    results: dict[int, ScoreResult],
    now: datetime,
) -> RescoreSummary:
    """Write snapshots, membership changes and notifications for scored subjects."""
    ids = list(results)
    old_snaps = repo.snapshots_for(session, ids)
    old_lists = repo.open_memberships(session, ids)
    summary = RescoreSummary(subjects=len(ids))
    snaps: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    new_members: list[dict[str, Any]] = []
    closed: list[int] = []
    moved: list[tuple[int, date | None]] = []
    for sid, res in results.items():
        snaps.append(
            {
                "subject_id": sid,
                "policy_hash": policy.content_hash,
                "score": res.score,
                "grade": res.grade,
                "as_of": res.as_of,
                "next_change": res.next_change,
                "computed_at": now,
                "stale": False,
            }
        )
        old = old_snaps.get(sid)
        old_grade = policy.grade_of(policy.scale.base) if old is None else old.grade
        if old_grade != res.grade:
            summary.grade_changes += 1
            events.append(
                _event("grade.changed", sid, now, policy=policy.label, old=old_grade, new=res.grade)
            )
        current = {m.list_code: m for m in old_lists.get(sid, [])}
        for code, member in res.lists.items():
            was = current.pop(code, None)
            if was is None:
                summary.entered += 1
                new_members.append(
                    {
                        "subject_id": sid,
                        "list_code": code,
                        "kind": member.kind,
                        "since": member.since,
                        "until": member.until,
                        "policy_hash": policy.content_hash,
                        "entered_at": now,
                    }
                )
                events.append(
                    _event("list.entered", sid, now, policy=policy.label, list=code, until=member.until)
                )
            elif was.until != member.until:
                moved.append((was.id, member.until))
        for code, was in current.items():
            summary.left += 1
            closed.append(was.id)
            events.append(_event("list.left", sid, now, policy=policy.label, list=code))
    repo.save_snapshots(session, snaps)
    repo.close_memberships(session, closed, now=now)
    repo.update_membership_until(session, moved)
    repo.insert_memberships(session, new_members)
    if events:
        session.execute(insert(outbox), events)
    return summary


def rescore_subjects(
    session: Session,
    *,
    policy: Policy,
    subject_ids: Sequence[int],
    as_of: date,
    now: datetime,
) -> RescoreSummary:
    """Score subjects from their stored records and store what changed."""
    total = RescoreSummary()
    for part in repo.chunks(list(subject_ids), 5000):
        facts = repo.record_facts(session, part)
        results = {sid: score(policy, facts.get(sid, ()), as_of) for sid in part}
        total.add(store_results(session, policy=policy, results=results, now=now))
    return total
