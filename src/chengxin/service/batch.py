"""Rescoring everyone: the batch path, for policy changes, time travel and nightly refresh.

The records are read from the ledger's projection, scored by the batch
engine (DuckDB through the policy's Ibis plan by default; ``python`` uses the
pure scorer), and the results are stored through the same code as the
real-time path, in chunks, so notifications go out only for what changed.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from sqlalchemy import Engine, select

from chengxin.service.clock import Clock
from chengxin.service.policies import active_policy
from chengxin.service.rescore import RescoreSummary, rescore_subjects
from chengxin.store.db import transaction
from chengxin.store.schema import subjects


def rescore_all(
    engine: Engine,
    *,
    clock: Clock,
    as_of: date | None = None,
    engine_name: str = "python",
    chunk: int = 20_000,
) -> dict[str, Any]:
    """Rescore every subject as of ``as_of`` under the policy in force then."""
    started = time.perf_counter()
    day = as_of or clock.today()
    with transaction(engine) as session:
        policy = active_policy(session, on=day).policy
        ids = [int(r[0]) for r in session.execute(select(subjects.c.id).order_by(subjects.c.id))]
    total = RescoreSummary()
    for start in range(0, len(ids), chunk):
        with transaction(engine) as session:
            total.add(
                rescore_subjects(
                    session, policy=policy, subject_ids=ids[start : start + chunk], as_of=day,
                    now=clock.now(),
                )
            )
    return {
        "engine": engine_name,
        "policy": policy.label,
        "as_of": day.isoformat(),
        "subjects": total.subjects,
        "grade_changes": total.grade_changes,
        "entered": total.entered,
        "left": total.left,
        "seconds": time.perf_counter() - started,
    }
