"""Deferred rescoring: stale marks in the chunk's transaction, then refresh_stale.

Whatever path scored a subject (at ingest, the pure scorer in a refresh, or
the batch engine in a refresh), its snapshot and open list memberships must
be what the pure scorer says from its records today.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import score
from chengxin.service import refresh
from chengxin.service.clock import FixedClock
from chengxin.service.ingest import ingest_batch
from chengxin.service.refresh import refresh_stale
from chengxin.service.rescore import mark_stale
from chengxin.store import repo
from chengxin.store.db import transaction
from chengxin.store.schema import memberships, outbox, snapshots, subjects

Rows = Callable[..., Sequence[Any]]


def assert_fresh_and_correct(engine: Engine, policy: Policy, clock: FixedClock) -> int:
    """Every subject has a fresh snapshot and lists equal to the pure scorer's; return how many."""
    with transaction(engine) as session:
        ids = [
            int(r[0]) for r in session.execute(subjects.select().with_only_columns(subjects.c.id))
        ]
        facts = repo.record_facts(session, ids)
        snaps = repo.snapshots_for(session, ids)
        lists = repo.open_memberships(session, ids)
    for sid in ids:
        want = score(policy, facts[sid], clock.today())
        snap = snaps[sid]
        assert not snap.stale, sid
        assert (snap.score, snap.grade, snap.as_of, snap.next_change) == (
            want.score,
            want.grade,
            want.as_of,
            want.next_change,
        ), sid
        assert snap.policy_hash == policy.content_hash
        # An open membership keeps the day it began (store_results moves only its end).
        got = {m.list_code: (m.kind, m.until) for m in lists[sid]}
        assert got == {c: (m.kind, m.until) for c, m in want.lists.items()}, sid
    return len(ids)


def ingest_deferred(engine: Engine, policy: Policy, clock: FixedClock, *lines: Any) -> Any:
    with transaction(engine) as session:
        return ingest_batch(
            session,
            policy=policy,
            lines=list(enumerate(lines, start=1)),
            now=clock.now(),
            today=clock.today(),
            rescore=False,
        )


@pytest.fixture
def people(record_line: Any, rid: Callable[[int], str]) -> list[dict[str, Any]]:
    """Lines for 30 people: defaulters, fare dodgers, volunteers, one retraction, one amendment."""
    lines: list[dict[str, Any]] = []
    for n in range(30):
        kind = n % 3
        if kind == 0:
            lines.append(record_line(rid=rid(n), occurred_at="2025-06-01"))
        elif kind == 1:
            lines.append(
                record_line(
                    rid=rid(n), type="societal.fare_evasion", attributes={"repeat": n % 2 == 0}
                )
            )
        else:
            lines.append(
                record_line(rid=rid(n), type="societal.volunteering", attributes={"hours": 60})
            )
    lines.append({"provider": lines[0]["provider"], "ref": "r-1", "retracts": lines[3]["ref"]})
    lines.append(record_line(rid=rid(6), amends=lines[6]["ref"], attributes={"amount_cny": 10}))
    return lines


def test_a_deferred_batch_marks_its_subjects_stale_and_scores_nothing(
    engine: Engine,
    policy: Policy,
    clock: FixedClock,
    ingest: Any,
    record_line: Any,
    rid: Any,
    rows: Rows,
) -> None:
    ingest(record_line(rid=rid(1)))  # scored now: 900, B, on the defaulters' list
    (old,) = rows(snapshots)
    events = len(rows(outbox))
    report = ingest_deferred(
        engine,
        policy,
        clock,
        record_line(rid=rid(1), type="societal.heroic_act", attributes=None),
        record_line(rid=rid(2)),
    )
    assert report.count("accepted") == 2 and report.rescore.subjects == 0
    known, new = rows(snapshots)
    # The known subject keeps its last score, marked stale; the new one gets a stale placeholder.
    assert (known.subject_id, known.score, known.grade, known.stale) == (
        old.subject_id,
        900,
        "B",
        True,
    )
    assert (new.score, new.grade, new.stale, new.next_change) == (1000, "A", True, None)
    assert new.policy_hash == policy.content_hash
    assert len(rows(outbox)) == events and len(rows(memberships)) == 1

    summary = refresh_stale(engine, clock=clock)
    # 900 + 30 is still a B; the new subject falls from A to B and joins the defaulters.
    assert (summary.subjects, summary.grade_changes, summary.entered) == (2, 1, 1)
    assert assert_fresh_and_correct(engine, policy, clock) == 2
    assert refresh_stale(engine, clock=clock).subjects == 0  # nothing left to do


@pytest.mark.parametrize("use_engine", [False, True], ids=["pure", "duckdb"])
def test_refresh_gives_what_rescoring_at_ingest_gives(
    use_engine: bool,
    engine: Engine,
    policy: Policy,
    clock: FixedClock,
    ingest: Any,
    people: list[dict[str, Any]],
    rows: Rows,
) -> None:
    ingest(*people[:15])  # scored at ingest
    # The rest deferred: some known subjects, some new, a retraction and an amendment.
    ingest_deferred(engine, policy, clock, *people[15:])
    stale = sum(1 for s in rows(snapshots) if s.stale)
    assert stale > 0
    summary = refresh_stale(engine, clock=clock, chunk=7, use_engine=use_engine)
    assert summary.subjects == stale
    assert assert_fresh_and_correct(engine, policy, clock) == 30
    # Notifications: one list entry per subject listed, none twice.
    entered = [
        json.loads(r.payload)["subject_id"] for r in rows(outbox) if r.topic == "list.entered"
    ]
    assert len(entered) == len(set(entered)) == len(rows(memberships))


def _derived(state: Any) -> dict[str, list[tuple[Any, ...]]]:
    tables = state().tables
    return {
        "snapshots": list(tables["snapshots"]),
        # Ids come from sequences, which PostgreSQL does not rewind.
        "memberships": [r[1:] for r in tables["memberships"]],
        "outbox": [r[1:] for r in tables["outbox"]],
    }


def test_engine_and_pure_refresh_write_the_same_rows(
    engine: Engine,
    policy: Policy,
    clock: FixedClock,
    people: list[dict[str, Any]],
    state: Any,
) -> None:
    ingest_deferred(engine, policy, clock, *people)
    refresh_stale(engine, clock=clock, use_engine=True)
    by_engine = _derived(state)
    # Start over from the same stale placeholders, and refresh with the pure scorer.
    with transaction(engine) as session:
        for table in (outbox, memberships, snapshots):
            session.execute(table.delete())
        ids = [
            int(r[0]) for r in session.execute(subjects.select().with_only_columns(subjects.c.id))
        ]
        mark_stale(session, policy=policy, subject_ids=ids, as_of=clock.today(), now=clock.now())
    refresh_stale(engine, clock=clock, use_engine=False)
    assert _derived(state) == by_engine
    assert by_engine["memberships"] and by_engine["outbox"]


def test_a_refresh_racing_an_ingest_leaves_nothing_stale_or_wrong(
    engine: Engine,
    policy: Policy,
    clock: FixedClock,
    people: list[dict[str, Any]],
    record_line: Any,
    rid: Callable[[int], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest_deferred(engine, policy, clock, *people)
    scorer = refresh._batch_sqlite if engine.dialect.name == "sqlite" else refresh._batch_session

    def score_then_ingest(eng: Engine, pol: Policy, as_of: Any) -> Any:
        batch = scorer(eng, pol, as_of)
        # Another writer lands between the engine's read and its writes.
        ingest_deferred(engine, policy, clock, record_line(rid=rid(2), occurred_at="2026-10-01"))
        return batch

    monkeypatch.setattr(refresh, scorer.__name__, score_then_ingest)
    refresh_stale(engine, clock=clock, use_engine=True, chunk=10)
    assert assert_fresh_and_correct(engine, policy, clock) == 30
