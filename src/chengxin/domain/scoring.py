"""The pure scorer: the one written semantics every engine must reproduce.

For a subject at date T under policy P (DESIGN.md, "Scoring semantics"):

* a record **counts** if its status is ``active``, or ``disputed`` while P does
  not suspend disputed records, and it occurred on or before T;
* it is matched to the **first** rule for its type whose ``when`` holds; that
  rule's points count while ``T < occurred_at + expires`` (no expiry: for
  ever), scaled by the rule's step schedule: ``points × pct / 100``,
  truncated toward zero, in integers;
* score = clamp(base + Σ contributions, min, max); grade = the band holding it;
* a subject is on a list entered by a record when a counting entry record
  (matching the list's ``when``) has ``occurred_at ≤ T < occurred_at +
  duration`` and no counting ``lifted_by`` record occurred between it and T
  (a lift on the entry's own day lifts it); on a list entered by grade when
  its grade is one of the list's grades;
* ``next_change`` is the earliest date after T on which any of the subject's
  records occurs, steps down, expires or ends a list entry: the instant the
  snapshot must be recomputed.

All arithmetic is integer; nothing here reads a clock or a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from chengxin.domain.expr import matches
from chengxin.domain.policy import ListDef, Policy, Rule

COUNTING = frozenset({"active", "disputed"})


@dataclass(frozen=True, slots=True)
class RecordFact:
    """What the scorer needs to know of one record."""

    id: int
    type: str
    occurred_at: date
    attributes: Mapping[str, object] = field(default_factory=dict)
    status: str = "active"


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one record adds to a score at the scoring date, and why."""

    record_id: int
    record_type: str
    rule_id: str
    points: int
    pct: int
    value: int
    occurred_at: date
    expires_on: date | None


@dataclass(frozen=True, slots=True)
class Membership:
    """A subject's place on one list at the scoring date."""

    code: str
    kind: str
    since: date | None
    until: date | None
    record_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """A subject's score, grade, contributions and lists at one date."""

    policy: str
    as_of: date
    score: int
    raw: int
    grade: str
    contributions: tuple[Contribution, ...]
    lists: Mapping[str, Membership]
    next_change: date | None


def truncate_pct(points: int, pct: int) -> int:
    """``points × pct / 100`` truncated toward zero, without floats."""
    product = points * pct
    magnitude = abs(product) // 100
    return magnitude if product >= 0 else -magnitude


def counting_statuses(policy: Policy) -> frozenset[str]:
    """The record statuses that count under ``policy``."""
    return _ACTIVE_ONLY if policy.disputes.suspend_while_open else COUNTING


_ACTIVE_ONLY = frozenset({"active"})


def counts(policy: Policy, record: RecordFact) -> bool:
    """Whether a record's status lets it count under ``policy``."""
    return record.status in counting_statuses(policy)


def first_rule(policy: Policy, record: RecordFact) -> Rule | None:
    """The rule that gives ``record`` its points (first match wins), or None."""
    for rule in policy.rules_by_type.get(record.type, ()):
        if rule.condition is None or matches(rule.condition, record.attributes):
            return rule
    return None


def _record_list(
    lst: ListDef, records: list[RecordFact], as_of: date, changes: list[date]
) -> Membership | None:
    entry = lst.enter
    lifts = lst.lifted_by
    last_lift: date | None = None
    candidates: list[tuple[RecordFact, date | None]] = []
    for r in records:
        if r.type in lifts:
            changes.append(r.occurred_at)
            if r.occurred_at <= as_of and (last_lift is None or r.occurred_at > last_lift):
                last_lift = r.occurred_at
        if r.type != entry.record:
            continue
        if entry.condition is not None and not matches(entry.condition, r.attributes):
            continue
        end = None if lst.duration is None else lst.duration.after(r.occurred_at)
        changes.append(r.occurred_at)
        if end is not None:
            changes.append(end)
        if r.occurred_at <= as_of and (end is None or as_of < end):
            candidates.append((r, end))
    live = [(r, end) for r, end in candidates if last_lift is None or r.occurred_at > last_lift]
    if not live:
        return None
    ends = [end for _, end in live]
    return Membership(
        code=lst.code,
        kind=lst.kind,
        since=min(r.occurred_at for r, _ in live),
        until=None if any(e is None for e in ends) else max(e for e in ends if e is not None),
        record_ids=tuple(sorted(r.id for r, _ in live)),
    )


def score(
    policy: Policy, records: Iterable[RecordFact], as_of: date, *, explain: bool = True
) -> ScoreResult:
    """Score one subject's records at ``as_of`` under ``policy``.

    With ``explain=False`` the result lists no contributions (``()``): a
    rescore stores only the score, grade, lists and next change.
    """
    statuses = counting_statuses(policy)
    counted = [r for r in records if r.status in statuses]
    changes: list[date] = []
    contributions: list[Contribution] = []
    total = 0
    for record in counted:
        rule = first_rule(policy, record)
        if rule is None:
            continue
        # The days the record occurs, steps down and expires, each computed once.
        occurred = record.occurred_at
        changes.append(occurred)
        steps = rule.step_days(occurred)
        changes += steps
        expires_on = None if rule.expires is None else rule.expires.after(occurred)
        if expires_on is not None:
            changes.append(expires_on)
        if occurred > as_of or (expires_on is not None and as_of >= expires_on):
            continue
        pct = rule.pct_on(steps, as_of)
        value = truncate_pct(rule.points, pct)
        total += value
        if explain:
            contributions.append(
                Contribution(
                    record_id=record.id,
                    record_type=record.type,
                    rule_id=rule.id,
                    points=rule.points,
                    pct=pct,
                    value=value,
                    occurred_at=occurred,
                    expires_on=expires_on,
                )
            )
    raw = policy.scale.base + total
    clamped = policy.clamp(raw)
    grade = policy.grade_of(clamped)
    lists: dict[str, Membership] = {}
    types = {r.type for r in counted}
    for lst in policy.lists:
        if lst.enter.record is not None:
            if lst.enter.record not in types and types.isdisjoint(lst.lifted_by):
                continue  # none of its records: no entry, and no day on which one changes
            member = _record_list(lst, counted, as_of, changes)
        elif grade in (lst.enter.grade_in or ()):
            member = Membership(code=lst.code, kind=lst.kind, since=None, until=None)
        else:
            member = None
        if member is not None:
            lists[lst.code] = member
    later = [d for d in changes if d > as_of]
    return ScoreResult(
        policy=policy.label,
        as_of=as_of,
        score=clamped,
        raw=raw,
        grade=grade,
        contributions=tuple(contributions),
        lists=lists,
        next_change=min(later) if later else None,
    )


def base_result(policy: Policy, as_of: date) -> ScoreResult:
    """The result for a subject with no records."""
    return score(policy, (), as_of)
