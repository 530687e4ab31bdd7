"""SQLite writers taking turns against SQLite's own busy handler, in the same run.

Single-record ingest is the load where writers crowd SQLite's one write
lock: the HTTP API's two workers each run up to 16 request threads, each
ingesting one line in a transaction of its own (check, append, rescore,
commit). This bench reproduces that without HTTP: ``--processes`` processes
of ``--threads`` threads each ingest lines of a synthetic feed through
:func:`chengxin.service.ingest.ingest_batch`, one line per transaction, for
``--seconds``; every transaction's latency (from asking for the write lock
to the end of its commit) is recorded.

Two ways of waiting for the lock, interleaved ``--repeats`` times on the
same database:

* **polling** (the baseline): ``BEGIN IMMEDIATE`` straight away, and
  SQLite's busy handler sleeps and retries (1, 2, 5 ... 100 ms at a time);
* **turns**: chengxin's :mod:`chengxin.store.writer_turn` (a process lock,
  then an ``flock`` between processes) before ``BEGIN IMMEDIATE``.

Reports transactions per second, p50/p99/max latency and the ratio of
turns to polling. Results go to ``bench/results/writer-turn-<time>.json``.

    .venv/bin/python bench/bench_writer_turn.py                  # 2 × 16 threads, 3 × 2 runs
    .venv/bin/python bench/bench_writer_turn.py --seconds 5 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))


def _worker(
    db: str,
    mode: str,
    lines: list[dict[str, Any]],
    threads: int,
    seconds: float,
    start_at: float,
    out: Any,
) -> None:
    """One process: ``threads`` threads ingesting one line per transaction until the deadline."""
    if mode == "polling":
        from chengxin.store.writer_turn import WriterTurn

        # The baseline: connections without a turn (as for an in-memory database), so
        # BEGIN IMMEDIATE waits in SQLite's busy handler.
        WriterTurn.of = classmethod(lambda cls, database: None)  # type: ignore[method-assign,assignment]
    from chengxin.service.clock import SystemClock
    from chengxin.service.ingest import ingest_batch
    from chengxin.service.policies import active_policy
    from chengxin.store.db import make_engine, read_transaction, session_factory, transaction

    engine = make_engine(db)
    clock = SystemClock()
    with read_transaction(session_factory(engine)) as s:
        policy = active_policy(s, on=clock.today()).policy
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    nxt = 0
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + seconds

    def run() -> None:
        nonlocal nxt, errors
        while time.perf_counter() < deadline:
            with lock:
                i = nxt
                nxt += 1
            if i >= len(lines):
                return
            t0 = time.perf_counter()
            try:
                with transaction(engine) as session:
                    ingest_batch(session, policy=policy, lines=[(1, lines[i])], now=clock.now())
            except Exception:  # counted; the run goes on
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    engine.dispose()
    out.put((latencies, errors))


def one_run(
    db: str, mode: str, lines: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """Every process's threads for ``--seconds``; the figures of the run."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    share = len(lines) // args.processes
    start_at = time.time() + 3.0  # every process imported and ready
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                db,
                mode,
                lines[k * share : (k + 1) * share],
                args.threads,
                args.seconds,
                start_at,
                out,
            ),
        )
        for k in range(args.processes)
    ]
    for p in procs:
        p.start()
    got = [out.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join(60)
    lat = np.array([x for part, _ in got for x in part]) * 1000
    errors = sum(e for _, e in got)
    p50, p99 = np.percentile(lat, [50, 99]) if len(lat) else (0.0, 0.0)
    return {
        "mode": mode,
        "transactions": len(lat),
        "errors": errors,
        "per_s": round(len(lat) / args.seconds, 1),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(lat.max()), 1) if len(lat) else 0.0,
    }


def main() -> None:
    """Build or reuse the database, run both modes interleaved, report."""
    import bench_api

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    template = RESULTS / f"writer-turn-{args.people}.sqlite"
    if not template.exists():
        bench_api.build(str(template), args.people)
    db = str(RESULTS / "writer-turn-run.sqlite")
    for suffix in ("", "-wal", "-shm", "-writer"):
        Path(db + suffix).unlink(missing_ok=True)
    shutil.copyfile(template, db)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    lines = bench_api.ingest_lines(args.people, run_id)
    runs = []
    cursor = 0
    per_run = len(lines) // (2 * args.repeats)
    for r in range(args.repeats):
        for mode in ("polling", "turns"):  # interleaved: drift in the machine hits both
            chunk = lines[cursor : cursor + per_run]
            cursor += per_run
            res = one_run(db, mode, chunk, args)
            res["repeat"] = r + 1
            runs.append(res)
            print(
                f"{mode:8} run {r + 1}: {res['per_s']:7.1f} tx/s, p50 {res['p50_ms']:6.1f} ms, "
                f"p99 {res['p99_ms']:7.1f} ms, max {res['max_ms']:7.1f} ms, "
                f"{res['errors']} errors",
                flush=True,
            )

    def med(mode: str, key: str) -> float:
        return float(np.median([x[key] for x in runs if x["mode"] == mode]))

    summary = {
        m: {k: med(m, k) for k in ("per_s", "p50_ms", "p99_ms", "max_ms")}
        for m in ("polling", "turns")
    }
    ratios = {
        "per_s": round(summary["turns"]["per_s"] / summary["polling"]["per_s"], 2),
        "p99": round(summary["turns"]["p99_ms"] / summary["polling"]["p99_ms"], 3),
    }
    result = {
        "benchmark": "writer-turn",
        "run": run_id,
        "machine": {"cpus": os.cpu_count(), "load_avg_before": os.getloadavg()},
        "people": args.people,
        "processes": args.processes,
        "threads": args.threads,
        "seconds": args.seconds,
        "runs": runs,
        "median": summary,
        "turns_over_polling": ratios,
    }
    out = RESULTS / f"writer-turn-{run_id}.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        f"\nmedians: polling {summary['polling']['per_s']:.1f} tx/s p99 "
        f"{summary['polling']['p99_ms']:.1f} ms; turns {summary['turns']['per_s']:.1f} tx/s p99 "
        f"{summary['turns']['p99_ms']:.1f} ms; turns ÷ polling: rate {ratios['per_s']}×, "
        f"p99 {ratios['p99']}×; results in {out}"
    )


if __name__ == "__main__":
    main()
