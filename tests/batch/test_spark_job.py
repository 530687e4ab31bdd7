"""The Spark job: an export scored on Spark gives DuckDB's results, or no results at all.

The job refuses an export that does not match its manifest before it writes
anything; a job that dies half way leaves no ``_SUCCESS.json`` (and removes
an earlier run's), so ``load-results`` refuses its directory; and the module
runs under ``spark-submit`` as it is. The store backend does not matter to
Spark, so these run on SQLite only (the export and load paths are tested on
both backends elsewhere).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_world import City, pure_answer, table_answer

import chengxin.engine.spark_job as spark_job
from chengxin.cli import register_all
from chengxin.engine.export import ExportMismatch, export_parquet, verify_export
from chengxin.engine.results import read_results, rescore_export_duckdb
from chengxin.service.load_results import ResultsRefused, load_results

# pyspark 4.0.1 leaves the socket it collects through unclosed (pyspark.util._create_local_socket).
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def exported(city: City, out: Path) -> Path:
    export_parquet(
        city.engine, out, policy=city.policy, as_of=city.clock.today(), now=city.clock.now()
    )
    return out


@SQLITE_ONLY
def test_spark_gives_duckdb_s_results_and_they_load(city: City, spark: Any, tmp_path: Path) -> None:
    out = exported(city, tmp_path / "export")
    heard: list[str] = []
    done = spark_job.run_job(spark, out, progress=heard.append)
    assert heard == ["verified", "scores", "memberships"]
    assert done.engine == "spark"
    duck = rescore_export_duckdb(verify_export(out), now=city.clock.now(), results=tmp_path / "d")
    spark_answer = table_answer(*read_results(out / "results").tables())
    assert spark_answer == table_answer(*duck.tables())
    assert spark_answer == pure_answer(city.policy, city.facts(), city.clock.today())
    success = json.loads((out / "results" / "_SUCCESS.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert success["ledger_head"] == manifest["ledger_head"]
    assert success["policy"]["content_hash"] == manifest["policy"]["content_hash"]
    assert success["scores"]["rows"] == manifest["subjects"]["rows"]
    summary = load_results(city.engine, out, clock=city.clock)
    assert (summary["engine"], summary["grade_changes"]) == ("spark", 0)


@SQLITE_ONLY
def test_the_job_refuses_an_export_that_does_not_match_before_writing(
    city: City, spark: Any, tmp_path: Path
) -> None:
    out = exported(city, tmp_path / "export")
    part = sorted((out / "records").rglob("*.parquet"))[-1]
    shutil.copyfile(sorted((out / "records").rglob("*.parquet"))[0], part)
    with pytest.raises(ExportMismatch, match=r"has (\d+ bytes|sha256)"):
        spark_job.run_job(spark, out)
    assert not (out / "results").exists()


@SQLITE_ONLY
@pytest.mark.parametrize("step", ["scores", "memberships"])
def test_a_job_that_dies_half_way_leaves_nothing_to_load(
    city: City, spark: Any, tmp_path: Path, state: Any, step: str
) -> None:
    """Dying after the scores, or after every result file but before ``_SUCCESS.json``."""
    out = exported(city, tmp_path / "export")
    rescore_export_duckdb(verify_export(out), now=city.clock.now())  # an earlier, finished run
    assert (out / "results" / "_SUCCESS.json").exists()

    def die(done: str) -> None:
        if done == step:
            raise RuntimeError("executor lost")

    with pytest.raises(RuntimeError, match="executor lost"):
        spark_job.run_job(spark, out, progress=die)
    assert not (out / "results" / "_SUCCESS.json").exists()
    assert list((out / "results" / step).glob("*.parquet"))  # Spark wrote this much
    before = state()
    with pytest.raises(ResultsRefused, match="did not finish"):
        load_results(city.engine, out, clock=city.clock)
    assert state() == before


@SQLITE_ONLY
def test_the_command_line_prints_what_it_wrote_and_exits_0(
    city: City, spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = exported(city, tmp_path / "export")
    # --master reuses the running session (Spark keeps one per process).
    assert spark_job.main(["--export", str(out), "--master", "local[2]", "--no-hashes"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["engine"] == "spark" and printed["scores"]["rows"] > 0
    assert load_results(city.engine, out, clock=city.clock)["subjects"] == printed["scores"]["rows"]


def test_spark_submit_runs_the_file_as_a_script_and_a_bad_export_exits_2(tmp_path: Path) -> None:
    """spark-submit runs the module's file with the driver's Python: it must work as a script.

    A bad export is refused before Spark starts, so this needs no JVM.
    """
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something else"}))
    done = subprocess.run(
        [sys.executable, spark_job.__file__, "--export", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "this chengxin reads 'chengxin-export/1'" in json.loads(done.stdout)["error"]


@SQLITE_ONLY
def test_rescore_engine_spark_stores_what_duckdb_would(city: City, spark: Any, db_url: str) -> None:
    """``rescore --engine spark`` stores what DuckDB would; another date is only reported."""

    def rescore(*args: str) -> Any:
        done = CliRunner().invoke(register_all(), ["rescore", *args, "--db", db_url, "--json"])
        assert done.exit_code == 0, (args, done.stdout, done.exception)
        return json.loads(done.stdout)

    # The command's Spark is the running session (Spark keeps one per process).
    stored = rescore("--engine", "spark")
    assert (stored["engine"], stored["stored"]) == ("spark", True) and stored["subjects"] > 0
    after = rescore("--engine", "duckdb")
    assert (after["grade_changes"], after["entered"], after["left"]) == (0, 0, 0)
    past = {e: rescore("--engine", e, "--as-of", "2025-02-28") for e in ("spark", "duckdb")}
    assert not past["spark"]["stored"]
    for key in ("policy", "subjects", "grades", "lists"):
        assert past["spark"][key] == past["duckdb"][key]
