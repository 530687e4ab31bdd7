"""One suite, every engine: the batch plan gives exactly what the pure scorer gives.

For generated policies and record sets, every engine in :data:`ENGINES` must
agree with :func:`chengxin.domain.scoring.score` on each subject's score,
grade and ``next_change`` and on every list membership with its since/until,
as of several dates. Each engine is one entry in the ``engine`` fixture
(DuckDB, and Spark on the test session's local Spark); a known gap would be
a strict xfail naming its exception, and there is none. Spark answers an
example in seconds where DuckDB takes milliseconds, so it is given fewer.

The policies come from the shared ``policy_strategies`` (valid, linted
policies, as an engine will be given). A second, smaller property uses
``batch_strategies``' own generator, which goes where the linter would stop a
policy author but the model does not: unordered step schedules, an entry
type that also lifts its own list, 64-bit attribute values, date attributes,
records of a subject that is not being scored.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

# The strategies live beside these tests and the domain's; tests/ has no packages.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "domain"))

import policy_strategies as shared
from batch_strategies import (
    Row,
    as_of_dates,
    engine_answer,
    policies,
    pure_answer,
    record_rows,
    records_table,
    subjects_table,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chengxin.domain.policy import Policy
from chengxin.domain.scoring import RecordFact
from chengxin.engine.duckdb_backend import BatchResult, connect, rescore_duckdb
from chengxin.engine.spark_backend import rescore_spark

Run = Callable[[Policy, pa.Table, pa.Table, date], BatchResult]
Case = tuple[Policy, list[Row], list[int], list[date]]

# pyspark 4.0.1 drops the socket it collects results through without closing it
# (pyspark.util._create_local_socket keeps only the file): that, and only that, warns.
SPARK_SOCKET = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")

ENGINES = ["duckdb", pytest.param("spark", marks=SPARK_SOCKET)]

# Examples per property (shared strategies, this directory's own) for each engine.
EXAMPLES = {"duckdb": (60, 25), "spark": (10, 6)}

# Each example compiles a plan and runs it on the engine, several times.
_SLOW = [HealthCheck.too_slow]


@dataclass(frozen=True)
class Engine:
    """A batch engine under test: how it scores, and how many examples it is given."""

    name: str
    run: Run
    shared_examples: int
    own_examples: int


@pytest.fixture(scope="module")
def duckdb_con() -> Iterator[Any]:
    """One DuckDB connection for the whole module."""
    con = connect(threads=2)
    yield con
    con.disconnect()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """One batch engine: DuckDB in process, or Spark on the shared local session."""
    name = str(request.param)
    shared_n, own_n = EXAMPLES[name]
    if name == "duckdb":
        con = request.getfixturevalue("duckdb_con")

        def on_duckdb(policy: Policy, records: pa.Table, subjects: pa.Table, as_of: date) -> Any:
            return rescore_duckdb(policy, records, subjects, as_of, con=con)

        return Engine(name, on_duckdb, shared_n, own_n)
    if name == "spark":
        session = request.getfixturevalue("spark")

        def on_spark(policy: Policy, records: pa.Table, subjects: pa.Table, as_of: date) -> Any:
            return rescore_spark(policy, records, subjects, as_of, session=session)

        return Engine(name, on_spark, shared_n, own_n)
    raise AssertionError(f"unknown engine {name}")  # pragma: no cover


@st.composite
def shared_cases(draw: st.DrawFn) -> Case:
    """A shared-strategy policy, a few subjects' records (one subject has none) and dates."""
    policy = draw(shared.policies())
    subject_ids = list(range(1, draw(st.integers(1, 4)) + 1))
    rows: list[Row] = []
    for subject in subject_ids:
        for fact in draw(shared.record_facts(policy, max_size=8)):
            unique = RecordFact(
                id=len(rows) + 1,
                type=fact.type,
                occurred_at=fact.occurred_at,
                attributes=fact.attributes,
                status=fact.status,
            )
            rows.append((subject, unique))
    near = [f.occurred_at + timedelta(days=k) for _, f in rows for k in (-1, 0, 1)]
    dates = draw(st.lists(shared.days(), min_size=1, max_size=2))
    if near:
        dates.append(draw(st.sampled_from(near)))
    dates += draw(as_of_dates(policy, rows))[-1:] if rows else []
    return policy, rows, [*subject_ids, 99], dates


@st.composite
def own_cases(draw: st.DrawFn) -> Case:
    """A policy from this directory's own generator, records and dates."""
    policy = draw(policies())
    subject_ids = list(range(1, draw(st.integers(1, 5)) + 1))
    rows = draw(record_rows(policy, [*subject_ids, 42]))  # 42 is not a subject: never scored
    return policy, rows, [*subject_ids, 99], draw(as_of_dates(policy, rows))


def check(engine: Engine, case: Case) -> None:
    """Score ``case`` with the engine and with the pure scorer; they must be equal."""
    policy, rows, subject_ids, dates = case
    records = records_table(policy, rows)
    subjects = subjects_table(subject_ids)
    for as_of in dates:
        got_scores, got_members = engine_answer(engine.run(policy, records, subjects, as_of))
        want_scores, want_members = pure_answer(policy, rows, subject_ids, as_of)
        assert got_scores == want_scores, f"scores differ as of {as_of}"
        assert got_members == want_members, f"memberships differ as of {as_of}"


def test_engine_agrees_with_the_pure_scorer(engine: Engine) -> None:
    @settings(max_examples=engine.shared_examples, deadline=None, suppress_health_check=_SLOW)
    @given(case=shared_cases())
    def agrees(case: Case) -> None:
        check(engine, case)

    agrees()


def test_engine_agrees_beyond_what_the_linter_allows(engine: Engine) -> None:
    @settings(max_examples=engine.own_examples, deadline=None, suppress_health_check=_SLOW)
    @given(case=own_cases())
    def agrees(case: Case) -> None:
        check(engine, case)

    agrees()
