"""The pages people use, through the real app in process, on SQLite and PostgreSQL.

The browser tests (``tests/e2e``) click through the same pages in Chromium;
these check what a browser does not show: status codes, headers, audit
events and that nothing leaks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from chengxin.domain.identifiers import parse_identifier
from chengxin.domain.policy import Policy
from chengxin.service.clock import FixedClock
from chengxin.service.principals import add_principal
from chengxin.service.subjects import explain
from chengxin.store.db import transaction
from chengxin.store.schema import audit_events

SUBJECT_PASSWORD = "the subject's own password"


@pytest.fixture
def subject_login(
    engine: Engine,
    clock: FixedClock,
    policy: Policy,
    rid: Callable[[int], str],
    ingest: Any,
    record_line: Any,
) -> dict[str, str]:
    """Person 0, a judgment defaulter who logs in to the portal."""
    ingest(
        record_line(rid=rid(0)),
        record_line(
            rid=rid(0), type="societal.blood_donation", attributes={}, provider="red-cross-110000"
        ),
    )
    with transaction(engine) as session:
        add_principal(
            session,
            name="zhang",
            role="subject",
            kind="person",
            subject=parse_identifier("cn-rid", rid(0)),
            password=SUBJECT_PASSWORD,
            now=clock.now(),
        )
    return {"username": "zhang", "password": SUBJECT_PASSWORD, "rid": rid(0)}


def _log_in(client: TestClient, username: str, password: str) -> Any:
    return client.post(
        "/login",
        data={"username": username, "password": password},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )


def test_every_page_is_html_with_a_strict_policy_and_no_script(client: TestClient) -> None:
    for path in ("/", "/policy", "/login", "/lists/judgment-defaulters"):
        res = client.get(path)
        assert res.status_code == 200, path
        assert res.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in res.headers["content-security-policy"]
        assert res.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in res.text.lower()


def test_the_policy_page_publishes_every_rule_list_and_measure(
    client: TestClient, policy: Policy
) -> None:
    page = client.get("/policy").text
    assert policy.content_hash in page
    for item in (*policy.record_types, *policy.measures):
        assert item.code in page
    for rule in policy.rules:
        assert (rule.title or rule.id) in page
    for lst in policy.lists:
        assert (lst.title or lst.code) in page


def test_a_public_list_shows_masked_identifiers_and_no_names(
    client: TestClient, subject_login: dict[str, str]
) -> None:
    rid = subject_login["rid"]
    page = client.get("/lists/judgment-defaulters").text
    masked = rid[:4] + "*" * 10 + rid[-4:]
    assert masked in page
    assert rid not in page and "Zhang San" not in page
    found = client.get("/lists/judgment-defaulters", params={"q": rid})
    assert found.status_code == 200 and masked in found.text
    longer = client.get("/lists/judgment-defaulters", params={"q": rid[:8]})
    assert longer.status_code == 422 and 'role="alert"' in longer.text
    assert masked not in longer.text


def test_a_list_that_is_not_public_is_not_found(client: TestClient, policy: Policy) -> None:
    private = [lst.code for lst in policy.lists if not lst.public]
    for code in [*private, "no-such-list"]:
        res = client.get(f"/lists/{code}")
        assert res.status_code == 404 and "no public list" in res.text


def test_the_portal_needs_a_log_in(client: TestClient) -> None:
    res = client.get("/me", follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/login"


def test_a_wrong_password_is_said_on_the_form(
    client: TestClient, subject_login: dict[str, str]
) -> None:
    res = _log_in(client, "zhang", "not it")
    assert res.status_code == 401
    assert "the name or the password is wrong" in res.text
    assert "chengxin_session" not in res.headers.get("set-cookie", "")


def test_a_log_in_from_another_site_is_refused(
    client: TestClient, subject_login: dict[str, str]
) -> None:
    res = client.post(
        "/login",
        data={"username": "zhang", "password": SUBJECT_PASSWORD},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert res.status_code == 403 and "set-cookie" not in res.headers


def test_an_oversized_form_is_refused(client: TestClient) -> None:
    res = client.post(
        "/login",
        content=b"username=" + b"a" * 10_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert res.status_code == 413


def test_a_subject_sees_every_point_and_the_read_is_audited(
    client: TestClient,
    engine: Engine,
    clock: FixedClock,
    subject_login: dict[str, str],
    auth: Callable[[str], dict[str, str]],
) -> None:
    checked = client.post(
        "/v1/checks",
        json={
            "subject": {"scheme": "cn-rid", "id": subject_login["rid"]},
            "measure": "transport.flight_booking",
            "purpose": "booking AB123",
        },
        headers=auth("service"),
    )
    assert checked.status_code == 200
    assert _log_in(client, "zhang", SUBJECT_PASSWORD).status_code == 303
    page = client.get("/me")
    assert page.status_code == 200
    with transaction(engine) as session:
        ex = explain(session, subject=parse_identifier("cn-rid", subject_login["rid"]), clock=clock)
    score = re.search(r'id="score">(-?\d+)<', page.text)
    grade = re.search(r'id="grade">([^<]+)<', page.text)
    assert score and int(score.group(1)) == ex.result.score
    assert grade and grade.group(1) == ex.result.grade
    assert page.text.count("<tr>", page.text.index('id="points"')) >= len(ex.result.contributions)
    assert "booking AB123" in page.text and "transport.flight_booking" in page.text
    assert "<svg" in page.text
    with transaction(engine) as session:
        last = session.execute(
            select(audit_events.c.action, audit_events.c.purpose, audit_events.c.subject_id)
            .order_by(audit_events.c.seq.desc())
            .limit(1)
        ).one()
    assert (last.action, last.purpose, last.subject_id) == ("subject.read", "self", ex.subject.id)


def test_a_person_who_is_not_a_subject_has_no_portal(
    client: TestClient, person: Any, password: str
) -> None:
    assert _log_in(client, person.name, password).status_code == 303
    res = client.get("/me")
    assert res.status_code == 403 and "not one" in res.text


def test_log_out_needs_the_session_csrf_token(
    client: TestClient, subject_login: dict[str, str]
) -> None:
    _log_in(client, "zhang", SUBJECT_PASSWORD)
    refused = client.post("/logout", data={"csrf_token": "forged"}, follow_redirects=False)
    assert refused.status_code == 403
    assert client.get("/me", follow_redirects=False).status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/me").text)
    assert token
    done = client.post("/logout", data={"csrf_token": token.group(1)}, follow_redirects=False)
    assert done.status_code == 303
    assert client.get("/me", follow_redirects=False).status_code == 303


def _person(engine: Engine, clock: FixedClock, name: str, role: str) -> None:
    with transaction(engine) as session:
        add_principal(
            session, name=name, role=role, kind="person", password=SUBJECT_PASSWORD, now=clock.now()
        )


def test_an_adjudicator_reads_a_subject_for_a_purpose_the_subject_then_sees(
    client: TestClient, engine: Engine, clock: FixedClock, subject_login: dict[str, str]
) -> None:
    _person(engine, clock, "judge-li", "adjudicator")
    assert _log_in(client, "judge-li", SUBJECT_PASSWORD).status_code == 303
    qualified = f"cn-rid:{subject_login['rid']}"
    no_purpose = client.get("/console/subject", params={"subject": qualified})
    assert no_purpose.status_code == 422 and "purpose" in no_purpose.text
    read = client.get(
        "/console/subject", params={"subject": qualified, "purpose": "dispute 2026/117"}
    )
    assert read.status_code == 200 and 'id="points"' in read.text
    assert client.get("/console/audit").status_code == 403  # not an auditor
    client.cookies.clear()
    _log_in(client, "zhang", SUBJECT_PASSWORD)
    mine = client.get("/me").text
    assert "judge-li" in mine and "dispute 2026/117" in mine
    assert client.get("/console/subject").status_code == 404  # a subject learns nothing


def test_an_auditor_reads_the_trail_and_verifies_the_chains(
    client: TestClient, engine: Engine, clock: FixedClock, subject_login: dict[str, str]
) -> None:
    _person(engine, clock, "auditor-wu", "auditor")
    _log_in(client, "zhang", SUBJECT_PASSWORD)
    client.get("/me")  # one subject.read event
    client.cookies.clear()
    assert _log_in(client, "auditor-wu", SUBJECT_PASSWORD).status_code == 303
    page = client.get("/console/audit", params={"action": "subject.read", "verify": "true"})
    assert page.status_code == 200
    assert "zhang" in page.text and page.text.count("intact") == 2
    assert client.get("/console/subject").status_code == 403
    with transaction(engine) as session:
        last = session.execute(
            select(audit_events.c.action, audit_events.c.principal)
            .order_by(audit_events.c.seq.desc())
            .limit(1)
        ).one()
    assert tuple(last) == ("audit.read", "auditor-wu")


def test_the_console_needs_a_log_in(client: TestClient) -> None:
    for path in ("/console/audit", "/console/subject"):
        res = client.get(path, follow_redirects=False)
        assert res.status_code == 303 and res.headers["location"] == "/login"
