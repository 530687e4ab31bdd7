"""SQLite's log is checkpointed on a thread of its own: no commit does it, and the log still
starts again from its beginning under steady writes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from chengxin.api.app import create_app
from chengxin.api.settings import Settings
from chengxin.store.checkpoints import Checkpointer
from chengxin.store.db import make_engine, transaction

ROW = "x" * 2000  # two rows to a 4 KiB page: a commit of one row writes a page or two


def table(path: Path) -> None:
    engine = make_engine(str(path))
    with transaction(engine) as session:
        session.execute(text("CREATE TABLE n (i INTEGER PRIMARY KEY, pad TEXT)"))
    engine.dispose()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite file with one table."""
    path = tmp_path / "log.sqlite"
    table(path)
    return path


@pytest.fixture
def background(db: Path) -> Iterator[Engine]:
    """An engine whose commits never checkpoint."""
    engine = make_engine(str(db), background_checkpoints=True)
    yield engine
    engine.dispose()


def commit_rows(engine: Engine, first: int, count: int) -> None:
    """``count`` rows, one commit each."""
    for i in range(first, first + count):
        with transaction(engine) as session:
            session.execute(text("INSERT INTO n VALUES (:i, :pad)"), {"i": i, "pad": ROW})


def log_pages(path: Path) -> int:
    """Pages in the write-ahead log now (a passive checkpoint reports them, copying them too)."""
    with sqlite3.connect(path) as conn:
        busy, pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0
    return int(pages)


def test_commits_of_a_background_engine_leave_the_log_alone(db: Path, background: Engine) -> None:
    with background.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
    commit_rows(background, 0, 1200)  # past the 1,000 pages at which a commit would checkpoint
    assert log_pages(db) > 1200


def test_a_default_engine_still_checkpoints_in_its_commits(db: Path) -> None:
    engine = make_engine(str(db))
    try:
        commit_rows(engine, 0, 1200)
        assert log_pages(db) < 1000
    finally:
        engine.dispose()


def test_a_long_log_starts_again_after_a_round(db: Path, background: Engine) -> None:
    checkpointer = Checkpointer(db, restart_pages=100)
    commit_rows(background, 0, 300)
    with sqlite3.connect(db) as conn:
        done = checkpointer.round(conn)
    assert not done.busy and done.copied_pages == done.log_pages >= 300
    assert checkpointer.restarts == 1
    commit_rows(background, 300, 1)
    assert log_pages(db) <= 4  # the next commit wrote from the log's beginning


def test_a_short_log_is_copied_without_taking_the_writers_turn(
    db: Path, background: Engine
) -> None:
    checkpointer = Checkpointer(db, restart_pages=1000)
    commit_rows(background, 0, 50)
    with sqlite3.connect(db) as conn:
        done = checkpointer.round(conn)
    assert done.copied_pages == done.log_pages > 0
    assert checkpointer.restarts == 0


def test_writers_and_the_checkpointer_together_lose_nothing_and_bound_the_log(
    db: Path, background: Engine
) -> None:
    checkpointer = Checkpointer(db, every=0.01, restart_pages=200)
    checkpointer.start()
    try:
        writers = [
            threading.Thread(target=commit_rows, args=(background, w * 1000, 400)) for w in range(4)
        ]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
    finally:
        checkpointer.stop()
    assert checkpointer.checkpoints > 0 and checkpointer.restarts > 0
    assert checkpointer.failures == 0
    with background.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM n").scalar_one() == 1600
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
    # 1,600 commits of a page or more each; the log was started again along the way.
    assert log_pages(db) < 1600


def test_a_failed_checkpoint_is_tried_again(
    db: Path, background: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpointer = Checkpointer(db, every=0.01)
    real = Checkpointer.checkpoint
    failed = threading.Event()

    def flaky(self: Checkpointer, conn: sqlite3.Connection) -> object:
        if not failed.is_set():
            failed.set()
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, conn)

    monkeypatch.setattr(Checkpointer, "checkpoint", flaky)
    commit_rows(background, 0, 20)
    checkpointer.start()
    try:
        for _ in range(500):
            if checkpointer.checkpoints:
                break
            threading.Event().wait(0.01)
    finally:
        checkpointer.stop()
    assert checkpointer.failures == 1
    assert checkpointer.checkpoints >= 1


def test_the_app_checkpoints_its_own_database_while_it_runs(db: Path) -> None:
    engine = make_engine(str(db))
    from chengxin.store.db import migrate

    migrate(engine)
    engine.dispose()
    app = create_app(Settings(db=str(db)))
    runtime = app.state.runtime
    assert runtime.checkpointer is not None
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        thread = runtime.checkpointer._thread
        assert thread is not None and thread.is_alive()
        with runtime.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
    assert not thread.is_alive()


def test_an_app_given_an_engine_leaves_checkpoints_to_its_owner(engine: Engine) -> None:
    app = create_app(Settings(db="unused"), engine=engine)
    assert app.state.runtime.checkpointer is None
