"""Shared fixtures: one suite, every backend (SQLite and PostgreSQL).

``backend`` runs each test that asks for a database on a fresh SQLite file
and on a PostgreSQL database made for this test session (emptied between
tests). PostgreSQL is expected on 127.0.0.1:5432 with trust auth;
if it cannot be reached its tests are skipped with the reason -- unless
``CI`` or ``CHENGXIN_REQUIRE_POSTGRES`` is set, where they fail instead.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from chengxin.domain.identifiers import make_rid
from chengxin.domain.policy import Policy
from chengxin.domain.records import RecordRejected
from chengxin.service.clock import FixedClock
from chengxin.service.ingest import BatchReport, ingest_batch
from chengxin.service.policies import install_policy, read_policy_source
from chengxin.store import ledger
from chengxin.store.db import make_engine, migrate, transaction
from chengxin.store.schema import metadata

# CI machines have two cores shared with PostgreSQL and the test's own
# subprocesses: generation speed is not what these properties test, so the
# too-slow health check and per-example deadlines are off everywhere.
settings.register_profile("chengxin", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("chengxin")

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"

RecordLine = Callable[..., dict[str, Any]]


def pytest_configure(config: pytest.Config) -> None:
    """Warnings are errors (pyproject), except one we cannot fix here."""
    # typer 0.20 imports a name click 8.2+ deprecated (typer/__init__.py); remove this
    # filter when typer stops doing so.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:'click\\.utils\\.\\w+' is deprecated:DeprecationWarning:typer",
    )


def pg_url(dbname: str) -> str:
    """The ``--db`` form of a PostgreSQL database on the test server."""
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{dbname}"


def _pg_admin_connect() -> Any:
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)


class PgDatabase:
    """The session's PostgreSQL database and a connection that empties it between tests."""

    def __init__(self, name: str) -> None:
        import psycopg

        self.name = name
        self.url = pg_url(name)
        self._conn = psycopg.connect(self.url, autocommit=True)
        self._sequences = [
            str(r[0])
            for r in self._conn.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
            )
        ]

    def clean(self) -> None:
        """Delete every row and restart the id sequences; ``alembic_version`` stays.

        On tables this small, DELETE is several times faster than TRUNCATE.
        """
        with self._conn.transaction():
            for table in reversed(metadata.sorted_tables):
                self._conn.execute(f'DELETE FROM "{table.name}"')
            for seq in self._sequences:
                self._conn.execute(f'ALTER SEQUENCE "{seq}" RESTART')

    def close(self) -> None:
        """Close the cleaning connection."""
        self._conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PgDatabase]:
    """A PostgreSQL database for this test session, migrated; dropped at the end."""
    import psycopg

    try:
        admin = _pg_admin_connect()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}: {exc}".strip()
        if os.environ.get("CI") or os.environ.get("CHENGXIN_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"chengxin_test_{os.getpid()}"
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(pg_url(name))
    try:
        migrate(engine)
    finally:
        engine.dispose()
    db = PgDatabase(name)
    try:
        yield db
    finally:
        db.close()
        with _pg_admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend a test runs on."""
    return str(request.param)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file that tests copy (migrating each one is slow)."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    engine = make_engine(str(path))
    try:
        migrate(engine)
    finally:
        engine.dispose()  # the last connection to close checkpoints the WAL
    return path


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated, empty database in ``--db`` form: a SQLite file, or the truncated PG one."""
    if backend == "sqlite":
        path = tmp_path / "chengxin.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return str(path)
    pg: PgDatabase = request.getfixturevalue("pg_database")
    pg.clean()
    return pg.url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on the test's backend (disposed afterwards)."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> FixedClock:
    """A clock standing at noon UTC on 2026-11-01 until a test moves it."""
    return FixedClock.on(date(2026, 11, 1))


@pytest.fixture
def policy(engine: Engine, clock: FixedClock) -> Policy:
    """The national pack, stored and active since 1970-01-01."""
    text_, source = read_policy_source("national")
    with transaction(engine) as session:
        stored = install_policy(
            session,
            text=text_,
            source=source,
            actor="tests",
            reason="test fixture",
            now=clock.now(),
        )
    return stored.policy


def person_rid(n: int = 0) -> str:
    """A valid cn-rid for test person ``n`` (distinct for n < 365 000; born 1970 or later)."""
    return make_rid("110105", date(1970, 1, 1) + timedelta(days=n // 1000), n % 1000)


@pytest.fixture
def rid() -> Callable[[int], str]:
    """``rid(n)``: a valid cn-rid for test person ``n``."""
    return person_rid


@pytest.fixture
def record_line() -> RecordLine:
    """A factory of valid interchange lines for a person (a judgment left unperformed).

    Every call gets a fresh ``ref``. Keyword overrides replace top-level fields
    (``None`` removes one); ``rid=`` sets the subject's identifier and
    ``subject_kind=`` / ``name=`` its kind and name.
    """
    counter = itertools.count(1)

    def make(**overrides: Any) -> dict[str, Any]:
        rid = overrides.pop("rid", person_rid(0))
        subject = {
            "scheme": "cn-rid",
            "id": rid,
            "kind": overrides.pop("subject_kind", "person"),
            "name": overrides.pop("name", "Zhang San"),
        }
        line: dict[str, Any] = {
            "provider": "court-110105",
            "ref": f"(2026)0105-exec-{next(counter)}",
            "subject": subject,
            "type": "judicial.judgment_unperformed",
            "occurred_at": "2026-03-01",
            "attributes": {"amount_cny": 250_000},
            "evidence": "sha256:" + "ab" * 32,
        }
        for key, value in overrides.items():
            if value is None:
                line.pop(key, None)
            else:
                line[key] = value
        return line

    return make


Ingest = Callable[..., BatchReport]


@pytest.fixture
def ingest(engine: Engine, policy: Policy, clock: FixedClock) -> Ingest:
    """Ingest lines (numbered from 1) in one committed transaction; return the report."""

    def run(*lines: Mapping[str, Any] | RecordRejected) -> BatchReport:
        with transaction(engine) as session:
            return ingest_batch(
                session,
                policy=policy,
                lines=list(enumerate(lines, start=1)),
                now=clock.now(),
                today=clock.today(),
            )

    return run


@dataclass(frozen=True)
class DbState:
    """Every row of every table and the ledger head: what "nothing changed" compares."""

    tables: Mapping[str, tuple[tuple[Any, ...], ...]]
    head: ledger.Head

    @property
    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {name: len(rows) for name, rows in self.tables.items()}


def db_state(session: Session) -> DbState:
    """The current :class:`DbState` (fine for the small databases tests build)."""
    tables = {}
    for t in metadata.sorted_tables:
        key = list(t.primary_key.columns)
        got = session.execute(select(t).order_by(*key)).all()
        tables[t.name] = tuple(tuple(r) for r in got)
    return DbState(tables, ledger.head(session))


@pytest.fixture
def state(engine: Engine) -> Callable[..., DbState]:
    """``state(session=None)``: the :class:`DbState` in ``session`` or a fresh transaction."""

    def read(session: Session | None = None) -> DbState:
        if session is not None:
            return db_state(session)
        with transaction(engine) as fresh:
            return db_state(fresh)

    return read


@pytest.fixture
def rows(engine: Engine) -> Callable[..., Sequence[Any]]:
    """``rows(table, *where)``: every row of ``table`` matching ``where``, in id order."""

    def read(table: Any, *where: Any) -> Sequence[Any]:
        with transaction(engine) as session:
            stmt = select(table).where(*where)
            key = list(table.primary_key.columns)
            return session.execute(stmt.order_by(*key)).all()

    return read
