"""Crash safety: ``chengxin import`` killed with SIGKILL mid-feed loses no committed chunk,
shows no partial one, and a re-run completes the feed exactly once (SQLite).

The import that is killed runs as its own process (the console script next to
this Python); the checks afterwards run the same commands in process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chengxin.cli import app
from chengxin.domain.identifiers import make_rid
from chengxin.service.clock import SystemClock
from chengxin.service.policies import install_policy, read_policy_source
from chengxin.store.db import make_engine, migrate, transaction

CHENGXIN = str(Path(sys.executable).with_name("chengxin"))
LINES = 10_000
CHUNK = 1_000
PEOPLE = 3_000


def write_feed(path: Path) -> None:
    """A feed of LINES valid records for PEOPLE people, dated within the last year."""
    today = date.today()
    rids = [
        make_rid("110105", date(1970, 1, 1) + timedelta(days=n // 1000), n % 1000)
        for n in range(PEOPLE)
    ]
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("societal.fail_to_yield_pedestrian", {}),
        ("judicial.judgment_unperformed", {"amount_cny": 150_000}),
        ("societal.volunteering", {"hours": 60}),
        ("societal.fare_evasion", {"repeat": True}),
    ]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(LINES):
            rtype, attrs = kinds[i % len(kinds)]
            line = {
                "provider": "feed-1",
                "ref": f"line-{i}",
                "subject": {"scheme": "cn-rid", "id": rids[i % PEOPLE], "kind": "person"},
                "type": rtype,
                "occurred_at": (today - timedelta(days=1 + i % 300)).isoformat(),
                "attributes": attrs,
            }
            fh.write(json.dumps(line) + "\n")


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


def ledger_count(db: Path) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])


def chengxin(*args: str) -> Any:
    """Run a command in process (the one killed runs as a real process; this saves startups)."""
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, json.loads(res.stdout)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_import_killed_mid_feed_keeps_whole_chunks_and_resumes(tmp_path: Path) -> None:
    db, feed = tmp_path / "crash.sqlite", tmp_path / "feed.jsonl"
    init_db(db)
    write_feed(feed)
    assert ledger_count(db) == 1  # the policy activation

    proc = subprocess.Popen(
        [CHENGXIN, "import", str(feed), "--db", str(db), "--chunk", str(CHUNK), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while ledger_count(db) == 1:  # until the first chunk commits
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the first chunk never committed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:  # pragma: no cover - only if an assertion fired
            proc.kill()
            proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()

    code, verified = chengxin("verify", "--db", str(db), "--json")
    assert (code, verified["ok"]) == (0, True), verified

    with closing(sqlite3.connect(db)) as conn:
        entries = conn.execute("SELECT count(*) FROM ledger WHERE kind = 'record'").fetchone()[0]
        recs = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        unscored = conn.execute(
            "SELECT count(*) FROM records r LEFT JOIN snapshots s ON s.subject_id = r.subject_id"
            " WHERE s.subject_id IS NULL"
        ).fetchone()[0]
        orphans = conn.execute(
            "SELECT count(*) FROM subjects WHERE id NOT IN (SELECT subject_id FROM records)"
        ).fetchone()[0]
    committed = entries
    assert 0 < committed < LINES, "the import was not killed part-way"
    assert committed % CHUNK == 0, f"{committed} entries: a partial chunk is visible"
    assert recs == committed
    assert unscored == 0 and orphans == 0

    code, summary = chengxin("import", str(feed), "--db", str(db), "--chunk", str(CHUNK), "--json")
    assert code == 0, summary
    assert summary["duplicates"] == committed
    assert summary["accepted"] == LINES - committed
    assert summary["rejected"] == 0

    code, final = chengxin("verify", "--db", str(db), "--json")
    assert (code, final["ok"], final["entries"]) == (0, True, 1 + LINES)
