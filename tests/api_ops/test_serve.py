"""``chengxin serve`` as a running server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_ops.opstools import (
    Server,
    bearer,
    person_rid,
    serve_command,
    server_env,
    start_server,
    stop_server,
)
from chengxin.api.metrics import sample_sum

pytestmark = pytest.mark.slow
LATENCY = "chengxin_http_request_duration_seconds_count"


def record(n: int, ref: str) -> dict[str, Any]:
    """A judgment left unperformed against person ``n``, a month ago."""
    return {
        "provider": "court-110105",
        "ref": ref,
        "subject": {"scheme": "cn-rid", "id": person_rid(n), "kind": "person", "name": "Zhang San"},
        "type": "judicial.judgment_unperformed",
        "occurred_at": (date.today() - timedelta(days=30)).isoformat(),
        "attributes": {"amount_cny": 250_000},
    }


def check(client: httpx.Client, server: Server, n: int) -> httpx.Response:
    body = {
        "subject": {"scheme": "cn-rid", "id": person_rid(n)},
        "measure": "transport.flight_booking",
        "purpose": "booking MU5101",
    }
    return client.post("/v1/checks", json=body, headers=bearer(server.keys["service"]))


def test_health_and_readiness(server: Server) -> None:
    with server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert "server" not in ready.headers  # uvicorn's banner is off
        assert len(ready.headers["x-request-id"]) == 32


def test_a_check_round_trip_with_a_real_key(server: Server) -> None:
    with server.client() as c:
        stored = c.post(
            "/v1/records",
            json=record(2, f"round-trip-{server.backend}"),
            headers=bearer(server.keys["provider"]),
        )
        assert stored.status_code == 201, stored.text
        denied = check(c, server, 2)
        assert denied.status_code == 200, denied.text
        assert denied.json()["decision"] == "deny"
        assert denied.json()["reasons"][0] == "list:judgment-defaulters"
        assert check(c, server, 777).json()["decision"] == "allow"  # nothing held: allowed
        forged = server.keys["service"][:-4] + "AAAA"
        r = c.post("/v1/checks", json={}, headers=bearer(forged))
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_metrics_count_requests_checks_and_ingest(server: Server) -> None:
    with server.client() as c:
        before = c.get("/metrics").text
        for n in (10, 11, 12):
            assert check(c, server, n).status_code == 200
        batch = {"records": [record(n, f"metrics-{server.backend}-{n}") for n in (20, 21)]}
        r = c.post("/v1/records:batch", json=batch, headers=bearer(server.keys["provider"]))
        assert r.status_code == 200, r.text
        after = c.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def delta(name: str, **labels: str) -> float:
        return sample_sum(text, name, **labels) - sample_sum(before, name, **labels)

    assert delta(LATENCY, method="POST", route="/v1/checks", status="200") == 3
    assert delta("chengxin_checks_total", measure="transport.flight_booking") == 3
    assert delta("chengxin_records_ingested_total", status="accepted") == 2
    assert "chengxin_outbox_lag_seconds{" in text
    assert person_rid(10) not in text


def test_the_server_logs_json_lines_without_personal_data(server: Server) -> None:
    with server.client() as c:
        c.get(f"/v1/subjects/cn-rid/{person_rid(2)}/history", params={"purpose": "appeal 9"})
        check(c, server, 2)
        c.get("/v1/public/lists/judgment-defaulters", params={"q": person_rid(2)})
    lines = server.log_lines()  # each one JSON, or this fails
    access = server.access_lines()
    assert any(x["logger"].startswith("uvicorn") for x in lines)
    assert {"/v1/subjects/{scheme}/{id}/history", "/v1/checks"} <= {x["route"] for x in access}
    assert ("service-1", "service") in {(x["principal"], x["role"]) for x in access}
    text = server.log_path.read_text(encoding="utf-8")
    for secret in (person_rid(2), "Zhang San", "appeal 9", "MU5101", "?purpose", "cn-rid"):
        assert secret not in text, f"{secret!r} was logged"


def test_serve_refuses_a_database_that_is_missing_or_not_initialised(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    run = subprocess.run(
        serve_command(str(missing), 1), capture_output=True, text=True, env=server_env()
    )
    assert run.returncode == 2 and "chengxin init" in run.stderr
    assert not missing.exists()
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    run = subprocess.run(
        [*serve_command(str(empty), 1), "--json"], capture_output=True, text=True, env=server_env()
    )
    assert run.returncode == 2
    assert "not initialised" in json.loads(run.stdout)["error"]


def test_two_workers_add_up_their_metrics(
    tmp_path: Path, sqlite_template: Path, cheap_hashes: None
) -> None:
    db = tmp_path / "chengxin.sqlite"
    shutil.copyfile(sqlite_template, db)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    srv = start_server(
        str(db), tmp_path / "server.log", keys={}, backend="sqlite", workers=2, tmpdir=tmp
    )
    try:
        for _ in range(40):  # a new connection each time, so both workers serve some
            with srv.client() as c:
                assert c.get("/healthz").status_code == 200
        # both served: each wrote its own samples
        assert len(list(tmp.glob("chengxin-metrics-*/histogram_*.db"))) == 2
        pids = {x["message"] for x in srv.log_lines() if "Started server process" in x["message"]}
        assert len(pids) == 2
        counts = set()
        for _ in range(6):  # each scrape may land on either worker: all agree
            with srv.client() as c:
                counts.add(sample_sum(c.get("/metrics").text, LATENCY, route="/healthz"))
        assert counts == {40}
    finally:
        assert stop_server(srv) == 0
    assert not list(tmp.iterdir())  # the metrics directory is removed


@pytest.mark.parametrize(
    ("given", "proxy_headers"), [([], False), (["--forwarded-allow-ips", "10.0.0.7"], True)]
)
def test_forwarded_headers_are_believed_only_from_the_proxies_named(
    db_url: str, monkeypatch: pytest.MonkeyPatch, given: list[str], proxy_headers: bool
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from chengxin.cli import register_all

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *_, **kw: seen.update(kw))
    monkeypatch.delenv("CHENGXIN_DB", raising=False)
    run = CliRunner().invoke(register_all(), ["serve", "--db", db_url, *given])
    assert run.exit_code == 0, run.output
    assert seen["proxy_headers"] is proxy_headers
    assert seen["forwarded_allow_ips"] == (given[1] if given else None)


def test_a_served_worker_freezes_what_it_made_at_start_up(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from fastapi.testclient import TestClient

    from chengxin.api.app import create_app, serve_app

    monkeypatch.setenv("CHENGXIN_DB", db_url)
    try:
        with TestClient(create_app()) as client:  # tests' apps leave the collector alone
            assert client.get("/healthz").status_code == 200
            assert gc.get_freeze_count() == 0
        with TestClient(serve_app()) as client:
            assert client.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
