"""The audit trail: every decision and personal-data read appended, hash-chained, verifiable."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, update

from chengxin.service import audit
from chengxin.service.clock import FixedClock
from chengxin.service.principals import Principal
from chengxin.store.db import transaction
from chengxin.store.schema import audit_events, audit_head

Auth = Callable[[str], dict[str, str]]
Rows = Callable[..., Any]

pytestmark = pytest.mark.usefixtures("backend")

AUDITOR = Principal(1, "auditor-x", "machine", "auditor")


@pytest.fixture
def people(ingest: Any, record_line: Any, rid: Callable[[int], str]) -> list[str]:
    """Persons 1 and 2 on the defaulter list, with names."""
    who = [rid(1), rid(2)]
    assert ingest(*(record_line(rid=w, name=f"Zhang {w[-3:]}") for w in who)).count("accepted") == 2
    return who


def personal_reads(who: str) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, params or body, role) of every route that reads or decides on a subject."""
    check = {
        "subject": {"scheme": "cn-rid", "id": who},
        "measure": "transport.flight_booking",
        "purpose": "booking",
    }
    return [
        ("POST", "/v1/checks", check, "service"),
        ("GET", "/v1/me", {}, "subject"),
        ("GET", "/v1/me/explain", {}, "subject"),
        ("GET", "/v1/me/history", {}, "subject"),
        ("GET", f"/v1/subjects/cn-rid/{who}/explain", {"purpose": "appeal"}, "adjudicator"),
        ("GET", f"/v1/subjects/cn-rid/{who}/history", {"purpose": "appeal"}, "admin"),
        ("GET", "/v1/lists/judgment-defaulters/members", {"purpose": "review"}, "auditor"),
    ]


def test_every_decision_and_personal_data_read_appends_an_event_that_verifies(
    client: TestClient, auth: Auth, people: list[str], rows: Rows
) -> None:
    for method, path, data, role in personal_reads(people[0]):
        before = len(rows(audit_events))
        if method == "POST":
            r = client.post(path, json=data, headers=auth(role))
        else:
            r = client.get(path, params=data, headers=auth(role))
        assert r.status_code == 200, (path, r.text)
        new = rows(audit_events)[before:]
        assert new, f"{path} was not audited"
        assert all(e.principal == f"{role}-1" and e.role == role for e in new)
        assert any(e.subject_id is not None for e in new)
    verified = client.get("/v1/audit/verify", headers=auth("auditor")).json()
    assert verified["audit"]["ok"] is True
    assert verified["audit"]["entries"] == len(rows(audit_events))


def test_audit_details_hold_no_identifiers_or_names(
    client: TestClient, auth: Auth, people: list[str], rows: Rows
) -> None:
    for who in people:
        for method, path, data, role in personal_reads(who):
            if method == "POST":
                client.post(path, json=data, headers=auth(role))
            else:
                client.get(path, params=data, headers=auth(role))
    events = rows(audit_events)
    assert len(events) > 10
    text = " ".join(f"{e.detail} {e.purpose or ''} {e.principal}" for e in events)
    for who in people:
        assert who not in text and who[:17] not in text and "Zhang" not in text
    assert not re.search(r"[0-9]{17}[0-9X]", text)
    assert all(isinstance(json.loads(e.detail), dict) for e in events)


def test_auditors_query_events_by_subject_principal_and_action_and_the_query_is_audited(
    client: TestClient, auth: Auth, people: list[str], rows: Rows
) -> None:
    for who in people:
        body = {
            "subject": {"scheme": "cn-rid", "id": who},
            "measure": "transport.flight_booking",
            "purpose": "booking",
        }
        assert client.post("/v1/checks", json=body, headers=auth("service")).status_code == 200
    r = client.get(
        "/v1/audit/events", params={"subject": f"cn-rid:{people[1]}"}, headers=auth("auditor")
    )
    assert r.status_code == 200
    (event,) = r.json()
    assert event["action"] == "check" and event["detail"]["decision"] == "deny"
    everything = client.get("/v1/audit/events", headers=auth("auditor")).json()
    assert [e["action"] for e in everything] == ["audit.read", "check", "check"]
    checks = client.get(
        "/v1/audit/events", params={"action": "check", "limit": 1}, headers=auth("auditor")
    ).json()
    assert len(checks) == 1 and checks[0]["seq"] == 2
    page = client.get(
        "/v1/audit/events", params={"before": 2, "principal": "service-1"}, headers=auth("auditor")
    ).json()
    assert [e["seq"] for e in page] == [1]
    reads = [e for e in rows(audit_events) if e.action == "audit.read"]
    assert reads[0].subject_id == event["subject_id"] and reads[0].principal == "auditor-1"


def test_the_chain_detects_changed_removed_and_reordered_events(
    engine: Engine, clock: FixedClock, client: TestClient, auth: Auth
) -> None:
    with transaction(engine) as session:
        for n in range(4):
            audit.record(
                session,
                principal=AUDITOR,
                action="check",
                purpose="p",
                subject_id=None,
                detail={"measure": "m", "n": n},
                now=clock.now() + timedelta(seconds=n),
            )
    with transaction(engine) as session:
        assert audit.verify_audit(session).ok

    def broken() -> dict[str, Any]:
        data: dict[str, Any] = client.get("/v1/audit/verify", headers=auth("auditor")).json()
        return data["audit"]

    tamper = [
        update(audit_events).where(audit_events.c.seq == 2).values(detail='{"measure":"x","n":1}'),
        update(audit_events).where(audit_events.c.seq == 3).values(purpose="other"),
        update(audit_events).where(audit_events.c.seq == 2).values(at=clock.now()),
        update(audit_events).where(audit_events.c.seq == 4).values(subject_id=None, role="admin"),
    ]
    for stmt in tamper:
        with engine.begin() as conn:
            saved = conn.execute(audit_events.select().order_by(audit_events.c.seq)).all()
            conn.execute(stmt)
        result = broken()
        assert result["ok"] is False and result["broken_at"] in (2, 3, 4), stmt
        with engine.begin() as conn:
            conn.execute(delete(audit_events))
            conn.execute(audit_events.insert(), [r._asdict() for r in saved])
        assert broken()["ok"] is True
    with engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 4))
    assert broken()["problem"] == "the head says event 4, the chain ends at event 3"
    with engine.begin() as conn:
        conn.execute(update(audit_head).values(seq=3))
    assert broken()["problem"] == "the head's hash does not match event 3's"


def test_details_that_look_like_identifiers_are_refused(
    engine: Engine, clock: FixedClock, rid: Callable[[int], str]
) -> None:
    with transaction(engine) as session:
        for bad in ({"who": rid(3)}, {"x": ["a", {"id": "91110108MA01ABCD1X"}]}):
            with pytest.raises(ValueError, match="identifier"):
                audit.record(
                    session,
                    principal=AUDITOR,
                    action="check",
                    purpose=None,
                    subject_id=None,
                    detail=bad,
                    now=clock.now(),
                )
        seq = audit.record(
            session,
            principal=AUDITOR,
            action="policy.activate",
            purpose=None,
            subject_id=None,
            detail={"content_hash": "sha256:" + "0123456789abcdef" * 4, "ledger_seq": 12},
            now=clock.now(),
        )
        assert seq == 1
