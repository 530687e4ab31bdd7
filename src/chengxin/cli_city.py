"""The ``synth`` and ``demo`` commands: a synthetic city to try chengxin on."""

from __future__ import annotations

import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from chengxin.store.schema import memberships, records, snapshots, subjects

Fmt = Literal["jsonl", "csv", "parquet"]


def _bar(label: str) -> Progress:
    from chengxin.cli import err

    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def _format_of(path: Path, fmt: str | None) -> Fmt:
    from chengxin.service.importer import detect_format

    if fmt is not None:
        if fmt not in ("jsonl", "csv", "parquet"):
            raise typer.BadParameter("use jsonl, csv or parquet", param_hint="--format")
        return fmt  # type: ignore[return-value]
    return detect_format(path)


def synth(
    out_path: Annotated[Path, typer.Option("--out", help="Feed file to write.")] = Path(
        "feed.jsonl"
    ),
    people: Annotated[int, typer.Option(help="People in the city.", min=0)] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same city).")] = 7,
    end: Annotated[str | None, typer.Option(help="Last day of the feed, YYYY-MM-DD.")] = None,
    years: Annotated[int, typer.Option(help="Years of records.", min=1)] = 3,
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Write a synthetic city's provider feed (seeded, reproducible)."""
    from chengxin.cli import emit, fail, guarded, out, parse_day
    from chengxin.service.importer import ImportError_
    from chengxin.synth import CityConfig, write_feed

    with guarded(as_json):
        try:
            kind = _format_of(out_path, fmt)
            last = parse_day(end, "--end") or date.today()
            cfg = CityConfig(people=people, seed=seed, end=last, years=years)
        except (ValueError, ImportError_) as exc:
            fail(str(exc), 2, as_json=as_json)
        started = time.perf_counter()
        with _bar("synth") as bar:
            task = bar.add_task("synth", total=None)
            summary = write_feed(
                cfg,
                out_path,
                kind,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        data = {
            "path": str(out_path),
            "format": kind,
            "lines": summary.lines,
            "retractions": summary.retractions,
            "amendments": summary.amendments,
            "bytes": summary.bytes,
            "seconds": round(time.perf_counter() - started, 2),
            "by_type": summary.by_type,
        }
        if as_json:
            emit(data)
        else:
            out.print(
                f"wrote {summary.lines} lines ({summary.retractions} retractions, "
                f"{summary.amendments} amendments) to {out_path}"
            )


def _overview(engine: Any) -> dict[str, Any]:
    from chengxin.store.db import transaction

    with transaction(engine) as s:
        grade_rows = s.execute(select(snapshots.c.grade, func.count()).group_by(snapshots.c.grade))
        grades = {str(g): int(n) for g, n in grade_rows}
        list_rows = s.execute(
            select(memberships.c.list_code, func.count())
            .where(memberships.c.left_at.is_(None))
            .group_by(memberships.c.list_code)
        )
        lists = {str(code): int(n) for code, n in list_rows}
        n_subjects = s.execute(select(func.count()).select_from(subjects)).scalar_one()
        n_records = s.execute(select(func.count()).select_from(records)).scalar_one()
        defaulter = s.execute(
            select(subjects.c.scheme, subjects.c.value)
            .join(memberships, memberships.c.subject_id == subjects.c.id)
            .where(
                memberships.c.list_code == "judgment-defaulters",
                memberships.c.left_at.is_(None),
                subjects.c.kind == "person",
            )
            .order_by(subjects.c.id)
            .limit(1)
        ).first()
        best = s.execute(
            select(subjects.c.scheme, subjects.c.value)
            .join(snapshots, snapshots.c.subject_id == subjects.c.id)
            .where(subjects.c.kind == "person")
            .order_by(snapshots.c.score.desc(), subjects.c.id)
            .limit(1)
        ).first()
    return {
        "subjects": int(n_subjects),
        "records": int(n_records),
        "grades": {k: int(v) for k, v in grades.items()},
        "lists": {k: int(v) for k, v in lists.items()},
        "defaulter": f"{defaulter[0]}:{defaulter[1]}" if defaulter else None,
        "best": f"{best[0]}:{best[1]}" if best else None,
    }


def demo(
    people: Annotated[int, typer.Option(help="People in the synthetic city.", min=100)] = 20_000,
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo files go.")] = Path("."),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    serve: Annotated[
        bool,
        typer.Option("--serve/--no-serve", help="Then serve the pages and the API until Ctrl-C."),
    ] = True,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="TCP port to serve on.")
    ] = 8000,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Build a synthetic city in a local SQLite file, score it, serve it, and print where to look.

    Two demo accounts are made with a fresh password each (printed once): the
    subject with the most points and a judgment defaulter, whose record a demo
    airline has consulted, so the portal shows every part.
    """
    from chengxin.cli import emit, guarded
    from chengxin.service.clock import SystemClock
    from chengxin.service.importer import import_file
    from chengxin.service.policies import install_policy, read_policy_source
    from chengxin.store.db import make_engine, migrate, transaction
    from chengxin.synth import CityConfig, write_feed

    with guarded(as_json):
        clock = SystemClock()
        directory.mkdir(parents=True, exist_ok=True)
        db = directory / "chengxin-demo.sqlite"
        feed = directory / "chengxin-demo-feed.jsonl"
        for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)
        started = time.perf_counter()
        engine = make_engine(str(db))
        migrate(engine)
        with transaction(engine) as session:
            text, source = read_policy_source("national")
            install_policy(
                session,
                text=text,
                source=source,
                actor="chengxin demo",
                reason="demo city",
                now=clock.now(),
            )
        cfg = CityConfig(people=people, seed=seed, end=clock.today())
        with _bar("synth ") as bar:
            task = bar.add_task("synth", total=None)
            feed_summary = write_feed(
                cfg, feed, "jsonl", progress=lambda d, t: bar.update(task, completed=d, total=t)
            )
        with _bar("import") as bar:
            task = bar.add_task("import", total=feed_summary.lines)
            summary = import_file(
                engine, feed, clock=clock, progress=lambda n: bar.advance(task, n)
            )
        view = _overview(engine)
        accounts = _demo_accounts(engine, view, clock)
        engine.dispose()
        seconds = time.perf_counter() - started
        data = {
            "db": str(db),
            "feed": str(feed),
            "import": summary.as_dict(),
            "seconds": round(seconds, 1),
            **view,
            "accounts": accounts,
            "url": f"http://127.0.0.1:{port}/" if serve else None,
        }
        if as_json:
            emit(data)
        else:
            _print_demo(data, people=people)
        if serve:
            from chengxin.cli_serve import serve as run_server

            run_server(db=str(db), port=port, log_level="warning", as_json=as_json)


def _demo_accounts(engine: Any, view: dict[str, Any], clock: Any) -> list[dict[str, str]]:
    """Log-ins for two demo subjects (fresh passwords), and an airline that checked one."""
    import secrets

    from chengxin.cli import parse_subject
    from chengxin.service import audit
    from chengxin.service.principals import add_principal
    from chengxin.service.subjects import check
    from chengxin.store.db import transaction

    out: list[dict[str, str]] = []
    with transaction(engine) as session:
        airline = add_principal(
            session,
            name="demo-airline",
            role="service",
            kind="machine",
            service_kind="airline",
            scopes=("transport.flight_booking",),
            now=clock.now(),
        )
        for name, key in (("demo-defaulter", "defaulter"), ("demo-best", "best")):
            if not view[key]:
                continue
            subject = parse_subject(view[key])
            password = secrets.token_urlsafe(9)
            add_principal(
                session,
                name=name,
                role="subject",
                kind="person",
                subject=subject,
                password=password,
                now=clock.now(),
            )
            decision = check(
                session,
                subject=subject,
                measure="transport.flight_booking",
                service="airline",
                clock=clock,
            )
            audit.record_check(
                session,
                principal=airline,
                subject=subject,
                decision=decision,
                purpose="booking a flight (demo)",
                now=clock.now(),
            )
            out.append({"name": name, "password": password, "subject": view[key]})
    return out


def _print_demo(data: dict[str, Any], *, people: int) -> None:
    """The demo's summary for a person at a terminal."""
    from chengxin.cli import out

    view, db, summary = data, data["db"], data["import"]
    out.print(
        f"[bold]A synthetic city of {view['subjects']:,} subjects[/] "
        f"({people:,} people) with {view['records']:,} records, in {data['seconds']:.1f}s."
    )
    rejects = summary.get("rejects_file")
    out.print(
        f"database: {db}\nfeed:     {data['feed']} ({summary['rejected']} lines rejected"
        + (f", see {rejects})" if rejects else ")")
    )
    t = Table("grade", "subjects", title="grades under national@2026.1")
    order = ["AAA", "AA", "A", "B", "C", "D"]
    for g in sorted(view["grades"], key=lambda g: order.index(g) if g in order else 99):
        t.add_row(g, f"{view['grades'][g]:,}")
    out.print(t)
    for code, n in sorted(Counter(view["lists"]).items()):
        out.print(f"list [bold]{code}[/]: {n:,} member(s)")
    out.print("\n[bold]Where to look next:[/]")
    if view["defaulter"]:
        out.print(f"  chengxin explain {view['defaulter']} --db {db}")
        out.print(
            f"  chengxin check {view['defaulter']} transport.flight_booking "
            f"--service airline --db {db}"
        )
    if view["best"]:
        out.print(f"  chengxin explain {view['best']} --db {db}")
    out.print(f"  chengxin lists judgment-defaulters --masked --db {db}")
    out.print(f"  chengxin verify --db {db}")
    out.print("  chengxin policy show national")
    if data["url"]:
        out.print(f"\n[bold]Pages and API at {data['url']}[/] (Ctrl-C stops); log in as:")
    else:
        out.print("\nServe the pages and the API with")
        out.print(f"  chengxin serve --db {db}\nand log in as:")
    for acc in data["accounts"]:
        out.print(f"  {acc['name']}  password {acc['password']}  ({acc['subject']})")


def register(app: typer.Typer) -> None:
    """Add the synthetic-city commands to the CLI."""
    app.command()(synth)
    app.command()(demo)
