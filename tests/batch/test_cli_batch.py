"""The batch commands on the command line: ``export``, ``load-results``, ``backtest``.

Exit codes as everywhere: 0 done, 2 refused (bad input, an export or results
that do not match, stale results), with the reason in the JSON ``error``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click
import typer.main
from click.testing import Result
from sqlalchemy import Connection, Engine, event
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_world import City, variant

from chengxin.cli import register_all
from chengxin.engine.export import verify_export
from chengxin.engine.results import rescore_export_duckdb

app = register_all()  # as main() does
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def cx(*args: object) -> Result:
    """Run ``chengxin args...`` in process, disposing the engines the command opened."""
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
    return json.loads(res.stdout)


def test_export_then_load_results(city: City, db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "export"
    made = cxj(
        "export",
        "--format",
        "parquet",
        "--out",
        out,
        "--as-of",
        "2026-11-01",
        "--db",
        db_url,
        code=0,
    )
    assert made["policy"] == "national@2026.1" and made["records"] > 300
    assert made["ledger_head"]["seq"] > 0 and made["as_of"] == "2026-11-01"
    again = cxj("export", "--out", out, "--db", db_url, code=2)
    assert "not empty: give --force" in again["error"]
    assert (
        cxj("export", "--out", out, "--force", "--as-of", "2026-11-01", "--db", db_url, code=0)[
            "records"
        ]
        == made["records"]
    )
    csv = cxj("export", "--format", "csv", "--out", tmp_path / "x", "--db", db_url, code=2)
    assert "--format must be parquet" in csv["error"]
    unfinished = cxj("load-results", out, "--db", db_url, code=2)
    assert "has no _SUCCESS.json" in unfinished["error"]
    rescore_export_duckdb(verify_export(out), now=city.clock.now())  # the batch job
    loaded = cxj("load-results", out, "--db", db_url, code=0)
    assert (loaded["engine"], loaded["as_of"]) == ("duckdb", "2026-11-01")
    assert loaded["grade_changes"] == 0
    text = cx("load-results", out / "results", "--db", db_url)
    assert text.exit_code == 0 and "loaded" in text.stdout
    stored_policy = cxj(
        "export", "--out", tmp_path / "other", "--policy", "national@2026.1", "--db", db_url, code=0
    )
    assert stored_policy["policy_hash"] == made["policy_hash"]


def test_backtest(city: City, db_url: str, tmp_path: Path) -> None:
    proposal = tmp_path / "proposal.yaml"
    changed = variant(city.policy, "2026.2", **{"fail-to-yield": -20})
    proposal.write_text(json.dumps(changed.canonical(), indent=1))  # JSON is YAML
    chart = tmp_path / "change.png"
    report = cxj(
        "backtest",
        "--policy",
        proposal,
        "--as-of",
        "2026-11-01",
        "--chart",
        chart,
        "--db",
        db_url,
        code=0,
    )
    assert report["after"]["policy"] == "national@2026.2"
    assert report["grades"]["moved"] > 0 and report["chart"] == str(chart)
    assert chart.read_bytes().startswith(b"\x89PNG")
    text = cx(
        "backtest",
        "--policy",
        proposal,
        "--against",
        "national",
        "--as-of",
        "2026-11-01",
        "--show",
        "2",
        "--db",
        db_url,
    )
    assert text.exit_code == 0, text.stdout
    for title in ("grade transitions", "lists", "measures", "by province", "by domain"):
        assert title in text.stdout
    bad = cxj(
        "backtest", "--policy", proposal, "--chart", tmp_path / "c.pdf", "--db", db_url, code=2
    )
    assert ".png or .svg" in bad["error"]
    missing = cxj("backtest", "--policy", tmp_path / "nope.yaml", "--db", db_url, code=2)
    assert "does not exist" in missing["error"]


def test_every_batch_command_and_option_is_in_the_docs() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    for name in ("export", "load-results", "backtest"):
        command = root.commands[name]
        assert f"`chengxin {name}" in doc, name
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in doc, f"{opt} of chengxin {name}"
    assert re.search(r"`chengxin rescore --engine spark", doc)
