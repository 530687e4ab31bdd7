"""The Ibis compilation of ``when`` expressions agrees with the pure evaluator on DuckDB."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chengxin.domain.expr import Expr, Lit, evaluate, matches, parse
from chengxin.engine.expr_ibis import UNSUPPORTED, IbisUnsupportedError, to_ibis, to_ibis_3vl

# The strategies live beside the domain tests; tests/ has no packages to import them through.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "domain"))
from expr_strategies import SCHEMA, exprs, rows

# This module's own settings: each example builds a table and runs a query.
agreement = settings(max_examples=200, deadline=None)

ARROW_TYPES = {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_(), "date": pa.date32()}
ARROW_SCHEMA = pa.schema(
    [("row_id", pa.int64())] + [(name, ARROW_TYPES[kind]) for name, kind in SCHEMA.items()]
)

Row = Mapping[str, object]


@pytest.fixture(scope="module")
def con() -> Iterator[Any]:
    connection = ibis.duckdb.connect()
    yield connection
    connection.disconnect()


def run(con: Any, expr: Expr, table_rows: list[Row]) -> tuple[list[Any], list[Any]]:
    """The three-valued and the collapsed result of ``expr`` on each row, via DuckDB."""
    records = [{"row_id": i, **row} for i, row in enumerate(table_rows)]
    table = ibis.memtable(pa.Table.from_pylist(records, schema=ARROW_SCHEMA))
    query = table.select(
        "row_id",
        unknown_kept=to_ibis_3vl(expr, table.__getitem__),
        matched=to_ibis(expr, table.__getitem__),
    ).order_by("row_id")
    result = con.to_pyarrow(query).to_pydict()
    return result["unknown_kept"], result["matched"]


@agreement
@given(
    st.one_of(exprs(well_typed=True), exprs()),
    st.lists(rows(), min_size=1, max_size=20),
)
def test_duckdb_agrees_with_the_pure_evaluator(con: Any, expr: Expr, table_rows: list[Row]) -> None:
    three_valued, matched = run(con, expr, table_rows)
    assert three_valued == [evaluate(expr, row) for row in table_rows]
    assert matched == [matches(expr, row) for row in table_rows]


ROWS: list[Row] = [
    {"amount_cny": 100000, "severity": "minor", "repeat": False, "days_overdue": 10},
    {"amount_cny": 99999, "severity": "general", "repeat": True, "days_overdue": 91},
    {"amount_cny": 6000, "severity": "serious"},
    {"decided_on": date(2024, 1, 1)},
    {},
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amount_cny >= 100000", [True, False, False, False, False]),
        ("severity in ['minor', 'general'] and not repeat", [True, False, False, False, False]),
        ("days_overdue > 90 or amount_cny >= 5000", [True, True, True, False, False]),
        ("not (days_overdue > 90)", [True, False, False, False, False]),
        ("repeat is null", [False, False, True, True, True]),
        ("decided_on >= date('2024-01-01')", [False, False, False, True, False]),
        ("severity == 5", [False] * 5),  # ill-typed: unknown on every row
        ("repeat < true", [False] * 5),
        ("amount_cny > days_overdue", [True, True, False, False, False]),
    ],
)
def test_policy_examples(con: Any, text: str, expected: list[bool]) -> None:
    expr = parse(text)
    assert run(con, expr, ROWS)[1] == expected
    assert [matches(expr, row) for row in ROWS] == expected


def test_a_column_of_no_type_is_unknown(con: Any) -> None:
    table = ibis.memtable(pa.table({"row_id": [0, 1], "x": pa.array([None, None], pa.null())}))
    exprs_ = {
        "x > 1": None,
        "x in [1]": None,
        "x is null": True,
        "not (x == 'a')": None,
    }
    query = table.select(
        **{f"e{i}": to_ibis_3vl(parse(text), table.__getitem__) for i, text in enumerate(exprs_)}
    )
    result = con.to_pyarrow(query).to_pylist()
    assert result == [{f"e{i}": v for i, v in enumerate(exprs_.values())}] * 2


@pytest.mark.parametrize("null_type", ["int64", None])
def test_an_absent_attribute_may_be_a_null_scalar(con: Any, null_type: str | None) -> None:
    table = ibis.memtable(pa.table({"row_id": [0, 1], "x": [1, 2]}))

    def column(name: str) -> Any:
        return table[name] if name in table.columns else ibis.null(null_type)

    expr = parse("x > 1 or y > 1")
    query = table.select("row_id", r=to_ibis_3vl(expr, column), m=to_ibis(expr, column))
    assert con.to_pyarrow(query.order_by("row_id")).to_pydict() == {
        "row_id": [0, 1],
        "r": [None, True],
        "m": [False, True],
    }


def test_the_ibis_target_supports_every_node() -> None:
    assert not UNSUPPORTED
    with pytest.raises(IbisUnsupportedError, match="cannot compile Lit nodes") as info:
        to_ibis(Lit(1), ibis.null)  # type: ignore[arg-type]
    assert isinstance(info.value, NotImplementedError)
