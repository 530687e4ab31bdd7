"""In-process ``check`` throughput on a warm database of many subjects.

Builds (or reuses) a SQLite database holding a synthetic city whose subjects
number ``--subjects``, then, in the same process run, times:

1. the fast path, :class:`chengxin.service.checker.Checker` (one query per check);
2. the baseline: the reference path, :func:`chengxin.service.subjects.check`,
   one session and transaction per check, as a straightforward service would.

Subjects are drawn from the whole population, seeded, with a share of
identifiers chengxin holds nothing on and a mix of sanctions and rewards.
Both paths must give identical decisions for the same questions (asserted).

    .venv/bin/python bench/bench_check.py --subjects 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import func, select

from chengxin.domain.identifiers import SubjectId, make_rid
from chengxin.service.checker import Checker
from chengxin.service.clock import FixedClock
from chengxin.service.importer import import_file
from chengxin.service.policies import install_policy, read_policy_source
from chengxin.service.subjects import check as reference_check
from chengxin.store.db import make_engine, migrate, transaction
from chengxin.store.schema import subjects
from chengxin.synth import CityConfig, write_feed

MEASURES = [
    ("transport.flight_booking", "airline"),
    ("transport.hsr_first_class", "rail"),
    ("hospitality.luxury_hotel", "hotel"),
    ("rental.deposit_free", "landlord"),
    ("platform.good_standing_badge", "dating_site"),
]
TODAY = date(2026, 11, 27)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(path: Path, people: int) -> None:
    """A fresh database holding a synthetic city of ``people`` people."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    clock = FixedClock(datetime(2026, 11, 27, 12, tzinfo=UTC))
    engine = make_engine(str(path))
    migrate(engine)
    with transaction(engine) as session:
        text, source = read_policy_source("national")
        install_policy(
            session,
            text=text,
            source=source,
            actor="bench",
            reason="bench",
            now=clock.now(),
        )
    feed = path.with_suffix(".feed.jsonl")
    write_feed(CityConfig(people=people, seed=11, end=date(2026, 11, 1)), feed, "jsonl")
    started = time.perf_counter()
    summary = import_file(engine, feed, clock=clock)
    print(f"built {path}: {summary.accepted} records in {time.perf_counter() - started:.1f}s")
    feed.unlink()
    engine.dispose()


def questions(path: Path, n: int, seed: int) -> list[tuple[SubjectId, str, str]]:
    """``n`` seeded (subject, measure, service) questions, 10 % about unknown people."""
    engine = make_engine(str(path))
    with transaction(engine) as session:
        total = session.execute(select(func.max(subjects.c.id))).scalar_one()
        rng = random.Random(seed)
        # Up to 30,000 known subjects, drawn from the whole table.
        ids = sorted(rng.sample(range(1, total + 1), min(n, total, 30_000)))
        rows = session.execute(
            select(subjects.c.scheme, subjects.c.value).where(subjects.c.id.in_(ids))
        ).all()
    engine.dispose()
    known = [SubjectId(r.scheme, r.value) for r in rows]
    out = []
    for i in range(n):
        if i % 10 == 9:
            sid = SubjectId("cn-rid", make_rid("110105", date(1990, 1, 1), 1 + i % 999))
        else:
            sid = known[rng.randrange(len(known))]
        measure, service = MEASURES[i % len(MEASURES)]
        out.append((sid, measure, service))
    return out


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=1_000_000)
    ap.add_argument("--checks", type=int, default=100_000)
    ap.add_argument("--baseline-checks", type=int, default=5_000)
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    # About half the synthetic population has records (446,490 subjects of 887,311
    # people at seed 11), and only they are stored: twice as many people as subjects.
    people = round(args.subjects * 1.987)
    db = args.db or Path(f"bench/results/check-{args.subjects}.sqlite")
    db.parent.mkdir(parents=True, exist_ok=True)
    if args.rebuild or not db.exists():
        build(db, people)
    engine = make_engine(str(db))
    with transaction(engine) as session:
        n_subjects = session.execute(select(func.count()).select_from(subjects)).scalar_one()
    clock = FixedClock(datetime(2026, 11, 27, 12, tzinfo=UTC))
    qs = questions(db, args.checks, seed=3)
    checker = Checker(engine, clock=clock)
    for sid, measure, service in qs[:2000]:  # warm the page cache and the snapshots
        checker.check(sid, measure, service)

    load_before = os.getloadavg()
    cpu0 = time.process_time()
    started = time.perf_counter()
    fast = [checker.check(sid, m, s) for sid, m, s in qs]
    fast_s = time.perf_counter() - started
    fast_cpu = time.process_time() - cpu0

    sample = qs[: args.baseline_checks]
    started = time.perf_counter()
    slow = []
    for sid, m, s in sample:
        with transaction(engine) as session:
            slow.append(reference_check(session, subject=sid, measure=m, service=s, clock=clock))
    slow_s = time.perf_counter() - started
    load_after = os.getloadavg()
    assert fast[: len(slow)] == slow, "the fast path must decide exactly as the reference"
    checker.close()
    engine.dispose()

    fast_rate = len(qs) / fast_s
    slow_rate = len(sample) / slow_s
    result = {
        "benchmark": "check",
        "subjects": int(n_subjects),
        "checks": len(qs),
        "fast_per_s": round(fast_rate),
        "fast_us_per_check": round(fast_s / len(qs) * 1e6, 1),
        "fast_cpu_us_per_check": round(fast_cpu / len(qs) * 1e6, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "reference_checks": len(sample),
        "reference_per_s": round(slow_rate),
        "speedup": round(fast_rate / slow_rate, 1),
        "decisions": {
            d: sum(1 for x in fast if x.outcome == d) for d in ("allow", "deny", "grant")
        },
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    out = Path("bench/results") / f"check-{args.subjects}-{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2))
    print("| path | checks | checks/s | µs/check | CPU µs/check |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| Checker (fast) | {len(qs):,} | {fast_rate:,.0f} | {fast_s / len(qs) * 1e6:.1f} | "
        f"{fast_cpu / len(qs) * 1e6:.1f} |"
    )
    print(
        f"| reference (session per check) | {len(sample):,} | {slow_rate:,.0f} | "
        f"{slow_s / len(sample) * 1e6:.1f} | |"
    )
    print(
        f"\n{n_subjects:,} subjects; speed-up {fast_rate / slow_rate:.1f}x; "
        f"peak RSS {peak_rss_mb():.0f} MB; decisions {result['decisions']}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
