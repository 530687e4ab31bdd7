"""Subjects see themselves and who consulted them; adjudicators read anyone with a purpose."""

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


@pytest.fixture
def records_on_me(ingest: Any, record_line: Any, rid: Callable[[int], str]) -> list[str]:
    """Person 1 (the subject principal): an unperformed judgment and volunteering."""
    lines = [
        record_line(rid=rid(1)),
        record_line(
            rid=rid(1),
            type="societal.volunteering",
            attributes={"hours": 60},
            occurred_at="2026-05-01",
        ),
    ]
    assert ingest(*lines).count("accepted") == 2
    return [line["ref"] for line in lines]


def test_me_explain_and_history(
    client: TestClient,
    auth: Auth,
    records_on_me: list[str],
    ingest: Any,
    rid: Callable[[int], str],
) -> None:
    me = client.get("/v1/me", headers=auth("subject"))
    assert me.status_code == 200, me.text
    data = me.json()
    assert data["subject"]["id"] == rid(1) and data["grade"] == "B"
    assert data["score"] == 1000 - 100 + 10 and data["records"] == data["counting"] == 2
    assert [m["list"] for m in data["lists"]] == ["judgment-defaulters"]
    ex = client.get("/v1/me/explain", headers=auth("subject")).json()
    assert {c["rule"] for c in ex["contributions"]} == {"large-default", "volunteering-long"}
    # A retracted record stays in the history, marked so.
    retraction = {"provider": "court-110105", "ref": "r-1", "retracts": records_on_me[0]}
    assert ingest(retraction).count("accepted") == 1
    history = client.get("/v1/me/history", headers=auth("subject")).json()
    assert {(r["ref"], r["status"]) for r in history["records"]} == {
        (records_on_me[0], "retracted"),
        (records_on_me[1], "active"),
    }


def test_a_subject_sees_who_consulted_it_and_for_what(
    client: TestClient, auth: Auth, records_on_me: list[str], rid: Callable[[int], str]
) -> None:
    body = {
        "subject": {"scheme": "cn-rid", "id": rid(1)},
        "measure": "transport.flight_booking",
        "purpose": "booking MU5101",
    }
    assert client.post("/v1/checks", json=body, headers=auth("service")).status_code == 200
    path = f"/v1/subjects/cn-rid/{rid(1)}/explain"
    r = client.get(path, params={"purpose": "dispute 2026-17"}, headers=auth("adjudicator"))
    assert r.status_code == 200
    client.get("/v1/me", headers=auth("subject"))  # its own reads are not consultations
    seen = client.get("/v1/me/consultations", headers=auth("subject")).json()
    assert [(c["principal"], c["action"], c["measure"], c["purpose"]) for c in seen] == [
        ("adjudicator-1", "subject.explain", None, "dispute 2026-17"),
        ("service-1", "check", "transport.flight_booking", "booking MU5101"),
    ]
    assert seen[1]["decision"] == "deny"


def test_adjudicators_read_any_subject_with_a_purpose_audited(
    client: TestClient, auth: Auth, records_on_me: list[str], rid: Callable[[int], str], rows: Rows
) -> None:
    path = f"/v1/subjects/cn-rid/{rid(1)}/history"
    assert client.get(path, headers=auth("adjudicator")).status_code == 422  # no purpose
    for role in ("adjudicator", "admin"):
        r = client.get(path, params={"purpose": "appeal 7"}, headers=auth(role))
        assert r.status_code == 200 and len(r.json()["records"]) == 2
    events = rows(audit_events)
    assert [(e.role, e.action, e.purpose) for e in events] == [
        ("adjudicator", "subject.history", "appeal 7"),
        ("admin", "subject.history", "appeal 7"),
    ]
    unknown = f"/v1/subjects/cn-rid/{rid(555)}/explain"
    r = client.get(unknown, params={"purpose": "appeal 7"}, headers=auth("adjudicator"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_a_subject_asking_for_anyone_gets_404_whether_or_not_they_exist(
    client: TestClient,
    auth: Auth,
    ingest: Any,
    record_line: Any,
    rid: Callable[[int], str],
    state: State,
) -> None:
    assert ingest(record_line(rid=rid(2))).count("accepted") == 1
    before = state()
    answers = []
    for who in (rid(2), rid(555), rid(1), "not-an-id"):
        for what in ("explain", "history"):
            r = client.get(
                f"/v1/subjects/cn-rid/{who}/{what}",
                params={"purpose": "curious"},
                headers=auth("subject"),
            )
            answers.append((r.status_code, r.json()))
    assert {a[0] for a in answers} == {404}
    assert len({str(a[1]) for a in answers}) == 1  # the same body every time
    assert state() == before


def test_services_and_others_never_read_subjects(
    client: TestClient, auth: Auth, records_on_me: list[str], rid: Callable[[int], str]
) -> None:
    for role in ("service", "provider", "auditor", "policy_author", "public"):
        r = client.get(
            f"/v1/subjects/cn-rid/{rid(1)}/explain", params={"purpose": "x"}, headers=auth(role)
        )
        assert r.status_code == 403, role
        assert client.get("/v1/me", headers=auth(role)).status_code == 403
