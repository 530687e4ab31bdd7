"""Benchmark batch rescoring from the SQLite ledger, against the plan's pure compute, in one run.

Run ``.venv/bin/python bench/bench_ledger.py --records 1000000``. In this one
process it:

1. builds (or reuses, under ``bench/results/``) a SQLite ledger of about N
   records the way a deployment fills one: a synthetic city's feed imported
   with :func:`chengxin.service.importer.import_file` (ledger, hash chain,
   records projection, snapshots);
2. times the whole batch path as ``chengxin rescore`` runs it,
   :func:`chengxin.service.batch.rescore_all` with DuckDB: every subject marked
   stale, the stale subjects and their records read over ADBC in a child
   process, the plan run, and the results written back through the
   real-time path's diffing, a chunk per transaction;
3. times, in a child process as the batch path does, the two phases alone:
   the ADBC read of the ledger's records into Arrow, and the plan's pure
   compute on that Arrow (JSON attributes extracted, the Ibis plan on
   DuckDB) -- the baseline of the ratio.

Peak RSS is sampled for this process with its children. The load average is
reported before and after, since the machine may be shared. Results go to
``bench/results/`` as JSON and to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_import import END, RssSampler, counts, fresh_db  # noqa: E402

from chengxin.service.batch import rescore_all  # noqa: E402
from chengxin.service.clock import FixedClock  # noqa: E402
from chengxin.service.importer import import_file  # noqa: E402
from chengxin.service.policies import active_policy  # noqa: E402
from chengxin.service.refresh import _adbc_read, _score  # noqa: E402
from chengxin.store.db import make_engine, transaction  # noqa: E402
from chengxin.synth import CityConfig, people_for_records, write_feed  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def build_ledger(records: int, clock: FixedClock) -> Path:
    """A SQLite ledger of about ``records`` imported records (cached by size)."""
    db = RESULTS / f"ledger-{records}.sqlite"
    if db.exists():
        return db
    feed = RESULTS / f"ledger-{records}.jsonl"
    people = people_for_records(records)
    write_feed(CityConfig(people=people, seed=11, end=END), feed, "jsonl")
    tmp = db.with_suffix(".building.sqlite")
    engine = fresh_db(tmp, clock)
    started = time.perf_counter()
    summary = import_file(engine, feed, clock=clock)
    print(
        f"built {tmp.name}: {summary.accepted:,} records in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(tmp) + suffix)
        if src.exists():
            src.rename(Path(str(db) + suffix))
    feed.unlink()
    return db


def _phases(path: str, clock: FixedClock, send: Any) -> None:
    """In a child: time the ADBC read and the pure compute of every subject (all stale)."""
    engine = make_engine(path)
    with transaction(engine) as session:
        policy = active_policy(session, on=clock.today()).policy
    engine.dispose()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    inputs = _adbc_read(path)
    t1 = time.perf_counter()
    cpu1 = time.process_time()
    batch = _score(policy, clock.today(), inputs)
    t2 = time.perf_counter()
    cpu2 = time.process_time()
    send.send(
        {
            "records_read": inputs.records.num_rows,
            "subjects_read": inputs.subjects.num_rows,
            "read_s": t1 - t0,
            "read_cpu_s": cpu1 - cpu0,
            "compute_s": t2 - t1,
            "compute_cpu_s": cpu2 - cpu1,
            "scored": batch.scores.num_rows,
            "memberships": batch.memberships.num_rows,
        }
    )


def time_phases(path: Path, clock: FixedClock) -> dict[str, Any]:
    """Run :func:`_phases` in a forked child, as the batch path reads SQLite."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_phases, args=(str(path), clock, send))
    proc.start()
    send.close()
    out: dict[str, Any] = receive.recv()
    proc.join()
    return out


def main() -> None:
    """Build or reuse the ledger, time the batch path and its phases, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="end-to-end runs (best kept)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    clock = FixedClock.on(END)
    load_before = os.getloadavg()
    built = build_ledger(args.records, clock)
    work = RESULTS / "ledger-run.sqlite"
    shutil.copyfile(built, work)  # the cached ledger stays as imported
    engine = make_engine(str(work))
    sizes = counts(engine)
    phase_runs = []
    end_to_end = []
    with RssSampler() as rss:
        for _ in range(args.repeat):
            started = time.perf_counter()
            cpu = os.times()
            summary = rescore_all(engine, clock=clock, engine_name="duckdb")
            after = os.times()
            end_to_end.append(
                {
                    "seconds": time.perf_counter() - started,
                    "cpu_s": (
                        after.user + after.system + after.children_user + after.children_system
                    )
                    - (cpu.user + cpu.system + cpu.children_user + cpu.children_system),
                    "subjects": summary["subjects"],
                    "grade_changes": summary["grade_changes"],
                }
            )
            with transaction(engine) as session:  # every subject stale again, for the phases
                session.connection().exec_driver_sql("UPDATE snapshots SET stale = 1")
            phase_runs.append(time_phases(work, clock))
            with transaction(engine) as session:
                session.connection().exec_driver_sql("UPDATE snapshots SET stale = 0")
    engine.dispose()
    load_after = os.getloadavg()
    best = min(end_to_end, key=lambda r: r["seconds"])
    phases = min(phase_runs, key=lambda r: r["read_s"] + r["compute_s"])
    ratio = best["seconds"] / phases["compute_s"]
    result = {
        "benchmark": "ledger",
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "ledger": sizes,
        "end_to_end_runs": end_to_end,
        "phase_runs": phase_runs,
        "ratio_end_to_end_to_compute": round(ratio, 2),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "peak_rss_with_children_mb": round(rss.peak_total_mb, 1),
        "load_before": load_before,
        "load_after": load_after,
    }
    out = RESULTS / f"ledger-{args.records}-{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2))
    n = phases["records_read"]
    print(f"\n{sizes['records']:,} records, {sizes['subjects']:,} subjects in the ledger\n")
    print("| phase | wall s | CPU s | records/s |")
    print("|---|---:|---:|---:|")
    print(
        f"| ADBC read of the records (child) | {phases['read_s']:.2f} | "
        f"{phases['read_cpu_s']:.2f} | {n / phases['read_s']:,.0f} |"
    )
    print(
        f"| plan, pure compute (child) | {phases['compute_s']:.2f} | "
        f"{phases['compute_cpu_s']:.2f} | {n / phases['compute_s']:,.0f} |"
    )
    print(
        f"| `rescore_all`, end to end (best of {args.repeat}) | {best['seconds']:.2f} | "
        f"{best['cpu_s']:.2f} | {n / best['seconds']:,.0f} |"
    )
    print(
        f"\nend to end / pure compute: **{ratio:.2f}×**; peak RSS {rss.peak_mb:,.0f} MB "
        f"(with children {rss.peak_total_mb:,.0f} MB); load {load_before[0]:.2f} → "
        f"{load_after[0]:.2f}"
    )
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
