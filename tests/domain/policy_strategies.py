"""Hypothesis strategies for small valid policies and the records they score.

Shared by the pure scorer's properties and the engines' agreement tests, so
they reach every corner of the scoring semantics: several record types in
several domains, ``int``/``str``/``bool`` attributes (sometimes missing),
``when`` conditions, first-match precedence, step schedules, expiries in
months, days or both (from month ends, so clamping matters), lists entered by
record (with ``when``, ``duration`` and ``lifted_by``) and by grade, both
scale modes, and records that are disputed, retracted or superseded.

Every policy drawn here passes the model *and* the linter without errors
(``test_scoring`` checks that), so an engine may assume what a loaded policy
guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Any

from hypothesis import strategies as st

from chengxin.domain.durations import Duration
from chengxin.domain.expr import And, Attr, Compare, Expr, In, IsNull, Lit, Not, Or, to_text
from chengxin.domain.policy import DOMAINS, Policy
from chengxin.domain.scoring import RecordFact

#: Every generated record type carries these attributes (none required).
ATTRIBUTES: dict[str, str] = {"n": "int", "s": "str", "flag": "bool"}
STRINGS: tuple[str, ...] = ("x", "y", "z")
INTS = st.integers(-2, 6)

#: Statuses a record may have; only ``active`` (and ``disputed`` when the
#: policy does not suspend) count.
STATUSES: tuple[str, ...] = ("active", "disputed", "retracted", "superseded", "overturned")

#: A type no generated policy declares: the scorer must ignore its records.
UNKNOWN_TYPE = "societal.not_in_policy"

FIRST_DAY = date(2020, 1, 1)
LAST_DAY = date(2027, 12, 31)
# Month ends and leap days, where adding months clamps.
EDGE_DAYS: tuple[date, ...] = (
    date(2020, 1, 31),
    date(2020, 2, 29),
    date(2020, 3, 31),
    date(2021, 1, 31),
    date(2021, 2, 28),
    date(2022, 8, 31),
    date(2023, 12, 31),
    date(2024, 2, 29),
)


@cache
def days() -> st.SearchStrategy[date]:
    """Dates in a few years' window, biased towards month ends and leap days."""
    return st.one_of(st.sampled_from(EDGE_DAYS), st.dates(FIRST_DAY, LAST_DAY))


# --- when conditions --------------------------------------------------------


@cache
def _leaves() -> st.SearchStrategy[Expr]:
    ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
    strings = st.sampled_from(STRINGS)
    return st.one_of(
        st.builds(lambda op, k: Compare(op, Attr("n"), Lit(k)), ops, INTS),
        st.builds(
            lambda op, v: Compare(op, Attr("s"), Lit(v)), st.sampled_from(["==", "!="]), strings
        ),
        st.builds(
            lambda vs, neg: In(Attr("s"), tuple(Lit(v) for v in vs), neg),
            st.lists(strings, min_size=1, max_size=2, unique=True),
            st.booleans(),
        ),
        st.builds(lambda v: Compare("==", Attr("flag"), Lit(v)), st.booleans()),
        st.builds(
            lambda a, neg: IsNull(Attr(a), neg), st.sampled_from(sorted(ATTRIBUTES)), st.booleans()
        ),
    )


@cache
def conditions() -> st.SearchStrategy[str]:
    """``when`` texts over :data:`ATTRIBUTES`, well typed, nested at most a little."""

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        pair = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(pair.map(And), pair.map(Or), children.map(Not))

    return st.recursive(_leaves(), extend, max_leaves=4).map(to_text)


@cache
def attribute_values() -> st.SearchStrategy[dict[str, object]]:
    """A record's attributes: each of :data:`ATTRIBUTES` present, ``None`` or absent."""
    maybe: dict[str, st.SearchStrategy[Any]] = {
        "n": st.one_of(st.none(), INTS),
        "s": st.one_of(st.none(), st.sampled_from(STRINGS)),
        "flag": st.one_of(st.none(), st.booleans()),
    }
    return st.fixed_dictionaries({}, optional=maybe)


# --- durations ------------------------------------------------------------------


@cache
def expiries() -> st.SearchStrategy[Duration]:
    """Durations in months, in days, or both (never zero)."""
    return st.one_of(
        st.builds(Duration, months=st.integers(1, 30)),
        st.builds(Duration, days=st.integers(1, 400)),
        st.builds(Duration, months=st.integers(1, 18), days=st.integers(1, 40)),
    ).filter(lambda d: d.months or d.days)


@st.composite
def schedules(draw: st.DrawFn, expires: Duration | None) -> list[dict[str, Any]]:
    """0-2 steps, each ending before the next and before ``expires`` from any start date.

    Each step's months and days are both at most the next one's (and not
    equal), so its order does not depend on the start date.
    """
    top = expires or Duration(months=24, days=30)
    count = draw(st.integers(0, 2))
    points = draw(
        st.lists(
            st.tuples(st.integers(0, top.months), st.integers(0, top.days)),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    chain: list[tuple[int, int]] = []
    for m, d in sorted(points):
        if (m, d) in ((0, 0), (top.months, top.days)):
            continue
        if chain and not (chain[-1][0] <= m and chain[-1][1] <= d):
            continue
        chain.append((m, d))
    if expires is None and chain and chain[-1] == (top.months, top.days):
        chain.pop()
    pcts = sorted(draw(st.lists(st.integers(0, 99), min_size=len(chain), max_size=len(chain))))
    return [
        {"after": str(Duration(m, d)), "pct": pct}
        for (m, d), pct in zip(chain, reversed(pcts), strict=True)
    ]


# --- policies -------------------------------------------------------------------


_WHENS = st.lists(conditions(), max_size=2, unique=True)
_MAYBE_WHEN = st.none() | conditions()
_MAYBE_EXPIRY = st.none() | expiries()
_LIST_KINDS = st.sampled_from(["black", "red"])


@dataclass(frozen=True)
class _Type:
    code: str
    domain: str


_TYPE_POOL: tuple[_Type, ...] = (
    _Type("societal.ticket", "societal"),
    _Type("societal.good_deed", "societal"),
    _Type("commercial.arrears", "commercial"),
    _Type("judicial.default", "judicial"),
    _Type("judicial.performed", "judicial"),
    _Type("government.breach", "government"),
)


@st.composite
def policy_dicts(draw: st.DrawFn, mode: str | None = None) -> dict[str, Any]:
    """The plain data of a small valid policy (what a YAML file would hold)."""
    mode = mode or draw(st.sampled_from(["score", "penalty_points"]))
    if mode == "score":
        base = draw(st.integers(40, 160))
        low, high = 0, draw(st.integers(base, 260))
        scale = {"mode": "score", "base": base, "min": low, "max": high}
        points = st.integers(-60, 40).filter(bool)
    else:
        low, high = 0, draw(st.integers(4, 30))
        scale = {"mode": "penalty_points", "base": 0, "min": 0, "max": high}
        points = st.integers(-3, 8).filter(bool)
    cuts = draw(st.lists(st.integers(low + 1, high), max_size=3, unique=True))
    mins = [low, *sorted(cuts)]
    grades = [{"grade": f"g{i}", "min": m} for i, m in enumerate(mins)]
    draw(st.randoms()).shuffle(grades)
    names = [g["grade"] for g in grades]

    types = draw(st.lists(st.sampled_from(_TYPE_POOL), min_size=1, max_size=5, unique=True))
    is_negative = (lambda p: p > 0) if mode == "penalty_points" else (lambda p: p < 0)

    rules: list[dict[str, Any]] = []
    longest: dict[str, Duration] = {}

    def needs(code: str, span: Duration | None) -> None:
        if span is not None:
            longest[code] = max(longest.get(code, span), span)

    for t in types:
        whens = draw(_WHENS)
        catch_all = draw(st.booleans())
        for j, when in enumerate([*whens, *([None] if catch_all else [])]):
            p = draw(points)
            expires = draw(expiries()) if is_negative(p) else draw(_MAYBE_EXPIRY)
            rule: dict[str, Any] = {
                "id": f"{t.code.replace('.', '-').replace('_', '-')}-{j}",
                "type": t.code,
                "points": p,
            }
            if when is not None:
                rule["when"] = when
            if expires is not None:
                rule["expires"] = str(expires)
            steps = draw(schedules(expires))
            if steps:
                rule["schedule"] = steps
            needs(t.code, expires)
            rules.append(rule)
    # Rules of different types interleave; precedence is only within a type.
    order = draw(st.permutations(range(len(rules))))
    rules = _stable_within_type([rules[i] for i in order])

    codes = [t.code for t in types]
    lists: list[dict[str, Any]] = []
    for k in range(draw(st.integers(0, 2))):
        entry = draw(st.sampled_from(codes))
        kind = draw(_LIST_KINDS)
        duration = draw(expiries()) if kind == "black" else draw(_MAYBE_EXPIRY)
        lst: dict[str, Any] = {"code": f"by-record-{k}", "kind": kind, "enter": {"record": entry}}
        when = draw(_MAYBE_WHEN)
        if when is not None:
            lst["enter"]["when"] = when
        if duration is not None:
            lst["duration"] = str(duration)
        lifts = draw(st.lists(st.sampled_from(codes), max_size=2, unique=True))
        lifts = [c for c in lifts if c != entry]
        if lifts:
            lst["lifted_by"] = lifts
        needs(entry, duration)
        lists.append(lst)
    for k in range(draw(st.integers(0, 2))):
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
        kind = draw(_LIST_KINDS)
        lists.append({"code": f"by-grade-{k}", "kind": kind, "enter": {"grade_in": chosen}})

    measures: list[dict[str, Any]] = []
    for k, lst in enumerate(lists):
        kind = "sanction" if lst["kind"] == "black" else "reward"
        measures.append(_measure(f"list.m{k}", kind, {"list": lst["code"]}))
    worst = max(grades, key=lambda g: g["min"] if mode == "penalty_points" else -g["min"])
    best = min(grades, key=lambda g: g["min"] if mode == "penalty_points" else -g["min"])
    measures.append(_measure("grade.sanction", "sanction", {"grade_at_most": worst["grade"]}))
    measures.append(_measure("grade.reward", "reward", {"grade_at_least": best["grade"]}))

    record_types = []
    for t in types:
        retention = longest.get(t.code, Duration(months=12))
        record_types.append(
            {
                "code": t.code,
                "domain": t.domain,
                "category": "generated",
                "applies_to": ["person", "organisation"],
                "retention": str(retention),
                "attributes": {name: {"type": kind} for name, kind in ATTRIBUTES.items()},
            }
        )
    return {
        "policy": "generated",
        "version": "1",
        "max_retention": "10y",
        "scale": scale,
        "grades": grades,
        "record_types": record_types,
        "rules": rules,
        "lists": lists,
        "measures": measures,
        "disputes": {"deadline": "30d", "suspend_while_open": draw(st.booleans())},
    }


def _stable_within_type(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rules`` interleaved as drawn, but each type's rules back in their written order."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for rule in sorted(rules, key=lambda r: r["id"]):
        by_type.setdefault(rule["type"], []).append(rule)
    return [by_type[rule["type"]].pop(0) for rule in rules]


def _measure(code: str, kind: str, trigger: dict[str, Any]) -> dict[str, Any]:
    measure: dict[str, Any] = {
        "code": code,
        "kind": kind,
        "triggered_by": trigger,
        "consulted_by": ["service"],
    }
    if kind == "sanction":
        measure["related_domains"] = list(DOMAINS)
    else:
        measure["consent_required"] = True
    return measure


def policies(mode: str | None = None) -> st.SearchStrategy[Policy]:
    """Small valid policies, in either scale mode unless ``mode`` picks one."""
    return policy_dicts(mode).map(Policy.model_validate)


# --- records --------------------------------------------------------------------


def record_facts(
    policy: Policy, *, min_size: int = 0, max_size: int = 12
) -> st.SearchStrategy[list[RecordFact]]:
    """One subject's records under ``policy``: ids unique, types mostly the policy's own."""
    codes = [t.code for t in policy.record_types]
    one = st.tuples(
        st.one_of(st.sampled_from(codes), st.sampled_from(codes), st.just(UNKNOWN_TYPE)),
        days(),
        attribute_values(),
        st.sampled_from(STATUSES[:2]) | st.sampled_from(STATUSES),
    )
    return st.lists(one, min_size=min_size, max_size=max_size).map(
        lambda rows: [
            RecordFact(id=i + 1, type=t, occurred_at=d, attributes=a, status=s)
            for i, (t, d, a, s) in enumerate(rows)
        ]
    )


@st.composite
def scenarios(
    draw: st.DrawFn, mode: str | None = None, *, max_records: int = 12
) -> tuple[Policy, list[RecordFact], date]:
    """A policy, one subject's records and a scoring date."""
    policy = draw(policies(mode))
    records = draw(record_facts(policy, max_size=max_records))
    near = [r.occurred_at + timedelta(days=k) for r in records for k in (-1, 0, 1)]
    as_of = draw(days() | st.sampled_from(near)) if near else draw(days())
    return policy, records, as_of


__all__ = [
    "ATTRIBUTES",
    "EDGE_DAYS",
    "STATUSES",
    "STRINGS",
    "UNKNOWN_TYPE",
    "attribute_values",
    "conditions",
    "days",
    "expiries",
    "policies",
    "policy_dicts",
    "record_facts",
    "scenarios",
    "schedules",
]
