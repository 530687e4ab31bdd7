"""The ``deliver`` and ``webhooks`` commands: the webhook worker and its dead letters."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.table import Table

from chengxin.service.clock import Clock
from chengxin.service.delivery import DeliveryReport, pump
from chengxin.service.transport import Transport
from chengxin.service.webhooks import FanOutReport

webhooks_app = typer.Typer(help="Webhook dead letters.", no_args_is_help=True)

DbOpt = Annotated[
    str, typer.Option("--db", envvar="CHENGXIN_DB", help="SQLite file or postgresql:// URL.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

Pass = Callable[[FanOutReport, DeliveryReport], None]


def _summary(fanned: FanOutReport, sent: DeliveryReport) -> dict[str, int]:
    return {"events": fanned.events, "deliveries": fanned.deliveries, **sent.as_dict()}


def run_worker(
    engine: Any,
    *,
    transport: Transport,
    clock: Clock,
    interval: float,
    limit: int,
    stop: threading.Event,
    on_pass: Pass,
) -> int:
    """Fan out and deliver until ``stop`` is set; a full pass goes again at once. Passes run."""
    from sqlalchemy.exc import OperationalError

    from chengxin.cli import err

    passes = 0
    while not stop.is_set():
        try:
            fanned, sent = pump(engine, transport=transport, clock=clock, limit=limit)
        except OperationalError as exc:  # the database went away: wait, then try again
            err.print(f"[yellow]database unavailable:[/] {exc.orig}", highlight=False)
            stop.wait(interval)
            continue
        passes += 1
        on_pass(fanned, sent)
        handled = sent.attempted + sent.dead + sent.cancelled
        if handled < limit:
            stop.wait(interval)
    return passes


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM set ``stop``: the pass under way finishes, then the loop ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def deliver(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between passes when idle.", min=0.1, max=3600)
    ] = 5.0,
    limit: Annotated[int, typer.Option(help="Deliveries attempted per pass.", min=1)] = 100,
    db: DbOpt = "chengxin.sqlite",
    as_json: JsonOpt = False,
) -> None:
    """Fan out outbox events to subscribed services and deliver due webhooks, with retries."""
    from chengxin.cli import emit, guarded, open_db, out
    from chengxin.service.clock import SystemClock
    from chengxin.service.transport import HttpxTransport

    with guarded(as_json):
        engine = open_db(db)

        def show(fanned: FanOutReport, sent: DeliveryReport) -> None:
            data = _summary(fanned, sent)
            if as_json:
                print(json.dumps(data), flush=True)
            elif once or any(data.values()):
                out.print(
                    f"{fanned.events} events → {fanned.deliveries} deliveries; "
                    f"{sent.attempted} attempted: [green]{sent.delivered} delivered[/], "
                    f"{sent.failed} to retry, [red]{sent.dead} dead[/], "
                    f"{sent.cancelled} cancelled"
                )

        with HttpxTransport() as transport:
            if once:
                fanned, sent = pump(engine, transport=transport, clock=SystemClock(), limit=limit)
                if as_json:
                    emit(_summary(fanned, sent))
                else:
                    show(fanned, sent)
                return
            stop = threading.Event()
            with _stopped_by_signals(stop):
                run_worker(
                    engine,
                    transport=transport,
                    clock=SystemClock(),
                    interval=interval,
                    limit=limit,
                    stop=stop,
                    on_pass=show,
                )


@webhooks_app.command("dead-letters")
def dead_letters(
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 50,
    db: DbOpt = "chengxin.sqlite",
    as_json: JsonOpt = False,
) -> None:
    """List webhook deliveries that used up their attempts, newest event first."""
    from chengxin.cli import emit, guarded, open_db, out
    from chengxin.service.delivery import dead_letters as read_dead
    from chengxin.store.db import transaction

    with guarded(as_json):
        engine = open_db(db)
        with transaction(engine) as session:
            dead = read_dead(session, limit=limit)
        if as_json:
            emit(
                [
                    {
                        "id": d.id,
                        "message_id": d.message_id,
                        "subscription_id": d.subscription_id,
                        "service": d.service,
                        "url": d.url,
                        "event": d.event,
                        "attempts": d.attempts,
                        "last_error": d.last_error,
                        "event_at": d.event_at.isoformat(),
                    }
                    for d in dead
                ]
            )
            return
        out.print(f"{len(dead)} dead letter(s)")
        t = Table("id", "event", "service", "url", "attempts", "last error", "event at")
        for d in dead:
            t.add_row(
                str(d.id),
                d.event,
                d.service,
                d.url,
                str(d.attempts),
                d.last_error or "",
                d.event_at.isoformat(timespec="seconds"),
            )
        out.print(t)


def register(app: typer.Typer) -> None:
    """Add the webhook commands to the CLI."""
    app.command()(deliver)
    app.add_typer(webhooks_app, name="webhooks")
