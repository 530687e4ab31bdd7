"""Ingest: idempotency on (provider, ref), retraction, amendment; refusals store nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, select

from chengxin.domain.identifiers import make_uscc
from chengxin.domain.policy import Policy
from chengxin.domain.records import RecordRejected
from chengxin.service.clock import FixedClock
from chengxin.service.ingest import ingest_batch
from chengxin.store import ledger
from chengxin.store.db import session_factory
from chengxin.store.schema import ledger as ledger_table
from chengxin.store.schema import memberships, outbox, records, snapshots, subjects

Rows = Callable[..., Sequence[Any]]
ORG = make_uscc("9", "1", "110105", "MA01T2X3")


def snapshot(rows: Rows, subject_id: int) -> Any:
    (snap,) = rows(snapshots, snapshots.c.subject_id == subject_id)
    return snap


def topics(rows: Rows) -> list[str]:
    return [r.topic for r in rows(outbox)]


def test_an_accepted_line_is_ledgered_recorded_and_scored(
    ingest: Any, record_line: Any, rows: Rows, rid: Callable[[int], str]
) -> None:
    line = record_line()
    report = ingest(line)
    (res,) = report.results
    assert (res.line, res.status, res.ref) == (1, "accepted", line["ref"])
    assert res.seq == 2  # entry 1 activated the policy
    (entry,) = rows(ledger_table, ledger_table.c.seq == res.seq)
    assert entry.kind == "record"
    assert json.loads(entry.payload)["subject"]["id"] == rid(0)
    (subj,) = rows(subjects)
    assert (subj.scheme, subj.value, subj.kind) == ("cn-rid", rid(0), "person")
    assert subj.name == "Zhang San"
    assert str(subj.birth_date) == "1970-01-01" and subj.region == "110105"
    (rec,) = rows(records)
    assert (rec.id, rec.subject_id, rec.status, rec.domain) == (2, subj.id, "active", "judicial")
    assert json.loads(rec.attributes) == {"amount_cny": 250_000}
    snap = snapshot(rows, subj.id)
    assert (snap.score, snap.grade) == (900, "B")  # rule large-default: -100
    assert str(snap.next_change) == "2027-03-01"  # steps down to 50% after a year
    (member,) = rows(memberships)
    assert (member.list_code, member.left_at) == ("judgment-defaulters", None)
    assert str(member.until) == "2028-03-01"
    assert sorted(topics(rows)) == ["grade.changed", "list.entered"]
    assert (report.rescore.subjects, report.rescore.entered) == (1, 1)


def test_the_same_line_again_is_a_duplicate_and_adds_nothing(
    ingest: Any, record_line: Any, state: Any
) -> None:
    line = record_line()
    first = ingest(line).results[0]
    before = state()
    (again,) = ingest(dict(line)).results
    assert (again.status, again.seq, again.ref) == ("duplicate", first.seq, line["ref"])
    assert state() == before


def test_same_key_different_content_is_a_conflict_and_adds_nothing(
    ingest: Any, record_line: Any, state: Any, rid: Callable[[int], str]
) -> None:
    line = record_line()
    ingest(line)
    before = state()
    # The changed line also names a new subject: it must not be created either.
    changed = {**line, "subject": {**line["subject"], "id": rid(1)}}
    (res,) = ingest(changed).results
    assert (res.status, res.code, res.field) == ("rejected", "conflict", "ref")
    assert "amends" in (res.message or "")
    assert state() == before


def test_duplicates_and_conflicts_within_one_batch(ingest: Any, record_line: Any) -> None:
    a = record_line()
    b = record_line(occurred_at="2026-04-01")
    b_changed = {**b, "attributes": {"amount_cny": 1}}
    report = ingest(a, dict(a), b, b_changed)
    assert [r.status for r in report.results] == ["accepted", "duplicate", "accepted", "rejected"]
    assert report.results[3].code == "conflict"
    assert (report.count("accepted"), report.count("duplicate"), len(report.rejected)) == (2, 1, 1)


def test_the_key_is_provider_and_ref(ingest: Any, record_line: Any, rows: Rows) -> None:
    a = record_line(ref="same-ref")
    b = record_line(ref="same-ref", provider="court-310101")
    assert [r.status for r in ingest(a, b).results] == ["accepted", "accepted"]
    assert len(rows(records)) == 2


def test_a_retraction_removes_the_points_and_the_listing(
    ingest: Any, record_line: Any, rows: Rows
) -> None:
    line = record_line()
    rec_seq = ingest(line).results[0].seq
    retraction = {
        "provider": line["provider"],
        "ref": "retract-1",
        "retracts": line["ref"],
        "reason": "entered against the wrong person",
    }
    (res,) = ingest(retraction).results
    assert res.status == "accepted"
    (entry,) = rows(ledger_table, ledger_table.c.seq == res.seq)
    (rec,) = rows(records)
    assert entry.kind == "retraction" and entry.subject_id == rec.subject_id
    assert (rec.id, rec.status, rec.status_seq) == (rec_seq, "retracted", res.seq)
    snap = snapshot(rows, rec.subject_id)
    assert (snap.score, snap.grade, snap.next_change) == (1000, "A", None)
    (member,) = rows(memberships)
    assert member.left_at is not None
    left = rows(outbox, outbox.c.topic == "list.left")
    assert len(left) == 1
    assert json.loads(left[0].payload)["list"] == "judgment-defaulters"
    assert left[0].subject_id == rec.subject_id


def test_an_amendment_supersedes_the_original(ingest: Any, record_line: Any, rows: Rows) -> None:
    line = record_line()
    old_seq = ingest(line).results[0].seq
    amended = record_line(amends=line["ref"], attributes={"amount_cny": 50_000})
    (res,) = ingest(amended).results
    assert res.status == "accepted"
    old, new = rows(records)
    assert (old.id, old.status, old.status_seq) == (old_seq, "superseded", res.seq)
    assert (new.id, new.status, new.supersedes) == (res.seq, "active", old_seq)
    (entry,) = rows(ledger_table, ledger_table.c.seq == res.seq)
    assert entry.kind == "amendment"
    snap = snapshot(rows, new.subject_id)
    assert (snap.score, snap.grade) == (950, "B")  # rule default: -50
    # Still on the list, now through the amended record.
    (member,) = rows(memberships)
    assert member.left_at is None


def test_an_amendment_may_correct_the_subject(
    ingest: Any, record_line: Any, rows: Rows, rid: Callable[[int], str]
) -> None:
    line = record_line()
    ingest(line)
    (res,) = ingest(record_line(rid=rid(7), amends=line["ref"])).results
    assert res.status == "accepted"
    wrong, right = rows(subjects)
    assert (snapshot(rows, wrong.id).score, snapshot(rows, right.id).score) == (1000, 900)
    open_lists = rows(memberships, memberships.c.left_at.is_(None))
    assert [m.subject_id for m in open_lists] == [right.id]


@pytest.mark.parametrize(
    "case",
    ["twice", "other_provider", "unknown_ref", "retracted_then_amended"],
)
def test_bad_references_are_refused_and_add_nothing(
    case: str, ingest: Any, record_line: Any, state: Any
) -> None:
    line = record_line()
    ingest(line)
    retract = {"provider": line["provider"], "ref": "retract-1", "retracts": line["ref"]}
    if case in ("twice", "retracted_then_amended"):
        ingest(retract)
    bad = {
        "twice": {**retract, "ref": "retract-2"},
        "other_provider": {**retract, "provider": "tax-110105"},
        "unknown_ref": {**retract, "retracts": "no-such-ref"},
        "retracted_then_amended": record_line(amends=line["ref"]),
    }[case]
    before = state()
    (res,) = ingest(bad).results
    assert (res.status, res.code) == ("rejected", "bad_reference")
    assert res.field == ("amends" if case == "retracted_then_amended" else "retracts")
    assert state() == before


def test_a_retraction_in_the_same_batch_as_its_record(
    ingest: Any, record_line: Any, rows: Rows
) -> None:
    line = record_line()
    retract = {"provider": line["provider"], "ref": "r-1", "retracts": line["ref"]}
    report = ingest(line, retract)
    assert [r.status for r in report.results] == ["accepted", "accepted"]
    (rec,) = rows(records)
    assert rec.status == "retracted"
    assert snapshot(rows, rec.subject_id).score == 1000
    assert rows(memberships) == []


def test_retracting_a_retraction_is_refused_not_a_crash(
    ingest: Any, record_line: Any, rows: Rows
) -> None:
    line = record_line()
    r1 = {"provider": line["provider"], "ref": "r-1", "retracts": line["ref"]}
    r2 = {"provider": line["provider"], "ref": "r-2", "retracts": "r-1"}
    report = ingest(line, r1, r2)
    assert [r.status for r in report.results] == ["accepted", "accepted", "rejected"]
    assert report.results[2].code == "bad_reference"
    # ...and the same across batches.
    (res,) = ingest({**r2, "ref": "r-3"}).results
    assert (res.status, res.code) == ("rejected", "bad_reference")
    assert [r.status for r in rows(records)] == ["retracted"]


def test_a_subject_keeps_its_kind(ingest: Any, record_line: Any, state: Any) -> None:
    generic = {"scheme": "generic", "id": "ACME-42", "kind": "person"}
    ingest(record_line(subject=generic))
    before = state()
    (res,) = ingest(record_line(subject={**generic, "kind": "organisation"})).results
    assert (res.status, res.code, res.field) == ("rejected", "wrong_subject_kind", "subject.kind")
    assert state() == before


def _org_line(record_line: Any, **kw: Any) -> dict[str, Any]:
    fields = {
        "subject": {"scheme": "cn-uscc", "id": ORG, "kind": "organisation"},
        "type": "commercial.product_safety_violation",
        "attributes": {"severity": "serious"},
    }
    return record_line(**{**fields, **kw})


# (description, overrides of a valid line, expected code, expected field)
REFUSALS: list[tuple[str, Callable[[Any], dict[str, Any]], str, str | None]] = [
    (
        "kind not covered by the record type",
        lambda f: f(type="commercial.wage_arrears"),
        "wrong_subject_kind",
        "subject.kind",
    ),
    (
        "kind the identifier scheme cannot name",
        lambda f: f(subject_kind="organisation"),
        "wrong_subject_kind",
        "subject.kind",
    ),
    ("date in the future", lambda f: f(occurred_at="2026-11-02"), "future_date", "occurred_at"),
    ("date before birth", lambda f: f(occurred_at="1969-12-31"), "before_birth", "occurred_at"),
    (
        "unknown attribute",
        lambda f: f(attributes={"amount_cny": 5, "colour": "red"}),
        "unknown_attribute",
        "attributes.colour",
    ),
    (
        "missing required attribute",
        lambda f: f(attributes={}),
        "missing_attribute",
        "attributes.amount_cny",
    ),
    (
        "bad enum value",
        lambda f: _org_line(f, attributes={"severity": "catastrophic"}),
        "bad_attribute",
        "attributes.severity",
    ),
    (
        "not a whole number",
        lambda f: f(attributes={"amount_cny": "lots"}),
        "bad_attribute",
        "attributes.amount_cny",
    ),
    (
        "bad check character",
        lambda f: f(rid="110105197001010000"),
        "identifier.bad_check_character",
        "subject.id",
    ),
    (
        "identifier as a number",
        lambda f: f(subject={"scheme": "generic", "id": 42, "kind": "person"}),
        "bad_type",
        "subject.id",
    ),
    (
        "unknown subject field",
        lambda f: f(subject={"scheme": "generic", "id": "A-1", "kind": "person", "age": 3}),
        "unknown_field",
        "subject.age",
    ),
    (
        "whole number beyond 64 bits",
        lambda f: f(attributes={"amount_cny": 2**63}),
        "bad_attribute",
        "attributes.amount_cny",
    ),
    ("unknown record type", lambda f: f(type="judicial.gossip"), "unknown_type", "type"),
    ("not a date", lambda f: f(occurred_at="1st of May"), "bad_date", "occurred_at"),
    ("missing provider", lambda f: f(provider=None), "missing_field", "provider"),
    ("missing date", lambda f: f(occurred_at=None), "missing_field", "occurred_at"),
    ("unknown field", lambda f: f(colour="red"), "unknown_field", "colour"),
    (
        "retracts and amends",
        lambda f: f(retracts="x", amends="y"),
        "conflicting_fields",
        None,
    ),
    (
        "protected attribute smuggled in",
        lambda f: f(type="societal.volunteering", attributes={"hours": 3, "religion": "x"}),
        "unknown_attribute",
        "attributes.religion",
    ),
]


@pytest.mark.parametrize(
    ("build", "code", "field"),
    [pytest.param(b, c, f, id=d) for d, b, c, f in REFUSALS],
)
def test_a_refused_line_names_code_and_field_and_changes_nothing(
    build: Callable[[Any], dict[str, Any]],
    code: str,
    field: str | None,
    ingest: Any,
    record_line: Any,
    state: Any,
    rid: Callable[[int], str],
) -> None:
    # Some data already stored, so "nothing changed" compares something.
    ingest(record_line(rid=rid(3)))
    before = state()
    bad = build(lambda **kw: record_line(**{"rid": rid(9), **kw}))
    report = ingest(bad)
    (res,) = report.results
    assert (res.status, res.code, res.field) == ("rejected", code, field), res.message
    assert res.message
    assert report.rescore.subjects == 0
    assert state() == before


def test_good_lines_land_beside_refused_ones(ingest: Any, record_line: Any, rid: Any) -> None:
    report = ingest(
        record_line(rid=rid(1)),
        RecordRejected("bad_json", "not valid JSON"),
        record_line(rid=rid(2), occurred_at="2999-01-01"),
        record_line(rid=rid(3), type="societal.fail_to_yield_pedestrian", attributes=None),
    )
    assert [r.status for r in report.results] == ["accepted", "rejected", "rejected", "accepted"]
    assert [r.code for r in report.rejected] == ["bad_json", "future_date"]
    assert [r.line for r in report.rejected] == [2, 3]


def test_reingesting_a_batch_adds_nothing(
    ingest: Any, record_line: Any, state: Any, rid: Callable[[int], str]
) -> None:
    a, b = record_line(rid=rid(1)), record_line(rid=rid(2))
    batch = [
        a,
        b,
        record_line(rid=rid(3), type="societal.volunteering", attributes={"hours": 60}),
        {"provider": a["provider"], "ref": "retract-a", "retracts": a["ref"]},
        record_line(rid=rid(2), amends=b["ref"], attributes={"amount_cny": 10}),
    ]
    first = ingest(*batch)
    assert first.count("accepted") == 5
    before = state()
    again = ingest(*batch)
    assert [r.status for r in again.results] == ["duplicate"] * 5
    assert [r.seq for r in again.results] == [r.seq for r in first.results]
    assert state() == before


def test_scores_lists_and_outbox_share_the_ingest_transaction(
    engine: Engine,
    policy: Policy,
    clock: FixedClock,
    record_line: Any,
    state: Any,
) -> None:
    before = state()
    with session_factory(engine)() as session:
        session.begin()
        report = ingest_batch(session, policy=policy, lines=[(1, record_line())], now=clock.now())
        assert report.count("accepted") == 1
        inside = state(session)
        for table in ("ledger", "records", "subjects", "snapshots", "memberships", "outbox"):
            assert inside.counts[table] == before.counts[table] + (2 if table == "outbox" else 1)
        assert inside.head.seq == before.head.seq + 1
        assert session.execute(select(snapshots.c.grade)).scalar_one() == "B"
        session.rollback()
    assert state() == before
    with session_factory(engine)() as session, session.begin():
        assert ledger.verify(session).ok


def test_the_same_batch_sent_twice_at_once_is_stored_once(
    engine: Engine, policy: Policy, clock: FixedClock, record_line: Any, rid: Any, rows: Rows
) -> None:
    """A provider's retry racing its first attempt: one is accepted, the other a duplicate."""
    batch = [(n, record_line(rid=rid(n))) for n in range(1, 41)]
    start = threading.Barrier(2)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            start.wait(timeout=10)
            with session_factory(engine)() as session, session.begin():
                reports.append(ingest_batch(session, policy=policy, lines=batch, now=clock.now()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    counts = sorted((r.count("accepted"), r.count("duplicate")) for r in reports)
    assert counts == [(0, 40), (40, 0)]
    assert len(rows(records)) == 40
    with session_factory(engine)() as session, session.begin():
        assert ledger.verify(session).ok
