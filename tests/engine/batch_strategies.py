"""Batch-path test data: records in the input contract, the pure scorer's answer, and strategies.

``Row`` is one record as the tests hold it: the subject it belongs to and the
:class:`RecordFact` the pure scorer reads. :func:`records_table` turns rows
into the Arrow table the store produces; :func:`pure_answer` and
:func:`engine_answer` put both paths' results in one comparable shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import strategies as st

from chengxin.domain.durations import Duration
from chengxin.domain.policy import Policy
from chengxin.domain.scoring import RecordFact, score
from chengxin.engine.duckdb_backend import BatchResult
from chengxin.engine.plan import attribute_columns

Row = tuple[int, RecordFact]
ScoreRow = tuple[int, str, date | None]
MemberRow = tuple[int, str, str, date | None, date | None]
Answer = tuple[dict[int, ScoreRow], set[MemberRow]]

STATUSES = ("active", "disputed", "retracted", "superseded", "overturned")
ARROW_TYPES = {
    "int64": pa.int64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
}


def records_table(policy: Policy, rows: Iterable[Row]) -> pa.Table:
    """Rows as the ``records`` input table (one nullable ``a_<attribute>`` column each)."""
    columns = attribute_columns(policy)
    schema = pa.schema(
        [
            ("record_id", pa.int64()),
            ("subject_id", pa.int64()),
            ("type", pa.string()),
            ("occurred_at", pa.date32()),
            ("status", pa.string()),
            *((name, ARROW_TYPES[type_]) for name, type_ in columns.items()),
        ]
    )
    data = []
    for subject, fact in rows:
        undeclared = {k for k in fact.attributes if f"a_{k}" not in columns}
        if undeclared:  # the store refuses these; the two paths would see different records
            raise ValueError(f"record {fact.id} has undeclared attributes {sorted(undeclared)}")
        data.append(
            {
                "record_id": fact.id,
                "subject_id": subject,
                "type": fact.type,
                "occurred_at": fact.occurred_at,
                "status": fact.status,
                **{f"a_{k}": v for k, v in fact.attributes.items()},
            }
        )
    return pa.Table.from_pylist(data, schema=schema)


def subjects_table(subject_ids: Iterable[int], kind: str = "person") -> pa.Table:
    """The ``subjects`` input table."""
    ids = sorted(set(subject_ids))
    return pa.table({"subject_id": pa.array(ids, pa.int64()), "kind": [kind] * len(ids)})


def pure_answer(
    policy: Policy, rows: Sequence[Row], subject_ids: Iterable[int], as_of: date
) -> Answer:
    """Every subject scored one by one with :func:`chengxin.domain.scoring.score`."""
    by_subject: dict[int, list[RecordFact]] = {}
    for subject, fact in rows:
        by_subject.setdefault(subject, []).append(fact)
    scores: dict[int, ScoreRow] = {}
    members: set[MemberRow] = set()
    for subject in set(subject_ids):
        result = score(policy, by_subject.get(subject, []), as_of)
        scores[subject] = (result.score, result.grade, result.next_change)
        for m in result.lists.values():
            members.add((subject, m.code, m.kind, m.since, m.until))
    return scores, members


def engine_answer(result: BatchResult) -> Answer:
    """A batch result in the shape of :func:`pure_answer`."""
    scores = {
        r["subject_id"]: (r["score"], r["grade"], r["next_change"])
        for r in result.scores.to_pylist()
    }
    assert len(scores) == result.scores.num_rows, "one score row per subject"
    members = {
        (r["subject_id"], r["list_code"], r["kind"], r["since"], r["until"])
        for r in result.memberships.to_pylist()
    }
    assert len(members) == result.memberships.num_rows, "one membership row per subject and list"
    return scores, members


# -- strategies -----------------------------------------------------------------

#: Attribute pool: a name always has one type across record types (one column each).
ATTRS: dict[str, str] = {"amount": "int", "severity": "str", "repeat": "bool", "decided_on": "date"}
_SEVERITIES = ["minor", "general", "serious", ""]
_DECIDED = [date(2023, 12, 31), date(2024, 1, 1), date(2024, 2, 29)]
_LOW, _HIGH = date(2022, 1, 1), date(2027, 12, 31)

# Month ends and leap days are where calendar arithmetic disagrees if it can.
_SPECIAL_DATES = [
    date(2023, 1, 31),
    date(2023, 2, 28),
    date(2023, 8, 31),
    date(2023, 12, 31),
    date(2024, 1, 31),
    date(2024, 2, 28),
    date(2024, 2, 29),
    date(2024, 3, 1),
    date(2024, 3, 31),
    date(2024, 12, 31),
    date(2025, 2, 28),
    date(2025, 3, 1),
]


def dates() -> st.SearchStrategy[date]:
    """Dates in 2022–2027, often a month end or a leap day."""
    return st.one_of(st.sampled_from(_SPECIAL_DATES), st.dates(_LOW, _HIGH))


def durations() -> st.SearchStrategy[Duration]:
    """Non-zero calendar durations of up to a few years (policy-like ones most often)."""
    common = st.sampled_from(
        [Duration(months=m) for m in (1, 3, 6, 12, 24, 36)] + [Duration(days=30), Duration(days=1)]
    )
    mixed = st.builds(Duration, months=st.integers(0, 40), days=st.integers(0, 45)).filter(
        lambda d: d.months or d.days
    )
    return st.one_of(common, mixed)


def attribute_value(kind: str) -> st.SearchStrategy[Any]:
    """A value of one attribute kind, biased to collide with literals in conditions."""
    match kind:
        case "int":
            return st.one_of(st.sampled_from([0, 1, 5, 50, 100]), st.integers(-(2**63), 2**63 - 1))
        case "str":
            return st.sampled_from(_SEVERITIES)
        case "bool":
            return st.booleans()
    return st.sampled_from(_DECIDED)


def _literal(kind: str) -> st.SearchStrategy[str]:
    match kind:
        case "int":
            return st.sampled_from(["0", "5", "50", "100", "-1"])
        case "str":
            return st.sampled_from([repr(s) for s in _SEVERITIES])
        case "bool":
            return st.sampled_from(["true", "false"])
    return st.sampled_from([f"date('{d.isoformat()}')" for d in _DECIDED])


@st.composite
def conditions(draw: st.DrawFn, names: Sequence[str]) -> str:
    """A well-typed ``when`` text over ``names`` (comparisons, in, is null, and/or/not)."""

    def leaf() -> str:
        name = draw(st.sampled_from(sorted(names)))
        kind = ATTRS[name]
        form = draw(st.sampled_from(["cmp", "in", "null", "bare"]))
        if form == "null":
            return f"{name} is {draw(st.sampled_from(['null', 'not null']))}"
        if form == "in":
            listed = draw(st.lists(_literal(kind), min_size=1, max_size=3))
            neg = draw(st.sampled_from(["in", "not in"]))
            return f"{name} {neg} [{', '.join(listed)}]"
        if form == "bare" and kind == "bool":
            return name
        ops = ["==", "!="] if kind == "bool" else ["==", "!=", "<", "<=", ">", ">="]
        return f"{name} {draw(st.sampled_from(ops))} {draw(_literal(kind))}"

    parts = [leaf() for _ in range(draw(st.integers(1, 3)))]
    if len(parts) == 1:
        text = parts[0]
    else:
        text = f" {draw(st.sampled_from(['and', 'or']))} ".join(f"({p})" for p in parts)
    return f"not ({text})" if draw(st.booleans()) and len(parts) > 1 else text


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Small, varied policies: first-match rules, schedules, expiries, lists, clamping."""
    n_types = draw(st.integers(1, 4))
    types: list[dict[str, Any]] = []
    for i in range(n_types):
        attrs = draw(st.lists(st.sampled_from(sorted(ATTRS)), unique=True, max_size=3))
        types.append(
            {
                "code": f"t.type{i}",
                "domain": "societal",
                "category": "conduct",
                "applies_to": ["person"],
                "retention": "5y",
                "attributes": {a: {"type": ATTRS[a]} for a in attrs},
            }
        )
    rules = []
    for i in range(draw(st.integers(0, 6))):
        rtype = draw(st.sampled_from(types))
        when = None
        if rtype["attributes"] and draw(st.booleans()):
            when = draw(conditions(list(rtype["attributes"])))
        steps = draw(st.lists(st.tuples(durations(), st.integers(0, 100)), max_size=3))
        rules.append(
            {
                "id": f"r{i}",
                "type": rtype["code"],
                "when": when,
                "points": draw(st.integers(-300, 300)),
                "expires": draw(st.one_of(st.none(), durations())),
                "schedule": [{"after": d, "pct": p} for d, p in steps],
            }
        )
    base = draw(st.integers(-100, 1000))
    grade_mins = sorted(set(draw(st.lists(st.integers(base - 200, base + 200), max_size=3))))
    grades = [{"grade": "G0", "min": base - 1000}] + [
        {"grade": f"G{i + 1}", "min": m} for i, m in enumerate(grade_mins)
    ]
    lists = []
    for i in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 3)) == 0:
            picked = draw(
                st.lists(st.sampled_from([g["grade"] for g in grades]), min_size=1, unique=True)
            )
            enter: dict[str, Any] = {"grade_in": picked}
            lifted: list[str] = []
            duration = None
        else:
            rtype = draw(st.sampled_from(types))
            enter = {"record": rtype["code"]}
            if rtype["attributes"] and draw(st.booleans()):
                enter["when"] = draw(conditions(list(rtype["attributes"])))
            lifted = draw(
                st.lists(st.sampled_from([t["code"] for t in types]), unique=True, max_size=2)
            )
            duration = draw(st.one_of(st.none(), durations()))
        lists.append(
            {
                "code": f"list{i}",
                "kind": draw(st.sampled_from(["red", "black"])),
                "enter": enter,
                "duration": duration,
                "lifted_by": lifted,
            }
        )
    data = {
        "policy": "generated",
        "version": "1",
        "scale": {
            "base": base,
            "min": base - draw(st.integers(0, 300)),
            "max": base + draw(st.integers(0, 300)),
        },
        "grades": grades,
        "record_types": types,
        "rules": rules,
        "lists": lists,
        "disputes": {"suspend_while_open": draw(st.booleans())},
    }
    return Policy.model_validate(data)


@st.composite
def record_rows(draw: st.DrawFn, policy: Policy, subject_ids: Sequence[int]) -> list[Row]:
    """Records of the policy's types (and an unknown one) for the given subjects."""
    codes = [t.code for t in policy.record_types] + ["t.unknown"]
    rows: list[Row] = []
    for i in range(draw(st.integers(0, 30))):
        code = draw(st.sampled_from(codes))
        rtype = policy.types.get(code)
        attrs: dict[str, object] = {}
        for name, spec in rtype.attributes.items() if rtype else ():
            value = draw(st.one_of(st.none(), attribute_value(spec.type)))
            if value is not None:
                attrs[name] = value
        fact = RecordFact(
            id=i,
            type=code,
            occurred_at=draw(dates()),
            attributes=attrs,
            status=draw(st.sampled_from(STATUSES[:2] * 3 + STATUSES)),
        )
        rows.append((draw(st.sampled_from(list(subject_ids))), fact))
    return rows


@st.composite
def as_of_dates(draw: st.DrawFn, policy: Policy, rows: Sequence[Row]) -> list[date]:
    """Scoring dates: arbitrary ones, and ones on (or a day off) a record's step or expiry."""
    out = draw(st.lists(dates(), min_size=1, max_size=2))
    spans = [s.after for r in policy.rules for s in r.schedule]
    spans += [r.expires for r in policy.rules if r.expires is not None]
    spans += [lst.duration for lst in policy.lists if lst.duration is not None]
    if rows and spans:
        _, fact = draw(st.sampled_from(list(rows)))
        span = draw(st.sampled_from(spans))
        edge = span.after(fact.occurred_at) + timedelta(days=draw(st.integers(-1, 1)))
        out.append(edge)
    return out
