"""``chengxin principals``: add (the key printed once), list, key, revoke; all documented."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import typer.main
from click.testing import Result
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, event
from typer.testing import CliRunner

from chengxin.cli_principals import register
from chengxin.service.clock import FixedClock

pytestmark = pytest.mark.usefixtures("backend")
ROOT = Path(__file__).resolve().parents[2]


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(lambda: None)  # a second command keeps the group a group
    register(app)
    return app


def cx(*args: object, stdin: str | None = None) -> Result:
    """Run ``chengxin principals args...`` in process (disposing the engines it opened)."""
    opened: list[Engine] = []

    def remember(conn: Connection) -> None:
        opened.append(conn.engine)

    event.listen(Engine, "engine_connect", remember)
    try:
        return CliRunner().invoke(cli(), ["principals", *map(str, args)], input=stdin)
    finally:
        event.remove(Engine, "engine_connect", remember)
        for engine in set(opened):
            engine.dispose()


def cxj(*args: object, code: int = 0, stdin: str | None = None) -> Any:
    res = cx(*args, "--json", stdin=stdin)
    assert res.exit_code == code, (res.stdout, res.stderr)
    return json.loads(res.stdout)


def test_add_prints_the_key_once_and_it_works_then_revoke_stops_it(
    db_url: str, policy: Any, client: TestClient, app: FastAPI, clock: FixedClock
) -> None:
    ttl = timedelta(seconds=app.state.runtime.settings.key_cache_seconds)
    added = cxj(
        "add",
        "China Eastern booking",
        "--role",
        "service",
        "--service-kind",
        "airline",
        "--scope",
        "transport.flight_booking",
        "--scope",
        "hospitality.luxury_hotel",
        "--expires",
        "2099-01-01",
        "--db",
        db_url,
    )
    key = added["key"]
    assert key.startswith("cx_") and added["role"] == "service"
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/session", headers=headers).json()["principal"]["scopes"] == [
        "hospitality.luxury_hotel",
        "transport.flight_booking",
    ]
    listed = cxj("list", "--db", db_url)
    (row,) = listed
    assert row["keys"] == [key.split("_")[1]] and key not in json.dumps(listed)
    assert row["expires_at"].startswith("2099-01-01")
    second = cxj("key", "China Eastern booking", "--db", db_url)["key"]
    cxj("revoke", "China Eastern booking", "--key", key.split("_")[1], "--db", db_url)
    clock.advance(ttl)  # the workers' key caches forget it (docs/api.md)
    assert client.get("/v1/session", headers=headers).status_code == 401
    assert client.get("/v1/session", headers={"Authorization": f"Bearer {second}"}).is_success
    assert cxj("revoke", "China Eastern booking", "--db", db_url)["keys_revoked"] == 1
    clock.advance(ttl)
    assert (
        client.get("/v1/session", headers={"Authorization": f"Bearer {second}"}).status_code == 401
    )
    res = cx("add", "plain", "--role", "auditor", "--db", db_url)
    assert res.exit_code == 0 and "shown once" in res.stdout
    assert len([ln for ln in res.stdout.splitlines() if ln.startswith("cx_")]) == 1


def test_a_person_gets_a_password_and_no_key(db_url: str, policy: Any, client: TestClient) -> None:
    out = cxj(
        "add",
        "judge wang",
        "--role",
        "adjudicator",
        "--password",
        "--db",
        db_url,
        stdin="a long enough password\n",
    )
    assert out == {"name": "judge wang", "role": "adjudicator", "kind": "person", "key": None}
    r = client.post(
        "/v1/session", json={"username": "judge wang", "password": "a long enough password"}
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--role", "provider"), "provider code"),
        (("--role", "janitor"), "unknown role"),
        (("--role", "auditor", "--expires", "01/01/2027"), "--expires"),
        (("--role", "subject", "--subject", "cn-rid:110105194912310021"), "check character"),
        (("--role", "auditor", "--kind", "robot"), "--kind"),
    ],
)
def test_bad_registrations_exit_2_with_the_reason(
    db_url: str, policy: Any, args: tuple[str, ...], message: str
) -> None:
    res = cx("add", "x", *args, "--db", db_url)
    assert res.exit_code == 2, res.stdout
    assert message in res.stderr
    assert cxj("list", "--db", db_url) == []


def test_every_principals_command_and_option_is_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    group = typer.main.get_command(cli())
    assert isinstance(group, click.Group)
    sub = group.commands["principals"]
    assert isinstance(sub, click.Group) and set(sub.commands) == {"add", "list", "revoke", "key"}
    for name, cmd in sub.commands.items():
        assert f"`chengxin principals {name}" in doc, name
        for param in cmd.params:
            if isinstance(param, click.Option):
                for opt in param.opts:
                    if opt.startswith("--"):
                        assert opt in doc, f"{opt} of principals {name} is undocumented"
