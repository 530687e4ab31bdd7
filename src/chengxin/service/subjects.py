"""Reading a subject: explain every point, and answer a service's check.

A snapshot is trusted only while it was computed under the active policy,
is not marked stale, and the date it next changes has not come; otherwise
the subject is rescored (in the caller's transaction) before answering, so a
check is right on the day it is asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chengxin.domain.decisions import Decision, decide
from chengxin.domain.identifiers import SubjectId, mask
from chengxin.domain.policy import Policy
from chengxin.domain.scoring import ScoreResult, score
from chengxin.service.clock import Clock
from chengxin.service.errors import NotFound, NotRegistered
from chengxin.service.policies import active_policy
from chengxin.service.rescore import store_results
from chengxin.store import repo
from chengxin.store.schema import consents, memberships, records, subjects


def _subject(session: Session, sid: SubjectId) -> repo.SubjectRow:
    row = repo.find_subject(session, sid)
    if row is None:
        raise NotFound(f"no records are held on {sid}")
    return row


def fresh_result(
    session: Session, *, policy: Policy, subject_id: int, clock: Clock, store: bool = True
) -> ScoreResult:
    """Score a subject from its records today; store the result when ``store``."""
    facts = repo.record_facts(session, [subject_id])[subject_id]
    result = score(policy, facts, clock.today())
    if store:
        store_results(session, policy=policy, results={subject_id: result}, now=clock.now())
    return result


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything behind a subject's score: for the subject and adjudicators, never services."""

    subject: repo.SubjectRow
    result: ScoreResult
    policy: Policy
    records: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        res = self.result
        rules = {r.id: r for r in self.policy.rules}
        return {
            "subject": {
                "scheme": self.subject.scheme,
                "id": self.subject.value,
                "kind": self.subject.kind,
                "name": self.subject.name,
            },
            "policy": self.policy.label,
            "policy_hash": self.policy.content_hash,
            "as_of": res.as_of.isoformat(),
            "base": self.policy.scale.base,
            "score": res.score,
            "raw": res.raw,
            "grade": res.grade,
            "next_change": res.next_change.isoformat() if res.next_change else None,
            "contributions": [
                {
                    "record_id": c.record_id,
                    "record_type": c.record_type,
                    "rule": c.rule_id,
                    "rule_title": rules[c.rule_id].title,
                    "points": c.points,
                    "pct": c.pct,
                    "value": c.value,
                    "occurred_at": c.occurred_at.isoformat(),
                    "expires_on": c.expires_on.isoformat() if c.expires_on else None,
                }
                for c in res.contributions
            ],
            "lists": [
                {
                    "list": m.code,
                    "kind": m.kind,
                    "since": m.since.isoformat() if m.since else None,
                    "until": m.until.isoformat() if m.until else None,
                    "records": list(m.record_ids),
                }
                for m in res.lists.values()
            ],
            "records": self.records,
        }


def explain(session: Session, *, subject: SubjectId, clock: Clock) -> Explanation:
    """Every point of a subject's score today: record, rule, schedule step, policy version."""
    policy = active_policy(session, on=clock.today()).policy
    row = _subject(session, subject)
    result = fresh_result(session, policy=policy, subject_id=row.id, clock=clock)
    counted = {c.record_id: c for c in result.contributions}
    rows = session.execute(
        select(
            records.c.id,
            records.c.type,
            records.c.occurred_at,
            records.c.provider,
            records.c.ref,
            records.c.status,
            records.c.attributes,
            records.c.supersedes,
        )
        .where(records.c.subject_id == row.id)
        .order_by(records.c.occurred_at, records.c.id)
    )
    listed = {rid for m in result.lists.values() for rid in m.record_ids}
    out = []
    for r in rows:
        c = counted.get(int(r.id))
        out.append(
            {
                "record_id": int(r.id),
                "type": r.type,
                "occurred_at": r.occurred_at.isoformat(),
                "provider": r.provider,
                "ref": r.ref,
                "status": r.status,
                "attributes": json.loads(r.attributes),
                "supersedes": r.supersedes,
                "counts": c is not None,
                "value": c.value if c else 0,
                "on_list": int(r.id) in listed,
            }
        )
    return Explanation(row, result, policy, out)


def _has_consent(session: Session, subject_id: int, measure: str) -> bool:
    row = session.execute(
        select(consents.c.id).where(
            consents.c.subject_id == subject_id,
            consents.c.measure == measure,
            consents.c.revoked_at.is_(None),
        )
    ).first()
    return row is not None


def check(
    session: Session, *, subject: SubjectId, measure: str, service: str, clock: Clock
) -> Decision:
    """A service's question: may this subject have this measure? Only the decision is returned."""
    policy = active_policy(session, on=clock.today()).policy
    m = policy.measures_by_code.get(measure)
    if m is None:
        raise NotFound(f"policy {policy.label} has no measure {measure!r}")
    if service not in m.consulted_by:
        raise NotRegistered(
            f"a {service} may not consult {measure} (registered: {', '.join(m.consulted_by)}); "
            "hard line 6 (least disclosure)"
        )
    row = repo.find_subject(session, subject)
    if row is None:
        # Unknown subjects are answered as subjects with no records, so a check
        # never reveals whether chengxin holds anything on someone.
        return decide(policy, measure, score(policy, (), clock.today()))
    consent = m.kind == "reward" and _has_consent(session, row.id, measure)
    snap = repo.snapshots_for(session, [row.id]).get(row.id)
    today = clock.today()
    usable = (
        snap is not None
        and not snap.stale
        and snap.policy_hash == policy.content_hash
        and snap.as_of <= today
        and (snap.next_change is None or snap.next_change > today)
    )
    if usable and snap is not None:
        lists = {m_.list_code for m_ in repo.open_memberships(session, [row.id])[row.id]}
        hit = (
            (m.triggered_by.list in lists)
            if m.triggered_by.list
            else (snap.grade in policy.grades_matching(m.triggered_by))
        )
        if not (hit and m.kind == "sanction"):
            stub = ScoreResult(
                policy.label,
                today,
                snap.score,
                snap.score,
                snap.grade,
                (),
                {code: _membership_stub(code, policy) for code in lists},
                snap.next_change,
            )
            return decide(policy, measure, stub, consent=consent)
    result = fresh_result(session, policy=policy, subject_id=row.id, clock=clock)
    return decide(policy, measure, result, consent=consent)


def _membership_stub(code: str, policy: Policy) -> Any:
    from chengxin.domain.scoring import Membership

    kind = policy.lists_by_code[code].kind if code in policy.lists_by_code else "black"
    return Membership(code=code, kind=kind, since=None, until=None)


@dataclass(frozen=True, slots=True)
class ListEntryView:
    """One member of a list as shown to whoever may see it."""

    list_code: str
    kind: str
    subject: str
    name: str | None
    since: date | None
    until: date | None


def list_members(
    session: Session, *, list_code: str | None = None, masked: bool = False, limit: int = 1000
) -> list[ListEntryView]:
    """Current members of one list or all lists (identifiers masked when ``masked``)."""
    stmt = (
        select(
            memberships.c.list_code,
            memberships.c.kind,
            memberships.c.since,
            memberships.c.until,
            subjects.c.scheme,
            subjects.c.value,
            subjects.c.name,
        )
        .join(subjects, subjects.c.id == memberships.c.subject_id)
        .where(memberships.c.left_at.is_(None))
        .order_by(memberships.c.list_code, subjects.c.value)
        .limit(limit)
    )
    if list_code is not None:
        stmt = stmt.where(memberships.c.list_code == list_code)
    out = []
    for r in session.execute(stmt):
        sid = SubjectId(r.scheme, r.value)
        out.append(
            ListEntryView(
                r.list_code,
                r.kind,
                mask(sid) if masked else str(sid),
                None if masked else r.name,
                r.since,
                r.until,
            )
        )
    return out


def list_counts(session: Session) -> dict[str, int]:
    """How many subjects are on each list now."""
    from sqlalchemy import func

    rows = session.execute(
        select(memberships.c.list_code, func.count())
        .where(memberships.c.left_at.is_(None))
        .group_by(memberships.c.list_code)
    )
    return {r[0]: int(r[1]) for r in rows}
