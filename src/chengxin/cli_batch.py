"""The batch commands: ``export``, ``load-results`` and ``backtest``.

``rescore --engine spark`` exports, runs :mod:`chengxin.engine.spark_job` on a
local Spark and loads the results; on a cluster the same three steps are
``chengxin export``, ``spark-submit …/spark_job.py`` and ``chengxin
load-results`` (docs/batch.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from chengxin.engine.export import ExportError
from chengxin.engine.plan import PlanError
from chengxin.engine.results import ResultsError
from chengxin.service.backtest import Backtest

DbOpt = Annotated[
    str, typer.Option("--db", envvar="CHENGXIN_DB", help="SQLite file or postgresql:// URL.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AsOfOpt = Annotated[
    str | None, typer.Option("--as-of", help="YYYY-MM-DD (default today).", show_default=False)
]


@contextmanager
def _refusals(as_json: bool) -> Iterator[None]:
    """The engine's refusals (an export or results that do not match) exit 2, like bad input."""
    from chengxin.cli import fail

    try:
        yield
    except (ExportError, ResultsError, PlanError) as exc:
        fail(str(exc), 2, as_json=as_json)


def export(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write (must be empty).")],
    fmt: Annotated[str, typer.Option("--format", help="parquet (the only format).")] = "parquet",
    as_of: AsOfOpt = None,
    policy: Annotated[
        str | None,
        typer.Option(help="Stored policy name@version (default: the one in force on --as-of)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out.")] = False,
    db: DbOpt = "chengxin.sqlite",
    as_json: JsonOpt = False,
) -> None:
    """Write the ledger's records as Parquet partitioned by domain and month, with a manifest."""
    from chengxin.cli import _clock, emit, guarded, open_db, out, parse_day
    from chengxin.engine.export import export_parquet
    from chengxin.service.errors import Invalid
    from chengxin.service.policies import active_policy, get_policy
    from chengxin.store.db import transaction

    with guarded(as_json), _refusals(as_json):
        if fmt != "parquet":
            raise Invalid(f"--format must be parquet, got {fmt!r}")
        clock = _clock()
        day = parse_day(as_of, "--as-of") or clock.today()
        engine = open_db(db)
        with transaction(engine) as session:
            chosen = get_policy(session, ref=policy) if policy else active_policy(session, on=day)
        manifest = export_parquet(
            engine, out_dir, policy=chosen.policy, as_of=day, now=clock.now(), force=force
        )
        data = {
            "out": str(out_dir),
            "format": fmt,
            "records": manifest.records_rows,
            "subjects": manifest.subjects_rows,
            "partitions": len(manifest.partitions),
            "files": len(manifest.files()),
            "ledger_head": {"seq": manifest.head.seq, "entry_hash": manifest.head.entry_hash},
            "policy": manifest.policy_label,
            "policy_hash": manifest.policy_hash,
            "as_of": manifest.as_of.isoformat(),
        }
        if as_json:
            emit(data)
        else:
            out.print(
                f"exported {manifest.records_rows:,} records of {manifest.subjects_rows:,} "
                f"subjects in {len(manifest.partitions)} partitions to {out_dir} (ledger entry "
                f"{manifest.head.seq}, {manifest.policy_label}, as of {manifest.as_of})"
            )


def load_results(
    directory: Annotated[
        Path, typer.Argument(help="Results directory, or an export holding one in results/.")
    ],
    db: DbOpt = "chengxin.sqlite",
    as_json: JsonOpt = False,
) -> None:
    """Load a batch job's results in one transaction; exit 2 if stale, unfinished or mismatched."""
    from chengxin.cli import _clock, emit, guarded, open_db, out
    from chengxin.service.load_results import load_results as load

    with guarded(as_json), _refusals(as_json):
        engine = open_db(db)
        summary = load(engine, directory, clock=_clock())
        if as_json:
            emit(summary)
        else:
            out.print(
                f"loaded {summary['subjects']:,} scores from {summary['engine']} "
                f"({summary['policy']}, as of {summary['as_of']}, ledger entry "
                f"{summary['ledger_seq']}): {summary['grade_changes']} grade changes, "
                f"{summary['entered']} list entries, {summary['left']} exits"
            )


def backtest(
    policy: Annotated[str, typer.Option("--policy", help="The proposed policy: YAML or pack.")],
    against: Annotated[
        str | None,
        typer.Option(
            help="Compare with: YAML, pack or stored name@version (default: the one in force)."
        ),
    ] = None,
    as_of: AsOfOpt = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Write a chart of the change (.png or .svg).")
    ] = None,
    show: Annotated[int, typer.Option("--show", help="Subjects named per list change.", min=0)] = 5,
    db: DbOpt = "chengxin.sqlite",
    as_json: JsonOpt = False,
) -> None:
    """Score everyone under a proposed policy and the active one; report what would change."""
    from chengxin.cli import _clock, emit, guarded, open_db, parse_day
    from chengxin.domain.policy_load import load_policy_text
    from chengxin.service.backtest import backtest as run
    from chengxin.service.backtest import write_chart
    from chengxin.service.policies import active_policy, get_policy, read_policy_source
    from chengxin.store.db import transaction

    with guarded(as_json), _refusals(as_json):
        text, source = read_policy_source(policy)
        proposed = load_policy_text(text, source)
        clock = _clock()
        day = parse_day(as_of, "--as-of") or clock.today()
        engine = open_db(db)
        if against is None or "@" in against or against.startswith("sha256:"):
            with transaction(engine) as session:
                found = (
                    get_policy(session, ref=against) if against else active_policy(session, on=day)
                )
            current = found.policy
        else:
            text, source = read_policy_source(against)
            current = load_policy_text(text, source)
        report = run(engine, policy=proposed, against=current, as_of=day, show=show)
        written = write_chart(report, chart) if chart is not None else None
        if as_json:
            emit({**report.as_dict(), "chart": str(written) if written else None})
        else:
            _print(report, written)


def _print(report: Backtest, chart: Path | None) -> None:
    from chengxin.cli import out

    out.print(
        f"[bold]{report.before.label} → {report.after.label}[/] as of {report.as_of} "
        f"(ledger entry {report.ledger_seq}): {report.subjects:,} subjects, "
        f"[bold]{report.changed:,}[/] change; {report.moved:,} move grade, "
        f"{report.score_up:,} score up, {report.score_down:,} down"
    )
    grid = Table("before \\ after", *report.grades_after, title="grade transitions")
    for grade, row in zip(report.grades_before, report.matrix(), strict=True):
        grid.add_row(grade, *(f"{n:,}" if n else "·" for n in row))
    out.print(grid)
    lists = Table("list", "kind", "before", "after", "enter", "leave", "who enters", title="lists")
    for lst in report.lists:
        lists.add_row(
            lst.code,
            lst.kind,
            f"{lst.before:,}",
            f"{lst.after:,}",
            f"{lst.entered:,}",
            f"{lst.left:,}",
            ", ".join(lst.entered_subjects),
        )
    out.print(lists)
    measures = Table("measure", "outcome", "before", "after", "start", "stop", title="measures")
    for m in report.measures:
        measures.add_row(
            m.code, m.outcome, f"{m.before:,}", f"{m.after:,}", f"{m.started:,}", f"{m.stopped:,}"
        )
    out.print(measures)
    for name, limit in (("province", None), ("kind", None), ("domain", None), ("region", 10)):
        rows = report.breakdowns.get(name, [])
        t = Table(
            name,
            "subjects",
            "changed",
            "grade",
            "enter",
            "leave",
            "measure",
            title=f"by {name}" + (f" (the {limit} most changed)" if limit else ""),
        )
        for b in rows[:limit]:
            t.add_row(
                b.label,
                f"{b.subjects:,}",
                f"{b.changed:,}",
                f"{b.grade_moved:,}",
                f"{b.entered:,}",
                f"{b.left:,}",
                f"{b.measure_changed:,}",
            )
        out.print(t)
    if chart is not None:
        out.print(f"chart: {chart}")


def register(app: typer.Typer) -> None:
    """Add the batch commands to the CLI."""
    app.command()(export)
    app.command("load-results")(load_results)
    app.command()(backtest)
