"""The fast check path: a compiled policy and one prepared query per check.

``check`` in :mod:`chengxin.service.subjects` is the reference; this class
gives the same decisions at a much higher rate for services that ask many
questions. The precedence between outcomes is the one written in
:mod:`chengxin.domain.decisions`; here it is only applied, from tables built
once per active policy and day (:class:`_Plan`).

Per check it runs one statement on a DB-API connection it holds (the
subject, its snapshot, its open lists, its consent to the measure and the
newest activation id together), without SQLAlchemy on the way. Then:

* an unknown subject is answered as one with no records (no leak), from a
  decision computed once per plan;
* a trusted snapshot (current policy, not stale, not past the day it next
  changes) answers ``allow`` and ``grant`` directly;
* a sanction whose trigger holds on a trusted snapshot is scored afresh from
  the subject's records (one more read), as the reference does, because a
  denial carries the reasons behind it (hard line 5); unlike the reference it
  does not store that score, which for a trusted snapshot would change
  nothing but the snapshot's ``computed_at``;
* an untrusted snapshot goes to the reference path, which rescores the
  subject and stores the result in a transaction of its own.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from sqlalchemy import Engine

from chengxin.domain.decisions import Decision, decide
from chengxin.domain.identifiers import SubjectId
from chengxin.domain.policy import Measure, Policy
from chengxin.domain.scoring import RecordFact, score
from chengxin.service.clock import Clock
from chengxin.service.errors import NotFound, NotRegistered
from chengxin.service.policies import active_policy
from chengxin.service.subjects import check as reference_check
from chengxin.store.db import transaction

_SQL = """
SELECT (SELECT max(a.id) FROM activations a), s.id, sn.grade, sn.as_of, sn.next_change,
       sn.stale, sn.policy_hash,
       (SELECT {agg} FROM memberships m WHERE m.subject_id = s.id AND m.left_at IS NULL),
       (SELECT count(*) FROM consents c
         WHERE c.subject_id = s.id AND c.measure = {p} AND c.revoked_at IS NULL)
FROM (SELECT 1 AS one) AS one
LEFT JOIN subjects s ON s.scheme = {p} AND s.value = {p}
LEFT JOIN snapshots sn ON sn.subject_id = s.id
"""
_FACTS_SQL = (
    "SELECT id, type, occurred_at, attributes, status FROM records "
    "WHERE status IN ('active', 'disputed') AND subject_id = {p} ORDER BY id"
)


@dataclass(frozen=True, slots=True)
class _MeasurePlan:
    """One measure, compiled: who may ask, what triggers it, and its ready-made answers."""

    measure: Measure
    consulted_by: frozenset[str]
    sanction: bool
    trigger_list: str | None
    grades: frozenset[str]
    consent_required: bool
    allow: Decision
    grant: Decision
    unknown: Decision  # the decision for a subject chengxin holds nothing on


@dataclass(frozen=True, slots=True)
class _Plan:
    """The active policy on one day, compiled for checks."""

    activation: int
    day: date
    day_key: Any  # ``day`` as the driver returns dates (ISO text on SQLite)
    policy: Policy
    measures: dict[str, _MeasurePlan]


def _compile(policy: Policy, activation: int, day: date, day_key: Any) -> _Plan:
    nothing = score(policy, (), day)
    measures = {}
    for m in policy.measures:
        trig = m.triggered_by
        measures[m.code] = _MeasurePlan(
            measure=m,
            consulted_by=frozenset(m.consulted_by),
            sanction=m.kind == "sanction",
            trigger_list=trig.list,
            grades=policy.grades_matching(trig),
            consent_required=m.consent_required,
            allow=Decision(m.code, "allow", (), policy.label, None),
            grant=Decision(m.code, "grant", (), policy.label, None),
            unknown=decide(policy, m.code, nothing),
        )
    return _Plan(activation, day, day_key, policy, measures)


class Checker:
    """Answers ``check`` at a high rate on one held connection (not thread-safe: one per worker)."""

    def __init__(self, engine: Engine, *, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._pooled = engine.raw_connection()
        self._conn: Any = cast(Any, self._pooled.dbapi_connection)
        self._sqlite = engine.dialect.name == "sqlite"
        if not self._sqlite:
            # Each statement its own transaction: no rollback round trip after a read.
            self._conn.autocommit = True
        p = "?" if self._sqlite else "%s"
        agg = "group_concat(m.list_code, ',')" if self._sqlite else "string_agg(m.list_code, ',')"
        self._sql = _SQL.format(agg=agg, p=p)
        self._facts_sql = _FACTS_SQL.format(p=p)
        self._plan: _Plan | None = None

    def close(self) -> None:
        """Release the held connection (to the pool, as the pool lent it)."""
        if not self._sqlite:
            with contextlib.suppress(Exception):  # a broken connection is discarded anyway
                self._conn.autocommit = False
        self._pooled.close()

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        # fetchall, not fetchone: a statement stepped to its end ends SQLite's read
        # transaction at once; on PostgreSQL the connection is in autocommit.
        rows: list[Any] = self._conn.execute(sql, params).fetchall()
        return rows

    def _compiled(self, activation: int | None, today: date) -> _Plan:
        plan = self._plan
        if plan is not None and plan.activation == (activation or 0) and plan.day == today:
            return plan
        with transaction(self._engine) as session:
            policy = active_policy(session, on=today).policy
        key = today.isoformat() if self._sqlite else today
        plan = self._plan = _compile(policy, activation or 0, today, key)
        return plan

    def check(self, subject: SubjectId, measure: str, service: str) -> Decision:
        """The decision for one measure, exactly as the reference path gives it."""
        decision = self.check_subject(subject, measure, service)[0]
        assert decision is not None  # rescored when it had to be
        return decision

    def check_subject(
        self, subject: SubjectId, measure: str, service: str, *, rescore: bool = True
    ) -> tuple[Decision | None, int | None]:
        """:meth:`check`, and the subject's internal id (None if chengxin holds nothing on it),
        read in the same statement: what the check's audit event names.

        With ``rescore=False`` a subject whose snapshot cannot be trusted is not
        rescored here (that writes, in a transaction of its own): the decision
        is then None, and the caller takes the reference path where it may wait.
        """
        today = self._clock.today()
        (act, sid, grade, as_of, next_change, stale, policy_hash, lists, consents) = self._rows(
            self._sql, (measure, subject.scheme, subject.value)
        )[0]
        plan = self._plan
        if plan is None or plan.activation != (act or 0) or plan.day != today:
            plan = self._compiled(act, today)
        mp = plan.measures.get(measure)
        if mp is None:
            raise NotFound(f"policy {plan.policy.label} has no measure {measure!r}")
        if service not in mp.consulted_by:
            raise NotRegistered(
                f"a {service} may not consult {measure} (registered: "
                f"{', '.join(mp.measure.consulted_by)}); hard line 6 (least disclosure)"
            )
        if sid is None:
            return mp.unknown, None
        day = plan.day_key
        if (
            grade is None
            or stale
            or policy_hash != plan.policy.content_hash
            or as_of > day
            or (next_change is not None and next_change <= day)
        ):
            if not rescore:
                return None, int(sid)
            return self._reference(subject, measure, service), int(sid)
        if mp.trigger_list is not None:
            hit = lists is not None and mp.trigger_list in lists.split(",")
        else:
            hit = grade in mp.grades
        if not hit:
            return mp.allow, int(sid)
        if mp.sanction:
            return self._denial(plan, int(sid), measure), int(sid)
        return (mp.grant if consents or not mp.consent_required else mp.allow), int(sid)

    def _denial(self, plan: _Plan, subject_id: int, measure: str) -> Decision:
        """A sanction that holds: score the subject from its records for the reasons."""
        facts = [
            RecordFact(
                int(rid),
                rtype,
                occurred if isinstance(occurred, date) else date.fromisoformat(occurred),
                json.loads(attributes) if attributes != "{}" else {},
                status,
            )
            for rid, rtype, occurred, attributes, status in self._rows(
                self._facts_sql, (subject_id,)
            )
        ]
        return decide(plan.policy, measure, score(plan.policy, facts, plan.day))

    def _reference(self, subject: SubjectId, measure: str, service: str) -> Decision:
        with transaction(self._engine) as session:
            return reference_check(
                session, subject=subject, measure=measure, service=service, clock=self._clock
            )
