"""Crash safety of deferred rescoring: an import (checking on worker processes) killed after
its first chunk leaves every touched subject marked stale, never wrongly fresh, and
``refresh_stale`` then makes every subject fresh and correct (SQLite).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import date
from pathlib import Path

import pytest

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import score
from chengxin.service.clock import SystemClock
from chengxin.service.importer import import_file
from chengxin.service.policies import active_policy, install_policy, read_policy_source
from chengxin.service.refresh import refresh_stale
from chengxin.store import repo
from chengxin.store.db import make_engine, migrate, transaction
from chengxin.store.schema import subjects
from chengxin.synth import CityConfig, write_feed

CHUNK = 1_000
IMPORT = """
import sys
from pathlib import Path
from chengxin.service.clock import SystemClock
from chengxin.service.importer import import_file
from chengxin.store.db import make_engine
import_file(make_engine(sys.argv[1]), Path(sys.argv[2]), clock=SystemClock(),
            chunk_size=int(sys.argv[3]), workers=2)
"""


def init_db(db: Path) -> None:
    engine = make_engine(str(db))
    try:
        migrate(engine)
        clock = SystemClock()
        text, source = read_policy_source("national")
        with transaction(engine) as session:
            install_policy(
                session,
                text=text,
                source=source,
                actor="tests",
                reason="crash test",
                now=clock.now(),
            )
    finally:
        engine.dispose()


def query(db: Path, sql: str) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return int(conn.execute(sql).fetchone()[0])


def check_every_subject(db: Path) -> int:
    """Every subject fresh, scored as the pure scorer scores it today; return how many."""
    engine = make_engine(str(db))
    today = SystemClock().today()
    try:
        with transaction(engine) as session:
            policy: Policy = active_policy(session, on=today).policy
            ids = [
                int(r[0])
                for r in session.execute(subjects.select().with_only_columns(subjects.c.id))
            ]
            facts = repo.record_facts(session, ids)
            snaps = repo.snapshots_for(session, ids)
            lists = repo.open_memberships(session, ids)
    finally:
        engine.dispose()
    for sid in ids:
        want = score(policy, facts[sid], today)
        snap = snaps[sid]
        assert not snap.stale
        assert (snap.score, snap.grade, snap.next_change) == (
            want.score,
            want.grade,
            want.next_change,
        )
        assert {m.list_code: m.until for m in lists[sid]} == {
            c: m.until for c, m in want.lists.items()
        }
    return len(ids)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_import_leaves_stale_marks_that_a_refresh_makes_right(tmp_path: Path) -> None:
    db, feed = tmp_path / "crash.sqlite", tmp_path / "feed.jsonl"
    init_db(db)
    lines = write_feed(CityConfig(people=3_000, seed=3, end=date.today()), feed, "jsonl").lines
    assert lines > 5 * CHUNK

    proc = subprocess.Popen(
        [sys.executable, "-c", IMPORT, str(db), str(feed), str(CHUNK)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its checking workers die with it
    )
    try:
        deadline = time.monotonic() + 120
        while query(db, "SELECT count(*) FROM ledger") == 1:  # until the first chunk commits
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the first chunk never committed"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:  # pragma: no cover - only if an assertion fired
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()

    committed = query(db, "SELECT count(*) FROM ledger") - 1
    assert 0 < committed < lines, "the import was not killed part-way"
    assert query(db, "SELECT count(*) FROM snapshots WHERE stale = 0") == 0  # none scored yet
    assert query(db, "SELECT count(*) FROM snapshots WHERE stale = 1") > 0
    # Every subject with a record has a snapshot, stale: no reader trusts a missing score.
    assert (
        query(
            db,
            "SELECT count(*) FROM records r LEFT JOIN snapshots s ON s.subject_id = r.subject_id "
            "WHERE s.subject_id IS NULL OR s.stale = 0",
        )
        == 0
    )

    engine = make_engine(str(db))
    try:
        summary = refresh_stale(engine, clock=SystemClock())
    finally:
        engine.dispose()
    assert summary.subjects == query(db, "SELECT count(*) FROM subjects")
    check_every_subject(db)

    # Finishing the import scores the rest; what was committed is not added twice.
    engine = make_engine(str(db))
    try:
        done = import_file(engine, feed, clock=SystemClock(), chunk_size=CHUNK, workers=2)
    finally:
        engine.dispose()
    assert done.duplicates + done.accepted + done.rejected == lines
    assert query(db, "SELECT count(*) FROM ledger") - 1 == done.accepted + committed
    assert check_every_subject(db) == query(db, "SELECT count(*) FROM subjects")
