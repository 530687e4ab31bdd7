"""Rescoring on the real-time path: snapshots, list entries, moves and exits, and their outbox."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Engine

from chengxin.domain.policy import Policy
from chengxin.service.clock import FixedClock
from chengxin.service.rescore import rescore_subjects
from chengxin.store.db import transaction
from chengxin.store.schema import memberships, outbox, snapshots

Rows = Callable[..., Sequence[Any]]


def events(rows: Rows) -> list[tuple[str, dict[str, Any]]]:
    return [(r.topic, json.loads(r.payload)) for r in rows(outbox)]


def test_a_second_entry_record_moves_the_end_of_the_listing(
    ingest: Any, record_line: Any, rows: Rows
) -> None:
    ingest(record_line(occurred_at="2026-03-01"))
    ingest(record_line(occurred_at="2026-06-01", attributes={"amount_cny": 10}))
    (member,) = rows(memberships)
    assert (str(member.since), str(member.until), member.left_at) == (
        "2026-03-01",
        "2028-06-01",
        None,
    )
    topics = [t for t, _ in events(rows)]
    assert topics.count("list.entered") == 1
    (snap,) = rows(snapshots)
    assert snap.score == 1000 - 100 - 50


def test_performing_the_judgment_lifts_the_listing(
    ingest: Any, record_line: Any, rows: Rows
) -> None:
    ingest(record_line(occurred_at="2026-03-01"))
    report = ingest(
        record_line(type="judicial.judgment_performed", attributes=None, occurred_at="2026-09-01")
    )
    assert report.rescore.left == 1
    (member,) = rows(memberships)
    assert member.left_at is not None
    left = [d for t, d in events(rows) if t == "list.left"]
    assert [d["list"] for d in left] == ["judgment-defaulters"]
    # The points remain until they expire: performance lifts the list, not the record.
    (snap,) = rows(snapshots)
    assert snap.score == 900


def test_a_grade_list_is_entered_and_left_with_the_grade(
    ingest: Any, record_line: Any, rows: Rows
) -> None:
    good = [
        record_line(type="societal.heroic_act", attributes=None),  # +30
        record_line(type="societal.blood_donation", attributes=None),  # +10
        record_line(type="societal.volunteering", attributes={"hours": 50}),  # +10
    ]
    report = ingest(*good)
    assert report.rescore.entered == 1
    (snap,) = rows(snapshots)
    assert (snap.score, snap.grade) == (1050, "AAA")
    (member,) = rows(memberships)
    assert (member.list_code, member.kind, member.since, member.until) == (
        "honour-roll",
        "red",
        None,
        None,
    )
    ingest({"provider": good[1]["provider"], "ref": "r-1", "retracts": good[1]["ref"]})
    (member,) = rows(memberships)
    assert member.left_at is not None
    grades = [(d["old"], d["new"]) for t, d in events(rows) if t == "grade.changed"]
    assert grades == [("A", "AAA"), ("AAA", "AA")]


def test_rescoring_unchanged_subjects_sends_nothing(
    engine: Engine, policy: Policy, clock: FixedClock, ingest: Any, record_line: Any, rows: Rows
) -> None:
    ingest(record_line())
    before = rows(outbox)
    (snap,) = rows(snapshots)
    with transaction(engine) as session:
        summary = rescore_subjects(
            session,
            policy=policy,
            subject_ids=[snap.subject_id],
            as_of=clock.today(),
            now=clock.now(),
        )
    assert (summary.subjects, summary.grade_changes, summary.entered, summary.left) == (1, 0, 0, 0)
    assert rows(outbox) == before


def test_rescoring_as_of_a_later_date_steps_down_and_expires(
    engine: Engine, policy: Policy, clock: FixedClock, ingest: Any, record_line: Any, rows: Rows
) -> None:
    ingest(record_line(occurred_at="2026-03-01"))
    (snap,) = rows(snapshots)

    def at(day: date) -> Any:
        with transaction(engine) as session:
            rescore_subjects(
                session,
                policy=policy,
                subject_ids=[snap.subject_id],
                as_of=day,
                now=clock.now(),
            )
        (got,) = rows(snapshots)
        return got.score, got.grade, got.next_change

    assert at(date(2027, 3, 1)) == (950, "B", date(2028, 3, 1))  # 50% after a year
    assert at(date(2028, 3, 1)) == (1000, "A", None)  # expired, and off the list
    assert rows(memberships)[0].left_at is not None
