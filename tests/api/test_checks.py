"""Services check measures: the decision only, for registered measures only, always audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from chengxin.store.schema import audit_events

Auth = Callable[[str], dict[str, str]]
State = Callable[..., Any]
Rows = Callable[..., Any]

pytestmark = pytest.mark.usefixtures("backend")


def ask(client: TestClient, auth: Auth, who: str, measure: str = "transport.flight_booking") -> Any:
    body = {
        "subject": {"scheme": "cn-rid", "id": who},
        "measure": measure,
        "purpose": "booking MU5101",
    }
    return client.post("/v1/checks", json=body, headers=auth("service"))


def test_a_defaulter_is_denied_with_reasons_version_and_appeal_and_nothing_else(
    client: TestClient, auth: Auth, ingest: Any, record_line: Any, rid: Callable[[int], str]
) -> None:
    assert ingest(record_line(rid=rid(2))).count("accepted") == 1
    r = ask(client, auth, rid(2))
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {"measure", "decision", "reasons", "policy_version", "appeal"}
    assert data["decision"] == "deny"
    assert data["reasons"][0] == "list:judgment-defaulters" and len(data["reasons"]) <= 4
    assert data["policy_version"] == "national@2026.1"
    assert "dispute" in data["appeal"].lower()


def test_a_clean_subject_is_allowed_without_reasons(
    client: TestClient, auth: Auth, ingest: Any, record_line: Any, rid: Callable[[int], str]
) -> None:
    r = ask(client, auth, rid(1))
    assert r.json() == {
        "measure": "transport.flight_booking",
        "decision": "allow",
        "reasons": [],
        "policy_version": "national@2026.1",
        "appeal": None,
    }


def test_an_unknown_subject_is_answered_as_one_with_no_records_and_audited_without_subject(
    client: TestClient, auth: Auth, rid: Callable[[int], str], rows: Rows
) -> None:
    unknown = ask(client, auth, rid(777))
    known_clean = ask(client, auth, rid(1))  # the subject principal's row exists, no records
    assert unknown.status_code == known_clean.status_code == 200
    assert unknown.json() == known_clean.json()
    events = rows(audit_events)
    assert [(e.action, e.subject_id is None) for e in events] == [
        ("check", True),
        ("check", False),
    ]


@pytest.mark.parametrize(
    ("measure", "status", "code"),
    [
        ("hospitality.luxury_hotel", 403, "measure_not_registered"),  # not in its scopes
        ("rental.deposit_free", 403, "not_registered"),  # in scopes; the policy says landlords
        ("transport.teleport", 403, "measure_not_registered"),
    ],
)
def test_a_service_asks_only_for_measures_it_is_registered_for(
    client: TestClient,
    auth: Auth,
    ingest: Any,
    record_line: Any,
    rid: Callable[[int], str],
    state: State,
    measure: str,
    status: int,
    code: str,
) -> None:
    assert ingest(record_line(rid=rid(2))).count("accepted") == 1
    before = state()
    for who in (rid(2), rid(777)):  # the same answer for a known and an unknown subject
        r = ask(client, auth, who, measure)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
    assert state() == before


def test_bad_identifiers_and_bodies_are_refused_with_their_code(
    client: TestClient,
    auth: Auth,
    rid: Callable[[int], str],
    state: State,
    wrong_check: Callable[[str], str],
) -> None:
    before = state()
    r = ask(client, auth, wrong_check(rid(2)))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "identifier.bad_check_character"
    body = {"subject": {"scheme": "cn-rid", "id": rid(2)}, "measure": "transport.flight_booking"}
    r = client.post("/v1/checks", json=body, headers=auth("service"))
    assert r.status_code == 422 and "purpose" in r.json()["error"]["message"]
    body |= {"purpose": "x", "score": True}
    r = client.post("/v1/checks", json=body, headers=auth("service"))
    assert r.status_code == 422 and "score" in r.json()["error"]["message"]
    assert state() == before


def test_every_check_is_audited_with_measure_decision_and_purpose(
    client: TestClient,
    auth: Auth,
    ingest: Any,
    record_line: Any,
    rid: Callable[[int], str],
    rows: Rows,
) -> None:
    assert ingest(record_line(rid=rid(2))).count("accepted") == 1
    for _ in range(3):
        assert ask(client, auth, rid(2)).status_code == 200
    events = rows(audit_events)
    assert len(events) == 3
    e = events[-1]
    assert (e.principal, e.role, e.action, e.purpose) == (
        "service-1",
        "service",
        "check",
        "booking MU5101",
    )
    assert e.subject_id is not None
    assert '"decision":"deny"' in e.detail and '"measure":"transport.flight_booking"' in e.detail


def test_a_subject_to_rescore_first_is_rescored_answered_and_audited_once(
    client: TestClient,
    auth: Auth,
    ingest: Any,
    record_line: Any,
    rid: Callable[[int], str],
    rows: Rows,
    engine: Any,
) -> None:
    from sqlalchemy import update

    from chengxin.store.db import transaction
    from chengxin.store.schema import snapshots

    assert ingest(record_line(rid=rid(2))).count("accepted") == 1
    with transaction(engine) as session:  # as after a correction elsewhere: not to be trusted
        session.execute(update(snapshots).values(stale=True))
    r = ask(client, auth, rid(2))
    assert r.status_code == 200 and r.json()["decision"] == "deny"
    events = rows(audit_events)
    assert len(events) == 1 and events[0].subject_id is not None
    assert '"decision":"deny"' in events[0].detail
    stale = rows(snapshots)
    assert stale and not any(s.stale for s in stale)  # rescored (and stored) on the way
