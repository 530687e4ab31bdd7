"""Database engines and migrations: a SQLite file by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from chengxin.store.writer_turn import TakingTurns

DEFAULT_DB = "chengxin.sqlite"
READ_ONLY = {"chengxin_read_only": True}
"""Execution options of a transaction that only reads: on SQLite it begins DEFERRED,
so it takes no writer lock (WAL readers never wait for the writer)."""


class DatabaseError(RuntimeError):
    """The database could not be opened or is not initialised."""


def database_url(db: str | None) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as given, else a SQLite file path."""
    target = db or DEFAULT_DB
    if "://" in target:
        if target.startswith("postgresql://"):
            return "postgresql+psycopg://" + target.removeprefix("postgresql://")
        return target
    return f"sqlite:///{Path(target).expanduser()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers work while a writer commits; foreign keys are off by
    # default in SQLite and must be turned on per connection.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-200000")
        cur.close()


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def make_engine(db: str | None, *, background_checkpoints: bool = False) -> Engine:
    """An engine for ``--db`` with the connection settings chengxin relies on.

    With ``background_checkpoints``, no commit on a SQLite connection of this
    engine checkpoints the write-ahead log: the caller runs a
    :class:`~chengxin.store.checkpoints.Checkpointer` instead.
    """
    url = database_url(db)
    if url.startswith("sqlite"):
        # Write transactions take turns (store/writer_turn.py) rather than poll SQLite's lock.
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "factory": TakingTurns}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        if background_checkpoints:
            event.listen(engine, "connect", _no_autocheckpoint)

        # Let SQLAlchemy, not pysqlite, decide when transactions begin, so a
        # write transaction takes the lock at BEGIN (no upgrade deadlocks).
        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            if conn.get_execution_options().get("chengxin_read_only", False):
                conn.exec_driver_sql("BEGIN")
                return
            dbapi = conn.connection.dbapi_connection
            if isinstance(dbapi, TakingTurns):
                dbapi.begin_write()
            else:  # a connection made some other way (a custom creator)
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; the caller commits."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error."""
    with session_factory(engine)() as session, session.begin():
        yield session


@contextmanager
def read_transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads only (no writer lock on SQLite), rolled back at the end."""
    with sessions() as session:
        session.connection(execution_options=READ_ONLY)
        try:
            yield session
        finally:
            session.rollback()


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config  # imported late: alembic is slow to import

    cfg = Config()
    cfg.set_main_option("script_location", str(files("chengxin.store") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest migration; return the revision."""
    from alembic import command

    cfg = _alembic_config(engine)
    command.upgrade(cfg, "head")
    return current_revision(engine) or ""


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None if never initialised."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str:
    """The newest migration this version of chengxin ships."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(engine))
    return str(script.get_current_head())


def require_current(engine: Engine) -> None:
    """Raise :class:`DatabaseError` unless the schema is at the newest migration."""
    have = current_revision(engine)
    if have is None:
        raise DatabaseError(
            f"{engine.url.render_as_string(hide_password=True)} is not initialised: "
            "run `chengxin init` first"
        )
    want = head_revision(engine)
    if have != want:
        raise DatabaseError(f"database schema is at {have}, this chengxin needs {want}: run init")
