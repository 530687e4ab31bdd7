"""The batch plan on the national pack: worked examples, each checked against the pure scorer."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import ibis
import pyarrow.parquet as pq
import pytest
from batch_strategies import Answer, Row, engine_answer, pure_answer, records_table, subjects_table
from hypothesis import given
from hypothesis import strategies as st

import chengxin.engine.plan as plan_module
import chengxin.engine.timeline as timeline_module
from chengxin.domain.durations import Duration
from chengxin.domain.policy import Policy
from chengxin.domain.policy_load import load_policy_text
from chengxin.domain.scoring import RecordFact
from chengxin.engine.duckdb_backend import connect, rescore_duckdb
from chengxin.engine.plan import (
    RECORD_COLUMNS,
    SUBJECT_COLUMNS,
    PlanError,
    attribute_columns,
    build_plan,
)
from chengxin.engine.timeline import Timeline, latest_start

NATIONAL = Path(__file__).resolve().parents[2] / "src" / "chengxin" / "policies" / "national.yaml"

UNPERFORMED = "judicial.judgment_unperformed"
PERFORMED = "judicial.judgment_performed"
TICKET = "societal.fail_to_yield_pedestrian"


@pytest.fixture(scope="module")
def national() -> Policy:
    return load_policy_text(NATIONAL.read_text(), str(NATIONAL))


@pytest.fixture(scope="module")
def con() -> Iterator[Any]:
    connection = connect(threads=2)
    yield connection
    connection.disconnect()


def rec(rid: int, type_: str, day: date, status: str = "active", **attrs: object) -> RecordFact:
    return RecordFact(id=rid, type=type_, occurred_at=day, attributes=attrs, status=status)


def run(
    con: Any, policy: Policy, rows: list[Row], as_of: date, subjects: list[int] | None = None
) -> Answer:
    """The DuckDB plan's answer, after checking that the pure scorer gives the same."""
    ids = subjects if subjects is not None else sorted({s for s, _ in rows} | {1})
    result = rescore_duckdb(
        policy, records_table(policy, rows), subjects_table(ids), as_of, con=con
    )
    got = engine_answer(result)
    assert got == pure_answer(policy, rows, ids, as_of)
    return got


# --- scores -----------------------------------------------------------------------------------


def test_a_subject_without_records_gets_the_base_score(con: Any, national: Policy) -> None:
    scores, members = run(con, national, [], date(2026, 1, 31), subjects=[1, 2])
    assert scores == {1: (1000, "A", None), 2: (1000, "A", None)}
    assert members == set()


def test_a_ticket_counts_until_its_expiry_clamped_to_month_end(con: Any, national: Policy) -> None:
    rows = [(1, rec(1, TICKET, date(2024, 2, 29)))]  # + 1y = 28 Feb 2025
    assert run(con, national, rows, date(2024, 2, 28))[0][1] == (1000, "A", date(2024, 2, 29))
    assert run(con, national, rows, date(2024, 2, 29))[0][1] == (995, "A", date(2025, 2, 28))
    assert run(con, national, rows, date(2025, 2, 27))[0][1] == (995, "A", date(2025, 2, 28))
    assert run(con, national, rows, date(2025, 2, 28))[0][1] == (1000, "A", None)


def test_the_first_matching_rule_wins_and_a_missing_attribute_falls_through(
    con: Any, national: Policy
) -> None:
    day = date(2025, 6, 1)
    rows = [
        (1, rec(1, "commercial.tax_arrears", day, amount_cny=2_000_000)),  # large: -80
        (1, rec(2, "commercial.tax_arrears", day, amount_cny=500)),  # -20
        (1, rec(3, "commercial.tax_arrears", day)),  # amount unknown: -20
    ]
    assert run(con, national, rows, day)[0][1] == (880, "B", date(2026, 6, 1))


def test_a_schedule_steps_down_and_the_score_truncates_toward_zero(
    con: Any, national: Policy
) -> None:
    fraud = [(1, rec(1, "commercial.contract_fraud", date(2023, 1, 31)))]  # -150, 60% after 1y
    assert run(con, national, fraud, date(2023, 6, 1))[0][1] == (850, "B", date(2024, 1, 31))
    assert run(con, national, fraud, date(2024, 1, 31))[0][1] == (910, "B", date(2026, 1, 31))
    data = national.canonical()
    for rule in data["rules"]:
        if rule["id"] == "fail-to-yield":
            rule["schedule"] = [{"after": "6m", "pct": 50}]
    halved = Policy.model_validate(data)
    ticket = [(1, rec(1, TICKET, date(2024, 8, 31)))]  # + 6m = 28 Feb 2025
    assert run(con, halved, ticket, date(2025, 2, 28))[0][1] == (998, "A", date(2025, 8, 31))


def test_a_score_is_clamped_to_the_scale(con: Any, national: Policy) -> None:
    day = date(2025, 3, 1)
    rows = [(1, rec(i, "judicial.obstruction_of_enforcement", day)) for i in range(8)]
    scores, members = run(con, national, rows, day)
    assert scores[1] == (0, "D", date(2026, 3, 1))
    assert members == {(1, "enforcement-obstructors", "black", day, date(2027, 3, 1))}


def test_inactive_and_suspended_records_do_not_count(con: Any, national: Policy) -> None:
    day = date(2025, 3, 1)
    rows = [
        (1, rec(1, UNPERFORMED, day, "disputed", amount_cny=500_000)),
        (1, rec(2, UNPERFORMED, day, "retracted", amount_cny=500_000)),
        (1, rec(3, TICKET, day, "overturned")),
        (1, rec(4, TICKET, day, "superseded")),
    ]
    assert run(con, national, rows, day) == ({1: (1000, "A", None)}, set())


def test_a_record_after_the_date_only_sets_the_next_change(con: Any, national: Policy) -> None:
    rows = [(1, rec(1, "societal.heroic_act", date(2026, 3, 1)))]
    assert run(con, national, rows, date(2026, 1, 31))[0][1] == (1000, "A", date(2026, 3, 1))


# --- lists ------------------------------------------------------------------------------------


def test_a_defaulter_is_listed_then_lifted_by_performance(con: Any, national: Policy) -> None:
    entry, lift = date(2024, 1, 31), date(2024, 6, 1)
    rows = [(1, rec(1, UNPERFORMED, entry, amount_cny=200_000)), (1, rec(2, PERFORMED, lift))]
    scores, members = run(con, national, rows, date(2024, 5, 31))
    assert scores[1] == (900, "B", lift)
    assert members == {(1, "judgment-defaulters", "black", entry, date(2026, 1, 31))}
    scores, members = run(con, national, rows, lift)
    assert scores[1] == (900, "B", date(2025, 1, 31))  # lifted from the list, not the score
    assert members == set()


def test_a_lift_on_the_entry_day_lifts_and_a_later_entry_re_enters(
    con: Any, national: Policy
) -> None:
    day, again = date(2024, 1, 31), date(2024, 9, 30)
    rows = [
        (1, rec(1, UNPERFORMED, day, amount_cny=5_000)),
        (1, rec(2, PERFORMED, day)),
        (1, rec(3, UNPERFORMED, again, amount_cny=5_000)),
    ]
    assert run(con, national, rows, date(2024, 3, 1))[1] == set()
    members = run(con, national, rows, date(2024, 10, 1))[1]
    assert members == {(1, "judgment-defaulters", "black", again, date(2026, 9, 30))}


def test_a_list_entry_needs_its_condition(con: Any, national: Policy) -> None:
    day = date(2025, 3, 1)
    rows = [
        (1, rec(1, "commercial.product_safety_violation", day, severity="serious")),
        (2, rec(2, "commercial.product_safety_violation", day, severity="general")),
    ]
    scores, members = run(con, national, rows, day, subjects=[1, 2])
    assert members == {(1, "serious-market-violators", "black", day, date(2028, 3, 1))}
    assert scores == {1: (920, "B", date(2028, 3, 1)), 2: (970, "A", date(2026, 3, 1))}


def test_the_honour_roll_follows_the_grade(con: Any, national: Policy) -> None:
    day = date(2025, 3, 1)
    rows = [
        (1, rec(1, "societal.heroic_act", day)),
        (1, rec(2, "societal.blood_donation", day)),
        (1, rec(3, "societal.volunteering", day, hours=60)),
    ]
    scores, members = run(con, national, rows, day)
    assert scores[1] == (1050, "AAA", date(2026, 3, 1))
    assert members == {(1, "honour-roll", "red", None, None)}


def test_only_the_subjects_given_are_scored_and_listed(con: Any, national: Policy) -> None:
    day = date(2025, 3, 1)
    rows = [
        (1, rec(1, UNPERFORMED, day, amount_cny=1)),
        (7, rec(2, UNPERFORMED, day, amount_cny=1)),
    ]
    scores, members = run(con, national, rows, day, subjects=[1])
    assert set(scores) == {1}
    assert members == {(1, "judgment-defaulters", "black", day, date(2027, 3, 1))}


# --- rules in no time order (the linter refuses them; the plan must still agree) ---------------


def test_steps_out_of_time_order_still_agree(con: Any, national: Policy) -> None:
    data = national.canonical()
    for rule in data["rules"]:
        if rule["id"] == "fail-to-yield":
            rule["schedule"] = [{"after": "40d", "pct": 20}, {"after": "1m", "pct": 60}]
            rule["expires"] = "35d"
    odd = Policy.model_validate(data)
    assert not Timeline.of(odd, date(2025, 3, 1)).chained
    starts = [date(2024, 12, 31), date(2025, 1, 28), date(2025, 1, 31), date(2025, 2, 1)]
    rows = [(i, rec(i, TICKET, start)) for i, start in enumerate(starts, 1)]
    for as_of in (
        date(2025, 2, 2),
        date(2025, 2, 28),
        date(2025, 3, 1),
        date(2025, 3, 4),
        date(2025, 3, 7),
        date(2025, 3, 10),
        date(2025, 3, 12),
    ):
        run(con, odd, rows, as_of)


# --- inputs -----------------------------------------------------------------------------------


def test_parquet_paths_are_read_in_place(con: Any, national: Policy, tmp_path: Path) -> None:
    rows = [(1, rec(1, UNPERFORMED, date(2025, 1, 31), amount_cny=150_000))]
    pq.write_table(records_table(national, rows), tmp_path / "records.parquet")
    pq.write_table(subjects_table([1, 2]), tmp_path / "subjects.parquet")
    result = rescore_duckdb(
        national, tmp_path / "records.parquet", str(tmp_path / "subjects.parquet"), date(2025, 3, 1)
    )
    assert engine_answer(result) == pure_answer(national, rows, [1, 2], date(2025, 3, 1))


def test_attribute_columns_follow_the_record_types(national: Policy) -> None:
    assert attribute_columns(national) == {
        "a_amount_cny": "int64",
        "a_days_overdue": "int64",
        "a_workers": "int64",
        "a_severity": "string",
        "a_repeat": "boolean",
        "a_hours": "int64",
    }


def test_one_attribute_name_with_two_types_is_a_plan_error(national: Policy) -> None:
    data = national.canonical()
    data["record_types"][0]["attributes"]["amount_cny"] = {"type": "str"}
    with pytest.raises(PlanError, match=r"attribute 'amount_cny' is str .* but int"):
        attribute_columns(Policy.model_validate(data))


def test_a_missing_or_mistyped_input_column_is_a_plan_error(national: Policy) -> None:
    columns = {**RECORD_COLUMNS, **attribute_columns(national)}
    subjects = ibis.table(SUBJECT_COLUMNS, name="subjects")
    without = {k: v for k, v in columns.items() if k != "a_severity"}
    with pytest.raises(PlanError, match="records has no column 'a_severity'"):
        build_plan(national, ibis.table(without, name="r"), subjects, date(2025, 1, 1))
    mistyped = {**columns, "occurred_at": "string"}
    with pytest.raises(PlanError, match=r"records.occurred_at is string, expected date"):
        build_plan(national, ibis.table(mistyped, name="r"), subjects, date(2025, 1, 1))


# --- one plan, every engine ---------------------------------------------------------------------


def test_the_plan_compiles_for_spark_too(national: Policy) -> None:
    records = ibis.table({**RECORD_COLUMNS, **attribute_columns(national)}, name="records")
    plan = build_plan(national, records, ibis.table(SUBJECT_COLUMNS, name="s"), date(2026, 1, 31))
    for table in (plan.scores, plan.memberships):
        assert "SELECT" in ibis.to_sql(table, dialect="pyspark")


@pytest.mark.parametrize("module", [plan_module, timeline_module])
def test_the_plan_imports_no_backend(module: Any) -> None:
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"duckdb", "pyspark", "pandas", "pyarrow"}


@given(
    st.builds(Duration, months=st.integers(0, 40), days=st.integers(0, 60)).filter(
        lambda d: d.months or d.days
    ),
    st.dates(date(2000, 1, 1), date(2040, 12, 31)),
)
def test_latest_start_is_the_last_day_a_duration_has_run_out_by(
    span: Duration, as_of: date
) -> None:
    start = latest_start(span, as_of)
    assert start is not None
    assert span.after(start) <= as_of < span.after(start + timedelta(days=1))
