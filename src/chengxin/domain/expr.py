"""The ``when`` expression language of policy rules: parsed, typed, never ``eval``ed.

A rule's ``when`` is a condition over a record's attributes::

    amount_cny >= 100000
    severity in ['minor', 'general'] and not repeat
    days_overdue > 90 or amount_cny >= 5000
    paid < owed and decided_on >= date('2024-01-01')
    court_ref is not null

Grammar, loosest binding first: ``or``, ``and``, ``not``, then one of a
comparison (``== != < <= > >=``), ``attr in [lit, ...]``, ``attr not in [...]``,
``attr is null``, ``attr is not null``, a bare attribute (``repeat`` means
``repeat == true``) or a parenthesised condition. Literals are integers
(64-bit signed), strings in single or double quotes (escapes ``\\\\``, ``\\'``,
``\\"`` only; no control characters), ``true``, ``false`` and
``date('YYYY-MM-DD')``. There are no floats (scores are integer arithmetic:
use the smallest unit, fen not yuan), no arithmetic and no function but
``date()``. Names are ``[a-z_][a-z0-9_]*`` and the keywords (``and or not in
is null true false date``) are reserved.

Null semantics (one definition, every engine). An attribute is *missing* when
it is absent or ``None``. Evaluation is SQL's three-valued logic:

- a comparison or ``in`` test with a missing operand is *unknown* (``None``);
  so is one whose operands have different types (int, str, bool and date are
  only compared with their own kind; ``bool`` is only compared with ``==`` and
  ``!=``; any other Python type is never comparable), so evaluation never
  raises;
- ``is null`` / ``is not null`` are never unknown;
- ``not`` unknown is unknown; ``and`` is false if any item is false, else
  unknown if any is unknown; ``or`` is true if any item is true, else unknown
  if any is unknown (Kleene logic, as in SQL);
- a rule *matches* only when the whole condition is true: unknown collapses to
  false at the top level only. ``not (x > 5)`` with ``x`` missing does not
  match, exactly as ``WHERE NOT (x > 5)`` selects no row where ``x`` is NULL.

:func:`evaluate` gives the three-valued result and :func:`matches` the
collapsed one; ``chengxin.engine.expr_ibis`` compiles the same AST to Ibis
with the same results on DuckDB and Spark.
"""

from __future__ import annotations

import difflib
import operator
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Literal, TypeAlias, get_args

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

__all__ = [
    "COMPARE_OPS",
    "INT64_MAX",
    "INT64_MIN",
    "KEYWORDS",
    "KINDS",
    "ORDERING_OPS",
    "And",
    "Attr",
    "Compare",
    "CompareOp",
    "Expr",
    "ExprError",
    "In",
    "IsNull",
    "Kind",
    "Lit",
    "LitValue",
    "Not",
    "Or",
    "attributes",
    "check_types",
    "evaluate",
    "kind_of",
    "matches",
    "parse",
    "to_text",
]

CompareOp: TypeAlias = Literal["==", "!=", "<", "<=", ">", ">="]
Kind: TypeAlias = Literal["int", "str", "bool", "date"]
LitValue: TypeAlias = int | str | bool | date

COMPARE_OPS: Final[frozenset[str]] = frozenset(get_args(CompareOp))
ORDERING_OPS: Final[frozenset[str]] = frozenset({"<", "<=", ">", ">="})
KINDS: Final[frozenset[str]] = frozenset(get_args(Kind))
KEYWORDS: Final[frozenset[str]] = frozenset(
    {"and", "or", "not", "in", "is", "null", "true", "false", "date"}
)
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_NAME_RE: Final = re.compile(r"[a-z_][a-z0-9_]*")
_ISO_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_FLIPPED: Final[dict[CompareOp, CompareOp]] = {
    "==": "==",
    "!=": "!=",
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
}


def kind_of(value: object) -> Kind | None:
    """The expression-language kind of a Python value, or None if it has none."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "str"
    if isinstance(value, date) and not isinstance(value, datetime):
        return "date"
    return None


def _is_unprintable(ch: str) -> bool:
    """Whether a literal may not hold ``ch``: a control character or a lone surrogate.

    A control character in a policy is a mistake, a surrogate cannot be
    encoded, and DuckDB cannot even parse a string literal holding NUL.
    """
    return unicodedata.category(ch) in ("Cc", "Cs")


def _unprintable_message(ch: str) -> str:
    kind = "a lone surrogate" if unicodedata.category(ch) == "Cs" else "a control character"
    return f"a string literal may not hold U+{ord(ch):04X}, {kind}"


# --- AST -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attr:
    """A reference to a record attribute by name."""

    name: str

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name) or self.name in KEYWORDS:
            raise ValueError(f"invalid attribute name {self.name!r}")


@dataclass(frozen=True, slots=True, eq=False)
class Lit:
    """A literal: a 64-bit integer, a string, a boolean or a date."""

    value: LitValue

    def __post_init__(self) -> None:
        kind = kind_of(self.value)
        if kind is None:
            raise TypeError(f"unsupported literal {self.value!r}: use int, str, bool or date")
        if kind == "int" and not INT64_MIN <= self.value <= INT64_MAX:  # type: ignore[operator]
            raise ValueError(f"integer literal {self.value} is outside the 64-bit range")
        if kind == "str":
            for ch in self.value:  # type: ignore[union-attr]
                if _is_unprintable(ch):
                    raise ValueError(_unprintable_message(ch))

    @property
    def kind(self) -> Kind:
        """The literal's kind."""
        kind = kind_of(self.value)
        assert kind is not None  # checked in __post_init__
        return kind

    # ``1 == True`` in Python; literals of different kinds must never be equal.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lit):
            return NotImplemented
        return self.kind == other.kind and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.kind, self.value))


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right``: an attribute compared with a literal or another attribute."""

    op: CompareOp
    left: Attr
    right: Attr | Lit

    def __post_init__(self) -> None:
        if self.op not in COMPARE_OPS:
            raise ValueError(f"unknown comparison operator {self.op!r}")
        if not isinstance(self.left, Attr) or not isinstance(self.right, Attr | Lit):
            raise TypeError("a comparison needs an attribute on the left")


@dataclass(frozen=True, slots=True)
class In:
    """``attr in [lit, ...]`` (or ``not in`` when negated) over a non-empty one-kind list."""

    attr: Attr
    values: tuple[Lit, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("an 'in' list needs at least one value")
        if len({v.kind for v in self.values}) != 1:
            raise ValueError("the values of an 'in' list must all be of one type")

    @property
    def kind(self) -> Kind:
        """The kind of the list's values."""
        return self.values[0].kind


@dataclass(frozen=True, slots=True)
class IsNull:
    """``attr is null`` (or ``is not null`` when negated): whether the attribute is missing."""

    attr: Attr
    negated: bool = False


@dataclass(frozen=True, slots=True)
class And:
    """True when every item is true (Kleene conjunction of two or more items)."""

    items: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.items) < 2:
            raise ValueError("'and' needs at least two items")


@dataclass(frozen=True, slots=True)
class Or:
    """True when any item is true (Kleene disjunction of two or more items)."""

    items: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.items) < 2:
            raise ValueError("'or' needs at least two items")


@dataclass(frozen=True, slots=True)
class Not:
    """The negation of a condition (unknown stays unknown)."""

    item: Expr


Expr: TypeAlias = Compare | In | IsNull | And | Or | Not


# --- parsing ---------------------------------------------------------------


class ExprError(ValueError):
    """A ``when`` expression that does not parse, with where and why."""

    def __init__(self, message: str, *, text: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        self.line = line
        self.column = column


_GRAMMAR: Final = r"""
?start: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: not_expr (AND not_expr)*
?not_expr: NOT not_expr -> not_
         | atom
?atom: "(" or_expr ")"
     | operand COMP_OP operand -> compare
     | NAME IN list -> in_
     | NAME NOT IN list -> not_in
     | NAME IS NULL -> is_null
     | NAME IS NOT NULL -> is_not_null
     | NAME -> bare
?operand: NAME | literal
list: "[" literal ("," literal)* "]"
?literal: INT | STRING | TRUE | FALSE | FLOAT | call
call: (NAME | DATE) "(" [operand ("," operand)*] ")"

OR: "or"
AND: "and"
NOT: "not"
IN: "in"
IS: "is"
NULL: "null"
TRUE: "true"
FALSE: "false"
DATE: "date"
COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
NAME: /[a-z_][a-z0-9_]*/
FLOAT.2: /-?([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?/ | /-?[0-9]+[eE][+-]?[0-9]+/
INT: /-?[0-9]+/
STRING: /'([^'\\\n]|\\.)*'/ | /"([^"\\\n]|\\.)*"/
%import common.WS
%ignore WS
"""

# Built once at import: the parser is immutable and safe to share.
_PARSER: Final = Lark(_GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True)

_DESCRIPTIONS: Final[dict[str, str]] = {
    "NAME": "an attribute name",
    "INT": "a literal",
    "STRING": "a literal",
    "TRUE": "a literal",
    "FALSE": "a literal",
    "DATE": "a literal",
    "FLOAT": "a literal",
    "COMP_OP": "a comparison operator (==, !=, <, <=, >, >=)",
    "IN": "'in'",
    "NOT": "'not'",
    "IS": "'is'",
    "NULL": "'null'",
    "LPAR": "'('",
    "LSQB": "'['",
    "COMMA": "','",
    "RSQB": "']'",
    "AND": "'and'",
    "OR": "'or'",
    "RPAR": "')'",
    "$END": "the end of input",
}
_TOKEN_HINTS: Final[dict[str, str]] = {
    "NULL": "test for a missing attribute with 'is null' or 'is not null'",
}
_CHAR_HINTS: Final[dict[str, str]] = {
    "=": "use '==' to test equality",
    "'": "unterminated string",
    '"': "unterminated string",
    "!": "use '!=' or 'not'",
}


def _fail(message: str, text: str, line: int | None, column: int | None) -> ExprError:
    return ExprError(message, text=text, line=line or 1, column=column or 1)


def _at(message: str, text: str, line: int, column: int) -> ExprError:
    where = f"line {line}, column {column}" if "\n" in text else f"column {column}"
    return _fail(f"{message} at {where}", text, line, column)


def _expected(names: set[str]) -> str:
    after_operand = "COMP_OP" in names
    phrases: list[str] = []
    for name in _DESCRIPTIONS:
        if name not in names or (after_operand and name == "LPAR"):
            continue
        phrase = "'not in'" if after_operand and name == "NOT" else _DESCRIPTIONS[name]
        if phrase not in phrases:
            phrases.append(phrase)
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _translate(err: UnexpectedInput, text: str) -> ExprError:
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream or 0
        char = text[pos] if pos < len(text) else ""
        hint = _CHAR_HINTS.get(char)
        if hint is None and char and char in "+-*/%":
            hint = "arithmetic is not allowed"
        if hint is None and char.isupper():
            hint = "names and keywords are lower case"
        message = f"unexpected character {char!r}"
        error = _at(message, text, err.line, err.column)
        if hint:
            error = _fail(f"{error.message}; {hint}", text, err.line, err.column)
        return error
    if isinstance(err, UnexpectedToken):
        token = err.token
        if token.type == "$END":
            line = text.count("\n") + 1
            column = len(text) - (text.rfind("\n") + 1) + 1
            message = "unexpected end of input"
        else:
            line, column = token.line or 1, token.column or 1
            message = f"unexpected token {str(token)!r}"
        error = _at(message, text, line, column)
        expected = _expected(set(err.expected))
        if expected:
            error = _fail(f"{error.message}; expected {expected}", text, line, column)
        if token.type in _TOKEN_HINTS:
            error = _fail(f"{error.message} ({_TOKEN_HINTS[token.type]})", text, line, column)
        return error
    return _fail(f"cannot parse: {err}", text, None, None)  # pragma: no cover - Earley only


def parse(text: str) -> Expr:
    """Parse a ``when`` expression, raising :class:`ExprError` with the column if it is bad."""
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as err:
        raise _translate(err, text) from None
    return _Builder(text).expr(tree)


class _Builder:
    """Turns lark's parse tree into AST nodes, refusing what the grammar lets through."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, message: str, node: Tree[Token] | Token) -> ExprError:
        if isinstance(node, Token):
            return _at(message, self.text, node.line or 1, node.column or 1)
        return _at(message, self.text, node.meta.line, node.meta.column)

    def expr(self, node: Tree[Token] | Token) -> Expr:
        if isinstance(node, Token):  # a lone NAME is inlined into a 'bare' tree
            raise self.error(f"unexpected token {str(node)!r}", node)
        kids = node.children
        match node.data:
            case "or_expr":
                return Or(tuple(self.expr(k) for k in kids if not _is_token(k, "OR")))
            case "and_expr":
                return And(tuple(self.expr(k) for k in kids if not _is_token(k, "AND")))
            case "not_":
                return Not(self.expr(kids[1]))
            case "compare":
                return self.compare(node)
            case "in_" | "not_in":
                return In(self.attr(kids[0]), self.values(kids[-1]), node.data == "not_in")
            case "is_null" | "is_not_null":
                return IsNull(self.attr(kids[0]), node.data == "is_not_null")
            case "bare":
                return Compare("==", self.attr(kids[0]), Lit(True))
        raise self.error(f"unexpected {node.data}", node)  # pragma: no cover - grammar-bound

    def attr(self, node: Tree[Token] | Token) -> Attr:
        assert isinstance(node, Token)
        return Attr(str(node))

    def compare(self, node: Tree[Token]) -> Compare:
        left_node, op_token, right_node = node.children
        op: CompareOp = str(op_token)  # type: ignore[assignment]  # COMP_OP is exact
        left, right = self.operand(left_node), self.operand(right_node)
        if isinstance(left, Lit):
            if isinstance(right, Lit):
                raise self.error("a comparison needs an attribute on one side", node)
            return Compare(_FLIPPED[op], right, left)
        return Compare(op, left, right)

    def operand(self, node: Tree[Token] | Token) -> Attr | Lit:
        if isinstance(node, Token) and node.type == "NAME":
            return Attr(str(node))
        return self.literal(node)

    def values(self, node: Tree[Token] | Token) -> tuple[Lit, ...]:
        assert isinstance(node, Tree)
        values = tuple(self.literal(k) for k in node.children)
        kinds = {v.kind for v in values}
        if len(kinds) > 1:
            listed = " and ".join(sorted(kinds))
            message = f"the values of an 'in' list must all be of one type, not {listed}"
            raise self.error(message, node)
        return values

    def literal(self, node: Tree[Token] | Token) -> Lit:
        if isinstance(node, Tree):
            return self.call(node)
        match node.type:
            case "INT":
                value = int(str(node))
                if not INT64_MIN <= value <= INT64_MAX:
                    raise self.error(f"integer {node} is outside the 64-bit range", node)
                return Lit(value)
            case "STRING":
                return Lit(self.unquote(node))
            case "TRUE" | "FALSE":
                return Lit(node.type == "TRUE")
            case "FLOAT":
                raise self.error(
                    f"float {node} is not allowed: use an integer in the smallest unit"
                    " (fen, not yuan)",
                    node,
                )
        raise self.error(f"expected a literal, not {str(node)!r}", node)

    def call(self, node: Tree[Token]) -> Lit:
        name, *args = node.children
        if not isinstance(name, Token) or name.type != "DATE":
            raise self.error(
                f"function {name!s}() is not allowed; the only function is date('YYYY-MM-DD')",
                node,
            )
        arg = args[0] if len(args) == 1 else None
        if not isinstance(arg, Token) or arg.type != "STRING":
            raise self.error("date() takes one string, date('YYYY-MM-DD')", node)
        iso = self.unquote(arg)
        if not _ISO_DATE_RE.fullmatch(iso):
            raise self.error(f"invalid date {iso!r}: write date('YYYY-MM-DD')", arg)
        try:
            return Lit(date.fromisoformat(iso))
        except ValueError as err:
            raise self.error(f"invalid date {iso!r}: {err}", arg) from None

    def unquote(self, token: Token) -> str:
        body = str(token)[1:-1]
        out: list[str] = []
        chars = iter(enumerate(body))
        for i, ch in chars:
            if _is_unprintable(ch):
                column = (token.column or 1) + 1 + i
                raise _at(_unprintable_message(ch), self.text, token.line or 1, column)
            if ch != "\\":
                out.append(ch)
                continue
            _, escaped = next(chars)  # the lexer guarantees a character follows
            if escaped not in "\\'\"":
                column = (token.column or 1) + 1 + i
                raise _at(
                    f"unknown escape '\\{escaped}' (only \\\\, \\' and \\\" are allowed)",
                    self.text,
                    token.line or 1,
                    column,
                )
            out.append(escaped)
        return "".join(out)


def _is_token(node: Tree[Token] | Token, kind: str) -> bool:
    return isinstance(node, Token) and node.type == kind


# --- visitors --------------------------------------------------------------


def _walk(expr: Expr) -> Iterator[Expr]:
    yield expr
    match expr:
        case And(items) | Or(items):
            for item in items:
                yield from _walk(item)
        case Not(item):
            yield from _walk(item)


def attributes(expr: Expr) -> frozenset[str]:
    """The names of the attributes an expression refers to."""
    names: set[str] = set()
    for node in _walk(expr):
        match node:
            case Compare(_, left, right):
                names.add(left.name)
                if isinstance(right, Attr):
                    names.add(right.name)
            case In(attr) | IsNull(attr):
                names.add(attr.name)
    return frozenset(names)


def _lit_text(lit: Lit) -> str:
    value = lit.value
    match lit.kind:
        case "bool":
            return "true" if value else "false"
        case "str":
            assert isinstance(value, str)
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        case "date":
            assert isinstance(value, date)
            return f"date('{value.isoformat()}')"
    return str(value)


def to_text(expr: Expr) -> str:
    """The canonical text of an expression; ``parse(to_text(e)) == e``.

    Nested ``and``/``or`` are always parenthesised, and so is what ``not``
    negates unless it is a bare attribute or another ``not``.
    """
    match expr:
        case Compare(op, left, right) if _is_bare(expr):
            return left.name
        case Compare(op, left, right):
            right_text = right.name if isinstance(right, Attr) else _lit_text(right)
            return f"{left.name} {op} {right_text}"
        case In(attr, values, negated):
            listed = ", ".join(_lit_text(v) for v in values)
            return f"{attr.name} {'not in' if negated else 'in'} [{listed}]"
        case IsNull(attr, negated):
            return f"{attr.name} is {'not null' if negated else 'null'}"
        case And(items):
            return " and ".join(_wrap(i) for i in items)
        case Or(items):
            return " or ".join(_wrap(i) for i in items)
        case Not(item) if isinstance(item, Not) or _is_bare(item):
            return f"not {to_text(item)}"
        case Not(item):
            return f"not ({to_text(item)})"
    raise TypeError(f"not an expression node: {expr!r}")


def _is_bare(expr: Expr) -> bool:
    """Whether ``expr`` is ``attr == true``, written as the bare attribute."""
    return (
        isinstance(expr, Compare)
        and expr.op == "=="
        and isinstance(expr.right, Lit)
        and expr.right.kind == "bool"
        and expr.right.value is True
    )


def _wrap(item: Expr) -> str:
    text = to_text(item)
    return f"({text})" if isinstance(item, And | Or) else text


_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def evaluate(expr: Expr, attrs: Mapping[str, object]) -> bool | None:
    """Evaluate in three-valued logic: True, False, or None for unknown."""
    match expr:
        case Compare(op, left, right):
            lhs = attrs.get(left.name)
            rhs = attrs.get(right.name) if isinstance(right, Attr) else right.value
            kind = kind_of(lhs)
            if lhs is None or rhs is None or kind is None or kind != kind_of(rhs):
                return None
            if kind == "bool" and op in ORDERING_OPS:
                return None
            return bool(_OPS[op](lhs, rhs))
        case In(attr, values, negated):
            value = attrs.get(attr.name)
            if value is None or kind_of(value) != expr.kind:
                return None
            found = any(value == v.value for v in values)
            return found != negated
        case IsNull(attr, negated):
            return (attrs.get(attr.name) is None) != negated
        case And(items):
            results = [evaluate(i, attrs) for i in items]
            if False in results:
                return False
            return None if None in results else True
        case Or(items):
            results = [evaluate(i, attrs) for i in items]
            if True in results:
                return True
            return None if None in results else False
        case Not(item):
            result = evaluate(item, attrs)
            return None if result is None else not result
    raise TypeError(f"not an expression node: {expr!r}")


def matches(expr: Expr, attrs: Mapping[str, object]) -> bool:
    """Whether the condition holds: unknown counts as not matching."""
    return evaluate(expr, attrs) is True


def check_types(expr: Expr, schema: Mapping[str, str]) -> list[str]:
    """Human-readable errors for unknown attributes and ill-typed tests under ``schema``.

    ``schema`` maps attribute names to ``int``, ``str``, ``bool`` or ``date``.
    """
    errors: list[str] = []

    def kind(attr: Attr) -> str | None:
        declared = schema.get(attr.name)
        if declared is None:
            close = difflib.get_close_matches(attr.name, list(schema), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            errors.append(f"unknown attribute '{attr.name}'{hint}")
        elif declared not in KINDS:
            allowed = ", ".join(sorted(KINDS))
            errors.append(
                f"attribute '{attr.name}' has type '{declared}' in the schema;"
                f" expected one of {allowed}"
            )
            return None
        return declared

    for node in _walk(expr):
        match node:
            case Compare(op, left, right):
                left_kind = kind(left)
                if isinstance(right, Attr):
                    right_kind, right_desc = kind(right), f"'{right.name}'"
                else:
                    right_kind, right_desc = right.kind, _lit_text(right)
                if left_kind is None or right_kind is None:
                    continue
                where = f"in '{to_text(node)}'"
                if left_kind != right_kind:
                    errors.append(
                        f"{where}: '{left.name}' is {left_kind} but {right_desc} is {right_kind}"
                    )
                elif left_kind == "bool" and op in ORDERING_OPS:
                    errors.append(f"{where}: bool values are not ordered; use == or !=")
            case In(attr):
                attr_kind = kind(attr)
                if attr_kind is not None and attr_kind != node.kind:
                    errors.append(
                        f"in '{to_text(node)}': '{attr.name}' is {attr_kind}"
                        f" but the list holds {node.kind} values"
                    )
            case IsNull(attr):
                kind(attr)
    return list(dict.fromkeys(errors))
