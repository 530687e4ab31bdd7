"""API fixtures: the real app in process, on SQLite and PostgreSQL, with a principal of every role.

``client`` is a :class:`fastapi.testclient.TestClient` (it runs the lifespan,
which closes the pooled checkers). ``keys[role]`` is an API key of a machine
principal with that role; ``auth(role)`` the headers that present it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import Engine

from chengxin.api.app import create_app
from chengxin.api.settings import Settings
from chengxin.domain.identifiers import parse_identifier
from chengxin.domain.policy import Policy
from chengxin.service import principals as principals_module
from chengxin.service.clock import FixedClock
from chengxin.service.principals import (
    ROLES,
    Principal,
    Role,
    add_principal,
    authenticate_key,
    issue_key,
)
from chengxin.store.db import transaction

with warnings.catch_warnings():
    # starlette 0.49's testclient names anyio.abc.BlockingPortal at import time, which
    # anyio 4.16 deprecates (the test modules then find it imported); drop this when
    # starlette stops doing so.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

PROVIDER_CODE = "court-110105"
PROVIDER_TYPES = ("judicial.judgment_unperformed", "judicial.judgment_performed")
SERVICE_MEASURES = ("transport.flight_booking", "rental.deposit_free")
PERSON_PASSWORD = "correct horse battery staple"
Auth = Callable[[Role], dict[str, str]]


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at its cheapest: hashes carry their parameters, so nothing else changes."""
    monkeypatch.setattr(
        principals_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def api_settings(request: pytest.FixtureRequest, db_url: str) -> Settings:
    """Settings for a test app: a fixed session secret, a generous public rate.

    Parametrize it indirectly with a dict to change other settings.
    """
    overrides: dict[str, Any] = getattr(request, "param", {})
    return Settings(db=db_url, session_secret="test-secret", public_rate="1000/minute", **overrides)


@pytest.fixture
def app(api_settings: Settings, engine: Engine, clock: FixedClock, policy: Policy) -> FastAPI:
    """The app on the test's database and clock, with the national policy active."""
    return create_app(api_settings, engine=engine, clock=clock)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client of the app in process (lifespan run)."""
    with TestClient(app) as c:
        yield c


def registration(role: Role, rid: Callable[[int], str]) -> dict[str, Any]:
    """What a principal of ``role`` is registered for in these tests."""
    if role == "provider":
        return {"provider": PROVIDER_CODE, "scopes": PROVIDER_TYPES}
    if role == "service":
        return {"service_kind": "airline", "scopes": SERVICE_MEASURES}
    if role == "subject":
        return {"subject": parse_identifier("cn-rid", rid(1))}
    return {}


@pytest.fixture
def principals(
    engine: Engine, clock: FixedClock, policy: Policy, rid: Callable[[int], str]
) -> dict[Role, tuple[Principal, str]]:
    """A machine principal of every role and its API key (the subject is person 1)."""
    out: dict[Role, tuple[Principal, str]] = {}
    with transaction(engine) as session:
        for role in ROLES:
            p = add_principal(
                session,
                name=f"{role}-1",
                role=role,
                kind="machine",
                now=clock.now(),
                **registration(role, rid),
            )
            out[role] = (p, issue_key(session, principal_id=p.id, now=clock.now()))
    with transaction(engine) as session:
        # A key's first use records when it was used (at most once a minute); use each
        # once here, so that "nothing changed" compares what requests store.
        for _, key in out.values():
            authenticate_key(session, key, now=clock.now())
    return out


@pytest.fixture
def keys(principals: dict[Role, tuple[Principal, str]]) -> dict[Role, str]:
    """An API key for every role."""
    return {role: key for role, (_, key) in principals.items()}


@pytest.fixture
def auth(keys: dict[Role, str]) -> Auth:
    """``auth(role)``: the Authorization header of that role's key."""
    return lambda role: {"Authorization": f"Bearer {keys[role]}"}


@pytest.fixture
def person(engine: Engine, clock: FixedClock, policy: Policy) -> Principal:
    """Alice, an adjudicator who logs in with a password (expires in 30 days)."""
    with transaction(engine) as session:
        return add_principal(
            session,
            name="alice",
            role="adjudicator",
            kind="person",
            password=PERSON_PASSWORD,
            expires_at=clock.now() + timedelta(days=30),
            now=clock.now(),
        )


@pytest.fixture
def password() -> str:
    """Alice's password."""
    return PERSON_PASSWORD


@pytest.fixture
def wrong_check() -> Callable[[str], str]:
    """``wrong_check(rid)``: the identifier with a valid but wrong check character (GB 11643)."""
    return lambda rid: rid[:17] + ("0" if rid[17] != "0" else "1")
