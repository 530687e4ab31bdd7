"""Where an import's CPU time goes, per record: the writer's parts and the checking.

Run ``.venv/bin/python bench/import_costs.py --records 200000``. It writes a
synthetic feed, imports it into a fresh SQLite file as ``bench_import.py``
does (2 checking workers), with CPU-time counters wrapped around the
writer's parts (each insert by table, the key look-ups, the hash chain, the
stale marks, the final refresh); then checks two chunks of the same feed in
this process, to give the checking workers' cost per line. Counters are
process CPU time, so other work on the machine inflates them less than wall
time (but it does: caches are shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_import import END, fresh_db  # noqa: E402

import chengxin.service.checking as checking  # noqa: E402
import chengxin.service.importer as importer  # noqa: E402
import chengxin.service.ingest as ingest  # noqa: E402
from chengxin.domain.policy_load import load_policy_text  # noqa: E402
from chengxin.service.clock import FixedClock  # noqa: E402
from chengxin.service.policies import read_policy_source  # noqa: E402
from chengxin.store import repo  # noqa: E402
from chengxin.synth import CityConfig, people_for_records, write_feed  # noqa: E402

COST: dict[str, float] = {}


def _timed(name: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its CPU time added to ``COST[name]`` (``name`` may depend on the args)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            key = name if isinstance(name, str) else name(*args)
            COST[key] = COST.get(key, 0.0) + time.process_time() - started

    return wrapper


def instrument() -> None:
    """Wrap the writer's parts in CPU-time counters."""
    repo.Bulk.insert = _timed(lambda _self, table, *a: f"insert {table}", repo.Bulk.insert)
    repo.Bulk.rows = _timed("look-ups (keys, targets, subjects)", repo.Bulk.rows)
    importer.store_checked = _timed(
        "store_checked (all of the writer's chunk work)", importer.store_checked
    )
    ingest.mark_stale = _timed("stale marks", ingest.mark_stale)
    ingest.ledger.append_rows = _timed("ledger: hash chain + insert", ingest.ledger.append_rows)
    importer.refresh_stale = _timed("final refresh (this process's part)", importer.refresh_stale)
    checking._unpack = _timed("unpack the workers' rows", checking._unpack)


def main() -> None:
    """Run and print a Markdown table of CPU µs per record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    clock = FixedClock.on(END)
    with tempfile.TemporaryDirectory(prefix="chengxin-costs-") as tmp:
        feed = Path(tmp) / "feed.jsonl"
        cfg = CityConfig(people=people_for_records(args.records), seed=7, end=END)
        lines = write_feed(cfg, feed, "jsonl").lines
        engine = fresh_db(Path(tmp) / "import.sqlite", clock)
        instrument()
        load = os.getloadavg()[0]
        cpu = time.process_time()
        wall = time.perf_counter()
        importer.import_file(engine, feed, clock=clock, workers=2)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        engine.dispose()
        text, _ = read_policy_source("national")
        policy = load_policy_text(text, "national")
        with feed.open("rb") as fh:
            chunks = [c for _, c in zip(range(2), checking.jsonl_chunks(fh, 20_000), strict=False)]
        checked = sum(len(c) for c in chunks)
        started = time.process_time()
        for chunk in chunks:
            checking.check_chunk(chunk, policy, date(2026, 11, 1))
        worker = time.process_time() - started
    print(f"\n{lines:,} records; wall {wall:.1f}s; load average {load:.2f} at the start\n")
    print("| part (writer process) | CPU µs/record |")
    print("|---|---:|")
    for name, seconds in sorted(COST.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds / lines * 1e6:.1f} |")
    print(f"| **writer process, all** | **{cpu / lines * 1e6:.1f}** |")
    print(f"| checking (one worker, per line) | {worker / checked * 1e6:.1f} |")


if __name__ == "__main__":
    main()
