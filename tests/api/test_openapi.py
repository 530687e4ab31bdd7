"""The OpenAPI document is complete: every route summarised, its errors and security declared."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

pytestmark = pytest.mark.usefixtures("backend")

UNPROTECTED = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/public/lists/{code}"),
    ("post", "/v1/session"),
}


def test_the_document_describes_every_route_with_its_errors_and_credentials(
    client: TestClient, app: FastAPI
) -> None:
    doc: dict[str, Any] = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["apiKey"]["description"],
    }
    assert schemes["session"]["in"] == "cookie" and schemes["session"]["name"] == "chengxin_session"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary") and op.get("description"), f"{where} is not described"
            if (method, path) in UNPROTECTED or not path.startswith("/v1/"):
                continue
            # Both ways in, in this order, though neither scheme is a solved dependency
            # (deps.declares_credentials).
            assert op.get("security") == [{"apiKey": []}, {"session": []}], where
            assert "401" in op["responses"], f"{where} does not declare 401"
            error = op["responses"]["401"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorRead"}


def test_request_schemas_forbid_unknown_fields_and_the_check_reveals_no_score(
    client: TestClient,
) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("RecordCreate", "RecordBatchCreate", "CheckRequest", "PolicyActivate"):
        assert schemas[name]["additionalProperties"] is False, name
    assert set(schemas["CheckRead"]["properties"]) == {
        "measure",
        "decision",
        "reasons",
        "policy_version",
        "appeal",
    }
    assert "name" not in schemas["PublicListMemberRead"]["properties"]


def test_every_route_is_documented_in_docs_api_md(app: FastAPI) -> None:
    from pathlib import Path

    from fastapi.routing import APIRoute

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [
        f"{m} {r.path}"
        for r in app.routes
        if isinstance(r, APIRoute) and r.path.startswith("/v1/") and "webhooks" not in r.path
        for m in sorted(r.methods)
        if f"{m} {r.path}" not in doc
    ]
    assert not missing, f"docs/api.md does not document: {missing}"
