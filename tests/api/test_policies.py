"""Policies over HTTP: read the active one; lint; activate with a reason (audited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from chengxin.service.policies import read_policy_source
from chengxin.store.schema import activations, audit_events, ledger

Auth = Callable[[str], dict[str, str]]
State = Callable[..., Any]
Rows = Callable[..., Any]

pytestmark = pytest.mark.usefixtures("backend")


def national(version: str = "2026.1") -> str:
    text, _ = read_policy_source("national")
    return text.replace('version: "2026.1"', f'version: "{version}"')


def test_every_authenticated_role_but_public_reads_the_active_policy(
    client: TestClient, auth: Auth
) -> None:
    r = client.get("/v1/policies/active", headers=auth("subject"))
    assert r.status_code == 200
    data = r.json()
    assert data["label"] == "national@2026.1" and data["content_hash"].startswith("sha256:")
    assert {m["code"] for m in data["document"]["measures"]} >= {"transport.flight_booking"}
    assert client.get("/v1/policies/active", headers=auth("public")).status_code == 403


@pytest.mark.parametrize("as_json", [True, False])
def test_lint_takes_yaml_or_json_and_reports_problems_with_lines(
    client: TestClient, auth: Auth, state: State, as_json: bool
) -> None:
    before = state()
    good = national()
    bad = good.replace("points: -5, expires: 1y", "points: -5, expirs: 1y")

    def lint(text: str) -> Any:
        if as_json:
            return client.post(
                "/v1/policies:lint", json={"yaml": text}, headers=auth("policy_author")
            )
        return client.post(
            "/v1/policies:lint",
            content=text.encode(),
            headers={**auth("policy_author"), "Content-Type": "application/yaml"},
        )

    ok = lint(good)
    assert ok.status_code == 200, ok.text
    assert ok.json()["ok"] is True and ok.json()["policy"] == "national@2026.1"
    r = lint(bad)
    assert r.status_code == 200 and r.json()["ok"] is False
    typos = [p for p in r.json()["problems"] if "expirs" in p["message"]]
    assert typos and all(p["severity"] == "error" and p["line"] for p in typos)
    assert state() == before


def test_lint_refuses_other_media_types_and_unknown_json_fields(
    client: TestClient, auth: Auth
) -> None:
    r = client.post(
        "/v1/policies:lint",
        content=b"policy: x",
        headers={**auth("admin"), "Content-Type": "application/xml"},
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = client.post("/v1/policies:lint", json={"yaml": "x", "strict": True}, headers=auth("admin"))
    assert r.status_code == 422 and "strict" in r.json()["error"]["message"]


def test_activation_needs_a_reason_and_is_audited_and_in_the_ledger(
    client: TestClient, auth: Auth, rows: Rows, state: State
) -> None:
    before = state()
    body: dict[str, Any] = {"yaml": national("2026.2"), "rescore": False}
    r = client.post("/v1/policies:activate", json=body, headers=auth("policy_author"))
    assert r.status_code == 422 and "reason" in r.json()["error"]["message"]
    r = client.post(
        "/v1/policies:activate", json=body | {"reason": "  "}, headers=auth("policy_author")
    )
    assert r.status_code == 422
    assert state() == before
    r = client.post(
        "/v1/policies:activate",
        json=body | {"reason": "yearly revision"},
        headers=auth("policy_author"),
    )
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["activated"] == "national@2026.2"
    (act,) = [a for a in rows(activations) if a.ledger_seq == data["ledger_seq"]]
    assert (act.actor, act.reason) == ("policy_author-1", "yearly revision")
    (entry,) = [e for e in rows(ledger) if e.seq == data["ledger_seq"]]
    assert entry.kind == "policy.activation"
    (event,) = rows(audit_events)
    assert (event.action, event.principal) == ("policy.activate", "policy_author-1")
    assert str(data["ledger_seq"]) in event.detail
    active = client.get("/v1/policies/active", headers=auth("admin")).json()
    assert active["label"] == "national@2026.2"


def test_activation_of_a_stored_version_and_rescore(
    client: TestClient, auth: Auth, ingest: Any, record_line: Any, rid: Any
) -> None:
    assert ingest(record_line(rid=rid(2))).count("accepted") == 1
    r = client.post(
        "/v1/policies:activate",
        json={"policy": "national@2026.1", "reason": "re-affirm"},
        headers=auth("admin"),
    )
    assert r.status_code == 200, r.text
    r = client.post(
        "/v1/policies:activate",
        json={"policy": "national@1999.9", "reason": "x"},
        headers=auth("admin"),
    )
    assert r.status_code == 404
    both = {"policy": "national@2026.1", "yaml": national(), "reason": "x"}
    r = client.post("/v1/policies:activate", json=both, headers=auth("admin"))
    assert r.status_code == 422


def test_an_invalid_policy_is_refused_with_every_problem(client: TestClient, auth: Auth) -> None:
    bad = national("2026.3").replace("points: -5, expires: 1y", "points: -5")
    r = client.post(
        "/v1/policies:activate", json={"yaml": bad, "reason": "try"}, headers=auth("admin")
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "policy_invalid" and r.json()["error"]["problems"]
