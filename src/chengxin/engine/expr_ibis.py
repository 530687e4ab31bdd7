"""Compile ``when`` expressions (:mod:`chengxin.domain.expr`) to Ibis boolean expressions.

This is the second visitor over the expression AST; the first is the pure
:func:`chengxin.domain.expr.evaluate`. The two agree row for row, which the
property tests hold on DuckDB:

- SQL's three-valued logic is the language's own (see the domain module's
  docstring), so comparisons, ``IN``, ``IS NULL``, ``NOT``, ``AND`` and ``OR``
  compile one to one; :func:`to_ibis` then fills the top-level NULL with false.
- Types are checked here at compile time from the columns' Ibis types, where
  the Python evaluator checks each value: a test between different kinds (an
  ``int64`` column against a string, a ``string`` column against another
  attribute of type ``date``), an ordering on booleans, or any column of a type
  outside int/string/boolean/date (for instance the ``null`` type of a column
  built from no values) compiles to a typed NULL, the SQL "unknown", instead of
  letting the backend cast or fail.

What this target cannot do: nothing. :data:`UNSUPPORTED` lists the node types
it refuses (none today); an unknown node raises :class:`IbisUnsupportedError`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from chengxin.domain.expr import (
    ORDERING_OPS,
    And,
    Attr,
    Compare,
    Expr,
    In,
    IsNull,
    Kind,
    Lit,
    Not,
    Or,
)

__all__ = ["UNSUPPORTED", "IbisUnsupportedError", "to_ibis", "to_ibis_3vl"]

ColumnFor = Callable[[str], ir.Value]
"""Returns the Ibis value (column or scalar, possibly all NULL) of an attribute."""

UNSUPPORTED: Final[frozenset[type]] = frozenset()
"""Expression node types the Ibis target cannot compile (none)."""


class IbisUnsupportedError(NotImplementedError):
    """An expression node the Ibis target cannot compile."""

    def __init__(self, node: object) -> None:
        super().__init__(f"the Ibis target cannot compile {type(node).__name__} nodes: {node!r}")
        self.node = node


_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_LITERAL_TYPES: Final[dict[Kind, str]] = {
    "int": "int64",
    "str": "string",
    "bool": "boolean",
    "date": "date",
}


def _kind(dtype: dt.DataType) -> Kind | None:
    if dtype.is_boolean():
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_string():
        return "str"
    if dtype.is_date():
        return "date"
    return None


def _unknown() -> ir.BooleanValue:
    return ibis.null(dt.boolean)


def _literal(lit: Lit) -> ir.Scalar:
    return ibis.literal(lit.value, type=_LITERAL_TYPES[lit.kind])


def to_ibis_3vl(expr: Expr, column: ColumnFor) -> ir.BooleanValue:
    """Compile to an Ibis boolean that is NULL where :func:`evaluate` gives None."""
    match expr:
        case Compare(op, left, right):
            lhs = column(left.name)
            kind = _kind(lhs.type())
            if isinstance(right, Attr):
                rhs = column(right.name)
                right_kind = _kind(rhs.type())
            else:
                rhs, right_kind = _literal(right), right.kind
            if kind is None or kind != right_kind or (kind == "bool" and op in ORDERING_OPS):
                return _unknown()
            return _OPS[op](lhs, rhs)
        case In(attr, values, negated):
            value = column(attr.name)
            if _kind(value.type()) != expr.kind:
                return _unknown()
            listed = [_literal(v) for v in values]
            return value.notin(listed) if negated else value.isin(listed)
        case IsNull(attr, negated):
            value = column(attr.name)
            return value.notnull() if negated else value.isnull()
        case And(items):
            return ibis.and_(*(to_ibis_3vl(i, column) for i in items))
        case Or(items):
            return ibis.or_(*(to_ibis_3vl(i, column) for i in items))
        case Not(item):
            return ~to_ibis_3vl(item, column)
    raise IbisUnsupportedError(expr)


def to_ibis(expr: Expr, column: ColumnFor) -> ir.BooleanValue:
    """Compile to an Ibis boolean that is true exactly where :func:`matches` is."""
    return to_ibis_3vl(expr, column).fill_null(False)
