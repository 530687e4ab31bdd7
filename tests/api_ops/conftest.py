"""Operations fixtures: the real app in process, and ``chengxin serve`` running on loopback.

Both run on SQLite and on PostgreSQL (``backend``). ``keys[role]`` is the
API key of a machine principal ``<role>-1``; the subject principal is
person 1. ``server`` is a ``chengxin serve`` subprocess on a free port of
127.0.0.1, one per backend for a test module, with the national policy
active, those principals made through the service layer before it started,
and its stderr (JSON log lines) in a file.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import Engine

from api_ops.opstools import (
    LogCapture,
    Server,
    TestClient,
    capture_logs,
    make_principals,
    person_rid,
    start_server,
    stop_server,
)
from chengxin.api.app import create_app
from chengxin.api.settings import Settings
from chengxin.domain.policy import Policy
from chengxin.service import principals as principals_module
from chengxin.service.clock import FixedClock, SystemClock
from chengxin.service.policies import install_policy, read_policy_source
from chengxin.service.principals import Role
from chengxin.store.db import make_engine, transaction


@pytest.fixture(autouse=True, scope="module")
def cheap_hashes() -> Iterator[None]:
    """argon2 at its cheapest: hashes carry their parameters, so nothing else changes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            principals_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        )
        yield


@pytest.fixture
def app(engine: Engine, db_url: str, clock: FixedClock, policy: Policy) -> FastAPI:
    """The app on the test's database and clock, with the national policy active."""
    settings = Settings(db=db_url, session_secret="test-secret", public_rate="1000/minute")
    return create_app(settings, engine=engine, clock=clock)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client of the app in process (lifespan run); server errors come back as 500s."""
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def keys(
    engine: Engine, clock: FixedClock, policy: Policy, rid: Callable[[int], str]
) -> dict[Role, str]:
    """An API key for every role."""
    return make_principals(engine, now=clock.now(), subject_rid=rid(1))


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """What was logged during the test, as JSON lines."""
    with capture_logs() as capture:
        yield capture


def _prepare(db: str, subject_rid: str) -> dict[Role, str]:
    """Activate the national pack and make the principals, at the real time (the server's)."""
    now = SystemClock().now()
    engine = make_engine(db)
    try:
        text, source = read_policy_source("national")
        with transaction(engine) as session:
            install_policy(
                session, text=text, source=source, actor="tests", reason="test fixture", now=now
            )
        return make_principals(engine, now=now, subject_rid=subject_rid)
    finally:
        engine.dispose()


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cheap_hashes: None,
) -> Iterator[Server]:
    """``chengxin serve`` on 127.0.0.1 with one worker, on each backend."""
    backend = str(request.param)
    tmp = tmp_path_factory.mktemp(f"serve-{backend}")
    if backend == "sqlite":
        db = str(tmp / "chengxin.sqlite")
        shutil.copyfile(request.getfixturevalue("sqlite_template"), db)
    else:
        pg = request.getfixturevalue("pg_database")
        pg.clean()
        db = pg.url
    keys = _prepare(db, person_rid(1))
    srv = start_server(db, tmp / "server.log", keys=keys, backend=backend)
    try:
        yield srv
    finally:
        stop_server(srv)
