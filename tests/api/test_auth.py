"""Credentials: API keys (hashed, shown once, revocable, expiring) and people's sessions (CSRF)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.security.utils import get_authorization_scheme_param
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from chengxin.api.deps import _bearer_token
from chengxin.domain.identifiers import parse_identifier
from chengxin.service.clock import FixedClock
from chengxin.service.errors import Invalid, NotFound
from chengxin.service.principals import (
    HASHER,
    Principal,
    add_principal,
    authenticate_key,
    issue_key,
    list_principals,
    revoke,
)
from chengxin.store.db import transaction
from chengxin.store.schema import api_keys

Auth = Callable[[str], dict[str, str]]
State = Callable[..., Any]
Rows = Callable[..., Any]

pytestmark = pytest.mark.usefixtures("backend")
REAL_HASHER = HASHER  # before the suite's cheap one is patched in


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_stored_hashed_with_argon2id_and_only_their_prefix_in_clear(
    keys: dict[str, str], rows: Rows
) -> None:
    stored = rows(api_keys)
    assert len(stored) == len(keys)
    for key in keys.values():
        prefix = key.split("_")[1]
        (row,) = [r for r in stored if r.prefix == prefix]
        assert row.key_hash.startswith("$argon2id$") and key not in row.key_hash
    assert (REAL_HASHER.time_cost, REAL_HASHER.memory_cost, REAL_HASHER.parallelism) == (
        2,
        19_456,
        1,
    )


@pytest.mark.parametrize(
    "header",
    [
        "Bearer cx_000000000000_" + "a" * 43,  # unknown prefix
        "Bearer not-a-key",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "",
    ],
)
def test_unknown_and_malformed_credentials_are_401(
    client: TestClient, state: State, header: str
) -> None:
    before = state()
    r = client.get("/v1/policies/active", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert state() == before


def test_a_wrong_secret_with_a_real_prefix_is_401_like_an_unknown_key(
    client: TestClient, keys: dict[str, str]
) -> None:
    prefix = keys["service"].split("_")[1]
    forged = f"cx_{prefix}_" + "b" * 43
    wrong = client.get("/v1/policies/active", headers=bearer(forged))
    unknown = client.get("/v1/policies/active", headers=bearer("cx_0123456789ab_" + "b" * 43))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_a_revoked_key_is_refused_once_the_key_cache_entry_is_older_than_its_ttl(
    client: TestClient,
    app: FastAPI,
    engine: Engine,
    clock: FixedClock,
    keys: dict[str, str],
    principals: dict[str, tuple[Principal, str]],
    state: State,
) -> None:
    ttl = timedelta(seconds=app.state.runtime.settings.key_cache_seconds)
    assert ttl > timedelta(0)  # the default: on
    service, key = principals["service"]
    assert client.get("/v1/policies/active", headers=bearer(key)).status_code == 200
    with transaction(engine) as session:
        second = issue_key(session, principal_id=service.id, now=clock.now())
        revoke(session, name=service.name, now=clock.now(), key_prefix=key.split("_")[1])
        authenticate_key(session, second, now=clock.now())  # first use, outside the comparison
    before = state()
    # Within the TTL the worker still trusts what it read (docs/api.md says so) ...
    clock.advance(ttl - timedelta(microseconds=1))
    assert client.get("/v1/policies/active", headers=bearer(key)).status_code == 200
    # ... and not a moment longer.
    clock.advance(timedelta(microseconds=1))
    r = client.get("/v1/policies/active", headers=bearer(key))
    assert r.status_code == 401
    assert r.json()["error"] == {
        "code": "unauthenticated",
        "message": "the API key is revoked",
        "reason": "revoked",
    }
    assert client.get("/v1/policies/active", headers=bearer(second)).status_code == 200
    with transaction(engine) as session:
        assert revoke(session, name=service.name, now=clock.now()) == 1
    clock.advance(ttl)
    assert client.get("/v1/policies/active", headers=bearer(second)).status_code == 401
    assert state().tables["audit_events"] == before.tables["audit_events"]


@pytest.mark.parametrize("api_settings", [{"key_cache_seconds": 0}], indirect=True)
def test_without_the_key_cache_a_revoked_key_is_refused_at_once(
    client: TestClient,
    engine: Engine,
    clock: FixedClock,
    principals: dict[str, tuple[Principal, str]],
) -> None:
    service, key = principals["service"]
    assert client.get("/v1/policies/active", headers=bearer(key)).status_code == 200
    with transaction(engine) as session:
        revoke(session, name=service.name, now=clock.now(), key_prefix=key.split("_")[1])
    r = client.get("/v1/policies/active", headers=bearer(key))
    assert r.status_code == 401 and r.json()["error"]["reason"] == "revoked"


def test_a_cached_key_is_refused_the_instant_it_expires(
    client: TestClient, engine: Engine, clock: FixedClock
) -> None:
    with transaction(engine) as session:
        p = add_principal(session, name="brief", role="auditor", kind="machine", now=clock.now())
        key = issue_key(
            session,
            principal_id=p.id,
            now=clock.now(),
            expires_at=clock.now() + timedelta(seconds=2),
        )
    assert client.get("/v1/audit/verify", headers=bearer(key)).status_code == 200
    clock.advance(timedelta(seconds=2))  # inside the cache's TTL, at the key's expiry
    r = client.get("/v1/audit/verify", headers=bearer(key))
    assert r.status_code == 401 and r.json()["error"]["reason"] == "expired"


def test_expired_keys_and_principals_are_refused(
    client: TestClient, engine: Engine, clock: FixedClock
) -> None:
    with transaction(engine) as session:
        p = add_principal(
            session,
            name="temp",
            role="auditor",
            kind="machine",
            expires_at=clock.now() + timedelta(days=10),
            now=clock.now(),
        )
        short = issue_key(
            session, principal_id=p.id, now=clock.now(), expires_at=clock.now() + timedelta(days=1)
        )
        long = issue_key(
            session, principal_id=p.id, now=clock.now(), expires_at=clock.now() + timedelta(days=99)
        )
    for key in (short, long):
        assert client.get("/v1/audit/verify", headers=bearer(key)).status_code == 200
    clock.advance(timedelta(days=2))
    r = client.get("/v1/audit/verify", headers=bearer(short))
    assert r.status_code == 401 and r.json()["error"]["reason"] == "expired"
    assert client.get("/v1/audit/verify", headers=bearer(long)).status_code == 200
    clock.advance(timedelta(days=10))  # the principal expires; its 99-day key with it
    r = client.get("/v1/audit/verify", headers=bearer(long))
    assert r.status_code == 401 and r.json()["error"]["message"] == "the API key is expired"


def test_registration_must_fit_the_role(engine: Engine, clock: FixedClock, rid: Any) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"role": "provider"}, "provider code"),
        ({"role": "service", "scopes": ["transport.flight_booking"]}, "service kind"),
        ({"role": "admin", "scopes": ["transport.flight_booking"]}, "scopes"),
        ({"role": "admin", "provider": "court-1"}, "provider code"),
        ({"role": "subject"}, "subject identifier"),
        ({"role": "janitor"}, "unknown role"),
        ({"role": "service", "service_kind": "airline", "scopes": ["Flights"]}, "measure code"),
        ({"role": "auditor", "kind": "person"}, "password"),
        ({"role": "auditor", "kind": "person", "password": "short"}, "12 characters"),
        ({"role": "auditor", "password": "long enough password"}, "API keys"),
        ({"role": "auditor", "expires_at": clock.now() - timedelta(days=1)}, "future"),
        (
            {"role": "subject", "subject": parse_identifier("cn-uscc", "91110108MA01ABCD1E")},
            "cannot be told",
        ),
    ]
    with transaction(engine) as session:
        add_principal(session, name="taken", role="auditor", kind="machine", now=clock.now())
    for extra, message in [*cases, ({"role": "auditor", "name": "taken"}, "already exists")]:
        args: dict[str, Any] = {"name": "p", "kind": "machine", "now": clock.now(), **extra}
        with transaction(engine) as session, pytest.raises(Invalid, match=message):
            add_principal(session, **args)


def test_list_shows_registrations_and_live_key_prefixes_never_keys(
    engine: Engine, clock: FixedClock, principals: dict[str, tuple[Principal, str]]
) -> None:
    with transaction(engine) as session:
        infos = {i.principal.name: i for i in list_principals(session, now=clock.now())}
        revoke(session, name="auditor-1", now=clock.now())
        after = {i.principal.name: i for i in list_principals(session, now=clock.now())}
    svc, key = principals["service"]
    assert infos["service-1"].keys == (key.split("_")[1],)
    assert infos["service-1"].principal == svc
    assert after["auditor-1"].keys == () and after["auditor-1"].revoked_at is not None
    assert key not in repr(infos)
    with transaction(engine) as session, pytest.raises(NotFound):
        revoke(session, name="nobody", now=clock.now())


def test_people_cannot_hold_keys_and_machines_cannot_log_in(
    client: TestClient, engine: Engine, clock: FixedClock, person: Principal, keys: dict[str, str]
) -> None:
    with transaction(engine) as session, pytest.raises(Invalid, match="person"):
        issue_key(session, principal_id=person.id, now=clock.now())
    r = client.post("/v1/session", json={"username": "service-1", "password": keys["service"]})
    assert r.status_code == 401


# -- sessions for people ---------------------------------------------------------


def log_in(client: TestClient, password: str, *, form: bool = False) -> Any:
    creds = {"username": "alice", "password": password}
    if form:
        return client.post("/v1/session", data=creds)
    return client.post("/v1/session", json=creds)


@pytest.mark.parametrize("form", [False, True])
def test_a_person_logs_in_and_gets_an_httponly_strict_cookie_and_a_csrf_token(
    client: TestClient, person: Principal, password: str, form: bool
) -> None:
    r = log_in(client, password, form=form)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["principal"]["name"] == "alice" and data["principal"]["role"] == "adjudicator"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    me = client.get("/v1/session")  # the cookie is sent back by the client
    assert me.status_code == 200
    assert me.json()["csrf_token"] == data["csrf_token"]


def test_unsafe_requests_with_a_cookie_need_the_csrf_token(
    client: TestClient, engine: Engine, clock: FixedClock, policy: Any, state: State
) -> None:
    with transaction(engine) as session:
        add_principal(
            session,
            name="bob",
            role="policy_author",
            kind="person",
            password="another long password",
            now=clock.now(),
        )
    r = client.post("/v1/session", json={"username": "bob", "password": "another long password"})
    csrf = r.json()["csrf_token"]
    before = state()
    lint = {"yaml": "policy: x"}
    no_token = client.post("/v1/policies:lint", json=lint)
    assert no_token.status_code == 403 and no_token.json()["error"]["code"] == "csrf_failed"
    wrong = client.post("/v1/policies:lint", json=lint, headers={"X-CSRF-Token": csrf + "x"})
    assert wrong.status_code == 403
    assert client.delete("/v1/session").status_code == 403  # logging out is unsafe too
    assert state() == before
    ok = client.post("/v1/policies:lint", json=lint, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["ok"] is False
    bye = client.delete("/v1/session", headers={"X-CSRF-Token": csrf})
    assert bye.status_code == 204
    assert client.get("/v1/session").status_code == 401


def test_wrong_passwords_unknown_names_and_revoked_people_get_the_same_401(
    client: TestClient, engine: Engine, clock: FixedClock, person: Principal, password: str
) -> None:
    wrong = log_in(client, password + "!")
    unknown = client.post("/v1/session", json={"username": "mallory", "password": password})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert log_in(client, password).status_code == 200
    assert client.get("/v1/session").status_code == 200
    with transaction(engine) as session:
        revoke(session, name="alice", now=clock.now())
    assert client.get("/v1/session").status_code == 401  # the live session ends at once
    r = log_in(client, password)
    assert r.status_code == 401 and r.json()["error"]["reason"] == "revoked"


def test_a_forged_cookie_is_401(client: TestClient, person: Principal) -> None:
    client.cookies.set("chengxin_session", "eyJwIjoxLCJjIjoieCJ9.forged.sig")
    r = client.get("/v1/session")
    assert r.status_code == 401 and r.json()["error"]["reason"] == "invalid"


def test_log_in_attempts_are_rate_limited(
    client: TestClient, person: Principal, password: str
) -> None:
    codes = [log_in(client, "wrong password!").status_code for _ in range(11)]
    assert codes == [401] * 10 + [429]
    r = log_in(client, password)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


PIECES = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", " ", "\t", "x", "_"])


@given(st.lists(PIECES, max_size=6).map("".join) | st.text(max_size=12))
def test_the_bearer_token_is_read_as_fastapis_http_bearer_reads_it(header: str) -> None:
    # current_principal reads the header itself (no sub-dependency to solve);
    # it must take exactly the tokens HTTPBearer would.
    scheme, credentials = get_authorization_scheme_param(header)
    expected = credentials if scheme.lower() == "bearer" and credentials else None
    assert _bearer_token(header) == expected


def test_the_scheme_name_is_not_case_sensitive(client: TestClient, keys: dict[str, str]) -> None:
    r = client.get("/v1/policies/active", headers={"Authorization": f"bEaReR {keys['admin']}"})
    assert r.status_code == 200, r.text
