"""Prefetched records and scores: a batch rescored from them scores what it would from a fresh read.

A spy on the ingest's rescoring takes the records and the scores it was
handed and compares them, in the batch's own transaction, with
:func:`repo.record_facts` read after the batch (and the scores of those):
whether the prefetch still held, was overtaken by another batch touching the
same subjects, or did not know a subject.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import RecordFact, score
from chengxin.service import ingest as ingest_module
from chengxin.service.checking import check_lines
from chengxin.service.clock import FixedClock
from chengxin.service.ingest import BatchReport, store_checked
from chengxin.service.prefetch import Prefetched, prefetch
from chengxin.store import repo
from chengxin.store.db import read_transaction, session_factory, transaction

pytestmark = pytest.mark.usefixtures("backend")
Line = dict[str, Any]


class Spy:
    """Records the ``facts`` the ingest hands to the rescoring, and the fresh read of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.given: Mapping[int, Sequence[RecordFact]] | None = None
        self.fresh: dict[int, list[RecordFact]] = {}
        self.scored: dict[int, Any] = {}
        self.rescored: dict[int, Any] = {}
        real = ingest_module.rescore_subjects

        def spy(session: Any, **kw: Any) -> Any:
            self.given = kw["facts"]
            self.fresh = repo.record_facts(session, kw["subject_ids"])
            self.scored = {sid: _stored(r) for sid, r in kw["scored"].items()}
            self.rescored = {
                sid: _stored(score(kw["policy"], self.fresh[sid], kw["as_of"]))
                for sid in self.scored
            }
            return real(session, **kw)

        monkeypatch.setattr(ingest_module, "rescore_subjects", spy)

    def holds(self) -> bool:
        """Every rescored subject was handed its fresh records or its fresh score."""
        assert self.given is not None
        assert set(self.given).isdisjoint(self.scored)
        assert set(self.given) | set(self.scored) == set(self.fresh)
        assert self.scored == self.rescored
        return {sid: list(v) for sid, v in self.given.items()} == {
            sid: v for sid, v in self.fresh.items() if sid in self.given
        }


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """The rescoring spy."""
    return Spy(monkeypatch)


@pytest.fixture
def store(engine: Engine, policy: Policy, clock: FixedClock) -> Callable[..., BatchReport]:
    """``store(lines, prefetched=None)``: check and store lines in one committed transaction."""

    def run(lines: list[Line], prefetched: Prefetched | None = None) -> BatchReport:
        checked = check_lines(list(enumerate(lines, start=1)), policy, clock.today())
        with transaction(engine) as session:
            return store_checked(
                session,
                policy=policy,
                batch=checked,
                now=clock.now(),
                today=clock.today(),
                prefetched=prefetched,
            )

    return run


@pytest.fixture
def fetch(engine: Engine, policy: Policy, clock: FixedClock) -> Callable[[list[Line]], Prefetched]:
    """``fetch(lines)``: prefetch for these lines, as the batch route does."""

    def run(lines: list[Line]) -> Prefetched:
        checked = check_lines(list(enumerate(lines, start=1)), policy, clock.today())
        with read_transaction(session_factory(engine)) as reader:
            return prefetch(reader, checked, policy=policy, as_of=clock.today())

    return run


def _stored(r: Any) -> tuple[Any, ...]:
    """What a rescore stores of a score."""
    lists = {code: (m.kind, m.since, m.until) for code, m in r.lists.items()}
    return (r.as_of, r.score, r.grade, r.next_change, lists)


def _retract(line: Line, ref: str) -> Line:
    return {"provider": line["provider"], "ref": ref, "retracts": line["ref"]}


def _world(record_line: Callable[..., Line], rid: Callable[[int], str]) -> list[Line]:
    """Stored lines: persons 0-3, two records for person 0."""
    return [
        record_line(rid=rid(0)),
        record_line(rid=rid(0), occurred_at="2025-06-01"),
        record_line(rid=rid(1)),
        record_line(rid=rid(2)),
        record_line(rid=rid(3)),
    ]


def _batch(
    world: list[Line], record_line: Callable[..., Line], rid: Callable[[int], str]
) -> list[Line]:
    """New records for known and new persons, a retraction, amendments (one moving the
    record to another person), a duplicate, and a record retracted in the same batch."""
    own = record_line(rid=rid(9))
    return [
        record_line(rid=rid(0), occurred_at="2026-01-15"),
        record_line(rid=rid(5)),
        _retract(world[2], "b-retract-1"),
        record_line(rid=rid(3), amends=world[4]["ref"], attributes={"amount_cny": 50_000}),
        record_line(rid=rid(6), amends=world[1]["ref"], attributes={"amount_cny": 1}),
        world[3],  # a duplicate
        own,
        _retract(own, "b-retract-own"),
    ]


def test_the_prefetched_records_are_the_stored_ones(
    store: Callable[..., BatchReport],
    fetch: Callable[[list[Line]], Prefetched],
    spy: Spy,
    record_line: Callable[..., Line],
    rid: Callable[[int], str],
) -> None:
    world = _world(record_line, rid)
    assert all(r.status == "accepted" for r in store(world).results)
    batch = _batch(world, record_line, rid)
    got = fetch(batch)
    report = store(batch, got)
    assert [r.status for r in report.results].count("accepted") == 7
    assert spy.holds()
    assert len(spy.scored) == 1 and spy.scored == spy.rescored  # person 5 alone: new records only
    # persons 1 and 9 (retracted), 3, 5 and 6 (one each), 0 (a new record, one amended away)
    assert sorted(len(v) for v in spy.fresh.values()) == [0, 0, 1, 1, 1, 2]


def test_records_changed_after_the_prefetch_are_read_again(
    store: Callable[..., BatchReport],
    fetch: Callable[[list[Line]], Prefetched],
    spy: Spy,
    record_line: Callable[..., Line],
    rid: Callable[[int], str],
) -> None:
    world = _world(record_line, rid)
    assert all(r.status == "accepted" for r in store(world).results)
    batch = _batch(world, record_line, rid)
    got = fetch(batch)
    # Another batch, between the prefetch and the lock: a new record for person 0, a
    # retraction of another of person 0's, a new person the batch also names.
    store(
        [
            record_line(rid=rid(0), occurred_at="2026-02-01"),
            _retract(world[0], "other-retract"),
            record_line(rid=rid(5), occurred_at="2026-02-02"),
        ]
    )
    report = store(batch, got)
    assert [r.status for r in report.results].count("accepted") == 7
    assert spy.holds()
    assert spy.scored == {}  # person 5 was created by the other batch meanwhile
    # person 0: one record retracted, one amended away, two new ones; person 5: two
    assert sorted(len(v) for v in spy.fresh.values()) == [0, 0, 1, 1, 2, 2]


def test_prefetched_scores_stand_only_where_their_records_held(
    store: Callable[..., BatchReport],
    fetch: Callable[[list[Line]], Prefetched],
    spy: Spy,
    record_line: Callable[..., Line],
    rid: Callable[[int], str],
) -> None:
    world = _world(record_line, rid)
    assert all(r.status == "accepted" for r in store(world).results)
    batch = [
        record_line(rid=rid(0), occurred_at="2025-01-10"),
        record_line(rid=rid(2), occurred_at="2025-01-11"),
        record_line(rid=rid(7)),
        record_line(rid=rid(8), occurred_at="2024-05-01"),
        record_line(rid=rid(8)),
        world[4],  # a duplicate: person 3 is not rescored
    ]
    got = fetch(batch)
    assert len(got.scored) == 5
    store([record_line(rid=rid(2), occurred_at="2026-02-01")])  # person 2 changes meanwhile
    store(batch, got)
    assert spy.holds()
    assert len(spy.scored) == 3  # persons 0, 7 and 8
    assert len(spy.fresh) == 4
