"""Run the batch plan on Apache Spark through Ibis: Arrow or Parquet in, Arrow or Parquet out.

The plan is the one DuckDB runs (:mod:`chengxin.engine.plan`); this module
starts or takes a Spark session, registers the inputs, lowers the plan where
Spark's SQL must be told something differently, and materialises the result.
Scores are materialised first and the grade-entered lists read them back,
as on DuckDB, so nobody is scored twice.

What Spark is told differently (the same semantics, said its way):

* **Array indexes.** Ibis compiles ``values[key]`` to ``element_at(values,
  key + 1)``. Spark 4 (ANSI mode, its default) wants an ``INT`` index, and
  the plan's keys are ``int64``, so :func:`lower` casts them (a key is below
  rules × intervals, far under 2³¹). And Spark 4.0.1 gets a NULL index
  wrong on a literal array without NULLs: it decides from the array alone
  that ``element_at`` cannot be NULL, and then returns an element (the last,
  or the first, depending on the code path) where the answer is NULL. A
  record no rule matches has a NULL key, so :func:`lower` also writes
  ``CASE WHEN key IS NULL THEN NULL ELSE element_at(values, COALESCE(key, 0)
  + 1) END``. The agreement property found this one; ``test_spark_backend``
  keeps the minimal case.
* **Inputs** are given to Spark as Arrow (``createDataFrame`` takes Arrow
  since Spark 4) or read as Parquet, never as Ibis memtables: those go
  through pandas, which turns nullable 64-bit integers into floats.
* **Outputs** are collected with ``DataFrame.toArrow`` (Ibis's
  ``to_pyarrow`` goes through pandas too) or written by Spark as Parquet.

What needs nothing: ``date + INTERVAL n MONTH`` is ``add_months`` on Spark,
which clamps to the month's end exactly as
:func:`chengxin.domain.durations.add_months` does; ``least``/``greatest``
skip NULLs as DuckDB's do; string comparison is by code point. ANSI mode
stays on, so an integer overflow fails the job instead of wrapping. The
engine-agreement property (``tests/engine/test_agreement.py``) holds Spark
to the pure scorer; it has no known gap.

Spark is an optional extra (``uv sync --extra spark``, Java 17).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeAlias

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pyarrow as pa

from chengxin.domain.policy import Policy
from chengxin.engine.duckdb_backend import MEMBERSHIPS_SCHEMA, SCORES_SCHEMA, BatchResult
from chengxin.engine.plan import build_plan

__all__ = [
    "SPARK_CONF",
    "SparkEngine",
    "SparkUnavailable",
    "local_session",
    "lower",
    "rescore_spark",
    "spark_engine",
    "write_plan",
]

Source: TypeAlias = "pa.Table | str | Path | ir.Table"
"""An input: an Arrow table, a Parquet path (file or directory, Hive partitions read), or an
Ibis table of the engine's connection."""

SPARK_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "1g",
}
"""The settings :func:`local_session` starts from (a cluster sets its own with spark-submit)."""


class SparkUnavailable(RuntimeError):
    """PySpark (or Java) is not installed."""


def _pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError:  # pragma: no cover - the spark extra is installed in tests
        raise SparkUnavailable(
            "PySpark is not installed: install chengxin's spark extra (uv sync --extra spark) "
            "and Java 17"
        ) from None
    return pyspark.sql


def local_session(
    master: str = "local[2]",
    *,
    shuffle_partitions: int | None = None,
    driver_memory: str | None = None,
    conf: Mapping[str, str] | None = None,
    app_name: str = "chengxin",
) -> Any:
    """A Spark session in this process, quiet and in UTC (Spark keeps one per process).

    If a session is already running (a test session's, or spark-submit's), it
    is returned as it is: Spark fixes most settings when it starts.
    """
    sql = _pyspark()
    settings = dict(SPARK_CONF)
    if shuffle_partitions is not None:
        settings["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    if driver_memory is not None:
        settings["spark.driver.memory"] = driver_memory
    settings.update(conf or {})
    builder = sql.SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _safe_index(node: ops.ArrayIndex) -> ops.Value:
    """``arg[index]`` with an ``int32`` index that is never NULL inside ``element_at``."""
    values, index = node.arg.to_expr(), node.index.to_expr()
    looked_up = values[index.fill_null(0).cast(dt.int32)]
    return ibis.ifelse(index.isnull(), ibis.null(node.dtype), looked_up).op()


def lower(expr: ir.Table) -> ir.Table:
    """``expr`` with its array indexes written as Spark needs them (see the module docstring)."""

    def visit(node: Any, kwargs: Any) -> Any:
        # Each node of the original graph is visited once, children first.
        node = node.__recreate__(kwargs) if kwargs else node
        return _safe_index(node) if isinstance(node, ops.ArrayIndex) else node

    return expr.op().replace(visit).to_expr()


@dataclass
class SparkEngine:
    """A Spark session with an Ibis connection on it; runs plans, keeps track of its views."""

    session: Any
    con: Any = field(init=False)
    _views: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.con = ibis.pyspark.connect(self.session)

    def view(self, frame: Any) -> ir.Table:
        """A Spark DataFrame as an Ibis table (a temporary view, dropped by :meth:`close`)."""
        name = f"chengxin_{uuid.uuid4().hex[:12]}"
        frame.createOrReplaceTempView(name)
        self._views.append(name)
        return self.con.table(name)

    def table(self, source: Source, schema: pa.Schema | None = None) -> ir.Table:
        """An input as an Ibis table; Parquet is read with ``schema`` when given."""
        if isinstance(source, ir.Table):
            return source
        if isinstance(source, pa.Table):
            return self.view(self.session.createDataFrame(source))
        reader = self.session.read
        if schema is not None:
            from pyspark.sql.pandas.types import from_arrow_schema

            reader = reader.schema(from_arrow_schema(schema))
        return self.view(reader.parquet(str(source)))

    def frame(self, expr: ir.Table) -> Any:
        """The Spark DataFrame of an Ibis expression, lowered for Spark."""
        return self.session.sql(self.con.compile(lower(expr)))

    def close(self) -> None:
        """Drop the views this engine registered (the session stays up)."""
        while self._views:
            self.session.catalog.dropTempView(self._views.pop())


@contextmanager
def spark_engine(session: Any) -> Iterator[SparkEngine]:
    """A :class:`SparkEngine` on ``session`` whose views are dropped afterwards."""
    engine = SparkEngine(session)
    try:
        yield engine
    finally:
        engine.close()


def rescore_spark(
    policy: Policy, records: Source, subjects: Source, as_of: date, *, session: Any
) -> BatchResult:
    """Score every subject on Spark and collect the result as Arrow (small inputs, tests).

    Jobs that write Parquet use :func:`write_plan` instead.
    """
    with spark_engine(session) as engine:
        plan = build_plan(policy, engine.table(records), engine.table(subjects), as_of)
        scores = engine.frame(plan.scores).localCheckpoint()  # computed once, read twice
        memberships = engine.frame(plan.memberships_from(engine.view(scores)))
        return BatchResult(
            as_of=as_of,
            scores=scores.toArrow().cast(SCORES_SCHEMA),
            memberships=memberships.toArrow().cast(MEMBERSHIPS_SCHEMA),
        )


def write_plan(
    engine: SparkEngine,
    policy: Policy,
    records: ir.Table,
    subjects: ir.Table,
    as_of: date,
    *,
    scores_path: str,
    memberships_path: str,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Score on Spark and write scores, then memberships (read from the written scores)."""
    plan = build_plan(policy, records, subjects, as_of)
    engine.frame(plan.scores).write.mode("overwrite").parquet(scores_path)
    if progress is not None:
        progress("scores")
    written = engine.table(scores_path, SCORES_SCHEMA)
    engine.frame(plan.memberships_from(written)).write.mode("overwrite").parquet(memberships_path)
    if progress is not None:
        progress("memberships")
