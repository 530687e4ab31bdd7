"""``chengxin deliver`` and ``chengxin webhooks dead-letters``, and the docs that describe them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import typer.main
from click.testing import Result
from sqlalchemy import Connection, Engine, event
from typer.testing import CliRunner
from webhook_world import Receiver, World

from chengxin.cli_webhooks import register, run_worker
from chengxin.service.delivery import Backoff, DeliveryReport
from chengxin.service.transport import FakeTransport
from chengxin.service.webhooks import FanOutReport

pytestmark = [pytest.mark.usefixtures("backend"), pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parents[2]


def cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """chengxin (the webhook commands only)."""

    register(app)
    return app


def cx(*args: object) -> Result:
    """Run a webhook command in process; dispose the engines it opened."""
    opened: list[Engine] = []

    def remember(conn: Connection) -> None:
        opened.append(conn.engine)

    event.listen(Engine, "engine_connect", remember)
    try:
        return CliRunner().invoke(cli_app(), [str(a) for a in args])
    finally:
        event.remove(Engine, "engine_connect", remember)
        for engine in set(opened):
            engine.dispose()


def cxj(*args: object, code: int = 0) -> Any:
    res = cx(*args, "--json")
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    return json.loads(res.stdout)


def test_deliver_once_fans_out_and_attempts(world: World, receiver: Receiver, db_url: str) -> None:
    airline = world.service()
    world.consult(airline)
    world.consent()
    receiver.secret = world.subscribe(airline, url=receiver.url).secret
    world.default()
    first = cxj("deliver", "--once", "--db", db_url)
    assert first == {
        "events": 2,
        "deliveries": 1,
        "attempted": 1,
        "delivered": 0,
        "failed": 1,
        "dead": 0,
        "cancelled": 0,
    }
    assert [s for s, _ in receiver.answers] == [500]  # the receiver fails first attempts
    again = cxj("deliver", "--once", "--limit", 10, "--db", db_url)
    assert again["attempted"] == 0  # not due: the back-off holds it for up to 30 s
    text = cx("deliver", "--once", "--db", db_url)
    assert text.exit_code == 0 and "0 attempted" in text.stdout


def test_dead_letters_are_listed(world: World, db_url: str) -> None:
    world.ready()
    world.default()
    world.fan_out()
    assert cxj("webhooks", "dead-letters", "--db", db_url) == []
    world.deliver(FakeTransport(default=410), backoff=Backoff(max_attempts=1))
    (dead,) = cxj("webhooks", "dead-letters", "--limit", 5, "--db", db_url)
    assert (dead["event"], dead["service"], dead["attempts"]) == ("list.entered", "airline-1", 1)
    assert dead["last_error"].startswith("HTTP 410")
    table = cx("webhooks", "dead-letters", "--db", db_url)
    assert table.exit_code == 0 and "airline-1" in table.stdout


def test_a_missing_database_is_bad_input(tmp_path: Path) -> None:
    data = cxj("deliver", "--once", "--db", tmp_path / "nope.sqlite", code=2)
    assert "does not exist" in data["error"]
    data = cxj("webhooks", "dead-letters", "--db", tmp_path / "nope.sqlite", code=2)
    assert data["exit"] == 2


def test_the_worker_loops_until_stopped(world: World) -> None:
    world.ready()
    world.default()
    stop = threading.Event()
    seen: list[tuple[FanOutReport, DeliveryReport]] = []

    def on_pass(fanned: FanOutReport, sent: DeliveryReport) -> None:
        seen.append((fanned, sent))
        if len(seen) == 3:
            stop.set()

    transport = FakeTransport()
    passes = run_worker(
        world.engine,
        transport=transport,
        clock=world.wall,
        interval=0.01,
        limit=10,
        stop=stop,
        on_pass=on_pass,
    )
    assert passes == 3
    assert (seen[0][0].deliveries, seen[0][1].delivered) == (1, 1)
    assert all(s.attempted == 0 for _, s in seen[1:])


def test_deliver_without_once_stops_on_sigterm(world: World, db_url: str) -> None:
    done = threading.Event()
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda n, _: caught.append(n))

    def terminate() -> None:
        deadline = time.monotonic() + 20
        while not done.wait(0.2) and time.monotonic() < deadline:
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate)
    killer.start()
    try:
        res = cx("deliver", "--interval", 0.1, "--db", db_url, "--json")
    finally:
        done.set()
        killer.join(timeout=5)
        signal.signal(signal.SIGTERM, previous)
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    passes = [json.loads(line) for line in res.stdout.splitlines()]
    assert passes and all(p["attempted"] == 0 for p in passes)


def test_every_webhook_command_and_option_is_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(cli_app())
    assert isinstance(root, click.Group)
    commands: list[tuple[str, click.Command]] = []
    for name, cmd in root.commands.items():
        if isinstance(cmd, click.Group):
            commands += [(f"{name} {sub}", c) for sub, c in cmd.commands.items()]
        else:
            commands.append((name, cmd))
    assert {n for n, _ in commands} == {"deliver", "webhooks dead-letters"}
    for name, cmd in commands:
        assert f"`chengxin {name}" in doc, name
        for param in cmd.params:
            if isinstance(param, click.Option):
                for opt in param.opts:
                    if opt.startswith("--"):
                        assert opt in doc, f"{opt} of `chengxin {name}`"


def test_every_webhook_endpoint_is_documented() -> None:
    from chengxin.api.routers.webhooks import router

    doc = (ROOT / "docs" / "webhooks.md").read_text(encoding="utf-8")
    for route in router.routes:
        for method in sorted(getattr(route, "methods", ())):
            path = getattr(route, "path", "")
            assert f"{method} {path}" in doc, f"{method} {path}"
