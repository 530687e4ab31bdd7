"""Rescoring everyone: the batch path, for policy changes, time travel and nightly refresh.

* As of today (the default), every subject is marked stale in one
  transaction and :func:`chengxin.service.refresh.refresh_stale` rescores them
  a chunk per transaction, with the batch engine (``duckdb``) or the pure
  scorer (``python``); results go through the real-time path's diffing, so
  notifications go out only for what changed, and a run that dies half way
  leaves the rest stale (readers rescore stale subjects before answering).
  With ``spark``, everyone is exported, scored by the Spark job on a local
  session and loaded back as ``load-results`` does
  (:func:`chengxin.service.load_results.rescore_spark`): all or nothing.
* As of another date (time travel), nothing is written: everyone is scored
  under the policy in force on that date and the grade and list counts are
  reported.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import date
from typing import Any

from sqlalchemy import Engine, select

from chengxin.domain.scoring import score
from chengxin.service.clock import Clock
from chengxin.service.errors import Invalid
from chengxin.service.policies import active_policy
from chengxin.service.refresh import refresh_stale
from chengxin.service.rescore import mark_stale
from chengxin.store import repo
from chengxin.store.db import transaction
from chengxin.store.schema import subjects

ENGINES = ("duckdb", "python", "spark")
"""The engines ``rescore_all`` takes (``spark`` needs the spark extra and Java 17)."""


def _all_ids(engine: Engine) -> list[int]:
    with transaction(engine) as session:
        return [int(r[0]) for r in session.execute(select(subjects.c.id).order_by(subjects.c.id))]


def _report_pure(engine: Engine, day: date, chunk: int) -> tuple[Any, Counter[str], Counter[str]]:
    with transaction(engine) as session:
        policy = active_policy(session, on=day).policy
    grades: Counter[str] = Counter()
    lists: Counter[str] = Counter()
    ids = _all_ids(engine)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        with transaction(engine) as session:
            facts = repo.record_facts(session, part)
        for sid in part:
            res = score(policy, facts.get(sid, ()), day)
            grades[res.grade] += 1
            lists.update(res.lists.keys())
    return policy, grades, lists


def _report_duckdb(engine: Engine, day: date) -> tuple[Any, Counter[str], Counter[str]]:
    import pyarrow as pa

    from chengxin.service.refresh import Inputs, score_inputs
    from chengxin.store.repo import Bulk

    with transaction(engine) as session:
        policy = active_policy(session, on=day).policy
        bulk = Bulk(session)
        subj = bulk.rows("SELECT id, kind FROM subjects ORDER BY id", ())
        recs = bulk.rows(
            "SELECT id, subject_id, type, occurred_at, status, attributes FROM records "
            "WHERE status IN ('active', 'disputed')",
            (),
        )
    cols: list[Any] = list(zip(*recs, strict=True)) if recs else [()] * 6
    inputs = Inputs(
        0,
        pa.table(
            {
                "subject_id": pa.array([r[0] for r in subj], pa.int64()),
                "kind": pa.array([r[1] for r in subj], pa.string()),
            }
        ),
        pa.table(
            {
                "record_id": pa.array(cols[0], pa.int64()),
                "subject_id": pa.array(cols[1], pa.int64()),
                "type": pa.array(cols[2], pa.string()),
                "occurred_at": pa.array([str(d) for d in cols[3]], pa.string()),
                "status": pa.array(cols[4], pa.string()),
                "attributes": pa.array(cols[5], pa.string()),
            }
        ),
    )
    batch = score_inputs(policy, day, inputs)
    grades = Counter(batch.scores.column("grade").to_pylist())
    lists = Counter(batch.memberships.column("list_code").to_pylist())
    return policy, grades, lists


def _report_spark(
    engine: Engine, day: date, clock: Clock
) -> tuple[Any, Counter[str], Counter[str]]:
    import shutil
    import tempfile
    from pathlib import Path

    from chengxin.engine.export import export_parquet
    from chengxin.engine.spark_backend import local_session
    from chengxin.engine.spark_job import run_job

    with transaction(engine) as session:
        policy = active_policy(session, on=day).policy
    base = Path(tempfile.mkdtemp(prefix="chengxin-spark-"))
    try:
        export_parquet(engine, base / "export", policy=policy, as_of=day, now=clock.now())
        done = run_job(local_session(), base / "export", as_of=day, now=clock.now)
        scores, memberships = done.tables()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    grades = Counter(scores.column("grade").to_pylist())
    return policy, grades, Counter(memberships.column("list_code").to_pylist())


def rescore_all(
    engine: Engine,
    *,
    clock: Clock,
    as_of: date | None = None,
    engine_name: str = "duckdb",
    chunk: int = 20_000,
) -> dict[str, Any]:
    """Rescore every subject (today: stored; another date: reported only)."""
    if engine_name not in ENGINES:
        raise Invalid(f"unknown engine {engine_name!r}: use {' or '.join(ENGINES)}")
    started = time.perf_counter()
    today = clock.today()
    day = as_of or today
    if day != today:
        if engine_name == "duckdb":
            policy, grades, lists = _report_duckdb(engine, day)
        elif engine_name == "spark":
            policy, grades, lists = _report_spark(engine, day, clock)
        else:
            policy, grades, lists = _report_pure(engine, day, chunk)
        return {
            "engine": engine_name,
            "policy": policy.label,
            "as_of": day.isoformat(),
            "stored": False,
            "subjects": sum(grades.values()),
            "grades": dict(grades),
            "lists": dict(lists),
            "grade_changes": 0,
            "entered": 0,
            "left": 0,
            "seconds": time.perf_counter() - started,
        }
    if engine_name == "spark":
        from chengxin.service.load_results import rescore_spark

        return {"stored": True, **rescore_spark(engine, clock=clock, as_of=day)}
    ids = _all_ids(engine)
    with transaction(engine) as session:
        policy = active_policy(session, on=day).policy
        mark_stale(session, policy=policy, subject_ids=ids, as_of=day, now=clock.now())
    total = refresh_stale(engine, clock=clock, use_engine=engine_name == "duckdb", chunk=chunk)
    return {
        "engine": engine_name,
        "policy": policy.label,
        "as_of": day.isoformat(),
        "stored": True,
        "subjects": total.subjects,
        "grade_changes": total.grade_changes,
        "entered": total.entered,
        "left": total.left,
        "seconds": time.perf_counter() - started,
    }
