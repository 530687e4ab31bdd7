"""The ``chengxin`` command line (Typer + Rich).

Every command takes ``--db`` (a SQLite file path or a PostgreSQL URL) and
``--json``. Exit codes: 0 success, 1 the answer is negative (a check denied,
a broken ledger, a policy with errors), 2 bad input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chengxin.domain.identifiers import InvalidIdentifier, SubjectId, parse_identifier
from chengxin.domain.policy_load import PolicyError, lint_policy_text
from chengxin.service.clock import Clock, SystemClock
from chengxin.service.errors import Invalid, ServiceError
from chengxin.store.db import DatabaseError, make_engine, migrate, require_current, transaction

app = typer.Typer(
    help="chengxin: an accountable social credit system. Every point explained, every entry "
    "contestable, nothing negative kept for ever.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Lint, show and activate policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

DbOpt = Annotated[
    str, typer.Option("--db", envvar="CHENGXIN_DB", help="SQLite file or postgresql:// URL.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DEFAULT_DB = "chengxin.sqlite"


def _clock() -> Clock:
    return SystemClock()


def fail(message: str, code: int = 2, *, as_json: bool = False) -> NoReturn:
    """Print an error and exit with ``code``."""
    if as_json:
        print(json.dumps({"error": message, "exit": code}, ensure_ascii=False))
    else:
        err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def emit(data: Any) -> None:
    """Print JSON to stdout."""
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


_opened: list[Any] = []


@contextmanager
def guarded(as_json: bool) -> Iterator[None]:
    """Turn the project's errors into messages and exit codes; close what was opened."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except typer.Exit:
        raise
    except (PolicyError, InvalidIdentifier, ServiceError, DatabaseError) as exc:
        fail(str(exc), 2, as_json=as_json)
    except OperationalError as exc:
        fail(f"cannot use the database: {exc.orig}", 2, as_json=as_json)
    finally:
        while _opened:
            _opened.pop().dispose()


def parse_day(text: str | None, option: str) -> date | None:
    """A YYYY-MM-DD option value, or a bad-input error naming the option."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None


def open_db(db: str, *, must_exist: bool = True) -> Any:
    """An engine for ``--db`` (checked to be initialised), closed when the command ends."""
    if must_exist and "://" not in db and not Path(db).exists():
        raise DatabaseError(f"{db} does not exist: run `chengxin init --db {db}` first")
    engine = make_engine(db)
    _opened.append(engine)
    if must_exist:
        require_current(engine)
    return engine


def parse_subject(text: str) -> SubjectId:
    """``cn-rid:1101…``, ``cn-uscc:9111…``, ``generic:abc``, or a bare cn-rid or cn-uscc."""
    if ":" in text:
        scheme, value = text.split(":", 1)
        return parse_identifier(scheme, value)
    try:
        return parse_identifier("cn-rid", text)
    except InvalidIdentifier as first:
        try:
            return parse_identifier("cn-uscc", text)
        except InvalidIdentifier:
            raise first from None


def progress_bar(total: int | None, label: str) -> Progress:
    """A Rich progress bar on stderr."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )


# --------------------------------------------------------------------- init


@app.command()
def init(
    db: DbOpt = DEFAULT_DB,
    policy: Annotated[
        str, typer.Option(help="Pack name (national, city-points, driving-points) or YAML file.")
    ] = "national",
    as_json: JsonOpt = False,
) -> None:
    """Create or upgrade the database and activate a policy if none is active."""
    from chengxin.service.errors import NoActivePolicy
    from chengxin.service.policies import active_policy, install_policy, read_policy_source

    with guarded(as_json):
        text, source = read_policy_source(policy)  # refuse a bad --policy before touching the db
        engine = open_db(db, must_exist=False)
        revision = migrate(engine)
        clock = _clock()
        with transaction(engine) as session:
            try:
                current = active_policy(session).policy
                activated = None
            except NoActivePolicy:
                stored = install_policy(
                    session,
                    text=text,
                    source=source,
                    actor="chengxin init",
                    reason="initial policy",
                    now=clock.now(),
                )
                current = stored.policy
                activated = current.label
        result = {
            "db": db,
            "schema": revision,
            "active_policy": current.label,
            "activated": activated,
        }
        if as_json:
            emit(result)
        else:
            out.print(
                f"database [bold]{db}[/] at schema {revision}; active policy "
                f"[bold]{current.label}[/]"
            )


# ------------------------------------------------------------------- policy


@policy_app.command("lint")
def policy_lint(
    file: Annotated[str, typer.Argument(help="Policy YAML file or pack name.")],
    as_json: JsonOpt = False,
) -> None:
    """Check a policy: schema, cross-references and the hard lines. Exit 1 on errors."""
    from chengxin.service.policies import read_policy_source

    with guarded(as_json):
        text, source = read_policy_source(file)
        policy, problems = lint_policy_text(text, source)
        errors = [p for p in problems if p.severity == "error"]
        if as_json:
            emit(
                {
                    "source": source,
                    "ok": not errors,
                    "policy": policy.label if policy else None,
                    "content_hash": policy.content_hash if policy else None,
                    "problems": [
                        {
                            "path": p.path,
                            "line": p.line,
                            "severity": p.severity,
                            "message": p.message,
                            "hard_line": p.hard_line,
                        }
                        for p in problems
                    ],
                }
            )
        else:
            for p in problems:
                style = "red" if p.severity == "error" else "yellow"
                out.print(f"[{style}]{p.render(source)}[/]", highlight=False)
            if not errors and policy is not None:
                out.print(f"[green]ok[/] {policy.label} {policy.content_hash}")
        if errors:
            raise typer.Exit(1)


@policy_app.command("show")
def policy_show(
    name: Annotated[str | None, typer.Argument(help="Pack, file, or stored name@version.")] = None,
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
) -> None:
    """Show a policy: the active one by default."""
    from chengxin.domain.policy_load import load_policy_text
    from chengxin.service.policies import active_policy, get_policy, read_policy_source

    with guarded(as_json):
        if name is not None and "@" not in name and not name.startswith("sha256:"):
            text, source = read_policy_source(name)
            policy = load_policy_text(text, source)
        else:
            engine = open_db(db)
            with transaction(engine) as session:
                policy = (get_policy(session, ref=name) if name else active_policy(session)).policy
        if as_json:
            emit(
                {
                    "label": policy.label,
                    "content_hash": policy.content_hash,
                    "policy": policy.canonical(),
                }
            )
            return
        out.print(f"[bold]{policy.label}[/] {policy.title or ''}  {policy.content_hash}")
        t = Table("rule", "type", "when", "points", "expires", "schedule", title="rules")
        for r in policy.rules:
            sched = ", ".join(f"{s.pct}% after {s.after}" for s in r.schedule)
            t.add_row(r.id, r.type, r.when or "", str(r.points), str(r.expires or "never"), sched)
        out.print(t)
        g = Table("grade", "from", title="grades")
        for gr in policy.grades_desc:
            g.add_row(gr.grade, str(gr.min))
        out.print(g)
        lt = Table("list", "kind", "enter", "duration", "lifted by", "public", title="lists")
        for lst in policy.lists:
            enter = lst.enter.record or f"grade in {', '.join(lst.enter.grade_in or ())}"
            lt.add_row(
                lst.code,
                lst.kind,
                enter,
                str(lst.duration or "-"),
                ", ".join(lst.lifted_by),
                "yes" if lst.public else "no",
            )
        out.print(lt)
        mt = Table("measure", "kind", "trigger", "consulted by", "related", title="measures")
        for m in policy.measures:
            trig = m.triggered_by
            what = (
                f"list {trig.list}"
                if trig.list
                else f"grade {trig.grade_at_least or trig.grade_at_most or trig.grade_in}"
            )
            mt.add_row(
                m.code, m.kind, what, ", ".join(m.consulted_by), ", ".join(m.related_domains)
            )
        out.print(mt)


@policy_app.command("activate")
def policy_activate(
    file: Annotated[str, typer.Argument(help="Policy YAML file or pack name.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the ledger).")],
    actor: Annotated[str, typer.Option(help="Who activates it.")] = "cli",
    effective_from: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default today).")] = None,
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
) -> None:
    """Store and activate a policy version (an audited ledger entry), then rescore everyone."""
    from chengxin.service.batch import rescore_all
    from chengxin.service.policies import activate, add_policy, read_policy_source

    with guarded(as_json):
        engine = open_db(db)
        clock = _clock()
        text, source = read_policy_source(file)
        start = parse_day(effective_from, "--effective-from")
        with transaction(engine) as session:
            stored = add_policy(session, text=text, source=source, now=clock.now())
            seq = activate(
                session,
                policy_id=stored.id,
                actor=actor,
                reason=reason,
                now=clock.now(),
                effective_from=start,
            )
        summary = rescore_all(engine, clock=clock)
        result = {
            "activated": stored.policy.label,
            "content_hash": stored.policy.content_hash,
            "ledger_seq": seq,
            **summary,
        }
        if as_json:
            emit(result)
        else:
            out.print(
                f"activated [bold]{stored.policy.label}[/] (ledger entry {seq}); "
                f"rescored {summary['subjects']} subjects"
            )


# ------------------------------------------------------------------- import


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON Lines, CSV or Parquet feed.")],
    db: DbOpt = DEFAULT_DB,
    rejects: Annotated[Path | None, typer.Option(help="Where bad lines go.")] = None,
    chunk: Annotated[int, typer.Option(help="Lines per transaction.")] = 20_000,
    as_json: JsonOpt = False,
) -> None:
    """Import a provider feed; bad lines go to a rejects file, good lines land."""
    from chengxin.service.importer import ImportError_, import_file

    with guarded(as_json):
        engine = open_db(db)
        size = file.stat().st_size if file.exists() else 0
        try:
            with progress_bar(None, "importing") as bar:
                task = bar.add_task("import", total=None)
                summary = import_file(
                    engine,
                    file,
                    clock=_clock(),
                    chunk_size=chunk,
                    rejects=rejects,
                    progress=lambda n: bar.advance(task, n),
                )
        except ImportError_ as exc:
            fail(str(exc), 2, as_json=as_json)
        data = summary.as_dict()
        data["bytes"] = size
        if as_json:
            emit(data)
        else:
            out.print(
                f"{summary.lines} lines: [green]{summary.accepted} accepted[/], "
                f"{summary.duplicates} duplicates, [red]{summary.rejected} rejected[/]"
                + (f" (see {summary.rejects_file})" if summary.rejects_file else "")
            )
            out.print(
                f"rescored {summary.rescore.subjects} subjects: "
                f"{summary.rescore.grade_changes} grade changes, "
                f"{summary.rescore.entered} list entries, {summary.rescore.left} exits"
            )


# ----------------------------------------------------------- rescore, explain


@app.command()
def rescore(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="YYYY-MM-DD (default today).")
    ] = None,
    engine_name: Annotated[
        str, typer.Option("--engine", help="duckdb, python or spark.")
    ] = "duckdb",
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
) -> None:
    """Rescore every subject as of a date with the batch engine."""
    from chengxin.service.batch import rescore_all

    with guarded(as_json):
        engine = open_db(db)
        when = parse_day(as_of, "--as-of")
        summary = rescore_all(engine, clock=_clock(), as_of=when, engine_name=engine_name)
        if as_json:
            emit(summary)
        else:
            out.print(
                f"rescored {summary['subjects']} subjects as of {summary['as_of']} with "
                f"{summary['engine']} in {summary['seconds']:.2f}s: "
                f"{summary['grade_changes']} grade changes, {summary['entered']} list entries, "
                f"{summary['left']} exits"
            )


@app.command()
def explain(
    subject: Annotated[str, typer.Argument(help="cn-rid:…, cn-uscc:… or a bare identifier.")],
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
) -> None:
    """Show every point of a subject's score: record, rule, schedule step, policy version."""
    from chengxin.service.subjects import explain as explain_subject

    with guarded(as_json):
        sid = parse_subject(subject)
        engine = open_db(db)
        with transaction(engine) as session:
            ex = explain_subject(session, subject=sid, clock=_clock())
        data = ex.as_dict()
        if as_json:
            emit(data)
            return
        out.print(f"[bold]{sid}[/] {data['subject']['name'] or ''} ({data['subject']['kind']})")
        out.print(
            f"policy {data['policy']} as of {data['as_of']}: base {data['base']} → "
            f"score [bold]{data['score']}[/], grade [bold]{data['grade']}[/]"
            + (f"; next change {data['next_change']}" if data["next_change"] else "")
        )
        t = Table("occurred", "record", "rule", "points", "step", "counts", "expires")
        for c in data["contributions"]:
            t.add_row(
                c["occurred_at"],
                c["record_type"],
                c["rule"],
                str(c["points"]),
                f"{c['pct']}%",
                str(c["value"]),
                c["expires_on"] or "never",
            )
        out.print(t)
        for m in data["lists"]:
            out.print(
                f"on [bold]{m['kind']}[/] list {m['list']} since {m['since']} until {m['until']}"
            )
        others = [r for r in data["records"] if not r["counts"]]
        if others:
            out.print(f"{len(others)} record(s) do not count now:")
            for r in others:
                why = r["status"] if r["status"] != "active" else "expired or no rule"
                out.print(f"  {r['occurred_at']} {r['type']} ({r['provider']} {r['ref']}): {why}")


@app.command()
def check(
    subject: Annotated[str, typer.Argument(help="cn-rid:…, cn-uscc:… or a bare identifier.")],
    measure: Annotated[str, typer.Argument(help="Measure code, e.g. transport.flight_booking.")],
    service: Annotated[str, typer.Option(help="The kind of service asking (airline, bank…).")],
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
) -> None:
    """Answer a service: allow, deny or grant, with reasons and an appeal route. Exit 1 on deny."""
    from chengxin.service.subjects import check as check_subject

    with guarded(as_json):
        sid = parse_subject(subject)
        engine = open_db(db)
        with transaction(engine) as session:
            d = check_subject(
                session, subject=sid, measure=measure, service=service, clock=_clock()
            )
        data = {
            "measure": d.measure,
            "decision": d.outcome,
            "reasons": list(d.reasons),
            "policy_version": d.policy_version,
            "appeal": d.appeal,
        }
        if as_json:
            emit(data)
        else:
            colour = {"deny": "red", "grant": "green"}.get(d.outcome, "white")
            out.print(f"[bold {colour}]{d.outcome}[/] {measure} ({d.policy_version})")
            for r in d.reasons:
                out.print(f"  reason: {r}")
            if d.appeal:
                out.print(f"  appeal: {d.appeal}")
        if d.outcome == "deny":
            raise typer.Exit(1)


@app.command()
def lists(
    list_code: Annotated[str | None, typer.Argument(help="One list (default: all).")] = None,
    db: DbOpt = DEFAULT_DB,
    masked: Annotated[bool, typer.Option(help="Mask identifiers as the public sees them.")] = False,
    limit: int = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show list sizes and current members."""
    from chengxin.service.subjects import list_counts, list_members

    with guarded(as_json):
        engine = open_db(db)
        with transaction(engine) as session:
            counts = list_counts(session)
            members = list_members(session, list_code=list_code, masked=masked, limit=limit)
        if as_json:
            emit(
                {
                    "counts": counts,
                    "members": [
                        {
                            "list": m.list_code,
                            "kind": m.kind,
                            "subject": m.subject,
                            "name": m.name,
                            "since": m.since,
                            "until": m.until,
                        }
                        for m in members
                    ],
                }
            )
            return
        for code, n in sorted(counts.items()):
            out.print(f"[bold]{code}[/]: {n} member(s)")
        t = Table("list", "subject", "name", "since", "until")
        for m in members:
            t.add_row(m.list_code, m.subject, m.name or "", str(m.since or ""), str(m.until or ""))
        out.print(t)


@app.command()
def verify(db: DbOpt = DEFAULT_DB, as_json: JsonOpt = False) -> None:
    """Walk the ledger's hash chain; exit 1 and name the first broken entry if any."""
    from chengxin.store.ledger import verify as verify_chain

    with guarded(as_json):
        engine = open_db(db)
        with progress_bar(None, "verifying") as bar:
            task = bar.add_task("verify", total=None)
            with transaction(engine) as session:
                res = verify_chain(session, progress=lambda n: bar.update(task, completed=n))
        data = {
            "ok": res.ok,
            "entries": res.entries,
            "head": res.head_hash,
            "broken_at": res.broken_at,
            "problem": res.problem,
        }
        if as_json:
            emit(data)
        elif res.ok:
            out.print(f"[green]ok[/]: {res.entries} entries, head {res.head_hash}")
        else:
            out.print(f"[bold red]broken[/] at entry {res.broken_at}: {res.problem}")
        if not res.ok:
            raise typer.Exit(1)


_registered = False


def register_all() -> typer.Typer:
    """Add every command module's commands to :data:`app` (once) and return it."""
    global _registered
    if not _registered:
        from chengxin.cli_batch import register as register_batch
        from chengxin.cli_city import register as register_city
        from chengxin.cli_principals import register as register_principals
        from chengxin.cli_serve import register as register_serve
        from chengxin.cli_webhooks import register as register_webhooks

        for register in (
            register_city,
            register_batch,
            register_principals,
            register_serve,
            register_webhooks,
        ):
            register(app)
        _registered = True
    return app


def main() -> None:
    """Run the CLI."""
    register_all()()


if __name__ == "__main__":  # pragma: no cover
    main()
