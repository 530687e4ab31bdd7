"""Batch results into the store, checked first and written in one transaction; Spark rescoring.

A batch job (Spark on a cluster, or in process) scores an export
(:mod:`chengxin.engine.export`) and writes results with a ``_SUCCESS.json``.
:func:`load_results` writes them back only if they are exactly what the
store would compute now. In this order, each refusal an
:class:`~chengxin.service.errors.Invalid` with the reason:

1. the job finished: ``_SUCCESS.json`` is there and every result file it
   lists is there with the rows it says, and no other;
2. the results scored the store's current ledger head: an older head means
   records arrived since the export (the results are stale), a different
   hash at that sequence number means another ledger;
3. they were scored with the policy in force on their date, as the store
   has it (``active_policy(on=as_of)``), not another version;
4. every subject of the store has exactly one score.

Then the results go through :func:`chengxin.service.rescore.store_results`,
the real-time path's own diffing, in one transaction that holds the ledger
head lock from the check to the commit: snapshots are replaced, list
memberships opened and closed, and notifications appended to the outbox
only for subjects whose grade or lists changed (a measure is triggered by a
list or a grade, so its changes are among these). Any error rolls all of it
back: nothing is ever half loaded.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from chengxin.engine.export import export_parquet
from chengxin.engine.location import Location
from chengxin.engine.results import SUCCESS, Results, ResultsError, read_results
from chengxin.service.clock import Clock
from chengxin.service.errors import Invalid
from chengxin.service.policies import active_policy
from chengxin.service.rescore import RescoreSummary, store_results
from chengxin.store import ledger
from chengxin.store.db import transaction
from chengxin.store.schema import subjects

__all__ = [
    "LOAD_CHUNK",
    "BatchListing",
    "BatchScore",
    "ResultsRefused",
    "batch_scores",
    "load_results",
    "rescore_spark",
]

LOAD_CHUNK = 20_000
"""Subjects handed to ``store_results`` at a time (all in the one transaction)."""


class ResultsRefused(Invalid):
    """Batch results that must not be loaded: unfinished, stale, or from another policy."""


@dataclass(frozen=True, slots=True)
class BatchListing:
    """A list membership from a batch result, as ``store_results`` reads it."""

    kind: str
    since: date | None
    until: date | None


@dataclass(frozen=True, slots=True)
class BatchScore:
    """A subject's score from a batch result, shaped as the real-time scorer's result."""

    as_of: date
    score: int
    grade: str
    next_change: date | None
    lists: Mapping[str, BatchListing]


def batch_scores(
    scores: pa.Table, memberships: pa.Table, as_of: date, *, chunk: int = LOAD_CHUNK
) -> Iterator[dict[int, BatchScore]]:
    """Batch result tables as ``{subject_id: BatchScore}``, ``chunk`` subjects at a time."""
    lists: dict[int, dict[str, BatchListing]] = {}
    for m in memberships.to_pylist():
        lists.setdefault(m["subject_id"], {})[m["list_code"]] = BatchListing(
            m["kind"], m["since"], m["until"]
        )
    ordered = scores.sort_by("subject_id")
    for start in range(0, ordered.num_rows, chunk):
        part = ordered.slice(start, chunk).to_pylist()
        yield {
            r["subject_id"]: BatchScore(
                as_of, r["score"], r["grade"], r["next_change"], lists.get(r["subject_id"], {})
            )
            for r in part
        }


def _refuse_stale(results: Results, here: ledger.Head) -> None:
    got = results.head
    if got == here:
        return
    if got.seq < here.seq:
        raise ResultsRefused(
            f"the results scored the ledger at entry {got.seq}, the store is at entry "
            f"{here.seq}: records arrived since the export, so these scores are stale; "
            "export and score again"
        )
    raise ResultsRefused(
        f"the results scored entry {got.seq} with hash {got.entry_hash[:16]}…, which this "
        f"store (at entry {here.seq}, hash {here.entry_hash[:16]}…) does not hold: they come "
        "from another ledger"
    )


def load_results(
    engine: Engine, where: str | Path, *, clock: Clock, chunk: int = LOAD_CHUNK
) -> dict[str, Any]:
    """Check batch results (see the module docstring) and store them in one transaction.

    ``where`` is a results directory, or an export holding one under ``results``.
    """
    started = time.perf_counter()
    location = Location.of(where)
    if not location.exists(SUCCESS) and location.exists("manifest.json"):
        location = location.child("results")
    try:
        results = read_results(location)
    except ResultsError as exc:
        raise ResultsRefused(str(exc)) from None
    scores, memberships = results.tables()
    if len(set(scores.column("subject_id").to_pylist())) != scores.num_rows:
        raise ResultsRefused(f"{location.uri}: a subject is scored twice in the results")
    total = RescoreSummary()
    with transaction(engine) as session:
        _refuse_stale(results, ledger.head(session, lock=True))
        policy = active_policy(session, on=results.as_of).policy
        if policy.content_hash != results.policy_hash:
            raise ResultsRefused(
                f"the results were scored with {results.policy_label} ({results.policy_hash}); "
                f"the policy in force on {results.as_of} is {policy.label} "
                f"({policy.content_hash}): score again with it"
            )
        count = session.execute(select(func.count()).select_from(subjects)).scalar_one()
        if count != scores.num_rows:
            raise ResultsRefused(
                f"the results score {scores.num_rows} subjects, the store holds {count}"
            )
        now = clock.now()
        try:
            for part in batch_scores(scores, memberships, results.as_of, chunk=chunk):
                total.add(store_results(session, policy=policy, results=part, now=now))
        except IntegrityError as exc:
            raise ResultsRefused(
                f"a scored subject is not in this store ({type(exc.orig).__name__}); the "
                "transaction was rolled back: nothing was loaded"
            ) from None
    return {
        "engine": results.engine,
        "policy": policy.label,
        "as_of": results.as_of.isoformat(),
        "ledger_seq": results.head.seq,
        "subjects": total.subjects,
        "grade_changes": total.grade_changes,
        "entered": total.entered,
        "left": total.left,
        "seconds": time.perf_counter() - started,
    }


def rescore_spark(
    engine: Engine,
    *,
    clock: Clock,
    as_of: date | None = None,
    master: str = "local[2]",
    session: Any | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Rescore everyone on Spark: export, run the job, load (``rescore --engine spark``).

    The policy is the one in force on ``as_of`` (default today), so a past
    date gives the scores that version would have given. ``session`` is an
    existing Spark session (default: a new one on ``master``); the export and
    results go to a temporary directory unless ``work_dir`` is given (then
    they are kept there). If anything fails, nothing is loaded.
    """
    from chengxin.engine.spark_backend import local_session
    from chengxin.engine.spark_job import run_job

    started = time.perf_counter()
    day = as_of or clock.today()
    with transaction(engine) as db:
        policy = active_policy(db, on=day).policy
    base = Path(tempfile.mkdtemp(prefix="chengxin-spark-")) if work_dir is None else work_dir
    try:
        export = base / "export"
        export_parquet(engine, export, policy=policy, as_of=day, now=clock.now(), force=True)
        run_job(session or local_session(master), export, as_of=day, now=clock.now)
        summary = load_results(engine, export / "results", clock=clock)
    finally:
        if work_dir is None:
            shutil.rmtree(base, ignore_errors=True)
    summary["seconds"] = time.perf_counter() - started
    return summary
