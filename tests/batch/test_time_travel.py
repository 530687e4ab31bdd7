"""Time travel: ``rescore --as-of`` a past date gives what the policy in force then would give.

A year is replayed month by month on the synthetic city, across a policy
change half way through it: every month's batch result (DuckDB, through an
export, a results directory and ``load-results``, which checks the policy in
force on the date) must equal the pure scorer's answer under the policy
active on that date, and the stored snapshots must then say the same. Two
of the months are replayed on Spark too, through ``rescore_spark``.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_world import City, pure_answer, table_answer, variant

from chengxin.domain.policy import Policy
from chengxin.engine.export import export_parquet, verify_export
from chengxin.engine.results import read_results, rescore_export_duckdb
from chengxin.service.load_results import load_results, rescore_spark
from chengxin.service.policies import activate, active_policy, add_policy
from chengxin.store.db import transaction
from chengxin.store.schema import memberships, snapshots

SWITCH = date(2026, 6, 1)
"""The day national@2026.2 comes into force (tickets cost 20, defaulters are listed for 1 year)."""


def month_end(year: int, month: int) -> date:
    """The last day of a month."""
    following = date(year + (month == 12), month % 12 + 1, 1)
    return date.fromordinal(following.toordinal() - 1)


YEAR = [month_end(2025, 12), *(month_end(2026, m) for m in range(1, 12))]


@pytest.fixture
def amended(city: City) -> Policy:
    """national@2026.2, stored and activated from :data:`SWITCH`; returns it."""
    proposal = variant(city.policy, "2026.2", **{"fail-to-yield": -20, "judgment-defaulters": "1y"})
    with transaction(city.engine) as session:
        stored = add_policy(
            session,
            text=json.dumps(proposal.canonical()),
            source="2026.2.json",
            now=city.clock.now(),
        )
        activate(
            session,
            policy_id=stored.id,
            actor="tests",
            reason="the council's 2026 amendment",
            now=city.clock.now(),
            effective_from=SWITCH,
        )
    return stored.policy


def in_force(city: City, day: date) -> Policy:
    with transaction(city.engine) as session:
        return active_policy(session, on=day).policy


def stored(city: City) -> tuple[dict[int, Any], set[Any]]:
    """Snapshots and open memberships, without ``since``.

    The store keeps a membership's ``since`` from the day it opened while it
    stays open (``store_results`` moves only ``until``), where the scorer
    gives the first entry still live; the two differ when an old entry lapses
    while a newer one holds the subject on the list.
    """
    with transaction(city.engine) as session:
        snaps = {
            int(r.subject_id): (r.score, r.grade, r.next_change)
            for r in session.execute(select(snapshots))
        }
        members = {
            (int(r.subject_id), r.list_code, r.kind, r.until)
            for r in session.execute(select(memberships).where(memberships.c.left_at.is_(None)))
        }
    return snaps, members


def without_since(answer: tuple[dict[int, Any], set[Any]]) -> tuple[dict[int, Any], set[Any]]:
    """A pure answer in the shape of :func:`stored`."""
    return answer[0], {(s, code, kind, until) for s, code, kind, _, until in answer[1]}


def test_a_year_replayed_month_by_month_agrees_with_the_pure_scorer(
    city: City, amended: Policy, tmp_path: Path
) -> None:
    facts = city.facts()
    differ = 0
    for day in YEAR:
        policy = in_force(city, day)
        assert policy.version == ("2026.2" if day >= SWITCH else "2026.1"), day
        out = tmp_path / day.isoformat()
        export_parquet(city.engine, out, policy=policy, as_of=day, now=city.clock.now())
        results = rescore_export_duckdb(verify_export(out), now=city.clock.now())
        assert (results.as_of, results.policy_label) == (day, policy.label)
        want = pure_answer(policy, facts, day)
        assert table_answer(*read_results(results.where).tables()) == want, day
        load_results(city.engine, out, clock=city.clock)
        assert stored(city) == without_since(want), day
        other = amended if policy.version == "2026.1" else city.policy
        differ += pure_answer(other, facts, day) != want
    assert differ >= 6, "the amendment should change the answer in most months"


# pyspark 4.0.1 leaves the socket it collects through unclosed (pyspark.util._create_local_socket).
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
@pytest.mark.parametrize("backend", ["sqlite"])  # Spark reads an export: the store does not matter
def test_two_months_replayed_on_spark_agree_too(
    city: City, amended: Policy, spark: Any, tmp_path: Path
) -> None:
    facts = city.facts()
    for day in (month_end(2026, 3), month_end(2026, 9)):
        summary = rescore_spark(city.engine, clock=city.clock, as_of=day, session=spark)
        policy = in_force(city, day)
        assert (summary["engine"], summary["policy"]) == ("spark", policy.label)
        assert stored(city) == without_since(pure_answer(policy, facts, day)), day
