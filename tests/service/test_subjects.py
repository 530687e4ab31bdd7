"""Explain and check: every point explained, least disclosure, right on the day it is asked."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from chengxin.domain.decisions import MAX_REASONS
from chengxin.domain.identifiers import SubjectId, parse_identifier
from chengxin.domain.policy import Policy
from chengxin.service.clock import FixedClock
from chengxin.service.errors import NotFound, NotRegistered
from chengxin.service.ingest import ingest_batch
from chengxin.service.policies import activate, add_policy, read_policy_source
from chengxin.service.subjects import check, explain, list_counts, list_members
from chengxin.store.db import transaction
from chengxin.store.schema import consents, memberships, outbox, snapshots

Rows = Callable[..., Sequence[Any]]


def sid(value: str) -> SubjectId:
    return parse_identifier("cn-rid", value)


def ask(engine: Engine, clock: FixedClock, subject: str, measure: str, service: str) -> Any:
    with transaction(engine) as session:
        return check(session, subject=sid(subject), measure=measure, service=service, clock=clock)


@pytest.fixture
def defaulter(ingest: Any, record_line: Any, rid: Callable[[int], str]) -> str:
    """Person 1: two unperformed judgments (one large, one old), a traffic offence, volunteering."""
    who = rid(1)
    report = ingest(
        record_line(rid=who, occurred_at="2026-03-01"),
        record_line(rid=who, occurred_at="2025-06-01", attributes={"amount_cny": 20_000}),
        record_line(
            rid=who,
            type="societal.fail_to_yield_pedestrian",
            attributes=None,
            occurred_at="2026-08-15",
        ),
        record_line(
            rid=who,
            type="societal.volunteering",
            attributes={"hours": 60},
            occurred_at="2026-05-01",
        ),
    )
    assert report.count("accepted") == 4
    return who


def test_explain_lists_every_contribution_with_rule_step_expiry_and_policy(
    engine: Engine, clock: FixedClock, policy: Policy, defaulter: str
) -> None:
    with transaction(engine) as session:
        data = explain(session, subject=sid(defaulter), clock=clock).as_dict()
    assert data["policy"] == "national@2026.1" == policy.label
    assert data["policy_hash"] == policy.content_hash
    assert data["as_of"] == "2026-11-01" and data["base"] == 1000
    got = {
        (c["rule"], c["points"], c["pct"], c["value"], c["occurred_at"], c["expires_on"])
        for c in data["contributions"]
    }
    assert got == {
        ("large-default", -100, 100, -100, "2026-03-01", "2028-03-01"),
        ("default", -50, 50, -25, "2025-06-01", "2027-06-01"),  # stepped to 50% after 1y
        ("fail-to-yield", -5, 100, -5, "2026-08-15", "2027-08-15"),
        ("volunteering-long", 10, 100, 10, "2026-05-01", "2028-05-01"),
    }
    assert data["score"] == data["raw"] == 1000 - 100 - 25 - 5 + 10
    assert data["grade"] == "B"
    assert data["next_change"] == "2027-03-01"
    (listed,) = data["lists"]
    assert listed["list"] == "judgment-defaulters"
    assert (listed["since"], listed["until"]) == ("2025-06-01", "2028-03-01")
    assert len(listed["records"]) == 2
    assert len(data["records"]) == 4 and all(r["counts"] for r in data["records"])
    assert sum(r["value"] for r in data["records"]) == data["score"] - data["base"]


def test_explain_shows_records_that_no_longer_count(
    engine: Engine, clock: FixedClock, ingest: Any, record_line: Any, rid: Any
) -> None:
    line = record_line(rid=rid(2))
    ingest(
        line,
        record_line(
            rid=rid(2),
            type="societal.smoking_in_non_smoking_zone",
            attributes=None,
            occurred_at="2025-01-01",
        ),
    )
    ingest({"provider": line["provider"], "ref": "x", "retracts": line["ref"]})
    with transaction(engine) as session:
        data = explain(session, subject=sid(rid(2)), clock=clock).as_dict()
    assert data["contributions"] == [] and data["score"] == 1000
    assert [(r["status"], r["counts"]) for r in data["records"]] == [
        ("active", False),  # expired
        ("retracted", False),
    ]


def test_explain_of_an_unknown_subject_is_not_found(
    engine: Engine, clock: FixedClock, policy: Policy, rid: Any
) -> None:
    with transaction(engine) as session, pytest.raises(NotFound):
        explain(session, subject=sid(rid(99)), clock=clock)


def test_a_defaulter_may_not_book_a_flight(
    engine: Engine, clock: FixedClock, defaulter: str, policy: Policy
) -> None:
    d = ask(engine, clock, defaulter, "transport.flight_booking", "airline")
    assert d.outcome == "deny"
    assert 1 <= len(d.reasons) <= MAX_REASONS
    assert d.reasons[0] == "list:judgment-defaulters"
    assert set(d.reasons[1:]) == {"rule:large-default", "rule:default"}
    assert d.appeal and "court" in d.appeal
    assert d.policy_version == policy.label
    # Only the decision: no score, grade or record leaks to the airline.
    assert set(d.__slots__) == {"measure", "outcome", "reasons", "policy_version", "appeal"}
    # The unrelated sanction is allowed, with nothing attached.
    d2 = ask(engine, clock, defaulter, "procurement.public_tender", "procurement_office")
    assert (d2.outcome, d2.reasons, d2.appeal) == ("allow", (), None)


GRADE_SANCTION = """
  - code: finance.credit_line
    kind: sanction
    title: Opening a credit line (test measure triggered by grade)
    triggered_by: {grade_at_most: C}
    consulted_by: [bank]
    related_domains: [judicial, commercial, societal]
    legal_basis: test fixture
    appeal: Ask the issuing bank for a review.
"""


def test_a_denial_names_at_most_four_principal_reasons(
    engine: Engine, clock: FixedClock, policy: Policy, ingest: Any, record_line: Any, rid: Any
) -> None:
    # A grade-triggered sanction: the reasons are the grade and the rules that weigh
    # most against the subject, largest first, cut at four (hard line 5, FCRA-style).
    text_, _ = read_policy_source("national")
    text_ = text_.replace('version: "2026.1"', 'version: "2026.2"').replace(
        "measures:\n", "measures:\n" + GRADE_SANCTION, 1
    )
    with transaction(engine) as session:
        stored = add_policy(session, text=text_, source="grade.yaml", now=clock.now())
        activate(
            session,
            policy_id=stored.id,
            actor="tests",
            reason="grade sanction",
            now=clock.now(),
            effective_from=date(1970, 1, 1),
        )
    who = rid(5)
    lines = [
        record_line(rid=who, type="commercial.contract_fraud", attributes=None),  # -150
        record_line(rid=who, type="judicial.obstruction_of_enforcement", attributes=None),
        record_line(rid=who),  # large-default -100
        record_line(rid=who, type="societal.fare_evasion", attributes={"repeat": True}),  # -10
        record_line(rid=who, type="societal.fail_to_yield_pedestrian", attributes=None),  # -5
        record_line(rid=who, type="societal.smoking_in_non_smoking_zone", attributes=None),
    ]
    with transaction(engine) as session:
        report = ingest_batch(
            session, policy=stored.policy, lines=list(enumerate(lines, 1)), now=clock.now()
        )
    assert report.count("accepted") == 6
    d = ask(engine, clock, who, "finance.credit_line", "bank")
    assert d.outcome == "deny"
    assert d.policy_version == "national@2026.2"
    assert len(d.reasons) == MAX_REASONS == 4
    # All under a year old, so full points: 1000 - 418 = 582, grade D.
    assert d.reasons == ("grade:D", "rule:contract-fraud", "rule:obstruction", "rule:large-default")
    assert d.appeal == "Ask the issuing bank for a review."


def test_a_service_not_registered_for_the_measure_learns_nothing(
    engine: Engine, clock: FixedClock, defaulter: str
) -> None:
    with pytest.raises(NotRegistered, match="hard line 6"):
        ask(engine, clock, defaulter, "transport.flight_booking", "bank")
    with pytest.raises(NotFound):
        ask(engine, clock, defaulter, "transport.teleport", "airline")


def test_an_unknown_subject_is_answered_as_one_with_no_records(
    engine: Engine,
    clock: FixedClock,
    policy: Policy,
    ingest: Any,
    record_line: Any,
    rid: Any,
    state: Any,
) -> None:
    line = record_line(rid=rid(3))
    ingest(line)
    ingest({"provider": line["provider"], "ref": "r", "retracts": line["ref"]})
    before = state()
    for m in policy.measures:
        for service in m.consulted_by:
            known = ask(engine, clock, rid(3), m.code, service)
            unknown = ask(engine, clock, rid(4), m.code, service)
            assert known == unknown, m.code
    # Asking about an unknown subject stores nothing about them.
    assert state().counts["subjects"] == before.counts["subjects"]


def test_a_check_after_the_next_change_rescores_first(
    engine: Engine, clock: FixedClock, ingest: Any, record_line: Any, rid: Any, rows: Rows
) -> None:
    who = rid(6)
    ingest(record_line(rid=who, occurred_at="2026-03-01"))
    assert ask(engine, clock, who, "transport.flight_booking", "airline").outcome == "deny"
    (snap,) = rows(snapshots)
    assert str(snap.next_change) == "2027-03-01"
    # The listing lasts two years: on 2028-03-01 it ends, with no batch run in between.
    clock.advance(date(2028, 3, 1) - clock.today())
    d = ask(engine, clock, who, "transport.flight_booking", "airline")
    assert (d.outcome, d.reasons) == ("allow", ())
    (member,) = rows(memberships)
    assert member.left_at == clock.now().replace(tzinfo=member.left_at.tzinfo)
    (snap,) = rows(snapshots)
    assert (snap.score, snap.as_of, snap.next_change) == (1000, clock.today(), None)
    left = rows(outbox, outbox.c.topic == "list.left")
    assert [json.loads(r.payload)["list"] for r in left] == ["judgment-defaulters"]


def test_a_check_the_day_before_the_next_change_trusts_the_snapshot(
    engine: Engine, clock: FixedClock, ingest: Any, record_line: Any, rid: Any, rows: Rows
) -> None:
    who = rid(6)
    ingest(record_line(rid=who, occurred_at="2026-03-01"))
    clock.advance(date(2028, 2, 29) - clock.today())
    assert ask(engine, clock, who, "transport.flight_booking", "airline").outcome == "deny"
    (member,) = rows(memberships)
    assert member.left_at is None


def _heroic(ingest: Any, record_line: Any, who: str) -> None:
    report = ingest(
        record_line(rid=who, type="societal.heroic_act", attributes=None, occurred_at="2026-10-01")
    )
    assert report.count("accepted") == 1


def _consent(engine: Engine, clock: FixedClock, who: str, measure: str) -> None:
    with transaction(engine) as session:
        from chengxin.store.repo import find_subject

        row = find_subject(session, sid(who))
        assert row is not None
        session.execute(
            insert(consents).values(subject_id=row.id, measure=measure, granted_at=clock.now())
        )


def test_a_reward_needs_consent_and_never_carries_reasons(
    engine: Engine, clock: FixedClock, ingest: Any, record_line: Any, rid: Any
) -> None:
    who = rid(7)
    _heroic(ingest, record_line, who)  # +30: 1030, grade AA
    without = ask(engine, clock, who, "rental.deposit_free", "landlord")
    assert (without.outcome, without.reasons, without.appeal) == ("allow", (), None)
    _consent(engine, clock, who, "rental.deposit_free")
    granted = ask(engine, clock, who, "rental.deposit_free", "landlord")
    assert (granted.outcome, granted.reasons, granted.appeal) == ("grant", (), None)
    # Consent is per measure: the energy discount is still only allowed.
    other = ask(engine, clock, who, "utility.energy_discount", "utility")
    assert other.outcome == "allow"


def test_a_revoked_consent_no_longer_grants(
    engine: Engine, clock: FixedClock, ingest: Any, record_line: Any, rid: Any
) -> None:
    who = rid(8)
    _heroic(ingest, record_line, who)
    _consent(engine, clock, who, "rental.deposit_free")
    with transaction(engine) as session:
        session.execute(consents.update().values(revoked_at=clock.now()))
    assert ask(engine, clock, who, "rental.deposit_free", "landlord").outcome == "allow"


def test_consent_without_standing_grants_nothing(
    engine: Engine, clock: FixedClock, defaulter: str
) -> None:
    _consent(engine, clock, defaulter, "rental.deposit_free")
    d = ask(engine, clock, defaulter, "rental.deposit_free", "landlord")
    assert (d.outcome, d.reasons) == ("allow", ())


def test_public_lists_mask_identifiers(engine: Engine, clock: FixedClock, defaulter: str) -> None:
    with transaction(engine) as session:
        assert list_counts(session) == {"judgment-defaulters": 1}
        (shown,) = list_members(session, list_code="judgment-defaulters", masked=True)
        (full,) = list_members(session)
    assert defaulter[4:-4] not in shown.subject and shown.subject.endswith(defaulter[-4:])
    assert shown.name is None
    assert full.subject == f"cn-rid:{defaulter}" and full.name == "Zhang San"


def test_a_stale_snapshot_is_not_trusted_for_a_reward(
    engine: Engine, clock: FixedClock, ingest: Any, record_line: Any, rid: Any, rows: Rows
) -> None:
    # A sanction that holds is always rescored (for its reasons); a reward is answered
    # from the snapshot, so this is where trusting a snapshot past next_change would show.
    who = rid(11)
    _heroic(ingest, record_line, who)  # +30 on 2026-10-01, halved after a year
    _consent(engine, clock, who, "rental.deposit_free")
    assert ask(engine, clock, who, "rental.deposit_free", "landlord").outcome == "grant"
    (snap,) = rows(snapshots)
    assert (snap.grade, snap.next_change) == ("AA", date(2027, 10, 1))
    clock.advance(date(2027, 10, 1) - clock.today())
    assert ask(engine, clock, who, "rental.deposit_free", "landlord").outcome == "allow"
    (snap,) = rows(snapshots)
    assert (snap.score, snap.grade, snap.as_of) == (1015, "A", date(2027, 10, 1))
    changes = [json.loads(r.payload) for r in rows(outbox, outbox.c.topic == "grade.changed")]
    assert [(c["old"], c["new"]) for c in changes] == [("A", "AA"), ("AA", "A")]
