"""The command line: exit codes (0 success, 1 negative, 2 bad input) and ``--json`` everywhere.

The commands use the system clock, so record dates here are relative to today.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Connection, Engine, event, update
from typer.testing import CliRunner

from chengxin.cli import register_all
from chengxin.domain.identifiers import make_rid
from chengxin.service.policies import read_policy_source
from chengxin.store.db import make_engine, transaction
from chengxin.store.schema import ledger

app = register_all()  # as main() does
runner = CliRunner()

AGO = (date.today() - timedelta(days=30)).isoformat()


def person_rid(n: int) -> str:
    return make_rid("110105", date(1970, 1, 1), n)


def cx(*args: object) -> Result:
    """Run ``chengxin args...`` in process.

    The commands never dispose the engines they open (a process exit closes
    them); in one test process that leaves psycopg connections to be garbage
    collected, which warns. So the engines a command opened are disposed here.
    """
    opened: list[Engine] = []

    def remember(conn: Connection) -> None:
        opened.append(conn.engine)

    event.listen(Engine, "engine_connect", remember)
    try:
        return runner.invoke(app, [str(a) for a in args])
    finally:
        event.remove(Engine, "engine_connect", remember)
        for engine in set(opened):
            engine.dispose()


def cxj(*args: object, code: int) -> Any:
    """Run with ``--json``, check the exit code, return the parsed stdout."""
    res = cx(*args, "--json")
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:  # pragma: no cover - the assertion explains
        pytest.fail(f"`chengxin {' '.join(map(str, args))} --json` printed {res.stdout!r}")


def error(*args: object) -> str:
    """Run with ``--json`` expecting bad input (exit 2); the error message."""
    data = cxj(*args, code=2)
    assert data["exit"] == 2
    return str(data["error"])


def feed(tmp_path: Path, record_line: Any, rid: Callable[[int], str]) -> Path:
    lines = [
        record_line(rid=rid(1), occurred_at=AGO),  # a defaulter
        record_line(
            rid=rid(2), type="societal.volunteering", attributes={"hours": 2}, occurred_at=AGO
        ),
        record_line(rid=rid(3), occurred_at="2999-01-01"),  # refused: future
    ]
    path = tmp_path / "feed.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.fixture
def db(db_url: str) -> str:
    """An initialised database (national policy) in ``--db`` form."""
    data = cxj("init", "--db", db_url, code=0)
    assert data["active_policy"] == "national@2026.1"
    return db_url


def test_a_whole_session_on_every_backend(
    db: str, tmp_path: Path, record_line: Any, rid: Callable[[int], str]
) -> None:
    # init again: already initialised, nothing activated
    again = cxj("init", "--db", db, code=0)
    assert again["activated"] is None and again["schema"]

    path = feed(tmp_path, record_line, rid)
    summary = cxj("import", path, "--db", db, code=0)
    assert (summary["accepted"], summary["rejected"], summary["duplicates"]) == (2, 1, 0)
    assert Path(summary["rejects_file"]).exists()
    again = cxj("import", path, "--db", db, code=0)
    assert (again["accepted"], again["duplicates"]) == (0, 2)

    ex = cxj("explain", f"cn-rid:{rid(1)}", "--db", db, code=0)
    (c,) = ex["contributions"]
    assert (c["rule"], c["pct"], c["value"]) == ("large-default", 100, -100)
    assert ex["policy"] == "national@2026.1" and ex["score"] == 900

    deny = cxj(
        "check", rid(1), "transport.flight_booking", "--service", "airline", "--db", db, code=1
    )
    assert deny["decision"] == "deny" and deny["appeal"]
    assert 1 <= len(deny["reasons"]) <= 4
    allow = cxj(
        "check", rid(2), "transport.flight_booking", "--service", "airline", "--db", db, code=0
    )
    assert (allow["decision"], allow["reasons"], allow["appeal"]) == ("allow", [], None)
    unknown = cxj(
        "check", rid(50), "transport.flight_booking", "--service", "airline", "--db", db, code=0
    )
    assert unknown == allow

    listed = cxj("lists", "--db", db, "--masked", code=0)
    assert listed["counts"] == {"judgment-defaulters": 1}
    assert rid(1) not in json.dumps(listed)

    ok = cxj("verify", "--db", db, code=0)
    assert (ok["ok"], ok["entries"], ok["broken_at"]) == (True, 3, None)

    assert cxj("rescore", "--db", db, code=0)["subjects"] == 2
    assert cxj("policy", "show", "--db", db, code=0)["label"] == "national@2026.1"

    engine = make_engine(db)
    try:
        with transaction(engine) as session:
            session.execute(update(ledger).where(ledger.c.seq == 2).values(payload="{}"))
    finally:
        engine.dispose()
    broken = cxj("verify", "--db", db, code=1)
    assert (broken["ok"], broken["broken_at"]) == (False, 2)
    # Without --json: a message and the same exit code.
    plain = cx("verify", "--db", db)
    assert plain.exit_code == 1 and "entry 2" in plain.stdout


def test_human_output_and_exit_codes(
    db: str, tmp_path: Path, record_line: Any, rid: Callable[[int], str]
) -> None:
    res = cx("import", feed(tmp_path, record_line, rid), "--db", db)
    assert res.exit_code == 0 and "2 accepted" in res.stdout
    res = cx("explain", rid(1), "--db", db)
    assert res.exit_code == 0 and "score 900, grade B" in res.stdout
    assert "judgment-defaulters" in res.stdout
    res = cx("check", rid(1), "transport.flight_booking", "--service", "airline", "--db", db)
    assert res.exit_code == 1 and "deny" in res.stdout and "appeal" in res.stdout
    res = cx("check", rid(9), "transport.flight_booking", "--service", "airline", "--db", db)
    assert res.exit_code == 0 and "allow" in res.stdout
    res = cx("explain", "11010519700101000X", "--db", db)
    assert res.exit_code == 2 and "check character" in res.stderr
    for args in (["lists"], ["verify"], ["rescore"], ["policy", "show"]):
        assert cx(*args, "--db", db).exit_code == 0, args


def test_bad_input_exits_2_with_the_reason(
    db: str, tmp_path: Path, record_line: Any, rid: Callable[[int], str]
) -> None:
    assert "check character" in error("explain", "110105197001010000", "--db", db)
    assert "check character" in error(
        "check",
        "cn-rid:110105197001010000",
        "transport.flight_booking",
        "--service",
        "airline",
        "--db",
        db,
    )
    assert "unknown identifier scheme" in error("explain", "passport:X1", "--db", db)
    assert "hard line 6" in error(
        "check", rid(1), "transport.flight_booking", "--service", "bank", "--db", db
    )
    assert "no measure" in error(
        "check", rid(1), "transport.teleport", "--service", "airline", "--db", db
    )
    assert "no records" in error("explain", rid(1), "--db", db)
    assert "does not exist" in error("import", tmp_path / "nope.jsonl", "--db", db)
    odd = tmp_path / "feed.xlsx"
    odd.write_bytes(b"PK")
    assert "format" in error("import", odd, "--db", db)
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("provider,ref\n法院,1\n".encode("gbk"))
    assert "not UTF-8" in error("import", gbk, "--db", db)
    assert "reason" in error("policy", "activate", "national", "--reason", " ", "--db", db)
    assert "no stored policy" in error("policy", "show", "national@1999.9", "--db", db)


@pytest.mark.parametrize(
    "args",
    [
        ["explain", f"cn-rid:{person_rid(0)}"],
        ["check", f"cn-rid:{person_rid(0)}", "transport.flight_booking", "--service", "airline"],
        ["verify"],
        ["lists"],
        ["rescore"],
        ["policy", "show"],
        ["policy", "activate", "national", "--reason", "r"],
        ["import", "feed.jsonl"],
    ],
    ids=lambda a: " ".join(a[:2]) if a[0] == "policy" else a[0],
)
def test_a_missing_database_exits_2(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "feed.jsonl").write_text("{}\n", encoding="utf-8")
    missing = tmp_path / "missing.sqlite"
    message = error(*[tmp_path / a if a == "feed.jsonl" else a for a in args], "--db", missing)
    assert "chengxin init" in message
    assert not missing.exists()


def test_init_with_an_unknown_policy_exits_2(tmp_path: Path) -> None:
    assert "no policy pack" in error("init", "--db", tmp_path / "a.sqlite", "--policy", "nope")
    assert "does not exist" in error(
        "init", "--db", tmp_path / "b.sqlite", "--policy", tmp_path / "nope.yaml"
    )


def test_policy_lint(tmp_path: Path) -> None:
    ok = cxj("policy", "lint", "national", code=0)
    assert ok["ok"] and ok["policy"] == "national@2026.1"
    text, _ = read_policy_source("national")
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("scale: {base: 1000", "scale: {bsae: 1000"), encoding="utf-8")
    bad = cxj("policy", "lint", typo, code=1)
    assert not bad["ok"]
    assert any(p["severity"] == "error" for p in bad["problems"])
    assert cx("policy", "lint", typo).exit_code == 1
    protected = tmp_path / "protected.yaml"
    protected.write_text(
        text.replace("category: traffic_safety", "category: religion"), encoding="utf-8"
    )
    refused = cxj("policy", "lint", protected, code=1)
    assert any(p["hard_line"] == 2 for p in refused["problems"])
    assert "does not exist" in error("policy", "lint", tmp_path / "missing.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("title: café\n".encode("latin-1"))
    assert "not UTF-8" in error("policy", "lint", latin)
    assert "no policy pack" in error("policy", "lint", "nope")


def test_policy_show_and_activate(db: str) -> None:
    shown = cxj("policy", "show", "national", code=0)
    assert shown["label"] == "national@2026.1" and shown["policy"]["policy"] == "national"
    assert cxj("policy", "show", "national@2026.1", "--db", db, code=0)["label"] == (
        "national@2026.1"
    )
    act = cxj(
        "policy",
        "activate",
        "national",
        "--reason",
        "re-affirm",
        "--actor",
        "ops",
        "--effective-from",
        "2020-01-01",
        "--db",
        db,
        code=0,
    )
    assert act["activated"] == "national@2026.1" and act["ledger_seq"] == 2


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "activate", "national", "--reason", "r", "--effective-from", "2026-13-01"],
        ["rescore", "--as-of", "yesterday"],
    ],
    ids=["activate --effective-from", "rescore --as-of"],
)
def test_a_bad_date_exits_2(args: list[str], db: str) -> None:
    assert "date" in error(*args, "--db", db)


@pytest.mark.postgres
def test_an_unreachable_postgresql_database_exits_2(pg_database: Any) -> None:
    url = pg_database.url.rsplit("/", 1)[0] + "/chengxin_no_such_database"
    assert "chengxin_no_such_database" in error("verify", "--db", url)
