"""What a ``POST /v1/records:batch`` costs in the writer lock, in process: storing, rescoring.

Run ``.venv/bin/python bench/bench_rescore.py``. It copies the city
``bench_api.py`` builds (``bench/results/api-<people>.sqlite``, built here
if missing), checks 1,000-line batches of ``bench_api.py``'s second feed
outside the timing, then stores each in its own transaction as the batch
route does (``store_checked``, rescoring the touched subjects), and reports
the process CPU time of the whole and of ``rescore_subjects`` alone, per
record and per subject. CPU time, not wall time: other work on a shared
machine inflates it less (but it does: caches are shared).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_api  # noqa: E402

import chengxin.service.ingest as ingest  # noqa: E402
from chengxin.service.checking import check_lines  # noqa: E402
from chengxin.service.clock import SystemClock  # noqa: E402
from chengxin.service.policies import active_policy  # noqa: E402
from chengxin.store.db import make_engine, transaction  # noqa: E402


def main() -> None:
    """Copy the city, store the batches, print the costs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=20_000, help="the city bench_api.py built")
    ap.add_argument("--batches", type=int, default=20, help="1,000-line batches")
    args = ap.parse_args()
    city = bench_api.RESULTS / f"api-{args.people}.sqlite"
    if not city.exists():
        bench_api.RESULTS.mkdir(parents=True, exist_ok=True)
        bench_api.build(str(city), args.people)
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "city.sqlite")
        shutil.copy(city, db)
        lines = bench_api.ingest_lines(40_000, f"rescore-{int(time.time())}")
        engine = make_engine(db)
        with transaction(engine) as session:
            policy = active_policy(session, on=clock.today()).policy
        n = min(args.batches, len(lines) // 1000)
        batches = [
            check_lines(list(enumerate(lines[i * 1000 : (i + 1) * 1000], 1)), policy, clock.today())
            for i in range(n)
        ]
        spent = {"rescore": 0.0, "subjects": 0}
        rescore = ingest.rescore_subjects

        def timed(*a: Any, **k: Any) -> Any:
            started = time.process_time()
            try:
                return rescore(*a, **k)
            finally:
                spent["rescore"] += time.process_time() - started
                spent["subjects"] += len(k["subject_ids"])

        ingest.rescore_subjects = timed  # type: ignore[assignment]
        accepted = 0
        started = time.process_time()
        for batch in batches:
            with transaction(engine) as session:
                report = ingest.store_checked(
                    session, policy=policy, batch=batch, now=clock.now(), today=clock.today()
                )
                accepted += report.count("accepted")
        total = time.process_time() - started
        engine.dispose()
    subjects = int(spent["subjects"])
    print(
        f"{accepted:,} records in {n} batches: {total:.2f} s CPU, "
        f"{1e6 * total / max(accepted, 1):.0f} us a record stored and rescored; "
        f"rescoring {subjects:,} subjects {spent['rescore']:.2f} s, "
        f"{1e6 * spent['rescore'] / max(subjects, 1):.1f} us a subject"
    )


if __name__ == "__main__":
    main()
