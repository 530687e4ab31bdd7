"""Hypothesis strategies for ``when`` expressions and attribute rows over a small fixed schema."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import strategies as st

from chengxin.domain.expr import (
    INT64_MAX,
    INT64_MIN,
    And,
    Attr,
    Compare,
    CompareOp,
    Expr,
    In,
    IsNull,
    Kind,
    Lit,
    LitValue,
    Not,
    Or,
)

SCHEMA: dict[str, Kind] = {
    "amount_cny": "int",
    "days_overdue": "int",
    "severity": "str",
    "repeat": "bool",
    "decided_on": "date",
}
"""The attributes generated expressions and rows use, with their kinds."""

OPS: tuple[CompareOp, ...] = ("==", "!=", "<", "<=", ">", ">=")
EQUALITY_OPS: tuple[CompareOp, ...] = ("==", "!=")
KINDS: tuple[Kind, ...] = ("int", "str", "bool", "date")

# Small pools make equal and neighbouring values likely; the wide ones reach the edges.
_STRINGS = ["minor", "general", "serious", "", "a", "b", "ab", "严重", "it's", "back\\slash"]
_DATES = [date(2023, 12, 31), date(2024, 1, 1), date(2024, 1, 2)]


def values(kind: Kind) -> st.SearchStrategy[Any]:
    """Values of one kind, biased towards a few that collide."""
    match kind:
        case "int":
            return st.one_of(st.integers(-3, 3), st.integers(INT64_MIN, INT64_MAX))
        case "str":
            text = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=4)
            return st.one_of(st.sampled_from(_STRINGS), text)
        case "bool":
            return st.booleans()
        case "date":
            return st.one_of(st.sampled_from(_DATES), st.dates())


def literals(kind: Kind | None = None) -> st.SearchStrategy[Lit]:
    """Literals of the given kind, or of any kind."""
    if kind is None:
        return st.sampled_from(KINDS).flatmap(literals)
    return values(kind).map(Lit)


def _names(kind: Kind | None) -> list[str]:
    return sorted(name for name, k in SCHEMA.items() if kind is None or k == kind)


@st.composite
def comparisons(draw: st.DrawFn, *, well_typed: bool = False) -> Compare:
    """``attr op literal`` or ``attr op attr``; with ``well_typed``, only of matching kinds."""
    name = draw(st.sampled_from(_names(None)))
    kind = SCHEMA[name]
    ops = EQUALITY_OPS if well_typed and kind == "bool" else OPS
    op = draw(st.sampled_from(ops))
    right_kind = kind if well_typed else None
    right = draw(
        st.one_of(
            literals(right_kind),
            st.sampled_from(_names(right_kind)).map(Attr),
        )
    )
    return Compare(op, Attr(name), right)


@st.composite
def in_tests(draw: st.DrawFn, *, well_typed: bool = False) -> In:
    """``attr in [...]`` or ``attr not in [...]``."""
    name = draw(st.sampled_from(_names(None)))
    kind = SCHEMA[name] if well_typed else draw(st.sampled_from(KINDS))
    listed = draw(st.lists(literals(kind), min_size=1, max_size=3))
    return In(Attr(name), tuple(listed), draw(st.booleans()))


def null_tests() -> st.SearchStrategy[IsNull]:
    """``attr is null`` or ``attr is not null``."""
    return st.builds(IsNull, st.sampled_from(_names(None)).map(Attr), st.booleans())


def exprs(*, well_typed: bool = False, max_leaves: int = 8) -> st.SearchStrategy[Expr]:
    """Expression ASTs over :data:`SCHEMA`; ``well_typed`` ones pass ``check_types``."""
    leaves: st.SearchStrategy[Expr] = st.one_of(
        comparisons(well_typed=well_typed),
        in_tests(well_typed=well_typed),
        null_tests(),
    )

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        several = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(
            several.map(And),
            several.map(Or),
            children.map(Not),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def rows(*, missing_as_none: bool | None = None) -> st.SearchStrategy[dict[str, LitValue | None]]:
    """Attribute rows over :data:`SCHEMA`, any attribute possibly missing.

    A missing attribute is an absent key or a ``None`` value (either, unless
    ``missing_as_none`` picks one).
    """
    absent: st.SearchStrategy[Any] = st.just(None)
    optional = {name: st.one_of(absent, values(kind)) for name, kind in SCHEMA.items()}

    def drop(row: dict[str, Any], as_none: bool) -> dict[str, Any]:
        return row if as_none else {k: v for k, v in row.items() if v is not None}

    choice = st.booleans() if missing_as_none is None else st.just(missing_as_none)
    return st.tuples(st.fixed_dictionaries(optional), choice).map(lambda pair: drop(*pair))


__all__ = [
    "KINDS",
    "OPS",
    "SCHEMA",
    "comparisons",
    "exprs",
    "in_tests",
    "literals",
    "null_tests",
    "rows",
    "values",
]
