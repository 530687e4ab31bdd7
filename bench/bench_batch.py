"""Benchmark the batch path on the national pack: the Ibis plan against three baselines.

Run ``.venv/bin/python bench/bench_batch.py --records 10000000`` (or
``--records 200000`` for a quick run). It generates a synthetic record set in
the batch input contract with numpy, loads it into DuckDB, then times in this
one process:

1. the Ibis plan (:func:`chengxin.engine.duckdb_backend.rescore_duckdb`) on
   DuckDB, results materialised as Arrow;
2. a hand-written DuckDB SQL query for the same policy (CASE for first-match
   rules, calendar arithmetic with ``to_months``, GROUP BY);
3. a vectorised pandas implementation, as an analyst would write it;
4. a generic Python rule engine (``rule-engine``) evaluating record by record,
   run on a sample of whole subjects and extrapolated per record;

and asserts that (2) and (3) equal (1) on every subject and list membership,
and (4) equals the plan on the same sample. Peak RSS is sampled per phase
(psutil, every 5 ms) and reported as the rise above the phase's start. Results
go to ``bench/results/`` as JSON and to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import ibis
import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from batch_baselines import run_pandas, run_rule_engine, run_sql, to_pandas  # noqa: E402

from chengxin.domain.policy import Policy  # noqa: E402
from chengxin.domain.policy_load import load_policy_text  # noqa: E402
from chengxin.engine.duckdb_backend import (  # noqa: E402
    MEMBERSHIPS_SCHEMA,
    SCORES_SCHEMA,
    BatchResult,
    connect,
    rescore_duckdb,
)
from chengxin.engine.plan import (  # noqa: E402
    RECORD_COLUMNS,
    SUBJECT_COLUMNS,
    attribute_columns,
    build_plan,
)

POLICY_PATH = ROOT / "src" / "chengxin" / "policies" / "national.yaml"

# -- synthetic data ------------------------------------------------------------

KINDS = (("person", 0.92), ("organisation", 0.075), ("public_body", 0.005))
TYPE_MIX: dict[str, dict[str, float]] = {
    "person": {
        "societal.fail_to_yield_pedestrian": 30,
        "societal.smoking_in_non_smoking_zone": 12,
        "societal.fare_evasion": 18,
        "societal.volunteering": 10,
        "societal.blood_donation": 6,
        "societal.heroic_act": 0.3,
        "commercial.tax_arrears": 3,
        "commercial.contract_fraud": 0.4,
        "judicial.judgment_unperformed": 3,
        "judicial.judgment_performed": 1.5,
        "judicial.obstruction_of_enforcement": 0.4,
    },
    "organisation": {
        "commercial.tax_arrears": 20,
        "commercial.wage_arrears": 8,
        "commercial.contract_fraud": 2,
        "commercial.product_safety_violation": 15,
        "commercial.environmental_violation": 10,
        "commercial.tax_compliance_a": 25,
        "judicial.judgment_unperformed": 10,
        "judicial.judgment_performed": 6,
        "judicial.obstruction_of_enforcement": 2,
    },
    "public_body": {
        "government.court_ruling_not_honoured": 30,
        "government.contract_not_honoured": 40,
        "judicial.judgment_unperformed": 20,
        "judicial.judgment_performed": 10,
    },
}
STATUS_MIX = {
    "active": 0.93,
    "disputed": 0.02,
    "retracted": 0.03,
    "superseded": 0.015,
    "overturned": 0.005,
}


def _dictionary(indices: np.ndarray, values: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(indices.astype(np.int32)), pa.array(values)
    ).cast(pa.string())


def _lognormal_int(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return np.maximum(1, rng.lognormal(np.log(median), sigma, n)).astype(np.int64)


def subjects_for(n_records: int) -> int:
    """How many subjects a record set of ``n_records`` has (1.6 records each on average)."""
    return max(1, round(n_records / 1.6))  # Poisson(1.6) records each: most have 0-3


def draw_kinds(rng: np.random.Generator, n_subjects: int) -> np.ndarray:
    """Each subject's kind, as an index into :data:`KINDS`."""
    return rng.choice(len(KINDS), size=n_subjects, p=[p for _, p in KINDS])


def subjects_table(subject_kind: np.ndarray, first_id: int = 0) -> pa.Table:
    """Subjects ``first_id …`` with the given kinds, in the input contract."""
    return pa.table(
        {
            "subject_id": pa.array(
                np.arange(first_id, first_id + subject_kind.size, dtype=np.int64)
            ),
            "kind": _dictionary(subject_kind, [k for k, _ in KINDS]),
        }
    )


def generate(policy: Policy, n_records: int, as_of: date, seed: int) -> tuple[pa.Table, pa.Table]:
    """Records and subjects in the input contract, drawn with numpy (no Python loop per row)."""
    rng = np.random.default_rng(seed)
    subject_kind = draw_kinds(rng, subjects_for(n_records))
    subject_of = rng.integers(0, subject_kind.size, size=n_records)
    records = draw_records(policy, rng, subject_kind, subject_of, as_of)
    return records, subjects_table(subject_kind)


def draw_records(
    policy: Policy,
    rng: np.random.Generator,
    subject_kind: np.ndarray,
    subject_of: np.ndarray,
    as_of: date,
    first_id: int = 0,
) -> pa.Table:
    """One record for each entry of ``subject_of`` (ids from ``first_id``), the mix above."""
    n_records = subject_of.size
    kind_names = [k for k, _ in KINDS]
    codes = [t.code for t in policy.record_types]
    type_ix = np.empty(n_records, dtype=np.int32)
    kind_of_record = subject_kind[subject_of]
    for k, name in enumerate(kind_names):
        rows = np.flatnonzero(kind_of_record == k)
        mix = TYPE_MIX[name]
        weights = np.array(list(mix.values()), dtype=float)
        picks = rng.choice(len(mix), size=rows.size, p=weights / weights.sum())
        type_ix[rows] = np.array([codes.index(c) for c in mix], dtype=np.int32)[picks]
    # Four years back to a month ahead: some records lie after the scoring date.
    ages = rng.integers(-30, 4 * 365 + 1, size=n_records)
    occurred = np.datetime64(as_of, "D") - ages.astype("timedelta64[D]")
    statuses = list(STATUS_MIX)
    status_ix = rng.choice(len(statuses), size=n_records, p=list(STATUS_MIX.values()))

    def where(*type_codes: str) -> np.ndarray:
        return np.isin(type_ix, [codes.index(c) for c in type_codes])

    amount = np.zeros(n_records, dtype=np.int64)
    amount_set = np.zeros(n_records, dtype=bool)
    for code, median, sigma in (
        ("judicial.judgment_unperformed", 60_000, 1.2),
        ("commercial.tax_arrears", 100_000, 1.5),
        ("commercial.wage_arrears", 300_000, 1.0),
        ("government.court_ruling_not_honoured", 1_000_000, 1.0),
        ("government.contract_not_honoured", 1_000_000, 1.0),
    ):
        rows = where(code)
        amount[rows] = _lognormal_int(rng, median, sigma, int(rows.sum()))
        amount_set |= rows
    amount_set &= ~(where("government.court_ruling_not_honoured") & (rng.random(n_records) < 0.05))
    severity_ix = rng.choice(3, size=n_records, p=[0.6, 0.3, 0.1])
    severity_set = where(
        "commercial.product_safety_violation", "commercial.environmental_violation"
    )
    repeat = rng.random(n_records) < 0.25
    repeat_set = where("societal.fare_evasion") & (rng.random(n_records) >= 0.05)
    hours = _lognormal_int(rng, 20, 0.9, n_records)
    hours_set = where("societal.volunteering")
    overdue_set = where("commercial.tax_arrears")
    workers_set = where("commercial.wage_arrears")
    columns: dict[str, pa.Array] = {
        "record_id": pa.array(np.arange(first_id, first_id + n_records, dtype=np.int64)),
        "subject_id": pa.array(subject_of.astype(np.int64)),
        "type": _dictionary(type_ix, codes),
        "occurred_at": pa.array(occurred, pa.date32()),
        "status": _dictionary(status_ix, statuses),
        "a_amount_cny": pa.array(amount, mask=~amount_set),
        "a_days_overdue": pa.array(rng.integers(1, 366, n_records), mask=~overdue_set),
        "a_workers": pa.array(rng.integers(1, 201, n_records), mask=~workers_set),
        "a_severity": pa.DictionaryArray.from_arrays(
            pa.array(severity_ix.astype(np.int32), mask=~severity_set),
            pa.array(["minor", "general", "serious"]),
        ).cast(pa.string()),
        "a_repeat": pa.array(repeat, mask=~repeat_set),
        "a_hours": pa.array(hours, mask=~hours_set),
    }
    assert list(columns)[5:] == list(attribute_columns(policy))
    return pa.table(columns)


# -- measuring -------------------------------------------------------------------


@dataclass
class Phase:
    """Wall time, CPU time (all threads) and resident memory of one phase of the benchmark."""

    name: str
    records: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def records_per_s(self) -> float:
        """Throughput."""
        return self.records / self.seconds if self.seconds else float("inf")

    def as_json(self) -> dict[str, Any]:
        """The phase as plain data."""
        return {
            "name": self.name,
            "records": self.records,
            "seconds": round(self.seconds, 4),
            "cpu_seconds": round(self.cpu_seconds, 4),
            "records_per_s": round(self.records_per_s),
            "rss_start_mb": round(self.rss_start_mb, 1),
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "rss_rise_mb": round(self.rss_peak_mb - self.rss_start_mb, 1),
            "note": self.note,
            **self.extra,
        }


@contextmanager
def measured(name: str, records: int, note: str = "") -> Iterator[Phase]:
    """Time a block and sample its peak RSS every 5 ms on a side thread."""
    proc = psutil.Process()
    phase = Phase(name, records, note=note)
    phase.rss_start_mb = phase.rss_peak_mb = proc.memory_info().rss / 2**20
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            phase.rss_peak_mb = max(phase.rss_peak_mb, proc.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield phase
    finally:
        phase.seconds = time.perf_counter() - start
        phase.cpu_seconds = time.process_time() - cpu
        done.set()
        sampler.join()
        phase.rss_peak_mb = max(phase.rss_peak_mb, proc.memory_info().rss / 2**20)


def best(runs: list[Phase]) -> Phase:
    """The fastest of several runs, noting how many and their spread."""
    fastest = min(runs, key=lambda p: p.seconds)
    if len(runs) > 1:
        fastest.note = f"{fastest.note}; best of {len(runs)}".lstrip("; ")
        fastest.extra["all_seconds"] = [round(p.seconds, 3) for p in runs]
        fastest.rss_peak_mb = max(p.rss_peak_mb for p in runs)
        fastest.rss_start_mb = min(p.rss_start_mb for p in runs)
    return fastest


def canonical(scores: pa.Table, memberships: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Results in one schema and one order, for exact comparison."""
    s = scores.select(SCORES_SCHEMA.names).cast(SCORES_SCHEMA).sort_by("subject_id")
    m = memberships.select(MEMBERSHIPS_SCHEMA.names).cast(MEMBERSHIPS_SCHEMA)
    m = m.sort_by([("subject_id", "ascending"), ("list_code", "ascending")])
    return s.combine_chunks(), m.combine_chunks()


def assert_same(name: str, got: tuple[pa.Table, pa.Table], want: tuple[pa.Table, pa.Table]) -> None:
    """Fail loudly, with a few differing rows, if two results differ."""
    for part, g, w in (("scores", got[0], want[0]), ("memberships", got[1], want[1])):
        if g.equals(w):
            continue
        if g.num_rows != w.num_rows:
            raise AssertionError(f"{name} {part}: {g.num_rows} rows, the plan has {w.num_rows}")
        gd, wd = g.to_pandas(), w.to_pandas()
        bad = (gd.ne(wd) & ~(gd.isna() & wd.isna())).any(axis=1)
        raise AssertionError(
            f"{name} {part} differ in {int(bad.sum())} rows:\n{gd[bad].head()}\n"
            f"the plan:\n{wd[bad].head()}"
        )


# -- 1. the Ibis plan ----------------------------------------------------------


def plan_inputs(policy: Policy) -> tuple[Any, Any]:
    """Ibis tables naming the DuckDB tables ``records`` and ``subjects``."""
    records = ibis.table({**RECORD_COLUMNS, **attribute_columns(policy)}, name="records")
    return records, ibis.table(SUBJECT_COLUMNS, name="subjects")


def run_plan(con: Any, policy: Policy, as_of: date) -> BatchResult:
    """The plan on the DuckDB tables ``records`` and ``subjects``."""
    return rescore_duckdb(policy, *plan_inputs(policy), as_of, con=con)


# -- driver ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Generate, run every phase, check agreement, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--sample", type=int, default=100_000, help="records for the rule engine")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 1, 31))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--repeat", type=int, default=3, help="runs of plan and SQL; best kept")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    policy = load_policy_text(POLICY_PATH.read_text(), str(POLICY_PATH))
    as_of: date = args.as_of
    n = args.records
    phases: list[Phase] = []
    load_at_start = list(os.getloadavg())  # other work on the machine makes timings noisy

    with measured("generate (numpy)", n) as ph:
        records, subjects = generate(policy, n, as_of, args.seed)
    phases.append(ph)
    con = connect(threads=args.threads)
    with measured("load into DuckDB", n) as ph:
        con.con.register("records_arrow", records)
        con.con.register("subjects_arrow", subjects)
        con.con.execute("CREATE TABLE records AS SELECT * FROM records_arrow")
        con.con.execute("CREATE TABLE subjects AS SELECT * FROM subjects_arrow")
        con.con.unregister("records_arrow")
        con.con.unregister("subjects_arrow")
    phases.append(ph)

    run_plan(con, policy, as_of)  # warm-up: first-query costs are not the plan's
    plan_runs, sql_runs = [], []
    for _ in range(args.repeat):  # interleaved, so a noisy neighbour hits both alike
        with measured("Ibis plan on DuckDB", n, "build + compile + run, Arrow out") as ph:
            plan = run_plan(con, policy, as_of)
        plan_runs.append(ph)
        with measured("hand-written DuckDB SQL", n, "same tables, Arrow out") as ph:
            sql_result = run_sql(con, as_of)
        sql_runs.append(ph)
    plan_ph, sql_ph = best(plan_runs), best(sql_runs)
    phases += [plan_ph, sql_ph]
    want = canonical(plan.scores, plan.memberships)
    plan_ph.extra["subjects"] = plan.scores.num_rows
    plan_ph.extra["memberships"] = plan.memberships.num_rows
    assert_same("SQL", canonical(*sql_result), want)

    started = time.perf_counter()
    con.compile(build_plan(policy, *plan_inputs(policy), as_of).scores)
    plan_ph.extra["ibis_build_and_compile_s"] = round(time.perf_counter() - started, 3)

    with measured("load into pandas", n) as ph:
        frame = to_pandas(records)
    phases.append(ph)
    pandas_runs = []
    for _ in range(args.repeat):
        with measured("pandas (vectorised)", n) as ph:
            pandas_result = run_pandas(policy, frame, subjects["subject_id"].to_numpy(), as_of)
        pandas_runs.append(ph)
    pandas_ph = best(pandas_runs)
    phases.append(pandas_ph)
    assert_same("pandas", canonical(*pandas_result), want)
    del frame

    cut = max(1, round(subjects.num_rows * min(1.0, args.sample / n)))
    sample = records.filter(pc.less(records["subject_id"], cut))
    sample_subjects = subjects.filter(pc.less(subjects["subject_id"], cut))
    with measured("rule-engine (sampled)", sample.num_rows, f"sample of {cut} subjects") as rule_ph:
        rule_result = run_rule_engine(policy, sample, list(range(cut)), as_of)
    phases.append(rule_ph)
    sample_plan = rescore_duckdb(policy, sample, sample_subjects, as_of, con=con)
    assert_same(
        "rule-engine",
        canonical(*rule_result),
        canonical(sample_plan.scores, sample_plan.memberships),
    )
    per_record = rule_ph.seconds / max(1, sample.num_rows)
    rule_ph.extra["extrapolated_seconds"] = round(per_record * n, 1)

    ratios = {
        "plan_over_sql": plan_ph.seconds / sql_ph.seconds,
        "pandas_over_plan": pandas_ph.seconds / plan_ph.seconds,
        "rule_engine_over_plan": per_record * n / plan_ph.seconds,
        "plan_over_sql_cpu": plan_ph.cpu_seconds / sql_ph.cpu_seconds,
        "pandas_over_plan_cpu": pandas_ph.cpu_seconds / plan_ph.cpu_seconds,
    }
    result = {
        "benchmark": "batch",
        "policy": policy.label,
        "records": n,
        "subjects": subjects.num_rows,
        "as_of": as_of.isoformat(),
        "threads": args.threads,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": {
            "duckdb": duckdb.__version__,
            "ibis": ibis.__version__,
            "pandas": pd.__version__,
            "pyarrow": pa.__version__,
        },
        "phases": [p.as_json() for p in phases],
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": {
            "plan_over_sql": "<= 1.3",
            "pandas_over_plan": ">= 2",
            "rule_engine_over_plan": ">= 1000",
        },
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average": {"start": load_at_start, "end": list(os.getloadavg())},
    }
    write_result(args.out, f"batch-{n}", result, report(result))
    return 0


def write_result(out: Path, name: str, result: dict[str, Any], text: str) -> Path:
    """Write ``result`` as ``out/<name>-<time>.json``, print ``text`` and where it went."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    path = out / f"{name}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(f"\nwritten {path}")
    return path


def report(result: dict[str, Any]) -> str:
    """The result as a Markdown table with the ratios underneath."""
    plan = next(p for p in result["phases"] if p["name"].startswith("Ibis plan"))
    lines = [
        f"Batch scoring, {result['policy']}, {result['records']:,} records, "
        f"{result['subjects']:,} subjects, as of {result['as_of']}, "
        f"{result['threads']} DuckDB threads",
        "",
        "| phase | records | wall s | CPU s | records/s | × plan | peak RSS rise (MB) | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in result["phases"]:
        seconds = p.get("extrapolated_seconds", p["seconds"])
        shown = f"{p['seconds']:.3f}"
        if "extrapolated_seconds" in p:
            shown += f" (→ {seconds:,.0f} for all)"
        lines.append(
            f"| {p['name']} | {p['records']:,} | {shown} | {p['cpu_seconds']:.2f} | "
            f"{p['records_per_s']:,} | "
            f"{seconds / plan['seconds']:.2f} | {p['rss_rise_mb']:,.0f} | {p['note']} |"
        )
    r, t = result["ratios"], result["targets"]
    lines += [
        "",
        f"plan / SQL = {r['plan_over_sql']:.2f} (target {t['plan_over_sql']}); "
        f"pandas / plan = {r['pandas_over_plan']:.1f} (target {t['pandas_over_plan']}); "
        f"rule-engine / plan = {r['rule_engine_over_plan']:,.0f} "
        f"(target {t['rule_engine_over_plan']}, extrapolated from the sample)",
        f"CPU time: plan / SQL = {r['plan_over_sql_cpu']:.2f}; "
        f"pandas / plan = {r['pandas_over_plan_cpu']:.1f}",
        f"load average {result['load_average']['start'][0]:.1f} at start, "
        f"{result['load_average']['end'][0]:.1f} at end ({result['machine']['cpus']} CPUs)",
        f"process peak RSS {result['process_peak_rss_mb']:,.0f} MB",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
