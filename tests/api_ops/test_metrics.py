"""Prometheus metrics through the real app in process: route templates, counters, outbox lag."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request
from sqlalchemy import Engine, insert

from api_ops.opstools import TestClient, bearer
from chengxin.api.app import create_app
from chengxin.api.metrics import metrics, observe_check, observe_ingest, sample_sum
from chengxin.api.settings import Settings
from chengxin.service.clock import FixedClock
from chengxin.service.principals import Role
from chengxin.store.db import transaction
from chengxin.store.schema import deliveries, outbox, principals, subscriptions

pytestmark = pytest.mark.usefixtures("backend")

LATENCY = "chengxin_http_request_duration_seconds_count"
Keys = dict[Role, str]


def scrape(client: TestClient) -> str:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    return r.text


def check(client: TestClient, keys: Keys, who: str) -> Any:
    body = {"subject": {"scheme": "cn-rid", "id": who}, "measure": "transport.flight_booking"}
    body["purpose"] = "booking MU5101"
    return client.post("/v1/checks", json=body, headers=bearer(keys["service"]))


def test_latency_is_labelled_by_route_template_never_by_path(
    client: TestClient, keys: Keys, rid: Callable[[int], str]
) -> None:
    path = f"/v1/subjects/cn-rid/{rid(1)}/explain"  # person 1 is known
    r = client.get(path, params={"purpose": "appeal 42"}, headers=bearer(keys["admin"]))
    assert r.status_code == 200, r.text
    client.get(f"/nowhere/{rid(6)}")
    text = scrape(client)
    template = "/v1/subjects/{scheme}/{id}/explain"
    assert sample_sum(text, LATENCY, method="GET", route=template, status="200") == 1
    assert sample_sum(text, LATENCY, method="GET", route="unmatched", status="404") == 1
    assert rid(1) not in text and rid(6) not in text and "appeal" not in text
    # the bucket the check target is judged by (p99 < 20 ms)
    assert 'le="0.02"' in text


def test_an_unhandled_error_is_counted_as_a_500(app: FastAPI, client: TestClient) -> None:
    @app.get("/boom/{code}")
    def boom(code: str) -> None:
        raise RuntimeError(f"no such thing as {code}")

    assert client.get("/boom/x").status_code == 500
    assert sample_sum(scrape(client), LATENCY, route="/boom/{code}", status="500") == 1


def test_each_app_has_its_own_registry(
    app: FastAPI, client: TestClient, engine: Engine, clock: FixedClock, db_url: str
) -> None:
    other = create_app(Settings(db=db_url, session_secret="x"), engine=engine, clock=clock)
    client.get("/healthz")
    with TestClient(other) as second:
        assert sample_sum(scrape(second), LATENCY, route="/healthz") == 0
    assert sample_sum(scrape(client), LATENCY, route="/healthz") == 1
    assert metrics_of(app) is not metrics_of(other)


def metrics_of(app: FastAPI) -> object:
    return app.state.metrics


def test_the_hooks_count_checks_by_measure_and_decision_and_lines_by_status(
    app: FastAPI, client: TestClient
) -> None:
    @app.post("/count")
    def count(request: Request) -> None:
        observe_check(request, measure="transport.flight_booking", decision="deny")
        metrics(request).checks.labels(measure="transport.flight_booking", decision="deny").inc()
        observe_ingest(request, {"accepted": 998, "duplicate": 1, "rejected": 1})

    client.post("/count")
    text = scrape(client)
    assert sample_sum(text, "chengxin_checks_total", decision="deny") == 2
    assert sample_sum(text, "chengxin_records_ingested_total", status="accepted") == 998
    assert sample_sum(text, "chengxin_records_ingested_total") == 1000


def test_checks_are_counted_by_decision(
    client: TestClient, keys: Keys, ingest: Any, record_line: Any, rid: Callable[[int], str]
) -> None:
    assert ingest(record_line(rid=rid(2))).count("accepted") == 1
    assert check(client, keys, rid(2)).json()["decision"] == "deny"
    assert check(client, keys, rid(3)).json()["decision"] == "allow"
    text = scrape(client)
    measure = "transport.flight_booking"
    assert sample_sum(text, "chengxin_checks_total", measure=measure, decision="deny") == 1
    assert sample_sum(text, "chengxin_checks_total", measure=measure, decision="allow") == 1
    # each check's audit event was committed by the worker's audit writer, and counted
    assert sample_sum(text, "chengxin_audit_batch_events_count") >= 1
    assert sample_sum(text, "chengxin_audit_batch_events_sum") == 2


def test_ingested_lines_are_counted_by_status(
    client: TestClient, keys: Keys, record_line: Any, rid: Callable[[int], str]
) -> None:
    first, second = record_line(rid=rid(2)), record_line(rid=rid(3))
    headers = bearer(keys["provider"])
    assert client.post("/v1/records", json=first, headers=headers).status_code == 201
    assert client.post("/v1/records", json=first, headers=headers).status_code == 200
    batch = {"records": [first, second], "atomic": False}
    assert client.post("/v1/records:batch", json=batch, headers=headers).status_code == 200
    text = scrape(client)
    name = "chengxin_records_ingested_total"
    assert sample_sum(text, name, status="accepted") == 2
    assert sample_sum(text, name, status="duplicate") == 2


def test_outbox_lag_is_the_age_of_the_oldest_waiting_event_read_at_scrape_time(
    client: TestClient, engine: Engine, clock: FixedClock, keys: Keys
) -> None:
    name = "chengxin_outbox_lag_seconds"
    text = scrape(client)
    assert sample_sum(text, name, stage="fanout") == 0
    assert sample_sum(text, name, stage="delivery") == 0
    now = clock.now()
    with transaction(engine) as session:

        def event(age: int, fanned_out: bool) -> int:
            row = {
                "created_at": now - timedelta(seconds=age),
                "topic": "list.entered",
                "payload": json.dumps({}),
                "attempts": 0,
                "delivered_at": now if fanned_out else None,
            }
            return int(session.execute(insert(outbox).values(row)).inserted_primary_key[0])

        event(90, fanned_out=False)
        event(30, fanned_out=False)
        waiting = event(600, fanned_out=True)
        event(900, fanned_out=True)  # fanned out, nothing pending: not lag
        service = session.execute(principals.select().where(principals.c.role == "service")).one()
        sub = session.execute(
            insert(subscriptions).values(
                principal_id=service.id,
                url="https://airline.example/hook",
                secret="whsec_x",
                topics='["list.entered"]',
                created_at=now,
            )
        ).inserted_primary_key[0]
        session.execute(
            insert(deliveries).values(
                outbox_id=waiting,
                subscription_id=sub,
                message_id="msg_1",
                status="pending",
                attempts=2,
                next_attempt_at=now + timedelta(seconds=60),
            )
        )
    text = scrape(client)
    assert sample_sum(text, name, stage="fanout") == 90
    assert sample_sum(text, name, stage="delivery") == 600
    clock.advance(timedelta(seconds=10))
    assert sample_sum(scrape(client), name, stage="fanout") == 100
