"""Schemathesis against the app's OpenAPI document, in process: no input gives a 5xx.

Every operation of the document gets ``EXAMPLES`` generated requests
(deterministic, bounded), sent with the key of a role that may call it, so
they reach the handler rather than only the 403 in front of it. Half the
bodies for records and checks carry the provider code and a measure the
principal is registered for, for the same reason. Every failure is
reported with the curl command that reproduces it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from api_ops.opstools import PROVIDER_CODE, SERVICE_MEASURES, TestClient
from chengxin.service.principals import Role

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("backend")]
EXAMPLES = 40

# Server errors found and reported, not fixed yet: the operation, the backends it
# fails on, and a request that shows it. The exploration leaves these out where
# they fail; ``test_a_known_server_error_is_still_there`` fails once one is fixed:
# then remove it here.
BIG = 2**70
KNOWN: dict[str, tuple[tuple[str, ...], str, dict[str, Any], str]] = {}


def role_for(path: str) -> Role:
    """The role whose key the examples for ``path`` carry."""
    prefixes: list[tuple[str, Role]] = [
        ("/v1/checks", "service"),
        ("/v1/records", "provider"),
        ("/v1/audit", "auditor"),
        ("/v1/me", "subject"),
        ("/v1/webhooks/subscriptions", "service"),
        ("/v1/policies", "policy_author"),
    ]
    return next((role for prefix, role in prefixes if path.startswith(prefix)), "admin")


def registered(case: schemathesis.Case) -> schemathesis.Case:
    """``case`` with the registered provider code or measure in its body, where it has one."""
    body: Any = case.body
    lines = body.get("records") if isinstance(body, dict) else None
    for line in [body, *(lines if isinstance(lines, list) else [])]:
        if not isinstance(line, dict):
            continue
        if case.operation.path.startswith("/v1/records"):
            line["provider"] = PROVIDER_CODE
        elif case.operation.path == "/v1/checks":
            line["measure"] = SERVICE_MEASURES[0]
    return case


def operations(app: FastAPI) -> dict[str, Any]:
    """Every operation of the app's OpenAPI document, by label (``GET /v1/lists``)."""
    schema = schemathesis.openapi.from_dict(app.openapi())
    found = [result.ok() for result in schema.get_all_operations()]
    return {op.label: op for op in found}


def known(label: str, backend: str) -> bool:
    """Whether ``label`` has a known server error on ``backend``."""
    return label in KNOWN and backend in KNOWN[label][0]


def test_no_input_gives_a_server_error(app: FastAPI, keys: dict[Role, str], backend: str) -> None:
    ops = operations(app)
    assert len(ops) >= 25
    failures: dict[str, str] = {}  # the last (shrunk) failing example of each operation
    with TestClient(app) as client:
        for label, operation in ops.items():
            if known(label, backend):
                continue
            try:
                explore(client, operation, keys[role_for(operation.path)], failures)
            except Exception:
                if label not in failures:  # not a server error: a broken test
                    raise
    assert not failures, "server errors:\n" + "\n".join(failures.values())


def send(client: TestClient, request: dict[str, Any]) -> httpx.Response:
    """Send a case serialised for ``requests`` through the httpx-based test client."""
    kw = dict(request)
    kw.pop("auth", None)
    # header values as the bytes a client would send (httpx encodes str as ASCII only)
    headers: dict[str, Any] = {
        k: v.encode("latin-1", "replace") if isinstance(v, str) else v
        for k, v in (kw.pop("headers", None) or {}).items()
    }
    cookies = kw.pop("cookies", None) or {}
    if cookies:  # httpx deprecates per-request cookies: send them as the header
        headers["Cookie"] = "; ".join(f"{k}={quote(str(v), safe='')}" for k, v in cookies.items())
    data = kw.pop("data", None)
    if isinstance(data, bytes | str):
        kw["content"] = data
    elif data is not None:
        kw["data"] = data
    return client.request(kw.pop("method"), kw.pop("url"), headers=headers, **kw)


def explore(client: TestClient, operation: Any, key: str, failures: dict[str, str]) -> None:
    """``EXAMPLES`` requests to ``operation``; the last failing one is kept in ``failures``."""
    headers = {"Authorization": f"Bearer {key}"}
    plain = operation.as_strategy()

    @given(case=st.one_of(plain, plain.map(registered)))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        try:
            request = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
            case.validate_response(send(client, request), checks=[not_a_server_error])
        except Exception as exc:
            failures[operation.label] = (
                f"{case.as_curl_command(headers)}\n  {type(exc).__name__}: {exc}"
            )
            raise

    run()


@pytest.mark.parametrize("label", sorted(KNOWN))
@pytest.mark.xfail(strict=True, raises=AssertionError, reason="a known server error (KNOWN)")
def test_a_known_server_error_is_still_there(
    client: TestClient, keys: dict[Role, str], backend: str, label: str
) -> None:
    backends, url, extra, reason = KNOWN[label]
    if backend not in backends:
        pytest.skip(f"{label} has no known server error on {backend}")
    method, path = label.split(" ", 1)
    headers = {"Authorization": f"Bearer {keys[role_for(path)]}"}
    r = client.request(method, url, headers=headers, **extra)
    assert r.status_code < 500, f"{label}: {reason}"
