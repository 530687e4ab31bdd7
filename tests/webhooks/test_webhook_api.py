"""The webhook API: services subscribe, administrators see and retry the dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from webhook_world import World

from chengxin.api.app import create_app
from chengxin.api.settings import Settings
from chengxin.service.delivery import Backoff
from chengxin.service.principals import Principal, add_principal, issue_key
from chengxin.service.transport import FakeTransport
from chengxin.store.db import transaction

pytestmark = [pytest.mark.usefixtures("backend"), pytest.mark.timeout(60)]


def mounted(app: FastAPI) -> FastAPI:
    """The app with the webhook router (once ``include_all`` mounts it, this is a no-op)."""
    from chengxin.api.routers import webhooks

    paths = {getattr(r, "path", "") for r in app.routes}
    if "/v1/webhooks/subscriptions" not in paths:
        app.include_router(webhooks.router)
    return app


class Client:
    """A synchronous face on ``httpx.ASGITransport``: the real app, in process."""

    def __init__(self, app: FastAPI) -> None:
        self._runner = asyncio.Runner()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://chengxin.test"
        )

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self._runner.run(self._client.request(method, url, **kw))

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()


@pytest.fixture
def client(world: World, db_url: str) -> Iterator[Client]:
    app = mounted(create_app(Settings(db=db_url), engine=world.engine, clock=world.clock))
    c = Client(app)
    try:
        yield c
    finally:
        c.close()


def key_for(world: World, who: Principal) -> dict[str, str]:
    with transaction(world.engine) as s:
        key = issue_key(s, principal_id=who.id, now=world.clock.now())
    return {"authorization": f"Bearer {key}"}


def admin(world: World) -> Principal:
    with transaction(world.engine) as s:
        return add_principal(s, name="root", role="admin", kind="machine", now=world.clock.now())


def error_code(resp: Any) -> str:
    return str(resp.json()["error"]["code"])


def test_a_service_subscribes_lists_reads_and_deletes(world: World, client: Client) -> None:
    auth = key_for(world, world.service())
    made = client.post(
        "/v1/webhooks/subscriptions",
        json={"url": "https://airline.example/hooks", "topics": ["list.entered", "list.left"]},
        headers=auth,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["secret"].startswith("whsec_")
    assert body["topics"] == ["list.entered", "list.left"]
    listed = client.get("/v1/webhooks/subscriptions", headers=auth)
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()] == [body["id"]]
    assert "secret" not in listed.json()[0]
    one = client.get(f"/v1/webhooks/subscriptions/{body['id']}", headers=auth)
    assert one.json()["url"] == "https://airline.example/hooks"
    gone = client.delete(f"/v1/webhooks/subscriptions/{body['id']}", headers=auth)
    assert gone.status_code == 204
    assert client.get("/v1/webhooks/subscriptions", headers=auth).json() == []
    again = client.delete(f"/v1/webhooks/subscriptions/{body['id']}", headers=auth)
    assert (again.status_code, error_code(again)) == (404, "not_found")


def test_a_service_cannot_see_another_services_subscription(world: World, client: Client) -> None:
    mine = world.subscribe(world.service())
    theirs = key_for(world, world.service("airline-2"))
    resp = client.get(f"/v1/webhooks/subscriptions/{mine.subscription.id}", headers=theirs)
    assert (resp.status_code, error_code(resp)) == (404, "not_found")
    resp = client.delete(f"/v1/webhooks/subscriptions/{mine.subscription.id}", headers=theirs)
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "https://a.example/", "topics": ["grade.changed"]}, 422, "topic_not_allowed"),
        ({"url": "https://a.example/", "topics": ["list.moved"]}, 422, "topic_unknown"),
        ({"url": "gopher://a.example/", "topics": ["list.left"]}, 422, "url_invalid"),
        ({"url": "https://a.example/", "topics": []}, 422, "invalid_request"),
        ({"url": "https://a.example/", "topics": ["list.left"], "x": 1}, 422, "invalid_request"),
    ],
)
def test_bad_subscriptions_get_a_machine_readable_4xx(
    world: World, client: Client, body: dict[str, Any], status: int, code: str
) -> None:
    resp = client.post(
        "/v1/webhooks/subscriptions", json=body, headers=key_for(world, world.service())
    )
    assert (resp.status_code, error_code(resp)) == (status, code), resp.text


def test_only_services_subscribe_and_only_admins_see_dead_letters(
    world: World, client: Client
) -> None:
    service = key_for(world, world.service())
    root = key_for(world, admin(world))
    resp = client.post(
        "/v1/webhooks/subscriptions",
        json={"url": "https://a.example/", "topics": ["list.left"]},
        headers=root,
    )
    assert (resp.status_code, error_code(resp)) == (403, "forbidden")
    resp = client.get("/v1/webhooks/dead-letters", headers=service)
    assert (resp.status_code, error_code(resp)) == (403, "forbidden")
    resp = client.get("/v1/webhooks/dead-letters")
    assert (resp.status_code, error_code(resp)) == (401, "unauthenticated")


def test_an_admin_sees_a_dead_letter_and_retries_it(world: World, client: Client) -> None:
    world.ready()
    world.default()
    world.fan_out()
    backoff = Backoff(max_attempts=1)
    assert world.deliver(FakeTransport(default=500), backoff=backoff).dead == 1
    root = key_for(world, admin(world))
    resp = client.get("/v1/webhooks/dead-letters", headers=root)
    assert resp.status_code == 200
    (dead,) = resp.json()
    assert (dead["event"], dead["service"], dead["attempts"]) == ("list.entered", "airline-1", 1)
    assert dead["last_error"].startswith("HTTP 500")
    retried = client.post(f"/v1/webhooks/dead-letters/{dead['id']}:retry", headers=root)
    assert retried.status_code == 202, retried.text
    assert retried.json() == {"id": dead["id"], "status": "pending"}
    assert client.get("/v1/webhooks/dead-letters", headers=root).json() == []
    again = client.post(f"/v1/webhooks/dead-letters/{dead['id']}:retry", headers=root)
    assert (again.status_code, error_code(again)) == (409, "delivery_not_dead")
    missing = client.post("/v1/webhooks/dead-letters/99999:retry", headers=root)
    assert (missing.status_code, error_code(missing)) == (404, "not_found")
    world.wall.advance(timedelta(seconds=1))
    ok = FakeTransport()
    assert world.deliver(ok, backoff=backoff).delivered == 1
