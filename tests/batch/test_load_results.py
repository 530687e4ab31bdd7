"""``load-results``: batch results go in whole, in one transaction, or not at all.

Results are refused (with the reason, and the store untouched) when the job
did not finish, when a file does not match ``_SUCCESS.json``, when they scored
an older ledger head or another ledger, or another policy than the one in
force on their date. Loaded, they notify only the subjects that changed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_world import City, pure_answer, table_answer, variant

from chengxin.engine.export import Export, export_parquet, verify_export
from chengxin.engine.results import read_results, rescore_export_duckdb
from chengxin.service.load_results import ResultsRefused, load_results
from chengxin.service.policies import add_policy
from chengxin.store.db import transaction
from chengxin.store.schema import memberships, outbox, snapshots

AS_OF = date(2026, 11, 1)
LATER = date(2027, 6, 30)  # tickets and small defaults have expired by then

State = Callable[..., Any]


def scored(city: City, out: Path, as_of: date = AS_OF, policy: Any = None) -> Export:
    """Export the city and score the export with DuckDB as a batch job would."""
    export_parquet(
        city.engine, out, policy=policy or city.policy, as_of=as_of, now=city.clock.now()
    )
    checked = verify_export(out)
    rescore_export_duckdb(checked, now=city.clock.now())
    return checked


def stored(city: City) -> tuple[dict[int, tuple[int, str, date | None]], set[Any]]:
    """Snapshots and open memberships in the shape of the pure answer."""
    with transaction(city.engine) as session:
        snaps = {
            int(r.subject_id): (r.score, r.grade, r.next_change)
            for r in session.execute(select(snapshots))
        }
        members = {
            (int(r.subject_id), r.list_code, r.kind, r.since, r.until)
            for r in session.execute(select(memberships).where(memberships.c.left_at.is_(None)))
        }
    return snaps, members


def events(city: City) -> int:
    with transaction(city.engine) as session:
        return int(session.execute(select(func.count()).select_from(outbox)).scalar_one())


def test_results_as_of_today_change_nothing_and_notify_nobody(city: City, tmp_path: Path) -> None:
    scored(city, tmp_path / "export")
    before = events(city)
    summary = load_results(city.engine, tmp_path / "export", clock=city.clock)
    assert summary["engine"] == "duckdb"
    assert summary["subjects"] == len(city.subject_ids())
    assert (summary["grade_changes"], summary["entered"], summary["left"]) == (0, 0, 0)
    assert events(city) == before
    assert stored(city) == pure_answer(city.policy, city.facts(), AS_OF)


def test_results_of_a_later_day_notify_exactly_the_subjects_that_changed(
    city: City, tmp_path: Path
) -> None:
    now = pure_answer(city.policy, city.facts(), AS_OF)
    later = pure_answer(city.policy, city.facts(), LATER)
    moved = {s for s in now[0] if now[0][s][1] != later[0][s][1]}
    lists_now = {(s, code) for s, code, *_ in now[1]}
    lists_later = {(s, code) for s, code, *_ in later[1]}
    assert moved and lists_now - lists_later, "the city should change between the two dates"
    scored(city, tmp_path / "export", as_of=LATER)
    before = events(city)
    summary = load_results(city.engine, tmp_path / "export" / "results", clock=city.clock)
    assert summary["grade_changes"] == len(moved)
    assert summary["entered"] == len(lists_later - lists_now)
    assert summary["left"] == len(lists_now - lists_later)
    with transaction(city.engine) as session:
        rows = session.execute(select(outbox.c.topic, outbox.c.subject_id)).all()[before:]
    assert len(rows) == len(moved) + len(lists_later - lists_now) + len(lists_now - lists_later)
    assert {int(s) for t, s in rows if t == "grade.changed"} == moved
    assert stored(city) == later
    # Loaded again, the same results change nothing.
    again = load_results(city.engine, tmp_path / "export", clock=city.clock)
    assert (again["grade_changes"], again["entered"], again["left"]) == (0, 0, 0)
    assert events(city) == before + len(rows)


def _unfinished(out: Path) -> None:
    (out / "results" / "_SUCCESS.json").unlink()


def _short(out: Path) -> None:
    path = next((out / "results" / "scores").glob("*.parquet"))
    pq.write_table(pq.read_table(path).slice(1), path)


def _extra(out: Path) -> None:
    path = next((out / "results" / "memberships").glob("*.parquet"))
    pq.write_table(pq.read_table(path), path.with_name("part-9.parquet"))


def _missing(out: Path) -> None:
    next((out / "results" / "memberships").glob("*.parquet")).unlink()


def _other_ledger(out: Path) -> None:
    success = out / "results" / "_SUCCESS.json"
    data = json.loads(success.read_text())
    data["ledger_head"]["entry_hash"] = "f" * 64
    success.write_text(json.dumps(data))


def _twice(out: Path) -> None:
    path = next((out / "results" / "scores").glob("*.parquet"))
    table = pq.read_table(path)
    ids = table.column("subject_id").to_pylist()
    ids[1] = ids[0]
    doubled = table.set_column(0, "subject_id", pa.array(ids, pa.int64()))
    pq.write_table(doubled, path)
    success = out / "results" / "_SUCCESS.json"
    data = json.loads(success.read_text())
    data["scores"]["files"][0]["bytes"] = path.stat().st_size
    success.write_text(json.dumps(data))


REFUSALS: dict[str, tuple[Callable[[Path], None], str]] = {
    "unfinished": (_unfinished, r"has no _SUCCESS\.json: the batch job did not finish"),
    "short": (_short, r"holds \d+ rows, _SUCCESS\.json says \d+"),
    "extra file": (_extra, r"part-9\.parquet was not written by the job that finished"),
    "missing file": (_missing, r"is listed in _SUCCESS\.json but missing"),
    "other ledger": (_other_ledger, r"which this store .* does not hold: they come from another"),
    "scored twice": (_twice, r"a subject is scored twice"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_results_that_do_not_match_are_refused_and_nothing_changes(
    city: City, tmp_path: Path, state: State, case: str
) -> None:
    spoil, message = REFUSALS[case]
    out = tmp_path / "export"
    scored(city, out, as_of=LATER)
    spoil(out)
    before = state()
    with pytest.raises(ResultsRefused, match=message):
        load_results(city.engine, out, clock=city.clock)
    assert state() == before


def test_results_of_an_older_ledger_head_are_stale(
    city: City, tmp_path: Path, state: State, ingest: Callable[..., Any], record_line: Any
) -> None:
    out = tmp_path / "export"
    scored(city, out, as_of=LATER)
    ingest(record_line())  # a record arrives after the export
    before = state()
    with pytest.raises(ResultsRefused, match=r"records arrived since the export.*stale"):
        load_results(city.engine, out, clock=city.clock)
    assert state() == before


def test_results_of_another_policy_version_are_refused(
    city: City, tmp_path: Path, state: State
) -> None:
    proposal = variant(city.policy, "2026.2", **{"fail-to-yield": -20})
    with transaction(city.engine) as session:  # stored, never activated: the ledger is as it was
        add_policy(
            session,
            text=json.dumps(proposal.canonical()),
            source="proposal.json",
            now=city.clock.now(),
        )
    out = tmp_path / "export"
    scored(city, out, as_of=LATER, policy=proposal)
    before = state()
    with pytest.raises(
        ResultsRefused, match=r"scored with national@2026\.2 .* in force on 2027-06-30 is national"
    ):
        load_results(city.engine, out, clock=city.clock)
    assert state() == before


def test_a_failure_half_way_through_loading_rolls_everything_back(
    city: City, tmp_path: Path, state: State
) -> None:
    out = tmp_path / "export"
    scored(city, out, as_of=LATER)
    path = next((out / "results" / "scores").glob("*.parquet"))
    table = pq.read_table(path).sort_by("subject_id")
    ids = table.column("subject_id").to_pylist()
    ids[-1] = ids[-1] + 10_000  # no such subject: the last chunk cannot be written
    pq.write_table(table.set_column(0, "subject_id", pa.array(ids, pa.int64())), path)
    success = out / "results" / "_SUCCESS.json"
    data = json.loads(success.read_text())
    data["scores"]["files"][0]["bytes"] = path.stat().st_size
    success.write_text(json.dumps(data))
    before = state()
    with pytest.raises(ResultsRefused, match=r"not in this store.*nothing was loaded"):
        load_results(city.engine, out, clock=city.clock, chunk=50)
    assert state() == before


def test_the_results_agree_with_the_pure_scorer_on_every_date(city: City, tmp_path: Path) -> None:
    for step, as_of in enumerate((date(2024, 2, 29), AS_OF + timedelta(days=400))):
        checked = scored(city, tmp_path / f"export-{step}", as_of=as_of)
        got = table_answer(*read_results(checked.results()).tables())
        assert got == pure_answer(city.policy, city.facts(), as_of)
