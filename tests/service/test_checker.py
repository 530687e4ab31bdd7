"""The fast Checker decides exactly as the reference ``check``, whatever the subject's state."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select, update

from chengxin.domain.identifiers import SubjectId, make_rid, parse_identifier
from chengxin.domain.policy import Policy
from chengxin.service.checker import Checker
from chengxin.service.clock import FixedClock
from chengxin.service.errors import NotFound, NotRegistered
from chengxin.service.ingest import ingest_batch
from chengxin.service.subjects import check as reference_check
from chengxin.store import repo
from chengxin.store.db import transaction
from chengxin.store.schema import consents, snapshots, subjects

# (type, attributes) of the records people get: list entries, penalties, rewards.
KINDS: list[tuple[str, dict[str, Any] | None]] = [
    ("judicial.judgment_unperformed", {"amount_cny": 250_000}),
    ("judicial.judgment_unperformed", {"amount_cny": 2_000}),
    ("judicial.obstruction_of_enforcement", None),
    ("judicial.judgment_performed", None),
    ("societal.fail_to_yield_pedestrian", None),
    ("societal.volunteering", {"hours": 60}),
    ("societal.heroic_act", None),
    ("societal.blood_donation", None),
]
REWARDS = ["rental.deposit_free", "utility.energy_discount", "finance.lower_loan_rate"]

person = st.fixed_dictionaries(
    {
        "records": st.lists(
            st.tuples(
                st.sampled_from(range(len(KINDS))),
                st.dates(min_value=date(2022, 1, 1), max_value=date(2026, 10, 31)),
            ),
            max_size=5,
        ),
        "consents": st.sets(st.sampled_from(REWARDS)),
        "rescored": st.booleans(),  # False: the import path's stale placeholder
        "stale": st.booleans(),
    }
)
_numbers = itertools.count(1000)


def person_rid(n: int) -> str:
    """A valid cn-rid for person ``n`` (as the conftest's ``rid`` fixture makes them)."""
    return make_rid("110105", date(1970, 1, 1) + timedelta(days=n // 1000), n % 1000)


def _questions(policy: Policy) -> list[tuple[str, str]]:
    out = [(m.code, service) for m in policy.measures for service in m.consulted_by]
    return [*out, ("transport.flight_booking", "landlord"), ("no.such_measure", "airline")]


def _answer(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn``'s decision, or the refusal it raised (type and message)."""
    try:
        return fn(*args, **kwargs)
    except (NotFound, NotRegistered) as exc:
        return type(exc), str(exc)


def _store(engine: Engine, policy: Policy, clock: FixedClock, who: str, spec: Any) -> None:
    lines = []
    for n, (kind, day) in enumerate(spec["records"]):
        rtype, attributes = KINDS[kind]
        line: dict[str, Any] = {
            "provider": "court-110105",
            "ref": f"{who}-{n}",
            "subject": {"scheme": "cn-rid", "id": who, "kind": "person", "name": "Li Si"},
            "type": rtype,
            "occurred_at": day.isoformat(),
        }
        if attributes is not None:
            line["attributes"] = attributes
        lines.append((n + 1, line))
    with transaction(engine) as session:
        ingest_batch(
            session,
            policy=policy,
            lines=lines,
            now=clock.now(),
            today=clock.today(),
            rescore=spec["rescored"],
        )
        row = repo.find_subject(session, parse_identifier("cn-rid", who))
        if row is None:
            return
        for measure in sorted(spec["consents"]):
            session.execute(
                insert(consents).values(subject_id=row.id, measure=measure, granted_at=clock.now())
            )
        if spec["stale"]:
            session.execute(
                update(snapshots).where(snapshots.c.subject_id == row.id).values(stale=True)
            )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(people=st.lists(person, min_size=1, max_size=3), later=st.integers(0, 900))
def test_the_checker_decides_as_the_reference(
    engine: Engine, policy: Policy, people: list[Any], later: int
) -> None:
    clock = FixedClock.on(date(2026, 11, 1))
    who = [person_rid(next(_numbers)) for _ in people]
    for rid, spec in zip(who, people, strict=True):
        _store(engine, policy, clock, rid, spec)
    clock.advance(timedelta(days=later))  # snapshots may now be past their next change
    unknown = person_rid(next(_numbers))
    checker = Checker(engine, clock=clock)
    try:
        for rid in [*who, unknown]:
            subject = SubjectId("cn-rid", rid)
            for measure, service in _questions(policy):
                fast = _answer(checker.check, subject, measure, service)
                with transaction(engine) as session:
                    slow = _answer(
                        reference_check,
                        session,
                        subject=subject,
                        measure=measure,
                        service=service,
                        clock=clock,
                    )
                assert fast == slow, (rid, measure, service)
            # The id the check's audit event names, read in the checker's one statement.
            with transaction(engine) as session:
                row = session.execute(
                    select(subjects.c.id).where(
                        subjects.c.scheme == "cn-rid", subjects.c.value == rid
                    )
                ).scalar_one_or_none()
            consulted = {m.code: m.consulted_by for m in policy.measures}
            measure, service = next((m, s) for m, s in _questions(policy) if s in consulted[m])
            assert checker.check_subject(subject, measure, service)[1] == row
    finally:
        checker.close()


def test_the_checker_sees_a_new_activation_on_an_unknown_subject(
    engine: Engine, policy: Policy, clock: FixedClock
) -> None:
    from chengxin.service.policies import install_policy, read_policy_source

    checker = Checker(engine, clock=clock)
    try:
        nobody = SubjectId("cn-rid", person_rid(999))
        first = checker.check(nobody, "transport.flight_booking", "airline")
        assert first.policy_version == policy.label
        text, source = read_policy_source("city-points")
        with transaction(engine) as session:
            install_policy(
                session,
                text=text,
                source=source,
                actor="tests",
                reason="switch",
                now=clock.now(),
            )
        with pytest.raises(NotFound):
            checker.check(nobody, "transport.flight_booking", "airline")
    finally:
        checker.close()
