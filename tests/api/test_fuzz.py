"""Arbitrary bodies: whatever a caller sends, a 4xx with a code, never a 5xx, nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

Auth = Callable[[str], dict[str, str]]
State = Callable[..., Any]

pytestmark = pytest.mark.usefixtures("backend")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Objects shaped like the real bodies, with any values, so the checks past the JSON
# parser are reached too.
record_like = st.fixed_dictionaries(
    {},
    optional={
        "provider": json_values,
        "ref": json_values,
        "subject": st.fixed_dictionaries(
            {}, optional={"scheme": json_values, "id": json_values, "kind": json_values}
        )
        | json_values,
        "type": json_values,
        "occurred_at": json_values,
        "attributes": json_values,
    },
)
check_like = st.fixed_dictionaries(
    {},
    optional={
        "subject": st.fixed_dictionaries(
            {}, optional={"scheme": st.sampled_from(["cn-rid", "cn-uscc", "x"]), "id": json_values}
        )
        | json_values,
        "measure": json_values,
        "purpose": json_values,
    },
)
ROUTES = [
    ("/v1/records", "provider", record_like),
    (
        "/v1/records:batch",
        "provider",
        st.fixed_dictionaries({"records": st.lists(record_like, max_size=3)}),
    ),
    ("/v1/checks", "service", check_like),
    ("/v1/policies:activate", "policy_author", json_values),
]


@pytest.mark.parametrize(("path", "role", "bodies"), ROUTES, ids=[r[0] for r in ROUTES])
def test_arbitrary_bodies_get_a_coded_4xx_and_store_nothing(
    client: TestClient, auth: Auth, state: State, path: str, role: str, bodies: Any
) -> None:
    before = state()

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=bodies | json_values, raw=st.binary(max_size=40))
    def run(body: Any, raw: bytes) -> None:
        for r in (
            client.post(path, json=body, headers=auth(role)),
            client.post(
                path, content=raw, headers={**auth(role), "Content-Type": "application/json"}
            ),
        ):
            assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
            error = r.json()["error"]
            assert error["code"] and error["message"]

    run()
    assert state() == before
