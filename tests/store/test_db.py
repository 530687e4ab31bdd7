"""Engines and migrations: the shipped migration builds exactly the tables the code uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from chengxin.store.db import (
    DatabaseError,
    current_revision,
    database_url,
    head_revision,
    make_engine,
    migrate,
    require_current,
    transaction,
)
from chengxin.store.schema import ledger, metadata


def test_the_migration_matches_the_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == []


def test_migrate_is_idempotent_and_reaches_head(engine: Engine) -> None:
    assert current_revision(engine) == head_revision(engine)
    assert migrate(engine) == head_revision(engine)
    require_current(engine)


def test_an_uninitialised_database_is_refused(tmp_path: Path) -> None:
    engine = make_engine(str(tmp_path / "empty.sqlite"))
    try:
        assert current_revision(engine) is None
        with pytest.raises(DatabaseError, match="chengxin init"):
            require_current(engine)
        assert migrate(engine) == head_revision(engine)
        require_current(engine)
    finally:
        engine.dispose()


def test_database_url_forms(tmp_path: Path) -> None:
    assert database_url(str(tmp_path / "x.sqlite")) == f"sqlite:///{tmp_path / 'x.sqlite'}"
    assert database_url(None) == "sqlite:///chengxin.sqlite"
    assert (
        database_url("postgresql://postgres@127.0.0.1:5432/db")
        == "postgresql+psycopg://postgres@127.0.0.1:5432/db"
    )
    assert database_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    # SQLite needs them turned on per connection; PostgreSQL always has them.
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.execute(
            ledger.insert().values(
                seq=1,
                kind="record",
                subject_id=12345,
                payload_hash="0" * 64,
                prev_hash="0" * 64,
                entry_hash="0" * 64,
                recorded_at=text("CURRENT_TIMESTAMP"),
            )
        )


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(str(tmp_path / "wal.sqlite"))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
