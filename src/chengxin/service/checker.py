"""The fast check path: one cached policy and one indexed query per check.

``check`` in :mod:`chengxin.service.subjects` is the reference; this class
gives the same decisions at a much higher rate for services that ask many
questions. Per check it runs one query on a held connection (subject,
snapshot, open lists and the newest activation id together). It falls back
to the reference path, which rescores and stores, whenever the snapshot
cannot be trusted (missing, stale, from another policy, or past the date it
next changes) or a sanction applies (a denial needs its reasons, which come
from a fresh scoring).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine

from chengxin.domain.decisions import Decision, decide, outcome
from chengxin.domain.identifiers import SubjectId
from chengxin.domain.policy import Policy
from chengxin.domain.scoring import score
from chengxin.service.clock import Clock
from chengxin.service.errors import NotFound, NotRegistered
from chengxin.service.policies import active_policy
from chengxin.service.subjects import check as reference_check
from chengxin.store.db import transaction

_SQL = """
SELECT s.id, sn.score, sn.grade, sn.as_of, sn.next_change, sn.stale, sn.policy_hash,
       (SELECT {agg} FROM memberships m WHERE m.subject_id = s.id AND m.left_at IS NULL),
       (SELECT max(a.id) FROM activations a),
       {consent}
FROM subjects s LEFT JOIN snapshots sn ON sn.subject_id = s.id
WHERE s.scheme = {p} AND s.value = {p}
"""
_CONSENT = (
    "(SELECT count(*) FROM consents c WHERE c.subject_id = s.id AND c.measure = {p} "
    "AND c.revoked_at IS NULL)"
)


@dataclass(frozen=True, slots=True)
class _Cached:
    activation: int
    day: date
    policy: Policy


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


class Checker:
    """Answers ``check`` at a high rate on one held connection (not thread-safe: one per worker)."""

    def __init__(self, engine: Engine, *, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._raw = engine.raw_connection()
        dialect = engine.dialect.name
        p = "?" if dialect == "sqlite" else "%s"
        agg = (
            "group_concat(m.list_code, ',')"
            if dialect == "sqlite"
            else ("string_agg(m.list_code, ',')")
        )
        self._sql = _SQL.format(agg=agg, p=p, consent=_CONSENT.format(p=p))
        self._cache: _Cached | None = None
        self._autocommit = dialect == "sqlite"

    def close(self) -> None:
        """Release the held connection."""
        self._raw.close()

    def _policy(self, activation: int | None, today: date) -> Policy:
        cached = self._cache
        if cached is not None and cached.activation == (activation or 0) and cached.day == today:
            return cached.policy
        with transaction(self._engine) as session:
            policy = active_policy(session, on=today).policy
        self._cache = _Cached(activation or 0, today, policy)
        return policy

    def _row(self, subject: SubjectId, measure: str) -> Any:
        cur = self._raw.cursor()
        try:
            cur.execute(self._sql, (measure, subject.scheme, subject.value))
            row = cur.fetchone()
        finally:
            cur.close()
        if not self._autocommit:
            self._raw.rollback()  # end the read transaction on PostgreSQL
        return row

    def check(self, subject: SubjectId, measure: str, service: str) -> Decision:
        """The decision for one measure, exactly as the reference path gives it."""
        today = self._clock.today()
        row = self._row(subject, measure)
        known = self._cache.activation if self._cache is not None else None
        policy = self._policy(row[8] if row is not None else known, today)
        m = policy.measures_by_code.get(measure)
        if m is None:
            raise NotFound(f"policy {policy.label} has no measure {measure!r}")
        if service not in m.consulted_by:
            raise NotRegistered(
                f"a {service} may not consult {measure} (registered: "
                f"{', '.join(m.consulted_by)}); hard line 6 (least disclosure)"
            )
        if row is None:
            # Unknown subjects are answered as subjects with no records (no leak).
            return decide(policy, measure, score(policy, (), today))
        _sid, snap_score, grade, as_of, next_change, stale, policy_hash, lists, _act, consents = row
        as_of_day, next_day = _as_date(as_of), _as_date(next_change)
        usable = (
            snap_score is not None
            and not stale
            and policy_hash == policy.content_hash
            and as_of_day is not None
            and as_of_day <= today
            and (next_day is None or next_day > today)
        )
        if not usable:
            return self._reference(subject, measure, service)
        trig = m.triggered_by
        if trig.list is not None:
            hit = lists is not None and trig.list in lists.split(",")
        else:
            hit = grade in policy.measure_grades[measure]
        verdict = outcome(m, hit=hit, consent=bool(consents))
        if verdict == "deny":
            return self._reference(subject, measure, service)  # a denial needs its reasons
        return Decision(measure, verdict, (), policy.label, None)

    def _reference(self, subject: SubjectId, measure: str, service: str) -> Decision:
        with transaction(self._engine) as session:
            return reference_check(
                session, subject=subject, measure=measure, service=service, clock=self._clock
            )
