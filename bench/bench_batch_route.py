"""``POST /v1/records:batch`` through the ASGI app in process: CPU a record, time in collections.

The batch route as ``chengxin serve`` runs it (the start-up heap frozen out
of the collector), driven like ``bench_check_route.py``: no sockets, 1,000-line
batches of a second synthetic feed (new and known people), ``--concurrency``
at a time. Each run works on a fresh copy of ``bench_api.py``'s database (see
``bench_api.fresh_copy``), so it rescores the same histories as the last.
Reported: records/s, CPU µs a record (``/proc``, noisy on a shared host:
interleave runs), and the time the cyclic garbage collector took
(``gc.callbacks``), by generation.

    .venv/bin/python bench/bench_batch_route.py [--batches 20] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api
from bench_check_route import drive, parse

from chengxin.api.app import create_app
from chengxin.api.settings import Settings

BATCH = 1_000


class Collections:
    """Time spent in the cyclic garbage collector, by generation, while installed."""

    def __init__(self) -> None:
        self.ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` hook."""
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.ms[info["generation"]].append(1000 * (time.perf_counter() - self._started))

    def summary(self) -> str:
        """``gen0 n×, t ms; ...`` for the generations that ran."""
        return "; ".join(
            f"gen{g} {len(v)}×, {sum(v):.0f} ms (max {max(v):.1f})" for g, v in self.ms.items() if v
        )


async def main(args: argparse.Namespace) -> None:
    """Warm up with two batches, then ``--batches`` more, timed."""
    db = str(args.db)
    if not Path(db).exists():
        bench_api.build(db, args.people)
    db = bench_api.fresh_copy(db)
    run = time.strftime("%Y%m%dT%H%M%S") + str(os.getpid())
    keys = bench_api.register(db, "batch route " + run, bench_api.record_types(db))
    lines = bench_api.ingest_lines(args.ingest_people, run)
    wanted = args.batches + 2
    if len(lines) < wanted * BATCH:
        raise SystemExit(f"{len(lines):,} lines: raise --ingest-people for {wanted} batches")
    batches = [
        parse(
            bench_api.http_request(
                "POST",
                "/v1/records:batch",
                keys["provider"],
                {"records": lines[i * BATCH : (i + 1) * BATCH], "atomic": False},
            )
        )
        for i in range(wanted)
    ]
    app = create_app(Settings.from_env(db=db), freeze_gc=True)  # as serve_app
    async with app.router.lifespan_context(app):
        await drive(app, lambda i: batches[args.batches + i], 2, 1, warm_up=0)
        collections = Collections()
        gc.callbacks.append(collections)
        started = time.perf_counter()
        try:
            got = await drive(app, lambda i: batches[i], args.batches, args.concurrency, warm_up=0)
        finally:
            seconds = time.perf_counter() - started
            gc.callbacks.remove(collections)
    assert set(got["statuses"]) == {200}, got["statuses"]
    records = args.batches * BATCH
    # drive's own rate is whole requests a second: too coarse for a few batches a second
    print(
        f"{args.batches} batches of {BATCH:,} lines, {args.concurrency} at a time, on {db}: "
        f"{records / seconds:,.0f} records/s, "
        f"{got['cpu_us'] / BATCH:.1f} µs of CPU a record; collections: {collections.summary()}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=bench_api.RESULTS / "api-200000.sqlite")
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--ingest-people", type=int, default=40_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    uvloop.run(main(parser.parse_args()))
