"""Role × endpoint: for every route of the app and every caller, the expected allow or deny.

The routes are read from the app itself, so a route added without an entry
here fails this test. A denial is 401 without credentials, 403 for a role
the route does not allow, or 404 where a 403 would tell a subject that
another subject exists; and a denial changes nothing stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from chengxin.service.principals import ROLES, Principal

State = Callable[..., Any]

pytestmark = pytest.mark.usefixtures("backend")

ANONYMOUS = "anonymous"
CALLERS = (ANONYMOUS, *ROLES)
EVERY_ROLE = frozenset(ROLES)


@dataclass(frozen=True)
class Allowed:
    """Who may call a route; ``conceal`` get 404 instead of 403; ``open`` needs no credentials."""

    roles: frozenset[str] = frozenset()
    open: bool = False
    conceal: frozenset[str] = field(default_factory=frozenset)


def only(*roles: str, conceal: tuple[str, ...] = ()) -> Allowed:
    return Allowed(frozenset(roles), conceal=frozenset(conceal))


OPEN = Allowed(EVERY_ROLE, open=True)

# The expected matrix, written out (not derived from the code under test).
MATRIX: dict[tuple[str, str], Allowed] = {
    # documentation and operations
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): OPEN,  # no personal data; kept off the public proxy (operations)
    # providers write records
    ("POST", "/v1/records"): only("provider"),
    ("POST", "/v1/records:batch"): only("provider"),
    # services check measures
    ("POST", "/v1/checks"): only("service"),
    # a subject sees itself; adjudicators and administrators anyone
    ("GET", "/v1/me"): only("subject"),
    ("GET", "/v1/me/explain"): only("subject"),
    ("GET", "/v1/me/history"): only("subject"),
    ("GET", "/v1/me/consultations"): only("subject"),
    ("GET", "/v1/subjects/{scheme}/{id}/explain"): only(
        "adjudicator", "admin", conceal=("subject",)
    ),
    ("GET", "/v1/subjects/{scheme}/{id}/history"): only(
        "adjudicator", "admin", conceal=("subject",)
    ),
    # lists: members for adjudicators, auditors, administrators; public lists for anyone
    ("GET", "/v1/lists"): only("adjudicator", "auditor", "admin"),
    ("GET", "/v1/lists/{code}/members"): only("adjudicator", "auditor", "admin"),
    ("GET", "/v1/public/lists/{code}"): OPEN,
    # policies
    ("GET", "/v1/policies/active"): Allowed(EVERY_ROLE - {"public"}),
    ("POST", "/v1/policies:lint"): only("policy_author", "admin"),
    ("POST", "/v1/policies:activate"): only("policy_author", "admin"),
    # the audit trail
    ("GET", "/v1/audit/events"): only("auditor"),
    ("GET", "/v1/audit/verify"): only("auditor"),
    # sessions
    ("POST", "/v1/session"): OPEN,
    ("GET", "/v1/session"): Allowed(EVERY_ROLE),
    ("DELETE", "/v1/session"): Allowed(EVERY_ROLE),
    # webhooks (chengxin.api.routers.webhooks)
    ("POST", "/v1/webhooks/subscriptions"): only("service"),
    ("GET", "/v1/webhooks/subscriptions"): only("service"),
    ("GET", "/v1/webhooks/subscriptions/{subscription_id}"): only("service"),
    ("DELETE", "/v1/webhooks/subscriptions/{subscription_id}"): only("service"),
    ("GET", "/v1/webhooks/dead-letters"): only("admin"),
    ("POST", "/v1/webhooks/dead-letters/{delivery_id}:retry"): only("admin"),
    # pages (chengxin.web) for people: an API key counts for nothing there. The
    # portal sends anyone without a subject's session cookie to the log-in form
    # and refuses other people (tests/api/test_pages.py, tests/e2e).
    ("GET", "/"): OPEN,
    ("GET", "/policy"): OPEN,
    ("GET", "/lists/{code}"): OPEN,
    ("GET", "/login"): OPEN,
    ("POST", "/login"): OPEN,
    ("POST", "/logout"): OPEN,
    ("GET", "/me"): OPEN,
    ("GET", "/static/style.css"): OPEN,
    ("GET", "/console/audit"): OPEN,  # auditors' page: cookie only, as above
    ("GET", "/console/subject"): OPEN,  # adjudicators' page: cookie only, as above
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app serves (HEAD answers as GET does)."""
    out = set()
    for route in app.routes:
        if isinstance(route, APIRoute | Route):
            out |= {(m, route.path) for m in (route.methods or ()) if m != "HEAD"}
    return out


def test_every_route_has_a_matrix_entry_and_every_entry_a_route(app: FastAPI) -> None:
    served = app_routes(app)
    assert sorted(served - set(MATRIX)) == [], "routes without a matrix entry"
    assert sorted(set(MATRIX) - served) == [], "matrix entries without a route"


def request_for(
    method: str, path: str, *, rid: Callable[[int], str], record_line: Any, password: str
) -> tuple[str, dict[str, Any]]:
    """A well-formed request for the route, so that only the caller decides the outcome."""
    params = {
        "scheme": "cn-rid",
        "id": rid(1),
        "code": "judgment-defaulters",
        "subscription_id": "1",
        "delivery_id": "1",
    }
    url = path.format(**params)
    kwargs: dict[str, Any] = {}
    if method == "GET":
        kwargs["params"] = {"purpose": "matrix"}
    bodies: dict[str, Any] = {
        "/v1/records": lambda: record_line(rid=rid(1)),
        "/v1/records:batch": lambda: {"records": [record_line(rid=rid(1))], "atomic": True},
        "/v1/checks": lambda: {
            "subject": {"scheme": "cn-rid", "id": rid(1)},
            "measure": "transport.flight_booking",
            "purpose": "matrix",
        },
        "/v1/policies:lint": lambda: {"yaml": "policy: x"},
        "/v1/policies:activate": lambda: {
            "policy": "national@2026.1",
            "reason": "matrix",
            "rescore": False,
        },
        "/v1/session": lambda: {"username": "alice", "password": password},
        "/v1/webhooks/subscriptions": lambda: {
            "url": "https://airline.example/hooks",
            "topics": ["list.entered"],
        },
    }
    if method == "POST" and path in bodies:
        kwargs["json"] = bodies[path]()
    return url, kwargs


def test_role_by_endpoint(
    app: FastAPI,
    client: TestClient,
    keys: dict[str, str],
    person: Principal,
    password: str,
    state: State,
    rid: Callable[[int], str],
    record_line: Any,
    ingest: Any,
) -> None:
    assert ingest(record_line(rid=rid(1))).count("accepted") == 1
    outcomes: dict[tuple[str, str, str], int] = {}
    wrong: list[str] = []
    for method, path in sorted(app_routes(app)):
        rule = MATRIX[(method, path)]
        for caller in CALLERS:
            headers = {} if caller == ANONYMOUS else {"Authorization": f"Bearer {keys[caller]}"}
            url, kwargs = request_for(
                method, path, rid=rid, record_line=record_line, password=password
            )
            allowed = rule.open or caller in rule.roles
            before = None if allowed else state()
            r = client.request(method, url, headers=headers, **kwargs)
            client.cookies.clear()  # a log-in must not carry over to the next caller
            outcomes[(method, path, caller)] = r.status_code
            if allowed:
                if r.status_code in (401, 403) or (r.status_code == 404 and caller in rule.conceal):
                    wrong.append(f"{caller} {method} {path}: denied {r.status_code} {r.text}")
                continue
            expected = 401 if caller == ANONYMOUS else 404 if caller in rule.conceal else 403
            if r.status_code != expected:
                wrong.append(f"{caller} {method} {path}: {r.status_code}, expected {expected}")
            elif r.json()["error"]["code"] not in ("unauthenticated", "forbidden", "not_found"):
                wrong.append(f"{caller} {method} {path}: code {r.json()['error']['code']}")
            if state() != before:
                wrong.append(f"{caller} {method} {path}: a denial changed stored data")
    assert not wrong, "\n".join(wrong)
    # Spot checks that the allowed calls did their work.
    assert outcomes[("POST", "/v1/records", "provider")] == 201
    assert outcomes[("POST", "/v1/checks", "service")] == 200
    assert outcomes[("GET", "/v1/subjects/{scheme}/{id}/explain", "adjudicator")] == 200
    assert outcomes[("GET", "/v1/public/lists/{code}", ANONYMOUS)] == 200
    assert outcomes[("POST", "/v1/session", ANONYMOUS)] == 200
    assert outcomes[("DELETE", "/v1/session", "public")] == 204


def test_a_denied_subject_cannot_tell_existing_from_unknown_subjects(
    client: TestClient, keys: dict[str, str], rid: Callable[[int], str]
) -> None:
    headers = {"Authorization": f"Bearer {keys['subject']}"}
    bodies = {
        client.get(
            f"/v1/subjects/cn-rid/{who}/explain", params={"purpose": "x"}, headers=headers
        ).text
        for who in (rid(1), rid(2), rid(999))
    }
    assert len(bodies) == 1
