"""Run the batch plan on DuckDB in process: Arrow tables or Parquet files in, Arrow tables out.

The plan itself (:mod:`chengxin.engine.plan`) is engine-neutral Ibis; this
module only connects, loads the inputs and materialises the results. Scores
are materialised first and the grade-entered lists read them back, so nobody
is scored twice. Inputs are registered as Arrow tables or datasets (DuckDB
scans them in place, pushing filters and projections into Parquet); the
catalogue paths of ibis 12 (``create_table``, ``read_parquet``) call an API
DuckDB 1.5 deprecates, so they are not used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeAlias

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.dataset as ds

from chengxin.domain.policy import Policy
from chengxin.engine.plan import build_plan

__all__ = ["MEMBERSHIPS_SCHEMA", "SCORES_SCHEMA", "BatchResult", "connect", "rescore_duckdb"]

Source: TypeAlias = "pa.Table | str | Path | ir.Table"
"""An input table: an Arrow table, a Parquet path (file, directory or glob), or an Ibis table."""

SCORES_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("score", pa.int64()),
        ("grade", pa.string()),
        ("next_change", pa.date32()),
    ]
)
"""The Arrow schema of :attr:`BatchResult.scores`."""

MEMBERSHIPS_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("list_code", pa.string()),
        ("kind", pa.string()),
        ("since", pa.date32()),
        ("until", pa.date32()),
    ]
)
"""The Arrow schema of :attr:`BatchResult.memberships`."""


@dataclass(frozen=True)
class BatchResult:
    """Every subject's score and every list membership as of one date, as Arrow tables."""

    as_of: date
    scores: pa.Table
    memberships: pa.Table


def connect(threads: int | None = None, **kwargs: Any) -> Any:
    """A DuckDB Ibis backend (in memory unless ``database=`` is given) on ``threads`` threads."""
    con = ibis.duckdb.connect(**kwargs)
    con.raw_sql(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    return con


def _load(source: Source) -> ir.Table:
    if isinstance(source, ir.Table):
        return source
    if isinstance(source, pa.Table):
        return ibis.memtable(source)
    return ibis.memtable(ds.dataset(str(source), format="parquet"))


def rescore_duckdb(
    policy: Policy,
    records: Source,
    subjects: Source,
    as_of: date,
    con: Any | None = None,
) -> BatchResult:
    """Score every subject of ``subjects`` on ``records`` under ``policy`` as of ``as_of``.

    Each input is an Arrow table, a Parquet path or an Ibis table of ``con``;
    ``con`` defaults to a new in-memory connection using every core.
    """
    con = con if con is not None else connect()
    plan = build_plan(policy, _load(records), _load(subjects), as_of)
    scores = con.to_pyarrow(plan.scores).cast(SCORES_SCHEMA)
    memberships = con.to_pyarrow(plan.memberships_from(ibis.memtable(scores)))
    return BatchResult(as_of=as_of, scores=scores, memberships=memberships.cast(MEMBERSHIPS_SCHEMA))
