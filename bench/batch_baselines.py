"""The baselines the batch benchmark holds the Ibis plan against, for the national pack.

* :func:`run_sql`: hand-written DuckDB SQL, as a good SQL author would write
  it for this one policy (CASE for first-match rules, a rules table joined on
  a small integer, calendar arithmetic with ``to_months``, GROUP BY);
* :func:`run_pandas`: vectorised pandas, as a competent analyst would write it
  from the policy (a boolean mask per rule, ``DateOffset`` arithmetic,
  ``groupby``), nullable dtypes so missing attributes are SQL's unknown;
* :func:`run_rule_engine`: a generic rule engine (``rule-engine``): each
  rule's ``when`` compiled to a ``rule_engine.Rule`` and evaluated record by
  record, results accumulated per subject in Python.

Each returns ``(scores, memberships)`` as Arrow tables in the batch result's
schemas; ``bench_batch`` asserts they equal the plan's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import rule_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from chengxin.domain.durations import Duration
from chengxin.domain.expr import And, Attr, Compare, Expr, In, IsNull, Lit, Not, Or
from chengxin.domain.policy import Policy
from chengxin.domain.scoring import truncate_pct
from chengxin.engine.duckdb_backend import MEMBERSHIPS_SCHEMA, SCORES_SCHEMA

__all__ = ["run_pandas", "run_rule_engine", "run_sql", "to_pandas"]

# -- hand-written SQL (national pack) ---------------------------------------

NATIONAL_SQL_SCORES = """
WITH rules(rule_no, points, expires_m, step1_m, step1_pct, step2_m, step2_pct) AS (
  VALUES (0, -100, 36, 12, 50, NULL, NULL), (1, -50, 24, NULL, NULL, NULL, NULL),
         (2, -80, 36, 12, 50, NULL, NULL), (3, -20, 12, NULL, NULL, NULL, NULL),
         (4, -60, 36, 12, 50, NULL, NULL), (5, -150, 60, 12, 60, 36, 30),
         (6, -80, 36, NULL, NULL, NULL, NULL), (7, -30, 12, NULL, NULL, NULL, NULL),
         (8, -10, 3, NULL, NULL, NULL, NULL), (9, -80, 36, NULL, NULL, NULL, NULL),
         (10, -30, 12, NULL, NULL, NULL, NULL), (11, -10, 3, NULL, NULL, NULL, NULL),
         (12, 20, 12, NULL, NULL, NULL, NULL), (13, -5, 12, NULL, NULL, NULL, NULL),
         (14, -3, 12, NULL, NULL, NULL, NULL), (15, -10, 12, NULL, NULL, NULL, NULL),
         (16, -5, 12, NULL, NULL, NULL, NULL), (17, 10, 24, NULL, NULL, NULL, NULL),
         (18, 5, 12, NULL, NULL, NULL, NULL), (19, 10, 24, NULL, NULL, NULL, NULL),
         (20, 30, 36, 12, 50, NULL, NULL), (21, -100, 24, 12, 50, NULL, NULL),
         (22, -50, 24, 12, 50, NULL, NULL), (23, -150, 36, 12, 50, NULL, NULL)
),
counted AS (
  SELECT * FROM records WHERE status = 'active'
),
matched AS (
  SELECT subject_id, occurred_at,
    CASE type
      WHEN 'societal.fail_to_yield_pedestrian' THEN 13
      WHEN 'societal.fare_evasion' THEN CASE WHEN a_repeat THEN 15 ELSE 16 END
      WHEN 'societal.smoking_in_non_smoking_zone' THEN 14
      WHEN 'societal.volunteering' THEN CASE WHEN a_hours >= 50 THEN 17 ELSE 18 END
      WHEN 'societal.blood_donation' THEN 19
      WHEN 'societal.heroic_act' THEN 20
      WHEN 'commercial.tax_arrears' THEN CASE WHEN a_amount_cny >= 1000000 THEN 2 ELSE 3 END
      WHEN 'commercial.tax_compliance_a' THEN 12
      WHEN 'commercial.product_safety_violation' THEN
        CASE a_severity WHEN 'serious' THEN 6 WHEN 'general' THEN 7 ELSE 8 END
      WHEN 'commercial.environmental_violation' THEN
        CASE a_severity WHEN 'serious' THEN 9 WHEN 'general' THEN 10 ELSE 11 END
      WHEN 'commercial.wage_arrears' THEN 4
      WHEN 'commercial.contract_fraud' THEN 5
      WHEN 'judicial.judgment_unperformed' THEN CASE WHEN a_amount_cny >= 100000 THEN 21 ELSE 22 END
      WHEN 'judicial.obstruction_of_enforcement' THEN 23
      WHEN 'government.court_ruling_not_honoured' THEN 0
      WHEN 'government.contract_not_honoured' THEN 1
    END AS rule_no
  FROM counted
),
dated AS (
  SELECT m.subject_id, m.occurred_at, r.points,
         m.occurred_at + to_months(r.expires_m) AS expires_on,
         m.occurred_at + to_months(r.step1_m) AS step1_on, r.step1_pct,
         m.occurred_at + to_months(r.step2_m) AS step2_on, r.step2_pct
  FROM matched m JOIN rules r USING (rule_no)
),
by_rule AS (
  SELECT subject_id,
    SUM(CASE WHEN occurred_at <= $as_of AND $as_of < expires_on
        THEN (points * CASE WHEN step2_on <= $as_of THEN step2_pct
                            WHEN step1_on <= $as_of THEN step1_pct ELSE 100 END) // 100
        ELSE 0 END) AS total,
    -- occurrence < first step < second step < expiry for every rule of this pack
    MIN(CASE WHEN occurred_at > $as_of THEN occurred_at
             WHEN step1_on > $as_of THEN step1_on
             WHEN step2_on > $as_of THEN step2_on
             WHEN expires_on > $as_of THEN expires_on END) AS next_rule
  FROM dated GROUP BY subject_id
),
list_changes AS (
  SELECT subject_id,
    MIN(CASE WHEN occurred_at > $as_of THEN occurred_at
             WHEN type = 'judicial.obstruction_of_enforcement'
                  AND occurred_at + INTERVAL 24 MONTH > $as_of
             THEN occurred_at + INTERVAL 24 MONTH END) AS next_list
  FROM counted
  WHERE type IN ('judicial.judgment_performed', 'judicial.obstruction_of_enforcement')
  GROUP BY subject_id
),
scored AS (
  SELECT s.subject_id,
         LEAST(2000, GREATEST(0, 1000 + COALESCE(b.total, 0)))::BIGINT AS score,
         LEAST(b.next_rule, l.next_list)::DATE AS next_change
  FROM subjects s
  LEFT JOIN by_rule b USING (subject_id)
  LEFT JOIN list_changes l USING (subject_id)
)
SELECT subject_id, score,
       CASE WHEN score >= 1050 THEN 'AAA' WHEN score >= 1030 THEN 'AA' WHEN score >= 960 THEN 'A'
            WHEN score >= 850 THEN 'B' WHEN score >= 600 THEN 'C' ELSE 'D' END AS grade,
       next_change
FROM scored
"""

NATIONAL_SQL_MEMBERSHIPS = """
WITH lifts AS (
  SELECT subject_id, MAX(occurred_at) AS last_lift
  FROM records WHERE status = 'active' AND type = 'judicial.judgment_performed'
                 AND occurred_at <= $as_of
  GROUP BY subject_id
),
entries AS (
  SELECT r.subject_id, r.occurred_at, 'judgment-defaulters' AS list_code,
         (r.occurred_at + INTERVAL 24 MONTH)::DATE AS ends_on
  FROM records r LEFT JOIN lifts l USING (subject_id)
  WHERE r.status = 'active' AND r.type = 'judicial.judgment_unperformed'
    AND (l.last_lift IS NULL OR r.occurred_at > l.last_lift)
  UNION ALL
  SELECT subject_id, occurred_at, 'enforcement-obstructors', (occurred_at + INTERVAL 24 MONTH)::DATE
  FROM records WHERE status = 'active' AND type = 'judicial.obstruction_of_enforcement'
  UNION ALL
  SELECT subject_id, occurred_at, 'serious-market-violators',
         (occurred_at + INTERVAL 36 MONTH)::DATE
  FROM records WHERE status = 'active' AND type = 'commercial.product_safety_violation'
                 AND a_severity = 'serious'
)
SELECT subject_id, list_code, 'black' AS kind, MIN(occurred_at) AS since, MAX(ends_on) AS until
FROM entries
WHERE occurred_at <= $as_of AND $as_of < ends_on
GROUP BY subject_id, list_code
UNION ALL
SELECT subject_id, 'honour-roll', 'red', NULL, NULL FROM sql_scores WHERE score >= 1050
"""


def run_sql(con: Any, as_of: date) -> tuple[pa.Table, pa.Table]:
    """The hand-written queries on the same DuckDB tables (scores read back for the red list)."""
    raw = con.con
    literal = f"DATE '{as_of.isoformat()}'"
    scores = raw.sql(NATIONAL_SQL_SCORES.replace("$as_of", literal)).to_arrow_table()
    raw.register("sql_scores", scores)
    try:
        memberships = raw.sql(NATIONAL_SQL_MEMBERSHIPS.replace("$as_of", literal)).to_arrow_table()
    finally:
        raw.unregister("sql_scores")
    return scores, memberships


# -- pandas ---------------------------------------------------------------------


def to_pandas(records: pa.Table) -> pd.DataFrame:
    """Records as an analyst would load them: categoricals, nullable attributes, datetimes."""
    nullable = {
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.string(): pd.StringDtype("pyarrow"),
    }
    df = records.to_pandas(types_mapper=nullable.get, date_as_object=False)
    df["type"] = df["type"].astype("category")
    df["status"] = df["status"].astype("category")
    return df


def pandas_condition(expr: Expr, df: pd.DataFrame) -> pd.Series:
    """A ``when`` expression over nullable columns (Kleene logic, as SQL)."""
    match expr:
        case Compare(op, Attr(name), right):
            col = df[f"a_{name}"]
            rhs = df[f"a_{right.name}"] if isinstance(right, Attr) else right.value
            ops: dict[str, Callable[[Any, Any], pd.Series]] = {
                "==": pd.Series.eq,
                "!=": pd.Series.ne,
                "<": pd.Series.lt,
                "<=": pd.Series.le,
                ">": pd.Series.gt,
                ">=": pd.Series.ge,
            }
            return ops[op](col, rhs).astype("boolean")
        case In(Attr(name), values, negated):
            col = df[f"a_{name}"]
            found = col.isin([v.value for v in values]).astype("boolean").mask(col.isna())
            return ~found if negated else found
        case IsNull(Attr(name), negated):
            return (df[f"a_{name}"].notna() if negated else df[f"a_{name}"].isna()).astype(
                "boolean"
            )
        case And(items):
            out = pandas_condition(items[0], df)
            for item in items[1:]:
                out = out & pandas_condition(item, df)
            return out
        case Or(items):
            out = pandas_condition(items[0], df)
            for item in items[1:]:
                out = out | pandas_condition(item, df)
            return out
        case Not(item):
            return ~pandas_condition(item, df)
    raise TypeError(expr)


def run_pandas(
    policy: Policy, df: pd.DataFrame, subject_ids: np.ndarray, as_of: date
) -> tuple[pa.Table, pa.Table]:
    """Score every subject with vectorised pandas: a mask per rule, groupby per subject."""
    ts = pd.Timestamp(as_of)
    statuses = ["active"] if policy.disputes.suspend_while_open else ["active", "disputed"]
    c = df[df["status"].isin(statuses)]
    c = c.reset_index(drop=True)
    occ = c["occurred_at"]

    def after(dates: pd.Series, span: Duration) -> pd.Series:
        out = dates + pd.DateOffset(months=span.months) if span.months else dates
        return out + pd.Timedelta(days=span.days) if span.days else out

    tests, picks = [], []
    for i, rule in enumerate(policy.rules):
        test = c["type"] == rule.type
        if rule.condition is not None:
            test &= pandas_condition(rule.condition, c).fillna(False).to_numpy(bool)
        tests.append(np.asarray(test))
        picks.append(i)
    rule_no = np.select(tests, picks, default=-1)
    value = np.zeros(len(c), dtype=np.int64)
    changes: list[pd.DataFrame] = []

    def change(rows: np.ndarray, dates: pd.Series) -> None:
        later = (dates > ts).to_numpy()
        changes.append(
            pd.DataFrame(
                {
                    "subject_id": c["subject_id"].to_numpy()[rows][later],
                    "when": dates.to_numpy()[later],
                }
            )
        )

    for i, rule in enumerate(policy.rules):
        rows = np.flatnonzero(rule_no == i)
        if rows.size == 0:
            continue
        d = occ.iloc[rows]
        pct = np.full(rows.size, 100)
        change(rows, d)
        for step in rule.schedule:
            on = after(d, step.after)
            pct = np.where((on <= ts).to_numpy(), step.pct, pct)
            change(rows, on)
        live = (d <= ts).to_numpy()
        if rule.expires is not None:
            ends = after(d, rule.expires)
            live &= (ends > ts).to_numpy()
            change(rows, ends)
        product = rule.points * pct
        value[rows] = np.where(live, np.sign(product) * (np.abs(product) // 100), 0)
    c["value"] = value
    total = c.groupby("subject_id")["value"].sum()
    members: list[pd.DataFrame] = []
    for lst in policy.lists:
        if lst.enter.record is None:
            continue
        entry = (c["type"] == lst.enter.record).to_numpy()
        if lst.enter.condition is not None:
            entry &= pandas_condition(lst.enter.condition, c).fillna(False).to_numpy(bool)
        rows = np.flatnonzero(entry)
        e = c.iloc[rows][["subject_id", "occurred_at"]]
        change(rows, e["occurred_at"])
        ends = after(e["occurred_at"], lst.duration) if lst.duration else None
        if ends is not None:
            change(rows, ends)
        e = e.assign(ends=ends if ends is not None else pd.NaT)
        live = e["occurred_at"] <= ts
        if ends is not None:
            live &= ends > ts
        e = e[live]
        if lst.lifted_by:
            lift_rows = np.flatnonzero(c["type"].isin(list(lst.lifted_by)).to_numpy())
            change(lift_rows, occ.iloc[lift_rows])
            lifts = c.iloc[lift_rows]
            last = lifts[lifts["occurred_at"] <= ts].groupby("subject_id")["occurred_at"].max()
            e = e.join(last.rename("last_lift"), on="subject_id")
            e = e[e["last_lift"].isna() | (e["occurred_at"] > e["last_lift"])]
        held = e.groupby("subject_id").agg(since=("occurred_at", "min"), until=("ends", "max"))
        if lst.duration is None:
            held["until"] = pd.NaT
        members.append(held.reset_index().assign(list_code=lst.code, kind=lst.kind))
    nxt = pd.concat(changes).groupby("subject_id")["when"].min()
    scores = pd.DataFrame({"subject_id": subject_ids})
    raw = policy.scale.base + scores["subject_id"].map(total).fillna(0).astype(np.int64)
    scores["score"] = raw.clip(policy.scale.min, policy.scale.max)
    bands = sorted(policy.grades, key=lambda g: g.min)
    scores["grade"] = pd.cut(
        scores["score"],
        [-np.inf, *[g.min for g in bands[1:]], np.inf],
        right=False,
        labels=[g.grade for g in bands],
    ).astype(str)
    scores["next_change"] = scores["subject_id"].map(nxt)
    for lst in policy.lists:
        if lst.enter.grade_in is not None:
            held = scores.loc[scores["grade"].isin(lst.enter.grade_in), ["subject_id"]]
            members.append(
                held.assign(since=pd.NaT, until=pd.NaT, list_code=lst.code, kind=lst.kind)
            )
    members = [m for m in members if len(m)]
    m = (
        pd.concat(members, ignore_index=True)
        if members
        else pd.DataFrame(columns=MEMBERSHIPS_SCHEMA.names)
    )
    for col in ("since", "until"):
        m[col] = pd.to_datetime(m[col]).astype("datetime64[ms]")
    scores["next_change"] = scores["next_change"].astype("datetime64[ms]")
    return (
        pa.Table.from_pandas(scores, preserve_index=False),
        pa.Table.from_pandas(m[MEMBERSHIPS_SCHEMA.names], preserve_index=False),
    )


# -- a generic rule engine, record by record ---------------------------------------


def rule_engine_text(expr: Expr) -> str:
    """A ``when`` expression in rule-engine syntax (null-guarded, as SQL's unknown → no match)."""
    match expr:
        case Compare(op, Attr(name), Lit(value)):
            lit = json.dumps(value) if not isinstance(value, date) else f'd"{value.isoformat()}"'
            return f"({name} != null and {name} {op} {lit})"
        case In(Attr(name), values, negated):
            listed = ", ".join(json.dumps(v.value) for v in values)
            test = f"{name} in [{listed}]"
            return f"({name} != null and not {test})" if negated else f"({test})"
        case IsNull(Attr(name), negated):
            return f"({name} {'!=' if negated else '=='} null)"
        case And(items):
            return "(" + " and ".join(rule_engine_text(i) for i in items) + ")"
        case Or(items):
            return "(" + " or ".join(rule_engine_text(i) for i in items) + ")"
    # ``not`` over an unknown is unknown in SQL but true here; this pack has none.
    raise NotImplementedError(f"rule-engine baseline cannot express {expr!r} with SQL nulls")


def run_rule_engine(
    policy: Policy, records: pa.Table, subject_ids: list[int], as_of: date
) -> tuple[pa.Table, pa.Table]:
    """Evaluate each record against compiled rule-engine rules, then accumulate per subject."""
    context = rule_engine.Context(default_value=None)

    def compile_(expr: Expr | None) -> rule_engine.Rule | None:
        return None if expr is None else rule_engine.Rule(rule_engine_text(expr), context=context)

    by_type: dict[str, list[tuple[Any, rule_engine.Rule | None]]] = {}
    for rule in policy.rules:
        by_type.setdefault(rule.type, []).append((rule, compile_(rule.condition)))
    entries = [(lst, compile_(lst.enter.condition)) for lst in policy.lists if lst.enter.record]
    counting = {"active"} if policy.disputes.suspend_while_open else {"active", "disputed"}

    def holds(rule: rule_engine.Rule | None, thing: dict[str, Any]) -> bool:
        if rule is None:
            return True
        try:
            return bool(rule.matches(thing))
        except rule_engine.errors.EvaluationError:
            return False

    total: dict[int, int] = {}
    changes: dict[int, list[date]] = {}
    list_entries: dict[tuple[int, str], list[tuple[date, date | None]]] = {}
    last_lift: dict[tuple[int, str], date] = {}
    for rec in records.to_pylist():
        if rec["status"] not in counting:
            continue
        sid, occurred = rec["subject_id"], rec["occurred_at"]
        thing = {k[2:]: v for k, v in rec.items() if k.startswith("a_")}
        dates = changes.setdefault(sid, [])
        for rule, compiled in by_type.get(rec["type"], ()):
            if holds(compiled, thing):
                dates.append(occurred)
                dates += [s.after.after(occurred) for s in rule.schedule]
                ends = rule.expires.after(occurred) if rule.expires else None
                if ends is not None:
                    dates.append(ends)
                if occurred <= as_of and (ends is None or as_of < ends):
                    total[sid] = total.get(sid, 0) + truncate_pct(
                        rule.points, rule.pct_at(occurred, as_of)
                    )
                break
        for lst, compiled in entries:
            if rec["type"] in lst.lifted_by:
                dates.append(occurred)
                key = (sid, lst.code)
                if occurred <= as_of and occurred > last_lift.get(key, date.min):
                    last_lift[key] = occurred
            if rec["type"] == lst.enter.record and holds(compiled, thing):
                ends = lst.duration.after(occurred) if lst.duration else None
                dates += [occurred] if ends is None else [occurred, ends]
                if occurred <= as_of and (ends is None or as_of < ends):
                    list_entries.setdefault((sid, lst.code), []).append((occurred, ends))
    scores, members = [], []
    kinds = {lst.code: lst.kind for lst in policy.lists}
    for (sid, code), held in list_entries.items():
        cut = last_lift.get((sid, code))
        live = [(d, e) for d, e in held if cut is None or d > cut]
        if live:
            ends = [e for _, e in live]
            until = None if None in ends else max(e for e in ends if e is not None)
            members.append((sid, code, kinds[code], min(d for d, _ in live), until))
    for sid in subject_ids:
        value = policy.clamp(policy.scale.base + total.get(sid, 0))
        grade = policy.grade_of(value)
        later = [d for d in changes.get(sid, ()) if d > as_of]
        scores.append((sid, value, grade, min(later) if later else None))
        for lst in policy.lists:
            if lst.enter.grade_in and grade in lst.enter.grade_in:
                members.append((sid, lst.code, lst.kind, None, None))
    return (
        pa.Table.from_pylist(
            [dict(zip(SCORES_SCHEMA.names, r, strict=True)) for r in scores], schema=SCORES_SCHEMA
        ),
        pa.Table.from_pylist(
            [dict(zip(MEMBERSHIPS_SCHEMA.names, r, strict=True)) for r in members],
            schema=MEMBERSHIPS_SCHEMA,
        ),
    )
