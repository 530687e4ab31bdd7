"""Benchmark the batch plan on Spark local[2] against DuckDB on the same records, in one run.

Run ``.venv/bin/python bench/bench_spark.py --records 10000000`` (``--records
200000`` for a quick run). It draws the same synthetic record set as
``bench_batch.py`` (its generator, its seed), writes it as an export would
(Parquet partitioned by domain and month), and then times, in this one
process, the job path of both engines from those files to result files:

1. DuckDB: the plan on the Parquet dataset, results written as Parquet;
2. Spark ``local[N]`` (the same plan through Ibis, :func:`write_plan`):
   once cold (a fresh JVM: class loading, JIT, codegen) and then warm
   (``--repeat`` runs, the best kept);

and asserts that Spark's results equal DuckDB's on every subject and list
membership. It reports wall time, CPU time (Python and the JVM), records per
second and records per second per core, and the Spark/DuckDB ratio. Results
go to ``bench/results/`` as JSON and to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import ibis
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyspark

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_batch import (  # noqa: E402
    POLICY_PATH,
    assert_same,
    canonical,
    generate,
    write_result,
)

from chengxin.domain.policy import Policy  # noqa: E402
from chengxin.domain.policy_load import load_policy_text  # noqa: E402
from chengxin.engine.duckdb_backend import (  # noqa: E402
    MEMBERSHIPS_SCHEMA,
    SCORES_SCHEMA,
    connect,
    rescore_duckdb,
)
from chengxin.engine.export import (  # noqa: E402
    PARTITION_SCHEMA,
    ROW_GROUP_MAX,
    ROW_GROUP_MIN,
    ROWS_PER_FILE,
    export_schema,
)
from chengxin.engine.plan import attribute_columns  # noqa: E402
from chengxin.engine.spark_backend import local_session, spark_engine, write_plan  # noqa: E402


def _cpu_seconds() -> float:
    """CPU time of this process and its children (the Spark JVM), so far."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a child that just ended
            total += sum(child.cpu_times()[:2])
    return total


def _rss_bytes() -> int:
    """Resident memory of this process and its children (the Spark JVM), now."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


@contextmanager
def timed(into: dict[str, Any], name: str, records: int, cores: int) -> Iterator[None]:
    """Wall and CPU time, throughput, peak RSS (with the JVM) and load of a block, in ``into``."""
    peak = [_rss_bytes()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    load_before = os.getloadavg()[0]
    sampler.start()
    start, cpu = time.perf_counter(), _cpu_seconds()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        cpu_seconds = _cpu_seconds() - cpu
        done.set()
        sampler.join()
        into[name] = {
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu_seconds, 2),
            "records_per_s": round(records / seconds),
            "records_per_s_per_core": round(records / seconds / cores),
            "records_per_cpu_s": round(records / cpu_seconds) if cpu_seconds else None,
            "rss_peak_mb": round(max(peak[0], _rss_bytes()) / 2**20),
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        }


def write_export_like(policy: Policy, records: pa.Table, subjects: pa.Table, out: Path) -> None:
    """The records as ``chengxin export`` lays them out (domain and month partitions)."""
    domains = {t.code: t.domain for t in policy.record_types}
    domain = pc.cast(records.column("type"), pa.string())
    domain = pa.array([domains[t] for t in domain.to_pylist()], pa.string())
    month = pc.strftime(records.column("occurred_at"), "%Y-%m")
    table = records.append_column("domain", domain).append_column("month", month)
    table = table.cast(export_schema(attribute_columns(policy)))
    ds.write_dataset(
        table,
        out / "records",
        format="parquet",
        partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
        basename_template="part-{i}.parquet",
        max_rows_per_file=ROWS_PER_FILE,
        min_rows_per_group=ROW_GROUP_MIN,
        max_rows_per_group=ROW_GROUP_MAX,
    )
    (out / "subjects").mkdir()
    pq.write_table(subjects.select(["subject_id", "kind"]), out / "subjects" / "part-0.parquet")


def run_duckdb(policy: Policy, where: Path, out: Path, as_of: date, threads: int) -> None:
    """The plan on DuckDB from the Parquet files (DuckDB's own reader) to result files."""
    con = connect(threads=threads)
    try:
        for name in ("records", "subjects"):
            con.raw_sql(
                f"CREATE VIEW {name} AS SELECT * FROM read_parquet("
                f"'{where / name}/**/*.parquet', hive_partitioning = true)"
            )
        result = rescore_duckdb(policy, con.table("records"), con.table("subjects"), as_of, con=con)
    finally:
        con.disconnect()
    for part, table in (("scores", result.scores), ("memberships", result.memberships)):
        (out / part).mkdir(parents=True)
        pq.write_table(table, out / part / "part-0.parquet")


def run_spark(session: Any, policy: Policy, where: Path, out: Path, as_of: date) -> None:
    """The plan on Spark from the Parquet files to result files (what the job does)."""
    with spark_engine(session) as engine:
        records = engine.table(str(where / "records"), export_schema(attribute_columns(policy)))
        subjects = engine.table(str(where / "subjects"))
        write_plan(
            engine,
            policy,
            records,
            subjects,
            as_of,
            scores_path=str(out / "scores"),
            memberships_path=str(out / "memberships"),
        )


def read_results(out: Path) -> tuple[pa.Table, pa.Table]:
    """Result files as the engines' Arrow schemas."""
    scores = ds.dataset(out / "scores", format="parquet").to_table().cast(SCORES_SCHEMA)
    members = ds.dataset(out / "memberships", format="parquet").to_table()
    return scores, members.cast(MEMBERSHIPS_SCHEMA)


def main(argv: list[str] | None = None) -> int:
    """Generate, write, time both engines, check they agree, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 1, 31))
    parser.add_argument("--cores", type=int, default=2, help="local[N] and DuckDB threads")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--repeat", type=int, default=2, help="warm Spark and DuckDB runs")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    policy = load_policy_text(POLICY_PATH.read_text(), str(POLICY_PATH))
    n, cores, as_of = args.records, args.cores, args.as_of
    load_at_start = list(os.getloadavg())
    phases: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    try:
        with timed(phases, "generate (numpy)", n, cores):
            records, subjects = generate(policy, n, as_of, args.seed)
        with timed(phases, "write Parquet (export layout)", n, cores):
            write_export_like(policy, records, subjects, work / "export")
        parquet_bytes = sum(p.stat().st_size for p in (work / "export").rglob("*.parquet"))
        files = len(list((work / "export" / "records").rglob("*.parquet")))
        del records

        duck_runs = []
        for i in range(args.repeat):
            name = f"DuckDB run {i + 1}"
            with timed(phases, name, n, cores):
                run_duckdb(policy, work / "export", work / f"duck-{i}", as_of, cores)
            duck_runs.append(name)
        want = canonical(*read_results(work / "duck-0"))

        with timed(phases, "Spark session start", n, cores):
            session = local_session(
                f"local[{cores}]",
                shuffle_partitions=args.shuffle_partitions,
                driver_memory=args.driver_memory,
            )
        spark_runs = []
        for i in range(args.repeat + 1):
            name = "Spark run 1 (cold JVM)" if i == 0 else f"Spark run {i + 1} (warm)"
            with timed(phases, name, n, cores):
                run_spark(session, policy, work / "export", work / f"spark-{i}", as_of)
            spark_runs.append(name)
            assert_same("Spark", canonical(*read_results(work / f"spark-{i}")), want)
        session.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    duck = min((phases[k] for k in duck_runs), key=lambda p: p["seconds"])
    warm = min((phases[k] for k in spark_runs[1:]), key=lambda p: p["seconds"])
    cold = phases[spark_runs[0]]
    result = {
        "benchmark": "spark",
        "policy": policy.label,
        "records": n,
        "subjects": want[0].num_rows,
        "memberships": want[1].num_rows,
        "as_of": as_of.isoformat(),
        "cores": cores,
        "parquet": {"files": files, "bytes": parquet_bytes},
        "spark_conf": {
            "master": f"local[{cores}]",
            "spark.sql.shuffle.partitions": args.shuffle_partitions,
            "spark.driver.memory": args.driver_memory,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": {
            "pyspark": pyspark.__version__,
            "duckdb": duckdb.__version__,
            "ibis": ibis.__version__,
            "pyarrow": pa.__version__,
        },
        "phases": phases,
        "summary": {
            "duckdb_seconds": duck["seconds"],
            "spark_warm_seconds": warm["seconds"],
            "spark_cold_seconds": cold["seconds"],
            "spark_over_duckdb": round(warm["seconds"] / duck["seconds"], 2),
            "spark_cold_over_duckdb": round(cold["seconds"] / duck["seconds"], 2),
            "duckdb_records_per_s_per_core": duck["records_per_s_per_core"],
            "spark_records_per_s_per_core": warm["records_per_s_per_core"],
            "spark_over_duckdb_cpu": round(warm["cpu_seconds"] / duck["cpu_seconds"], 2),
            "duckdb_records_per_cpu_s": duck["records_per_cpu_s"],
            "spark_records_per_cpu_s": warm["records_per_cpu_s"],
            "process_peak_rss_mb": max(p["rss_peak_mb"] for p in phases.values()),
        },
        "load_average": {"start": load_at_start, "end": list(os.getloadavg())},
    }
    write_result(args.out, f"spark-{n}", result, report(result))
    return 0


def report(result: dict[str, Any]) -> str:
    """The result as a Markdown table with the ratio underneath."""
    s = result["summary"]
    lines = [
        f"Batch scoring on Spark local[{result['cores']}] and DuckDB ({result['cores']} threads), "
        f"{result['policy']}, {result['records']:,} records, {result['subjects']:,} subjects, "
        f"as of {result['as_of']}; Parquet in ({result['parquet']['files']} files, "
        f"{result['parquet']['bytes'] / 2**20:,.0f} MiB), Parquet out",
        "",
        "| phase | wall s | CPU s (Python + JVM) | records/s | records/s per core | "
        "records per CPU s | peak RSS MB (with JVM) | load before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, p in result["phases"].items():
        lines.append(
            f"| {name} | {p['seconds']:,.2f} | {p['cpu_seconds']:,.1f} | "
            f"{p['records_per_s']:,} | {p['records_per_s_per_core']:,} | "
            f"{p['records_per_cpu_s'] or 0:,} | {p['rss_peak_mb']:,} | "
            f"{p['load_before']:.1f} → {p['load_after']:.1f} |"
        )
    lines += [
        "",
        f"Spark (warm) / DuckDB = {s['spark_over_duckdb']:.2f}; "
        f"Spark (cold) / DuckDB = {s['spark_cold_over_duckdb']:.2f}; "
        f"records/s per core: Spark {s['spark_records_per_s_per_core']:,}, "
        f"DuckDB {s['duckdb_records_per_s_per_core']:,}; by CPU time Spark / DuckDB = "
        f"{s['spark_over_duckdb_cpu']:.2f}, records per CPU second: Spark "
        f"{s['spark_records_per_cpu_s']:,}, DuckDB {s['duckdb_records_per_cpu_s']:,}; "
        f"peak RSS (Python and JVM) {s['process_peak_rss_mb']:,} MB",
        f"load average {result['load_average']['start'][0]:.1f} at start, "
        f"{result['load_average']['end'][0]:.1f} at end ({result['machine']['cpus']} CPUs)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
