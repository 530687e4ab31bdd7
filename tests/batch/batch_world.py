"""Helpers of the batch tests: the city in the store, and answers in one comparable shape.

Imported by path (``tests/`` has no packages): the test modules put this
directory on ``sys.path`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine, select

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import RecordFact, score
from chengxin.service.clock import FixedClock
from chengxin.store import repo
from chengxin.store.db import transaction
from chengxin.store.schema import subjects

ScoreRow = tuple[int, str, date | None]
MemberRow = tuple[int, str, str, date | None, date | None]
Answer = tuple[dict[int, ScoreRow], set[MemberRow]]


@dataclass(frozen=True)
class City:
    """The synthetic city in the store: its engine, clock and the policy it was ingested under."""

    engine: Engine
    clock: FixedClock
    policy: Policy

    def subject_ids(self) -> list[int]:
        """Every subject's id."""
        with transaction(self.engine) as session:
            found = session.execute(select(subjects.c.id).order_by(subjects.c.id))
            return [int(r[0]) for r in found]

    def facts(self) -> dict[int, list[RecordFact]]:
        """The records that can count, by subject (what the real-time scorer reads)."""
        ids = self.subject_ids()
        with transaction(self.engine) as session:
            return repo.record_facts(session, ids)


def pure_answer(policy: Policy, facts: dict[int, list[RecordFact]], as_of: date) -> Answer:
    """Every subject scored one by one with the pure scorer."""
    scores: dict[int, ScoreRow] = {}
    members: set[MemberRow] = set()
    for sid, rows in facts.items():
        result = score(policy, rows, as_of)
        scores[sid] = (result.score, result.grade, result.next_change)
        members |= {(sid, m.code, m.kind, m.since, m.until) for m in result.lists.values()}
    return scores, members


def table_answer(scores: Any, memberships: Any) -> Answer:
    """Batch result tables (Arrow) in the shape of :func:`pure_answer`."""
    got = {r["subject_id"]: (r["score"], r["grade"], r["next_change"]) for r in scores.to_pylist()}
    assert len(got) == scores.num_rows, "one score per subject"
    listed = {
        (r["subject_id"], r["list_code"], r["kind"], r["since"], r["until"])
        for r in memberships.to_pylist()
    }
    assert len(listed) == memberships.num_rows, "one row per subject and list"
    return got, listed


def variant(policy: Policy, version: str, **changes: Any) -> Policy:
    """``policy`` under another version with some rules' points and lists' durations changed.

    ``changes`` maps a rule id to its new points, or a list code to its new duration.
    """
    data = policy.canonical()
    data["version"] = version
    for rule in data["rules"]:
        if rule["id"] in changes:
            rule["points"] = changes[rule["id"]]
    for lst in data["lists"]:
        if lst["code"] in changes:
            lst["duration"] = changes[lst["code"]]
    return Policy.model_validate(data)
