"""Stored policies: versions are immutable, activation is audited, the right one is in force."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import Engine, select

from chengxin.domain.policy import Policy
from chengxin.service.clock import FixedClock
from chengxin.service.errors import Invalid, NoActivePolicy, NotFound
from chengxin.service.policies import (
    activate,
    active_policy,
    add_policy,
    get_policy,
    read_policy_source,
)
from chengxin.store import ledger
from chengxin.store.db import transaction
from chengxin.store.schema import activations
from chengxin.store.schema import ledger as ledger_table

NATIONAL, SOURCE = read_policy_source("national")
LATER = NATIONAL.replace('version: "2026.1"', 'version: "2027.1"').replace(
    "points: -5, expires: 1y}", "points: -6, expires: 1y}", 1
)


def test_no_policy_is_active_in_an_empty_database(engine: Engine) -> None:
    with transaction(engine) as session, pytest.raises(NoActivePolicy, match="activate"):
        active_policy(session)


def test_adding_a_version_twice_is_idempotent_but_not_with_new_content(
    engine: Engine, clock: FixedClock
) -> None:
    with transaction(engine) as session:
        a = add_policy(session, text=NATIONAL, source=SOURCE, now=clock.now())
        b = add_policy(session, text=NATIONAL, source=SOURCE, now=clock.now())
        assert a.id == b.id
        changed = NATIONAL.replace("points: -5, expires: 1y}", "points: -7, expires: 1y}", 1)
        with pytest.raises(Invalid, match="new version"):
            add_policy(session, text=changed, source="changed.yaml", now=clock.now())


def test_activation_is_an_audited_ledger_entry(engine: Engine, clock: FixedClock) -> None:
    with transaction(engine) as session:
        stored = add_policy(session, text=NATIONAL, source=SOURCE, now=clock.now())
        for actor, reason in (("", "why"), ("ops", "  ")):
            with pytest.raises(Invalid):
                activate(session, policy_id=stored.id, actor=actor, reason=reason, now=clock.now())
        seq = activate(session, policy_id=stored.id, actor="ops", reason="launch", now=clock.now())
        entry = session.execute(select(ledger_table).where(ledger_table.c.seq == seq)).one()
        act = session.execute(select(activations)).one()
        assert ledger.verify(session).ok
    assert entry.kind == "policy.activation"
    payload = json.loads(entry.payload)
    assert payload == {
        "policy": "national",
        "version": "2026.1",
        "content_hash": stored.policy.content_hash,
        "actor": "ops",
        "reason": "launch",
        "effective_from": "2026-11-01",  # today by default
    }
    assert (act.ledger_seq, act.actor, act.effective_from) == (seq, "ops", date(2026, 11, 1))
    with transaction(engine) as session, pytest.raises(NotFound):
        activate(session, policy_id=999, actor="ops", reason="x", now=clock.now())


def test_the_policy_in_force_depends_on_the_date(
    engine: Engine, policy: Policy, clock: FixedClock
) -> None:
    with transaction(engine) as session:
        later = add_policy(session, text=LATER, source="later.yaml", now=clock.now())
        activate(
            session,
            policy_id=later.id,
            actor="ops",
            reason="next year",
            now=clock.now(),
            effective_from=date(2027, 1, 1),
        )
    with transaction(engine) as session:
        assert active_policy(session, on=date(2026, 12, 31)).policy.label == "national@2026.1"
        assert active_policy(session, on=date(2027, 1, 1)).policy.label == "national@2027.1"
        assert active_policy(session).policy.label == "national@2027.1"
        with pytest.raises(NoActivePolicy):
            active_policy(session, on=date(1969, 12, 31))


def test_stored_policies_by_version_name_or_hash(
    engine: Engine, policy: Policy, clock: FixedClock
) -> None:
    with transaction(engine) as session:
        later = add_policy(session, text=LATER, source="later.yaml", now=clock.now())
        assert get_policy(session, ref="national@2026.1").policy == policy
        assert get_policy(session, ref="national").id == later.id  # the newest
        assert get_policy(session, ref=policy.content_hash).policy.label == "national@2026.1"
        for ref in ("national@1.0", "nope", "sha256:" + "0" * 64):
            with pytest.raises(NotFound):
                get_policy(session, ref=ref)


def test_reading_policy_sources() -> None:
    text, source = read_policy_source("national")
    assert source == "national.yaml" and "policy: national" in text
    with pytest.raises(NotFound, match="packs"):
        read_policy_source("no-such-pack")
    with pytest.raises(NotFound, match="does not exist"):
        read_policy_source("/nonexistent/policy.yaml")
