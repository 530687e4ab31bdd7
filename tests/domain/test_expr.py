"""The ``when`` expression language: parsing, errors, rendering, three-valued evaluation, types."""

from __future__ import annotations

import ast
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from expr_strategies import SCHEMA, exprs, rows
from hypothesis import given
from hypothesis import strategies as st

from chengxin.domain import expr as expr_module
from chengxin.domain.expr import (
    And,
    Attr,
    Compare,
    ExprError,
    In,
    IsNull,
    Lit,
    Not,
    Or,
    attributes,
    check_types,
    evaluate,
    matches,
    parse,
    to_text,
)

X, Y, Z = Attr("x"), Attr("y"), Attr("z")


def flag(name: str) -> Compare:
    """The bare-attribute test ``name`` (``name == true``)."""
    return Compare("==", Attr(name), Lit(True))


# --- parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amount_cny >= 100000", Compare(">=", Attr("amount_cny"), Lit(100000))),
        (
            "severity in ['minor', 'general'] and not repeat",
            And(
                (
                    In(Attr("severity"), (Lit("minor"), Lit("general"))),
                    Not(flag("repeat")),
                )
            ),
        ),
        (
            "days_overdue > 90 or amount_cny >= 5000",
            Or(
                (
                    Compare(">", Attr("days_overdue"), Lit(90)),
                    Compare(">=", Attr("amount_cny"), Lit(5000)),
                )
            ),
        ),
        ("5 < x", Compare(">", X, Lit(5))),
        ("5 <= x", Compare(">=", X, Lit(5))),
        ("5 == x", Compare("==", X, Lit(5))),
        ("-5 != x", Compare("!=", X, Lit(-5))),
        ("paid < owed", Compare("<", Attr("paid"), Attr("owed"))),
        ('x == "double"', Compare("==", X, Lit("double"))),
        (r"x == 'it\'s \\ \"q\"'", Compare("==", X, Lit('it\'s \\ "q"'))),
        ("x == true", Compare("==", X, Lit(True))),
        ("x != false", Compare("!=", X, Lit(False))),
        ("x", flag("x")),
        ("d >= date('2024-01-01')", Compare(">=", Attr("d"), Lit(date(2024, 1, 1)))),
        ("x not in [1, 2]", In(X, (Lit(1), Lit(2)), negated=True)),
        ("x is null", IsNull(X)),
        ("x is not null", IsNull(X, negated=True)),
        ("not not x", Not(Not(flag("x")))),
        ("not x == 1", Not(Compare("==", X, Lit(1)))),
        ("x or y and z", Or((flag("x"), And((flag("y"), flag("z")))))),
        ("(x or y) and z", And((Or((flag("x"), flag("y"))), flag("z")))),
        ("x or y or z", Or((flag("x"), flag("y"), flag("z")))),
        ("(x or y) or z", Or((Or((flag("x"), flag("y"))), flag("z")))),
        ("((x))", flag("x")),
        (
            "android == 1 and order_no == 2",
            And((Compare("==", Attr("android"), Lit(1)), Compare("==", Attr("order_no"), Lit(2)))),
        ),
        ("x\n  and\ty", And((flag("x"), flag("y")))),
    ],
)
def test_parse(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("5<x", "x > 5"),
        ("x==true", "x"),
        ("not(x)", "not x"),
        ("not (x > 5)", "not (x > 5)"),
        ("not x > 5", "not (x > 5)"),
        ("x in [\"a\",'b']", "x in ['a', 'b']"),
        ("x or y and z", "x or (y and z)"),  # nested and/or are always parenthesised
        ("(x or y) and not (y or z)", "(x or y) and not (y or z)"),
        ("x == 007", "x == 7"),
        ("d<date('2024-02-29')", "d < date('2024-02-29')"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    assert to_text(parse(text)) == canonical


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("amount_cny >= )", 15, "unexpected token ')' at column 15; expected an attribute name"),
        ("", 1, "unexpected end of input at column 1; expected an attribute name"),
        ("x == 1 and", 11, "unexpected end of input at column 11"),
        ("(x > 1", 7, "expected ')'"),
        ("x 5", 3, "unexpected token '5' at column 3; expected a comparison operator"),
        ("true", 5, "expected a comparison operator"),
        ("x = 1", 3, "unexpected character '=' at column 3; use '==' to test equality"),
        ("x + 1 > 2", 3, "arithmetic is not allowed"),
        ("amount_cny > 2 * y", 16, "arithmetic is not allowed"),
        ("X > 1", 1, "names and keywords are lower case"),
        ("x > 1 AND y", 7, "lower case"),
        ("x == 'abc", 6, "unterminated string"),
        ("x == null", 6, "'is null'"),
        ("and == 1", 1, "unexpected token 'and' at column 1"),
        ("upper(x) == 'A'", 1, "function upper() is not allowed; the only function is date"),
        ("x == date(2024)", 6, "date() takes one string"),
        ("x == date()", 6, "date() takes one string"),
        ("x == date('2024-02-30')", 11, "invalid date '2024-02-30': day is out of range"),
        ("x == date('20240101')", 11, "invalid date '20240101': write date('YYYY-MM-DD')"),
        ("1 < 2", 1, "a comparison needs an attribute on one side"),
        ("x in [1, 'a']", 6, "must all be of one type, not int and str"),
        ("x in []", 7, "unexpected token ']'"),
        ("x == 9223372036854775808", 6, "outside the 64-bit range"),
        (r"x == 'a\nb'", 8, r"unknown escape '\n'"),
        ("x == 1\nand y ==", 9, "at line 2, column 9"),
        ("x == 'a\x00b'", 8, "may not hold U+0000, a control character"),
        ("x == 'tab\there'", 10, "U+0009"),
        ("x == 'new\nline'", 6, "unterminated string"),
    ],
)
def test_parse_errors_name_the_column(text: str, column: int, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert message in str(err)
    assert err.column == column
    assert err.text == text


@pytest.mark.parametrize(
    "text",
    [
        "amount_cny >= 1.5",
        "x < 100.",
        "x > .5",
        "x == -0.01",
        "x > 1e5",
        "x in [1, 2.5]",
        "2.0 < x",
    ],
)
def test_floats_are_refused(text: str) -> None:
    with pytest.raises(ExprError, match=r"float .* is not allowed: use an integer in the smallest"):
        parse(text)


def test_bounds_of_integer_literals() -> None:
    assert parse("x >= -9223372036854775808") == Compare(">=", X, Lit(-(2**63)))
    assert parse("x <= 9223372036854775807") == Compare("<=", X, Lit(2**63 - 1))
    with pytest.raises(ExprError, match="64-bit"):
        parse("x >= -9223372036854775809")


@given(exprs())
def test_round_trip_through_text(expr: object) -> None:
    assert isinstance(expr, And | Or | Not | Compare | In | IsNull)
    text = to_text(expr)
    assert parse(text) == expr
    assert to_text(parse(text)) == text


# --- nodes -------------------------------------------------------------------


def test_literals_of_different_kinds_are_never_equal() -> None:
    assert Lit(1) != Lit(True)
    assert Lit(0) != Lit(False)
    assert len({Lit(1), Lit(True)}) == 2
    assert parse("x == 1") != parse("x == true")


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Attr("Amount"), ValueError),
        (lambda: Attr("and"), ValueError),
        (lambda: Attr("1x"), ValueError),
        (lambda: Lit(1.5), TypeError),
        (lambda: Lit(datetime(2024, 1, 1)), TypeError),
        (lambda: Lit(2**63), ValueError),
        (lambda: Lit("nul\x00"), ValueError),
        (lambda: Lit("\ud800"), ValueError),
        (lambda: Compare("=", X, Lit(1)), ValueError),  # type: ignore[arg-type]
        (lambda: Compare("==", Lit(1), X), TypeError),  # type: ignore[arg-type]
        (lambda: In(X, ()), ValueError),
        (lambda: In(X, (Lit(1), Lit("1"))), ValueError),
        (lambda: And((flag("x"),)), ValueError),
        (lambda: Or(()), ValueError),
    ],
)
def test_nodes_refuse_invalid_contents(make: object, error: type[Exception]) -> None:
    assert callable(make)
    with pytest.raises(error):
        make()


def test_nodes_are_immutable() -> None:
    node = parse("x > 1")
    with pytest.raises(AttributeError):
        node.op = "<"  # type: ignore[misc]


def test_attributes() -> None:
    expr = parse("a > 1 and (b in [1] or not c is null) and d < e and f")
    assert attributes(expr) == frozenset("abcdef")


# --- three-valued evaluation -----------------------------------------------------

T, F, U = True, False, None
# Kleene's strong three-valued logic, as SQL (ISO/IEC 9075) defines AND, OR and NOT.
AND_TABLE = {
    (T, T): T, (T, F): F, (T, U): U,
    (F, T): F, (F, F): F, (F, U): F,
    (U, T): U, (U, F): F, (U, U): U,
}  # fmt: skip
OR_TABLE = {
    (T, T): T, (T, F): T, (T, U): T,
    (F, T): T, (F, F): F, (F, U): U,
    (U, T): T, (U, F): U, (U, U): U,
}  # fmt: skip
NOT_TABLE = {T: F, F: T, U: U}


@pytest.mark.parametrize(("inputs", "expected"), AND_TABLE.items())
def test_and_truth_table(inputs: tuple[bool | None, bool | None], expected: bool | None) -> None:
    p, q = inputs
    expr = parse("p and q")
    assert evaluate(expr, {"p": p, "q": q}) is expected
    assert matches(expr, {"p": p, "q": q}) is (expected is True)


@pytest.mark.parametrize(("inputs", "expected"), OR_TABLE.items())
def test_or_truth_table(inputs: tuple[bool | None, bool | None], expected: bool | None) -> None:
    p, q = inputs
    expr = parse("p or q")
    assert evaluate(expr, {"p": p, "q": q}) is expected
    assert matches(expr, {"p": p, "q": q}) is (expected is True)


@pytest.mark.parametrize(("value", "expected"), NOT_TABLE.items())
def test_not_truth_table(value: bool | None, expected: bool | None) -> None:
    assert evaluate(parse("not p"), {"p": value}) is expected
    assert evaluate(parse("not p"), {}) is None


@pytest.mark.parametrize(
    ("text", "attrs", "expected"),
    [
        ("x > 5", {}, U),
        ("x > 5", {"x": None}, U),
        ("not (x > 5)", {}, U),  # SQL: NOT NULL is NULL, so the rule does not match
        ("x > 5 or x <= 5", {}, U),
        ("x > 5 or y", {"y": True}, T),
        ("x > 5 and y", {"y": False}, F),
        ("x in [1, 2]", {}, U),
        ("x not in [1, 2]", {}, U),
        ("x not in [1, 2]", {"x": 3}, T),
        ("x not in [1, 2]", {"x": 2}, F),
        ("x is null", {}, T),
        ("x is null", {"x": None}, T),
        ("x is null", {"x": 0}, F),
        ("x is not null", {"x": ""}, T),
        ("not (x is null)", {}, F),
        ("paid < owed", {"paid": 1, "owed": 2}, T),
        ("paid < owed", {"paid": 1}, U),
        ("d >= date('2024-01-01')", {"d": date(2024, 1, 1)}, T),
        ("s < 'b'", {"s": "a"}, T),
        ("s < 'b'", {"s": "ab"}, T),
        ("s < 'b'", {"s": "严"}, F),
    ],
)
def test_evaluate(text: str, attrs: dict[str, object], expected: bool | None) -> None:
    assert evaluate(parse(text), attrs) is expected
    assert matches(parse(text), attrs) is (expected is True)


@pytest.mark.parametrize(
    ("text", "attrs"),
    [
        ("x == 5", {"x": "5"}),
        ("x == 1", {"x": True}),  # bool is not an int here, unlike in Python
        ("x == true", {"x": 1}),
        ("x < true", {"x": False}),  # booleans are not ordered
        ("x > 1", {"x": 1.5}),
        ("x > 1", {"x": [2]}),
        ("d == date('2024-01-01')", {"d": datetime(2024, 1, 1)}),
        ("d == date('2024-01-01')", {"d": "2024-01-01"}),
        ("x in ['1']", {"x": 1}),
        ("x not in [0]", {"x": False}),
        ("paid < owed", {"paid": 1, "owed": "2"}),
        ("not (x == 5)", {"x": "5"}),
    ],
)
def test_type_mismatch_is_unknown_never_an_error(text: str, attrs: dict[str, object]) -> None:
    assert evaluate(parse(text), attrs) is None
    assert matches(parse(text), attrs) is False


_ODD_VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=3),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.floats(),
    st.lists(st.integers(), max_size=2),
)


@given(exprs(), st.fixed_dictionaries({}, optional=dict.fromkeys(SCHEMA, _ODD_VALUES)))
def test_evaluate_never_raises(expr: object, attrs: dict[str, object]) -> None:
    assert isinstance(expr, And | Or | Not | Compare | In | IsNull)
    assert evaluate(expr, attrs) in (True, False, None)


@given(exprs(), rows(missing_as_none=True))
def test_absent_and_none_are_the_same(expr: object, row: dict[str, object]) -> None:
    assert isinstance(expr, And | Or | Not | Compare | In | IsNull)
    absent = {k: v for k, v in row.items() if v is not None}
    assert evaluate(expr, row) is evaluate(expr, absent)


@given(exprs(well_typed=True), rows())
def test_well_typed_expressions_are_unknown_only_on_missing_attributes(
    expr: object, row: dict[str, object]
) -> None:
    assert isinstance(expr, And | Or | Not | Compare | In | IsNull)
    if all(row.get(name) is not None for name in attributes(expr)):
        assert evaluate(expr, row) is not None


# --- types -------------------------------------------------------------------


@given(exprs(well_typed=True))
def test_well_typed_expressions_pass_check_types(expr: object) -> None:
    assert isinstance(expr, And | Or | Not | Compare | In | IsNull)
    assert check_types(expr, SCHEMA) == []


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("amount_cny >= 100000 and not repeat", []),
        ("severity in ['minor'] and decided_on < date('2025-01-01')", []),
        ("amount_cny < days_overdue", []),
        ("ammount_cny > 1", ["unknown attribute 'ammount_cny'; did you mean 'amount_cny'?"]),
        ("zzz is null", ["unknown attribute 'zzz'"]),
        ("severity == 5", ["in 'severity == 5': 'severity' is str but 5 is int"]),
        (
            "amount_cny == 'many'",
            ["in 'amount_cny == 'many'': 'amount_cny' is int but 'many' is str"],
        ),
        ("not amount_cny", ["in 'amount_cny': 'amount_cny' is int but true is bool"]),
        ("repeat < true", ["in 'repeat < true': bool values are not ordered; use == or !="]),
        (
            "severity < amount_cny",
            ["in 'severity < amount_cny': 'severity' is str but 'amount_cny' is int"],
        ),
        (
            "decided_on > '2024-01-01'",
            ["in 'decided_on > '2024-01-01'': 'decided_on' is date but '2024-01-01' is str"],
        ),
        (
            "severity in [1, 2]",
            ["in 'severity in [1, 2]': 'severity' is str but the list holds int values"],
        ),
        ("x > 1 or x < 0", ["unknown attribute 'x'"]),
    ],
)
def test_check_types(text: str, errors: list[str]) -> None:
    assert check_types(parse(text), SCHEMA) == errors


def test_check_types_reports_a_bad_schema() -> None:
    errors = check_types(parse("ratio > 1"), {"ratio": "float"})
    assert errors == [
        "attribute 'ratio' has type 'float' in the schema; expected one of bool, date, int, str"
    ]


# --- purity ------------------------------------------------------------------


def _module_tree() -> ast.Module:
    assert expr_module.__file__ is not None
    return ast.parse(Path(expr_module.__file__).read_text(encoding="utf-8"))


def test_the_module_never_evals() -> None:
    forbidden = {"eval", "exec", "compile", "__import__", "getattr", "globals", "locals"}
    names = {node.id for node in ast.walk(_module_tree()) if isinstance(node, ast.Name)}
    attrs = {node.attr for node in ast.walk(_module_tree()) if isinstance(node, ast.Attribute)}
    assert names & forbidden == set()
    assert attrs & {"eval", "exec"} == set()


def test_the_module_imports_only_the_standard_library_and_lark() -> None:
    roots: set[str] = set()
    for node in ast.walk(_module_tree()):
        if isinstance(node, ast.Import):
            roots.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None and node.level == 0
            roots.add(node.module.partition(".")[0])
    assert {r for r in roots if r not in sys.stdlib_module_names} == {"lark"}
