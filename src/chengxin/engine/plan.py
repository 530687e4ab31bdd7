"""The batch path: a policy compiled to one Ibis plan that scores every subject as of a date.

The plan reproduces :func:`chengxin.domain.scoring.score` exactly; that
module's docstring is the semantics, and the precedence is the domain's:
status filter first, then the first matching rule per record (one ``CASE``
per record type, rules in policy order), lists lifted by the last lift on or
before the date. The plan uses Ibis alone, so it runs on DuckDB now and on
Spark later.

Input contract:

* ``records``: ``record_id int64, subject_id int64, type string, occurred_at
  date, status string`` and one nullable ``a_<attribute>`` column per
  attribute the policy's record types declare (:func:`attribute_columns`);
* ``subjects``: ``subject_id int64, kind string``; every subject is scored,
  one with no records gets the base score.

How the calendar is kept off the rows. ``d ↦ D.after(d)`` never decreases
(months clamp to the month's end, then days are added), so for a fixed date
T the records a duration D has run out for are exactly those that occurred
on or before one date, :func:`latest_start` ``(D, T)``. The step and expiry
durations of every rule give a handful of such cut dates; between two cuts
every rule's contribution and the set of its step/expiry dates still to come
are constant. :class:`Timeline` computes both once, in Python, with the
domain's own ``pct_at`` and ``truncate_pct``; the plan puts each record in
its interval (a few date comparisons) and reads its value and its next
change from array literals indexed by ``rule × interval``. Only the next
change date itself needs calendar arithmetic (``date + INTERVAL n MONTH``,
which clamps like :func:`~chengxin.domain.durations.add_months`: the
agreement tests hold DuckDB to it, and will hold Spark).
A rule whose steps are not in time order from every start (the linter
refuses those) takes the least of all its dates still to come instead.

Lists entered by a record, and the dates on which their entries occur, end
or are lifted, are computed apart from the scores, on the few records of the
entry and lifting types. Only subjects in ``subjects`` are scored or listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from chengxin.domain.durations import Duration
from chengxin.domain.expr import Expr
from chengxin.domain.policy import ListDef, Policy, Rule
from chengxin.engine.expr_ibis import ColumnFor, to_ibis, to_ibis_3vl
from chengxin.engine.timeline import Span, Timeline, latest_start

__all__ = [
    "RECORD_COLUMNS",
    "SUBJECT_COLUMNS",
    "BatchPlan",
    "PlanError",
    "attribute_columns",
    "build_plan",
]

_ATTR_TYPES = {"int": "int64", "str": "string", "bool": "boolean", "date": "date"}

RECORD_COLUMNS: dict[str, str] = {
    "record_id": "int64",
    "subject_id": "int64",
    "type": "string",
    "occurred_at": "date",
    "status": "string",
}
"""The fixed columns of the ``records`` input, before the ``a_<attribute>`` ones."""

SUBJECT_COLUMNS: dict[str, str] = {"subject_id": "int64", "kind": "string"}
"""The columns of the ``subjects`` input."""


class PlanError(ValueError):
    """The policy or the input tables cannot be compiled to a batch plan."""


def attribute_columns(policy: Policy) -> dict[str, str]:
    """The ``a_<attribute>`` columns ``records`` must carry, with their Ibis types."""
    out: dict[str, str] = {}
    declared_by: dict[str, tuple[str, str]] = {}
    for rtype in policy.record_types:
        for name, spec in rtype.attributes.items():
            seen = declared_by.setdefault(name, (rtype.code, spec.type))
            if seen[1] != spec.type:
                raise PlanError(
                    f"attribute '{name}' is {seen[1]} in record type '{seen[0]}' but "
                    f"{spec.type} in '{rtype.code}': one column 'a_{name}' cannot hold both; "
                    "rename one of them"
                )
            out[f"a_{name}"] = _ATTR_TYPES[spec.type]
    return out


@dataclass(frozen=True)
class BatchPlan:
    """Ibis tables for every subject's score and every list membership as of one date."""

    policy: Policy
    as_of: date
    scores: ir.Table
    record_memberships: ir.Table

    @property
    def memberships(self) -> ir.Table:
        """``subject_id, list_code, kind, since, until``: one row per subject per list held."""
        return self.memberships_from(self.scores)

    def memberships_from(self, scores: ir.Table) -> ir.Table:
        """Memberships with the grade-entered lists read from ``scores`` (e.g. materialised)."""
        parts = [self.record_memberships]
        for lst in self.policy.lists:
            if lst.enter.grade_in is not None:
                held = scores.filter(scores.grade.isin(list(lst.enter.grade_in)))
                parts.append(_membership_rows(held, lst, None, None))
        return parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)


# -- small helpers -------------------------------------------------------------


def _date(value: date) -> ir.DateScalar:
    return ibis.literal(value, type=dt.date)


def _int(value: int) -> ir.IntegerScalar:
    return ibis.literal(value, type=dt.int64)


def _after(span: Span | Duration, value: ir.DateValue) -> ir.DateValue:
    """``span.after(value)``: months first (clamped to the month's end), then days."""
    months, days = (span.months, span.days) if isinstance(span, Duration) else span
    out = value
    if months:
        out = out + ibis.interval(months=months)
    if days:
        out = out + ibis.interval(days=days)
    return out.cast(dt.date)


def _check_columns(table: ir.Table, wanted: dict[str, str], name: str) -> None:
    schema = table.schema()
    for column, type_ in wanted.items():
        if column not in schema:
            raise PlanError(f"{name} has no column '{column}' ({type_})")
        got, want = schema[column], dt.dtype(type_)
        if not (got.is_integer() and want.is_integer()) and type(got) is not type(want):
            raise PlanError(f"{name}.{column} is {got}, expected {want}")


def _columns(records: ir.Table) -> ColumnFor:
    def column(name: str) -> ir.Value:
        key = f"a_{name}"
        return records[key] if key in records.columns else ibis.null()

    return column


def _condition(expr: Expr, records: ir.Table) -> ir.BooleanValue:
    """True where the condition matches (unknown → false), for filters and ORs."""
    return to_ibis(expr, _columns(records))


def _entry_match(lst: ListDef, records: ir.Table) -> ir.BooleanValue:
    match = records.type == lst.enter.record
    if lst.enter.condition is not None:
        match = match & _condition(lst.enter.condition, records)
    return match


# -- per record ------------------------------------------------------------------


def _rule_index(policy: Policy, records: ir.Table) -> ir.IntegerValue:
    """Index into ``policy.rules`` of each record's first matching rule (NULL if none)."""
    by_type: dict[str, list[tuple[int, Rule]]] = {}
    for idx, rule in enumerate(policy.rules):
        by_type.setdefault(rule.type, []).append((idx, rule))
    column = _columns(records)
    branches = []
    for code, rules in by_type.items():
        tests = []
        fallback: ir.IntegerValue = ibis.null(dt.int64)
        for idx, rule in rules:
            if rule.condition is None:
                fallback = _int(idx)  # a catch-all: later rules of the type never apply
                break
            # Inside CASE WHEN an unknown condition is simply not taken: no fill needed.
            tests.append((to_ibis_3vl(rule.condition, column), _int(idx)))
        branches.append((code, ibis.cases(*tests, else_=fallback) if tests else fallback))
    if not branches:
        return ibis.null(dt.int64)
    return records.type.cases(*branches, else_=ibis.null(dt.int64))


def _interval(timeline: Timeline, occurred: ir.DateValue) -> ir.IntegerValue:
    """Which of the timeline's intervals each ``occurred_at`` falls in (0 … len(cuts))."""
    cuts = timeline.cuts
    return ibis.cases(
        *((occurred <= _date(cut), _int(i)) for i, cut in enumerate(cuts)), else_=_int(len(cuts))
    )


def _lookup(values: list[int | None], key: ir.IntegerValue) -> ir.IntegerValue:
    return ibis.literal(values, type=dt.Array(dt.int64))[key]


def _rule_next(timeline: Timeline, key: ir.IntegerValue, occurred: ir.DateValue) -> ir.DateValue:
    """Each record's next step, expiry or occurrence after the date (NULL if none)."""
    spans = timeline.spans
    if timeline.chained:
        first = _lookup(timeline.first_span, key)
        return first.cases(
            *((_int(i), _after(span, occurred)) for i, span in enumerate(spans)),
            else_=ibis.null(dt.date),
        )
    options = [
        ibis.cases((_lookup(timeline.span_due[i], key) == 1, _after(span, occurred)), else_=None)
        for i, span in enumerate(spans)
    ]
    return options[0] if len(options) == 1 else ibis.least(*options)


# -- lists --------------------------------------------------------------------------


def _membership_rows(
    table: ir.Table, lst: ListDef, since: ir.Value | None, until: ir.Value | None
) -> ir.Table:
    return table.select(
        subject_id=table.subject_id.cast(dt.int64),
        list_code=ibis.literal(lst.code, type=dt.string),
        kind=ibis.literal(lst.kind, type=dt.string),
        since=ibis.null(dt.date) if since is None else since.cast(dt.date),
        until=ibis.null(dt.date) if until is None else until.cast(dt.date),
    )


def _record_list(lst: ListDef, counted: ir.Table, as_of: date) -> ir.Table:
    """Members of a list entered by a record: live entries not lifted since."""
    cand = counted.filter(_entry_match(lst, counted), counted.occurred_at <= _date(as_of))
    if lst.duration is not None:
        start = latest_start(lst.duration, as_of)
        if start is not None:
            cand = cand.filter(cand.occurred_at > _date(start))
    cand = cand.select("subject_id", "occurred_at")
    if lst.lifted_by:
        lifts = counted.filter(
            counted.type.isin(list(lst.lifted_by)), counted.occurred_at <= _date(as_of)
        )
        last = lifts.group_by("subject_id").aggregate(last_lift=lifts.occurred_at.max())
        joined = cand.left_join(last, cand.subject_id == last.subject_id)
        cand = joined.filter(
            joined.last_lift.isnull() | (joined.occurred_at > joined.last_lift)
        ).select("subject_id", "occurred_at")
    held = cand.group_by("subject_id").aggregate(
        since=cand.occurred_at.min(), latest=cand.occurred_at.max()
    )
    until = None if lst.duration is None else _after(lst.duration, held.latest)
    return _membership_rows(held, lst, held.since, until)


def _list_changes(policy: Policy, counted: ir.Table, as_of: date) -> ir.Table | None:
    """Per subject, the earliest list entry, entry end or lift after the date."""
    parts = []
    later = counted.occurred_at > _date(as_of)
    for lst in policy.lists:
        if lst.enter.record is None:
            continue
        entries = counted.filter(_entry_match(lst, counted))
        when = ibis.cases((entries.occurred_at > _date(as_of), entries.occurred_at), else_=None)
        if lst.duration is not None:
            start = latest_start(lst.duration, as_of)
            ends = _after(lst.duration, entries.occurred_at)
            if start is not None:
                ends = ibis.cases((entries.occurred_at > _date(start), ends), else_=None)
            when = ibis.least(when, ends)
        parts.append(entries.select("subject_id", when=when.cast(dt.date)))
        if lst.lifted_by:
            lifts = counted.filter(counted.type.isin(list(lst.lifted_by)), later)
            parts.append(lifts.select("subject_id", when=lifts.occurred_at))
    if not parts:
        return None
    rows = parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)
    return rows.group_by("subject_id").aggregate(_list_next=rows.when.min())


def _empty_memberships(subjects: ir.Table) -> ir.Table:
    none = subjects.filter(ibis.literal(False))
    return none.select(
        subject_id=none.subject_id.cast(dt.int64),
        list_code=ibis.null(dt.string),
        kind=ibis.null(dt.string),
        since=ibis.null(dt.date),
        until=ibis.null(dt.date),
    )


# -- the plan -----------------------------------------------------------------------


def _grade(policy: Policy, score: ir.IntegerValue) -> ir.StringValue:
    ordered = policy.grades_desc
    last = ibis.literal(ordered[-1].grade, type=dt.string)
    if len(ordered) == 1:
        return last
    return ibis.cases(
        *((score >= _int(g.min), ibis.literal(g.grade, type=dt.string)) for g in ordered[:-1]),
        else_=last,
    )


def build_plan(policy: Policy, records: ir.Table, subjects: ir.Table, as_of: date) -> BatchPlan:
    """Compile ``policy`` to Ibis tables of scores and memberships as of ``as_of``."""
    _check_columns(records, {**RECORD_COLUMNS, **attribute_columns(policy)}, "records")
    _check_columns(subjects, SUBJECT_COLUMNS, "subjects")
    statuses = ["active"] if policy.disputes.suspend_while_open else ["active", "disputed"]
    counted = records.filter(records.status.isin(statuses))
    scored = subjects.select(subject_id=subjects.subject_id.cast(dt.int64))
    if policy.rules:
        timeline = Timeline.of(policy, as_of)
        keyed = counted.select(
            "subject_id",
            "occurred_at",
            key=_rule_index(policy, counted) * _int(timeline.width)
            + _interval(timeline, counted.occurred_at),
        )
        per_subject = keyed.group_by("subject_id").aggregate(
            _total=_lookup(timeline.values, keyed.key).sum(),
            _rule_next=_rule_next(timeline, keyed.key, keyed.occurred_at).min(),
        )
        joined = scored.left_join(per_subject, "subject_id")
        scored = joined.select(*scored.columns, "_total", "_rule_next")
    list_changes = _list_changes(policy, counted, as_of)
    if list_changes is not None:
        joined = scored.left_join(list_changes, "subject_id")
        scored = joined.select(*scored.columns, "_list_next")
    total = scored["_total"].fill_null(0) if "_total" in scored.columns else _int(0)
    nexts = [scored[c] for c in ("_rule_next", "_list_next") if c in scored.columns]
    scale = policy.scale
    raw = _int(scale.base) + total
    score = ibis.greatest(_int(scale.min), ibis.least(_int(scale.max), raw)).cast(dt.int64)
    next_change = (
        ibis.null(dt.date) if not nexts else ibis.least(*nexts) if len(nexts) > 1 else nexts[0]
    )
    scores = scored.select("subject_id", score=score, next_change=next_change.cast(dt.date))
    scores = scores.select(
        "subject_id", "score", grade=_grade(policy, scores.score), next_change="next_change"
    )
    lists = [_record_list(lst, counted, as_of) for lst in policy.lists if lst.enter.record]
    if not lists:
        memberships = _empty_memberships(subjects)
    else:
        memberships = lists[0] if len(lists) == 1 else ibis.union(*lists, distinct=False)
        # Only the subjects scored hold places on lists, as the pure scorer sees it.
        ids = subjects.select(subject_id=subjects.subject_id.cast(dt.int64))
        memberships = memberships.semi_join(ids, "subject_id")
    return BatchPlan(policy=policy, as_of=as_of, scores=scores, record_memberships=memberships)
