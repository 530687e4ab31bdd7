"""Benchmark importing a JSON Lines feed into SQLite, end to end, against the single-record path.

Run ``.venv/bin/python bench/bench_import.py --records 1000000`` (or
``--records 200000`` for a quick run). In this one process it:

1. writes a synthetic city's feed of about N lines (:func:`chengxin.synth.write_feed`,
   people sized with :func:`chengxin.synth.people_for_records`);
2. creates a fresh SQLite database (WAL), migrates it and activates the
   national pack, as ``chengxin demo`` does;
3. times :func:`chengxin.service.importer.import_file` on the whole feed:
   checking (on worker processes), ledger and records in chunks of one
   transaction each, the stale marks, and the final rescore of every stale
   subject (:func:`chengxin.service.refresh.refresh_stale`);
4. as the same-run baseline, times the single-record path on the first
   ``--sample`` lines into a second fresh database: one
   :func:`~chengxin.service.ingest.ingest_batch` call and one transaction per
   line, rescoring included, as the API does for one record.

Peak RSS is sampled (psutil, every 20 ms) for this process and for this
process with its children (the checking workers). The machine is shared, so
the load average is reported before and after. Results go to
``bench/results/`` as JSON and to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chengxin.service.checking import default_workers, parse_jsonl_line  # noqa: E402
from chengxin.service.clock import FixedClock  # noqa: E402
from chengxin.service.importer import import_file  # noqa: E402
from chengxin.service.ingest import ingest_batch  # noqa: E402
from chengxin.service.policies import (  # noqa: E402
    active_policy,
    install_policy,
    read_policy_source,
)
from chengxin.store.db import make_engine, migrate, transaction  # noqa: E402
from chengxin.synth import CityConfig, people_for_records, write_feed  # noqa: E402

END = date(2026, 11, 1)


class RssSampler:
    """Peak RSS of this process, and of it with its children, sampled in a thread."""

    def __init__(self, every: float = 0.02) -> None:
        self._proc = psutil.Process()
        self._every = every
        self._stop = threading.Event()
        self.start_mb = self._proc.memory_info().rss / 2**20
        self.peak_mb = self.start_mb
        self.peak_total_mb = self.start_mb
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                own = self._proc.memory_info().rss
                kids = 0
                for child in self._proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):  # a worker that just ended
                        kids += child.memory_info().rss
            except psutil.Error:  # pragma: no cover - the process is ending
                return
            self.peak_mb = max(self.peak_mb, own / 2**20)
            self.peak_total_mb = max(self.peak_total_mb, (own + kids) / 2**20)
            self._stop.wait(self._every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Phase:
    """One timed phase."""

    name: str
    records: int
    seconds: float
    rss_peak_mb: float | None = None
    rss_peak_with_children_mb: float | None = None
    note: str = ""

    @property
    def per_s(self) -> float:
        """Records per second."""
        return self.records / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.per_s),
            "rss_peak_mb": None if self.rss_peak_mb is None else round(self.rss_peak_mb, 1),
            "rss_peak_with_children_mb": None
            if self.rss_peak_with_children_mb is None
            else round(self.rss_peak_with_children_mb, 1),
            "note": self.note,
        }


def fresh_db(path: Path, clock: FixedClock) -> Any:
    """A migrated SQLite database at ``path`` with the national pack active."""
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    engine = make_engine(str(path))
    migrate(engine)
    text, source = read_policy_source("national")
    with transaction(engine) as session:
        install_policy(
            session,
            text=text,
            source=source,
            actor="bench",
            reason="import benchmark",
            now=clock.now(),
        )
    return engine


def counts(engine: Any) -> dict[str, int]:
    """Rows per table that the import fills, and stale snapshots left."""
    out = {}
    with transaction(engine) as session:
        conn = session.connection().connection.dbapi_connection
        for table in ("ledger", "records", "subjects", "snapshots", "memberships", "outbox"):
            out[table] = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        out["stale"] = int(
            conn.execute("SELECT count(*) FROM snapshots WHERE stale = 1").fetchone()[0]
        )
    return out


def bench_import(
    feed: Path, db: Path, clock: FixedClock, *, workers: int, chunk: int
) -> tuple[Phase, Phase, dict[str, Any]]:
    """Time import_file end to end; split at the last chunk's commit."""
    engine = fresh_db(db, clock)
    last_chunk = [0.0]

    def progress(_: int) -> None:
        last_chunk[0] = time.perf_counter()

    with RssSampler() as rss:
        cpu0 = time.process_time()
        started = time.perf_counter()
        summary = import_file(
            engine, feed, clock=clock, chunk_size=chunk, workers=workers, progress=progress
        )
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    rows = counts(engine)
    engine.dispose()
    assert summary.rejected == 0 and rows["stale"] == 0, (summary.as_dict(), rows)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = Phase(
        "import_file, end to end",
        summary.lines,
        seconds,
        rss.peak_mb,
        rss.peak_total_mb,
        f"{workers} checking worker(s), chunks of {chunk:,}; parent CPU {cpu:.1f}s",
    )
    refresh = Phase(
        "  of which: final rescore of stale subjects",
        summary.rescore.subjects,
        seconds - (last_chunk[0] - started),
        note="records/s here: subjects/s",
    )
    detail = {
        "summary": summary.as_dict(),
        "rows": rows,
        "parent_cpu_seconds": round(cpu, 2),
        "children_cpu_seconds": round(children.ru_utime + children.ru_stime, 2),
    }
    return total, refresh, detail


def bench_single(feed: Path, db: Path, clock: FixedClock, sample: int) -> Phase:
    """The single-record path: one ingest_batch and one transaction per line."""
    engine = fresh_db(db, clock)
    lines = []
    with feed.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            lines.append((number, parse_jsonl_line(raw)))
            if len(lines) >= sample:
                break
    with transaction(engine) as session:
        policy = active_policy(session, on=clock.today()).policy
    with RssSampler() as rss:
        started = time.perf_counter()
        for line in lines:
            with transaction(engine) as session:
                ingest_batch(
                    session, policy=policy, lines=[line], now=clock.now(), today=clock.today()
                )
        seconds = time.perf_counter() - started
    engine.dispose()
    return Phase(
        "ingest_batch, one line per transaction",
        len(lines),
        seconds,
        rss.peak_mb,
        note="the API's single-record path (rescoring in the transaction)",
    )


def main() -> None:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--sample", type=int, default=2_000, help="lines for the baseline")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: tmp)")
    args = parser.parse_args()

    clock = FixedClock.on(END)
    with tempfile.TemporaryDirectory(prefix="chengxin-bench-") as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        feed = work / "feed.jsonl"
        load_before = os.getloadavg()
        started = time.perf_counter()
        cfg = CityConfig(people=people_for_records(args.records), seed=args.seed, end=END)
        written = write_feed(cfg, feed, "jsonl")
        gen = Phase("write the feed (synth)", written.lines, time.perf_counter() - started)
        total, refresh, detail = bench_import(
            feed, work / "import.sqlite", clock, workers=args.workers, chunk=args.chunk
        )
        single = bench_single(feed, work / "single.sqlite", clock, args.sample)
        load_after = os.getloadavg()

    ratio = total.per_s / single.per_s if single.per_s else 0.0
    phases = [gen, total, refresh, single]
    result = {
        "benchmark": "import",
        "records": written.lines,
        "feed_bytes": written.bytes,
        "people": cfg.people,
        "workers": args.workers,
        "chunk": args.chunk,
        "speedup_over_single_record_path": round(ratio, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "sqlite": __import__("sqlite3").sqlite_version,
        },
        "phases": [p.as_dict() for p in phases],
        **detail,
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    path = out_dir / f"import-{written.lines}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"\n## Import benchmark: {written.lines:,} records, {args.workers} worker(s)\n")
    print("| phase | records | seconds | records/s | peak RSS (MB) | with workers (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for p in phases:
        rss = "" if p.rss_peak_mb is None else f"{p.rss_peak_mb:,.0f}"
        kids = "" if p.rss_peak_with_children_mb is None else f"{p.rss_peak_with_children_mb:,.0f}"
        print(f"| {p.name} | {p.records:,} | {p.seconds:.2f} | {p.per_s:,.0f} | {rss} | {kids} |")
    cpu = detail["parent_cpu_seconds"] + detail["children_cpu_seconds"]
    print(
        f"\nimport vs single-record path: **{ratio:.1f}×**; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)"
    )
    print(
        f"CPU: {detail['parent_cpu_seconds']:.1f}s in this process, "
        f"{detail['children_cpu_seconds']:.1f}s in its children "
        f"({1e6 * cpu / written.lines:.0f} µs per record)"
    )
    print(f"results: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
