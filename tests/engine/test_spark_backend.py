"""The plan on Spark: what Spark is told differently, and worked examples held to the pure scorer.

The agreement property (``test_agreement``) is the main check; these keep
the minimal cases of what Spark needed: an ``INT`` array index, a NULL key
(a record no rule matches) read as NULL despite Spark 4.0.1's ``element_at``,
month-end clamping, 64-bit attributes, Hive-partitioned Parquet input.
"""

from __future__ import annotations

import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_strategies import Row, engine_answer, pure_answer, records_table, subjects_table

from chengxin.domain.policy import Policy
from chengxin.domain.policy_load import load_policy_text
from chengxin.domain.scoring import RecordFact
from chengxin.engine.plan import RECORD_COLUMNS, SUBJECT_COLUMNS, attribute_columns, build_plan
from chengxin.engine.spark_backend import lower, rescore_spark

# pyspark 4.0.1 leaves the socket it collects through unclosed (pyspark.util._create_local_socket).
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")

NATIONAL = Path(__file__).resolve().parents[2] / "src" / "chengxin" / "policies" / "national.yaml"
TICKET = "societal.fail_to_yield_pedestrian"


@pytest.fixture(scope="module")
def national() -> Policy:
    return load_policy_text(NATIONAL.read_text(), str(NATIONAL))


def rec(rid: int, type_: str, day: date, status: str = "active", **attrs: object) -> RecordFact:
    return RecordFact(id=rid, type=type_, occurred_at=day, attributes=attrs, status=status)


def run(spark: Any, policy: Policy, rows: list[Row], as_of: date, ids: list[int]) -> Any:
    """Spark's answer, after checking that the pure scorer gives the same."""
    result = rescore_spark(
        policy, records_table(policy, rows), subjects_table(ids), as_of, session=spark
    )
    got = engine_answer(result)
    assert got == pure_answer(policy, rows, ids, as_of)
    return got


def test_lowering_gives_spark_an_int_index_that_is_never_null(national: Policy) -> None:
    records = ibis.table({**RECORD_COLUMNS, **attribute_columns(national)}, name="records")
    plan = build_plan(national, records, ibis.table(SUBJECT_COLUMNS, name="s"), date(2026, 1, 31))
    raw = " ".join(ibis.to_sql(plan.scores, dialect="pyspark").split())
    sql = " ".join(ibis.to_sql(lower(plan.scores), dialect="pyspark").split())
    assert "ELEMENT_AT" in raw and "AS INT" not in raw
    assert sql.count("ELEMENT_AT") == raw.count("ELEMENT_AT")
    assert re.search(r"IF\( `t\d+`\.`key` IS NULL, CAST\(NULL AS BIGINT\), ELEMENT_AT\(", sql)
    assert re.search(r"CAST\(COALESCE\(`t\d+`\.`key`, 0\) AS INT\) \+ 1", sql)


def test_a_record_no_rule_matches_changes_nothing_on_spark(spark: Any, national: Policy) -> None:
    # Small tax arrears with no amount match no "when": the key is NULL. Spark 4.0.1 read the
    # last element of the lookup array for it, so next_change became the record's own date.
    data = national.canonical()
    for rule in data["rules"]:
        if rule["id"] == "tax-arrears":
            rule["when"] = "amount_cny >= 0"
    policy = Policy.model_validate(data)
    rows = [(1, rec(1, "commercial.tax_arrears", date(2024, 1, 31)))]
    scores, _ = run(spark, policy, rows, date(2024, 10, 17), [1, 2])
    assert scores[1] == (1000, "A", None)


def test_months_clamp_to_the_month_end_on_spark(spark: Any, national: Policy) -> None:
    rows = [(1, rec(1, TICKET, date(2024, 2, 29)))]  # + 1y = 28 Feb 2025
    assert run(spark, national, rows, date(2025, 2, 27), [1])[0][1] == (995, "A", date(2025, 2, 28))
    assert run(spark, national, rows, date(2025, 2, 28), [1])[0][1] == (1000, "A", None)


def test_64_bit_attributes_and_lists_on_spark(spark: Any, national: Policy) -> None:
    day = date(2025, 1, 31)
    rows = [
        (1, rec(1, "judicial.judgment_unperformed", day, amount_cny=2**63 - 1)),
        (2, rec(2, "judicial.judgment_unperformed", day, amount_cny=-(2**63))),
        (2, rec(3, "judicial.judgment_performed", date(2025, 3, 1))),
    ]
    scores, members = run(spark, national, rows, date(2025, 2, 28), [1, 2, 3])
    assert scores[1][0] == 900 and scores[2][0] == 950
    assert {m[:2] for m in members} == {(1, "judgment-defaulters"), (2, "judgment-defaulters")}


def test_hive_partitioned_parquet_is_read_in_place(
    spark: Any, national: Policy, tmp_path: Path
) -> None:
    rows = [
        (1, rec(1, TICKET, date(2024, 2, 29))),
        (1, rec(2, "judicial.judgment_unperformed", date(2024, 3, 1), amount_cny=150_000)),
    ]
    table = records_table(national, rows)
    table = table.append_column("domain", pa.array(["societal", "judicial"]))
    table = table.append_column("month", pa.array(["2024-02", "2024-03"]))
    ds.write_dataset(table, tmp_path / "records", format="parquet", partitioning_flavor="hive",
                     partitioning=["domain", "month"])  # fmt: skip
    result = rescore_spark(
        national, str(tmp_path / "records"), subjects_table([1]), date(2024, 6, 1), session=spark
    )
    assert engine_answer(result) == pure_answer(national, rows, [1], date(2024, 6, 1))
