"""The batch job for ``spark-submit``: score an export on Spark and write its results.

On a cluster (the driver needs chengxin installed; the executors run Spark
SQL only, no Python UDFs, so they need neither chengxin nor its packages)::

    spark-submit --master yarn --deploy-mode client \\
        --conf spark.sql.shuffle.partitions=2000 \\
        "$(python -c 'import chengxin.engine.spark_job as j; print(j.__file__)')" \\
        --export s3a://bucket/chengxin/export-2026-11-27

and on one machine ``python -m chengxin.engine.spark_job --export DIR
--master 'local[2]'``. The job

1. checks the export against its manifest (files, sizes, rows, and sha256
   unless ``--no-hashes``) and the policy against its hash, and refuses a
   mismatch (exit 2) before touching anything;
2. removes an earlier run's ``_SUCCESS.json`` from the results directory
   (``<export>/results`` unless ``--results``);
3. scores as of the export's date (or ``--as-of``) and writes
   ``scores/*.parquet``, then ``memberships/*.parquet``;
4. writes ``_SUCCESS.json`` last: the export's ledger head, the policy hash,
   the date, the manifest's sha256, and every result file with its rows.

A job that dies anywhere before step 4 leaves no ``_SUCCESS.json``, and
``chengxin load-results`` refuses its directory. It prints one JSON object
(the ``_SUCCESS.json`` contents, or the error) and exits 0, 1 (it failed) or
2 (refused).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from chengxin.engine.export import Export, ExportError, verify_export
from chengxin.engine.plan import PlanError
from chengxin.engine.results import Results, ResultsError, clear_success, finish_results
from chengxin.engine.spark_backend import local_session, spark_engine, write_plan

__all__ = ["main", "run_job"]


def _now() -> datetime:
    return datetime.now(UTC)


def run_job(
    session: Any,
    export: str | Path | Export,
    results: str | Path | None = None,
    *,
    as_of: date | None = None,
    hashes: bool = True,
    progress: Callable[[str], None] | None = None,
    now: Callable[[], datetime] = _now,
) -> Results:
    """Steps 1–4 of the module docstring on ``session``; returns what ``_SUCCESS.json`` says.

    ``progress`` hears ``"verified"``, ``"scores"`` and ``"memberships"`` as
    each step is done.
    """
    started = now()
    checked = export if isinstance(export, Export) else verify_export(export, hashes=hashes)
    policy = checked.policy()
    if progress is not None:
        progress("verified")
    where = checked.results(results)
    clear_success(where)
    day = as_of or checked.manifest.as_of
    with spark_engine(session) as engine:
        records = engine.table(checked.where.spark_path("records"), checked.manifest.schema())
        subjects = engine.table(checked.where.spark_path("subjects"))
        write_plan(
            engine,
            policy,
            records,
            subjects,
            day,
            scores_path=where.spark_path("scores"),
            memberships_path=where.spark_path("memberships"),
            progress=progress,
        )
    return finish_results(
        where, export=checked, engine="spark", as_of=day, started_at=started, finished_at=now()
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chengxin-spark-job", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--export", required=True, help="the export directory or URI")
    parser.add_argument("--results", help="where results go (default: <export>/results)")
    parser.add_argument(
        "--as-of", type=date.fromisoformat, help="YYYY-MM-DD (default: the export's)"
    )
    parser.add_argument(
        "--master", help="Spark master for a run outside spark-submit, e.g. 'local[2]'"
    )
    parser.add_argument(
        "--no-hashes", action="store_true", help="check sizes and rows but not sha256"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job from the command line; print one JSON object; return the exit code."""
    args = _parser().parse_args(argv)
    try:  # refuse a bad export before starting Spark
        checked = verify_export(args.export, hashes=not args.no_hashes)
        checked.policy()
    except (ExportError, PlanError) as exc:
        print(json.dumps({"error": str(exc), "exit": 2}))
        return 2
    try:
        if args.master:
            session = local_session(args.master)
        else:  # under spark-submit, which set the master and the rest
            from pyspark.sql import SparkSession

            session = SparkSession.builder.appName("chengxin").getOrCreate()
            session.conf.set("spark.sql.session.timeZone", "UTC")
        done = run_job(session, checked, args.results, as_of=args.as_of)
    except (ExportError, ResultsError, PlanError) as exc:
        print(json.dumps({"error": str(exc), "exit": 2}))
        return 2
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "exit": 1}))
        return 1
    print(json.dumps(done.as_json(), indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover - run by spark-submit or python -m
    sys.exit(main())
