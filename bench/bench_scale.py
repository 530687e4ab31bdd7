"""Benchmark the batch plan on DuckDB at national scale: 100M records from Parquet on disk.

Run ``.venv/bin/python bench/bench_scale.py --records 100000000`` (``--records
2000000`` for a quick run). The record set is ``bench_batch.py``'s (the same
mix of kinds, types, statuses, dates and attributes; 1.6 records a subject),
but drawn and written to Parquet one chunk at a time (``--chunk`` records,
default 5M), so the generator never holds more than one chunk: the files go
to ``--work`` (default ``bench/results/scale-work``) and are kept for the
next run with the same size and seed unless ``--regenerate``.

Then, in this one process, on one DuckDB connection with ``memory_limit``
and a ``temp_directory`` under the work directory (DuckDB spills there),
it times, interleaved and ``--repeat`` times each:

1. the Ibis plan (:func:`chengxin.engine.plan.build_plan` compiled by Ibis's
   DuckDB backend): scores written to Parquet with ``COPY``, then the
   memberships read back from those scores, as the batch job does;
2. the hand-written DuckDB SQL for the same policy (``batch_baselines``),
   on the same views, written to Parquet the same way;

and checks that both give the same rows (counts, and ``EXCEPT ALL`` both
ways, in DuckDB). pandas and the rule engine are left out at this size. It
reports wall and CPU time, records per second per core, the plan/SQL ratio,
peak RSS of the process (sampled every 10 ms), the most bytes DuckDB had
spilled, and the load average before and after each run (others may share
the machine). Results go to ``bench/results/`` as JSON and to stdout as a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import ibis
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_baselines import NATIONAL_SQL_MEMBERSHIPS, NATIONAL_SQL_SCORES  # noqa: E402
from bench_batch import (  # noqa: E402
    POLICY_PATH,
    draw_kinds,
    draw_records,
    subjects_for,
    subjects_table,
    write_result,
)

from chengxin.domain.policy import Policy  # noqa: E402
from chengxin.domain.policy_load import load_policy_text  # noqa: E402
from chengxin.engine.duckdb_backend import connect  # noqa: E402
from chengxin.engine.plan import build_plan  # noqa: E402

ROW_GROUP = 1 << 20
"""Rows per Parquet row group in the generated files (as the export's maximum)."""


# -- the record set, chunk by chunk ----------------------------------------------------


def write_record_set(
    policy: Policy, n_records: int, as_of: date, seed: int, chunk: int, where: Path
) -> dict[str, Any]:
    """Draw the record set chunk by chunk into ``where/records`` and ``where/subjects``.

    Subjects' kinds are drawn once (one byte a subject); each chunk draws its
    records' subjects uniformly from all of them, as ``bench_batch.generate``
    does for the whole set at once.
    """
    rng = np.random.default_rng(seed)
    kinds = draw_kinds(rng, subjects_for(n_records)).astype(np.int8)
    for sub in ("records", "subjects"):
        (where / sub).mkdir(parents=True)
    for i, first in enumerate(range(0, n_records, chunk)):
        size = min(chunk, n_records - first)
        subject_of = rng.integers(0, kinds.size, size=size)
        table = draw_records(policy, rng, kinds, subject_of, as_of, first_id=first)
        pq.write_table(table, where / "records" / f"part-{i:04d}.parquet", row_group_size=ROW_GROUP)
        del table, subject_of
    schema = subjects_table(kinds[:1]).schema
    with pq.ParquetWriter(where / "subjects" / "part-0.parquet", schema) as writer:
        for first in range(0, kinds.size, chunk):
            part = subjects_table(kinds[first : first + chunk], first_id=first)
            writer.write_table(part, row_group_size=ROW_GROUP)
    return {"records": n_records, "subjects": int(kinds.size), **tree_size(where)}


def tree_size(where: Path) -> dict[str, int]:
    """Files and bytes under ``where``."""
    files = [p for p in where.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def dir_bytes(where: Path) -> int:
    """Bytes of the files directly under ``where`` (0 if it is gone); cheap enough to poll."""
    total = 0
    try:
        with os.scandir(where) as entries:
            for entry in entries:
                try:
                    total += entry.stat().st_size if entry.is_file() else dir_bytes(Path(entry))
                except FileNotFoundError:  # spilled and freed as we looked
                    continue
    except FileNotFoundError:
        return 0
    return total


# -- measuring ---------------------------------------------------------------------------


@contextmanager
def measured(
    phases: list[dict[str, Any]], name: str, records: int, threads: int, spill: Path | None
) -> Iterator[dict[str, Any]]:
    """Time a block; sample peak RSS every 10 ms and DuckDB's spill directory every 0.5 s."""
    proc = psutil.Process()
    rss_start = proc.memory_info().rss
    peak = {"rss": rss_start, "spill": 0}
    done = threading.Event()

    def sample() -> None:
        ticks = 0
        while not done.wait(0.01):
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            ticks += 1
            if spill is not None and ticks % 50 == 0:
                peak["spill"] = max(peak["spill"], dir_bytes(spill))

    sampler = threading.Thread(target=sample, daemon=True)
    load_before = os.getloadavg()[0]
    sampler.start()
    start, cpu = time.perf_counter(), time.process_time()
    phase: dict[str, Any] = {"name": name}
    try:
        yield phase
    finally:
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu
        done.set()
        sampler.join()
        phase.update(
            seconds=round(seconds, 3),
            cpu_seconds=round(cpu_seconds, 2),
            records_per_s=round(records / seconds),
            records_per_s_per_core=round(records / seconds / threads),
            rss_start_mb=round(rss_start / 2**20),
            rss_peak_mb=round(peak["rss"] / 2**20),
            spill_peak_mb=round(peak["spill"] / 2**20),
            load_before=round(load_before, 2),
            load_after=round(os.getloadavg()[0], 2),
        )
        phases.append(phase)


# -- the two contenders ------------------------------------------------------------------


def open_duckdb(data: Path, threads: int, memory_limit: str, spill: Path) -> Any:
    """An Ibis DuckDB connection with ``records`` and ``subjects`` as views on the files."""
    con = connect(threads=threads)
    spill.mkdir(parents=True, exist_ok=True)
    con.raw_sql(f"SET memory_limit = '{memory_limit}'")
    con.raw_sql(f"SET temp_directory = '{spill}'")
    con.raw_sql("SET preserve_insertion_order = false")  # both contenders: no order promised
    for name in ("records", "subjects"):
        view(con, name, data / name / "*.parquet")
    return con


def view(con: Any, name: str, files: Path) -> None:
    """``name`` as a view on the Parquet files ``files`` (a path or a glob)."""
    con.raw_sql(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{files}')")


def copy_to(con: Any, sql: str, path: Path) -> None:
    """Run ``sql`` and write its rows to one Parquet file at ``path``."""
    con.raw_sql(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")


def run_plan(con: Any, policy: Policy, as_of: date, out: Path) -> None:
    """The Ibis plan: scores to Parquet, then memberships from the written scores."""
    out.mkdir(parents=True)
    plan = build_plan(policy, con.table("records"), con.table("subjects"), as_of)
    copy_to(con, con.compile(plan.scores), out / "scores.parquet")
    view(con, "plan_scores", out / "scores.parquet")
    members = plan.memberships_from(con.table("plan_scores"))
    copy_to(con, con.compile(members), out / "memberships.parquet")


def run_sql(con: Any, as_of: date, out: Path) -> None:
    """The hand-written SQL: scores to Parquet, then memberships from the written scores."""
    out.mkdir(parents=True)
    literal = f"DATE '{as_of.isoformat()}'"
    copy_to(con, NATIONAL_SQL_SCORES.replace("$as_of", literal), out / "scores.parquet")
    view(con, "sql_scores", out / "scores.parquet")
    copy_to(con, NATIONAL_SQL_MEMBERSHIPS.replace("$as_of", literal), out / "memberships.parquet")


def differences(con: Any, got: Path, want: Path) -> dict[str, Any]:
    """Rows of each result in one directory and not the other (with multiplicity), by DuckDB."""
    out: dict[str, Any] = {}
    columns = {
        "scores": "subject_id, score::BIGINT, grade::VARCHAR, next_change::DATE",
        "memberships": "subject_id, list_code::VARCHAR, kind::VARCHAR, since::DATE, until::DATE",
    }
    for part, cols in columns.items():
        a = f"SELECT {cols} FROM read_parquet('{got / part}.parquet')"
        b = f"SELECT {cols} FROM read_parquet('{want / part}.parquet')"
        rows = [con.raw_sql(f"SELECT count(*) FROM ({q})").fetchone()[0] for q in (a, b)]
        only = [
            con.raw_sql(f"SELECT count(*) FROM ({x} EXCEPT ALL {y})").fetchone()[0]
            for x, y in ((a, b), (b, a))
        ]
        out[part] = {"rows": rows, "only_in_plan": only[0], "only_in_sql": only[1]}
    return out


def due_to_change(con: Any, run: Path, as_of: date) -> dict[str, int]:
    """Subjects whose score or lists change with time alone within 1, 7 and 30 days."""
    sql = ", ".join(
        f"count(*) FILTER (WHERE next_change <= DATE '{as_of.isoformat()}' + {d}) AS d{d}"
        for d in (1, 7, 30)
    )
    row = con.raw_sql(f"SELECT {sql} FROM read_parquet('{run / 'scores.parquet'}')").fetchone()
    return {str(d): int(n) for d, n in zip((1, 7, 30), row, strict=True)}


# -- driver ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Write the record set (or reuse it), time plan and SQL, check they agree, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--chunk", type=int, default=5_000_000, help="records drawn at a time")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 1, 31))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--repeat", type=int, default=2, help="runs of plan and SQL; best kept")
    parser.add_argument("--memory-limit", default="8GB", help="DuckDB's memory_limit")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "scale-work")
    parser.add_argument("--regenerate", action="store_true", help="draw the record set again")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    policy = load_policy_text(POLICY_PATH.read_text(), str(POLICY_PATH))
    n, threads, as_of = args.records, args.threads, args.as_of
    load_at_start = list(os.getloadavg())
    disk_free_gb = round(shutil.disk_usage(args.work.parent).free / 2**30, 1)
    phases: list[dict[str, Any]] = []
    key = f"records={n} seed={args.seed} chunk={args.chunk} as_of={as_of.isoformat()}"
    data, spill, runs = args.work / "data", args.work / "spill", args.work / "runs"
    marker = data / "done.json"
    if args.regenerate or not marker.exists() or json.loads(marker.read_text())["key"] != key:
        shutil.rmtree(data, ignore_errors=True)
        with measured(phases, "draw and write Parquet (chunked)", n, threads, None) as ph:
            dataset = write_record_set(policy, n, as_of, args.seed, args.chunk, data)
        ph["note"] = f"{args.chunk:,} records a chunk"
        marker.write_text(json.dumps({"key": key, **dataset}) + "\n")
    dataset = json.loads(marker.read_text())
    shutil.rmtree(runs, ignore_errors=True)

    con = open_duckdb(data, threads, args.memory_limit, spill)
    plan_runs, sql_runs = [], []
    for i in range(args.repeat):  # interleaved, so a noisy neighbour hits both alike
        with measured(phases, f"Ibis plan on DuckDB, run {i + 1}", n, threads, spill) as ph:
            run_plan(con, policy, as_of, runs / f"plan-{i}")
        plan_runs.append(ph)
        with measured(phases, f"hand-written SQL, run {i + 1}", n, threads, spill) as ph:
            run_sql(con, as_of, runs / f"sql-{i}")
        sql_runs.append(ph)
    checks = differences(con, runs / "plan-0", runs / "sql-0")
    changing = due_to_change(con, runs / "plan-0", as_of)
    result_size = tree_size(runs / "plan-0")
    con.disconnect()
    shutil.rmtree(runs, ignore_errors=True)
    for part, c in checks.items():
        if c["rows"][0] != c["rows"][1] or c["only_in_plan"] or c["only_in_sql"]:
            raise AssertionError(f"plan and SQL {part} differ: {c}")

    plan = min(plan_runs, key=lambda p: p["seconds"])
    sql = min(sql_runs, key=lambda p: p["seconds"])
    result = {
        "benchmark": "scale",
        "policy": policy.label,
        "records": n,
        "subjects": dataset["subjects"],
        "as_of": as_of.isoformat(),
        "threads": threads,
        "input": {"files": dataset["files"], "bytes": dataset["bytes"], "path": str(data)},
        "results": {"bytes": result_size["bytes"], **checks},
        "subjects_changing_within_days": changing,
        "duckdb_settings": {
            "memory_limit": args.memory_limit,
            "temp_directory": str(spill),
            "preserve_insertion_order": False,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "disk_free_gb_at_start": disk_free_gb,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": {
            "duckdb": duckdb.__version__,
            "ibis": ibis.__version__,
            "pyarrow": pa.__version__,
        },
        "phases": phases,
        "summary": {
            "plan_seconds": plan["seconds"],
            "sql_seconds": sql["seconds"],
            "plan_over_sql": round(plan["seconds"] / sql["seconds"], 3),
            "plan_over_sql_cpu": round(plan["cpu_seconds"] / sql["cpu_seconds"], 3),
            "plan_records_per_s_per_core": plan["records_per_s_per_core"],
            "sql_records_per_s_per_core": sql["records_per_s_per_core"],
            "target": "plan / SQL <= 1.3",
        },
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average": {"start": load_at_start, "end": list(os.getloadavg())},
    }
    write_result(args.out, f"scale-{n}", result, report(result))
    return 0


def report(result: dict[str, Any]) -> str:
    """The result as a Markdown table with the ratio underneath."""
    s = result["summary"]
    lines = [
        f"Batch scoring at scale, {result['policy']}, {result['records']:,} records, "
        f"{result['subjects']:,} subjects, as of {result['as_of']}, {result['threads']} DuckDB "
        f"threads, memory_limit {result['duckdb_settings']['memory_limit']}; Parquet in "
        f"({result['input']['files']} files, {result['input']['bytes'] / 2**30:,.2f} GiB), "
        "Parquet out",
        "",
        "| phase | wall s | CPU s | records/s | records/s per core | peak RSS MB | "
        "spilled MB | load before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in result["phases"]:
        lines.append(
            f"| {p['name']} | {p['seconds']:,.1f} | {p['cpu_seconds']:,.1f} | "
            f"{p['records_per_s']:,} | {p['records_per_s_per_core']:,} | {p['rss_peak_mb']:,} | "
            f"{p['spill_peak_mb']:,} | {p['load_before']:.1f} → {p['load_after']:.1f} |"
        )
    lines += [
        "",
        f"plan / SQL = {s['plan_over_sql']:.2f} by wall time (target ≤ 1.3), "
        f"{s['plan_over_sql_cpu']:.2f} by CPU time; records/s per core: plan "
        f"{s['plan_records_per_s_per_core']:,}, SQL {s['sql_records_per_s_per_core']:,}",
        f"results agree: {result['results']['scores']['rows'][0]:,} scores, "
        f"{result['results']['memberships']['rows'][0]:,} memberships, none only in one",
        "subjects whose score or lists change with time alone within 1 / 7 / 30 days: "
        + " / ".join(f"{n:,}" for n in result["subjects_changing_within_days"].values()),
        f"load average {result['load_average']['start'][0]:.1f} at start, "
        f"{result['load_average']['end'][0]:.1f} at end ({result['machine']['cpus']} CPUs); "
        f"process peak RSS {result['process_peak_rss_mb']:,} MB",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
