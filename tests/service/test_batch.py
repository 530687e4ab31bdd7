"""Rescoring everyone: both engines store the same snapshots; time travel writes nothing."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import score
from chengxin.service.batch import rescore_all
from chengxin.service.clock import FixedClock
from chengxin.service.errors import Invalid
from chengxin.service.importer import import_file
from chengxin.store import repo
from chengxin.store.db import transaction
from chengxin.store.schema import memberships, snapshots, subjects
from chengxin.synth import CityConfig, write_feed


@pytest.fixture
def city(engine: Engine, policy: Policy, clock: FixedClock, tmp_path: Path) -> Engine:
    feed = tmp_path / "feed.jsonl"
    write_feed(CityConfig(people=400, seed=5, end=clock.today() - timedelta(days=1)), feed, "jsonl")
    summary = import_file(engine, feed, clock=clock)
    assert summary.accepted > 300 and summary.rejected == 0
    return engine


def _stored(engine: Engine) -> tuple[list[Any], list[Any]]:
    with transaction(engine) as session:
        snaps = session.execute(
            select(
                snapshots.c.subject_id,
                snapshots.c.score,
                snapshots.c.grade,
                snapshots.c.next_change,
                snapshots.c.stale,
            ).order_by(snapshots.c.subject_id)
        ).all()
        lists = session.execute(
            select(
                memberships.c.subject_id,
                memberships.c.list_code,
                memberships.c.since,
                memberships.c.until,
            )
            .where(memberships.c.left_at.is_(None))
            .order_by(memberships.c.subject_id, memberships.c.list_code)
        ).all()
    return [tuple(r) for r in snaps], [tuple(r) for r in lists]


def _pure(engine: Engine, policy: Policy, day: date) -> dict[int, Any]:
    with transaction(engine) as session:
        ids = [int(r[0]) for r in session.execute(select(subjects.c.id))]
        facts = repo.record_facts(session, ids)
    return {sid: score(policy, facts[sid], day) for sid in ids}


def test_both_engines_store_what_the_pure_scorer_gives(
    city: Engine, policy: Policy, clock: FixedClock
) -> None:
    expected = _pure(city, policy, clock.today())
    for name in ("duckdb", "python"):
        summary = rescore_all(city, clock=clock, engine_name=name)
        assert summary["stored"] and summary["subjects"] == len(expected)
        snaps, lists = _stored(city)
        assert {s[0]: (s[1], s[2], s[3]) for s in snaps} == {
            sid: (r.score, r.grade, r.next_change) for sid, r in expected.items()
        }
        assert not any(s[4] for s in snaps)  # nothing left stale
        assert sorted((m[0], m[1]) for m in lists) == sorted(
            (sid, code) for sid, r in expected.items() for code in r.lists
        )


def test_time_travel_reports_without_writing(
    city: Engine, policy: Policy, clock: FixedClock
) -> None:
    before = _stored(city)
    day = clock.today() - timedelta(days=400)
    pure = _pure(city, policy, day)
    reports = [
        rescore_all(city, clock=clock, as_of=day, engine_name=n) for n in ("duckdb", "python")
    ]
    for report in reports:
        assert not report["stored"]
        assert report["grades"] == {
            g: sum(1 for r in pure.values() if r.grade == g)
            for g in {r.grade for r in pure.values()}
        }
    assert reports[0]["lists"] == reports[1]["lists"]
    assert _stored(city) == before


def test_an_unknown_engine_is_refused(city: Engine, clock: FixedClock) -> None:
    with pytest.raises(Invalid, match="unknown engine"):
        rescore_all(city, clock=clock, engine_name="spreadsheet")
