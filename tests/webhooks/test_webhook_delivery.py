"""Delivery: signed, retried with growing back-off, dead after the last attempt, at least once."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from webhook_world import World

from chengxin.service.delivery import Backoff, NotDead, dead_letters, delivery_counts, retry_dead
from chengxin.service.errors import NotFound
from chengxin.service.transport import FakeTransport, TransportError, WebhookRequest
from chengxin.store.db import transaction
from chengxin.store.schema import deliveries

pytestmark = [pytest.mark.usefixtures("backend"), pytest.mark.timeout(60)]


def only_delivery(world: World) -> Any:
    with transaction(world.engine) as s:
        (row,) = s.execute(select(deliveries)).all()
    return row


def due_at(world: World) -> datetime:
    when: datetime = only_delivery(world).next_attempt_at
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when  # SQLite drops the zone


@pytest.fixture
def pending(world: World) -> str:
    """One pending delivery to the airline; its signing secret."""
    _, secret = world.ready()
    world.default()
    assert world.fan_out().deliveries == 1
    return secret


def test_messages_are_signed_as_standard_webhooks_says(world: World, pending: str) -> None:
    transport = FakeTransport()
    world.deliver(transport)
    (req,) = transport.requests
    headers = dict(req.headers)
    assert set(headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-timestamp"] == str(int(world.wall.now().timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    # The reference implementation verifies it (against the real clock).
    payload = Webhook(pending).verify(req.body, headers)
    assert payload["type"] == "list.entered"
    with pytest.raises(Exception, match="signature"):
        Webhook(pending).verify(req.body.replace(b"deny", b"allo"), headers)
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 44).verify(req.body, headers)


def test_a_success_is_marked_delivered(world: World, pending: str) -> None:
    report = world.deliver(FakeTransport())
    assert report.as_dict() == {
        "attempted": 1,
        "delivered": 1,
        "failed": 0,
        "dead": 0,
        "cancelled": 0,
    }
    row = only_delivery(world)
    assert (row.status, row.attempts, row.next_attempt_at, row.last_error) == (
        "delivered",
        1,
        None,
        None,
    )
    assert row.delivered_at is not None
    assert world.deliver(FakeTransport()).attempted == 0


def test_back_off_grows_to_the_dead_letters_with_one_message_id(world: World, pending: str) -> None:
    backoff = Backoff()
    transport = FakeTransport(default=500)
    clock = world.wall
    delays: list[timedelta] = []
    for attempt in range(1, backoff.max_attempts + 1):
        report = world.deliver(transport, clock=clock)
        assert report.attempted == 1
        row = only_delivery(world)
        assert row.attempts == attempt
        if attempt < backoff.max_attempts:
            assert (row.status, report.failed) == ("pending", 1)
            wait = due_at(world) - clock.now()
            delays.append(wait)
            # Not due a moment before its time.
            clock.advance(wait - timedelta(seconds=1))
            assert world.deliver(transport, clock=clock).attempted == 0
            clock.advance(timedelta(seconds=1))
        else:
            assert (row.status, report.dead, row.next_attempt_at) == ("dead", 1, None)
    assert len(delays) == backoff.max_attempts - 1
    assert delays == sorted(delays)
    for n, wait in enumerate(delays, start=1):
        ceiling = backoff.base * 2 ** (n - 1)
        assert ceiling / 2 <= wait <= ceiling
    assert len({r.headers["webhook-id"] for r in transport.requests}) == 1
    assert len({r.headers["webhook-signature"] for r in transport.requests}) == 8
    with transaction(world.engine) as s:
        (dead,) = dead_letters(s)
        assert delivery_counts(s) == {"dead": 1}
    assert (dead.event, dead.service, dead.attempts) == ("list.entered", "airline-1", 8)
    assert dead.last_error is not None and dead.last_error.startswith("HTTP 500")
    # Nothing more is attempted, however long one waits.
    clock.advance(timedelta(days=30))
    assert world.deliver(transport, clock=clock).attempted == 0


def test_the_jitter_is_deterministic_and_capped() -> None:
    backoff = Backoff()
    assert backoff.delay("msg_a", 3) == backoff.delay("msg_a", 3)
    assert backoff.delay("msg_a", 3) != backoff.delay("msg_b", 3)
    for n in range(1, 20):
        assert backoff.delay("msg_a", n) <= backoff.cap
    assert backoff.delay("msg_a", 19) >= backoff.cap / 2


def test_a_dead_letter_can_be_retried_with_the_same_message_id(world: World, pending: str) -> None:
    backoff = Backoff(max_attempts=2)
    failing = FakeTransport(default=503)
    world.deliver(failing, backoff=backoff)
    world.wall.advance(timedelta(hours=1))
    assert world.deliver(failing, backoff=backoff).dead == 1
    row = only_delivery(world)
    with transaction(world.engine) as s:
        retry_dead(s, delivery_id=row.id, now=world.wall.now())
    again = only_delivery(world)
    assert (again.status, again.attempts) == ("pending", 0)
    ok = FakeTransport()
    assert world.deliver(ok, backoff=backoff).delivered == 1
    assert ok.requests[0].headers["webhook-id"] == failing.requests[0].headers["webhook-id"]
    with transaction(world.engine) as s, pytest.raises(NotDead):
        retry_dead(s, delivery_id=row.id, now=world.wall.now())
    with transaction(world.engine) as s, pytest.raises(NotFound):
        retry_dead(s, delivery_id=row.id + 100, now=world.wall.now())


def test_transport_failures_are_retried(world: World, pending: str) -> None:
    transport = FakeTransport([TransportError("ConnectError: refused")])
    report = world.deliver(transport)
    assert (report.attempted, report.failed) == (1, 1)
    assert only_delivery(world).last_error == "ConnectError: refused"
    world.wall.advance(timedelta(minutes=1))
    assert world.deliver(transport).delivered == 1


def test_a_crash_mid_delivery_loses_nothing(world: World, pending: str) -> None:
    def crash(_: WebhookRequest) -> int:
        raise RuntimeError("the worker died mid-request")

    with pytest.raises(RuntimeError):
        world.deliver(FakeTransport(responder=crash))
    row = only_delivery(world)
    assert (row.status, row.attempts) == ("pending", 1)  # counted, not lost
    assert due_at(world) > world.wall.now()  # due again after the back-off
    assert world.deliver(FakeTransport()).attempted == 0
    world.wall.advance(timedelta(seconds=30))
    transport = FakeTransport()
    assert world.deliver(transport).delivered == 1
    assert only_delivery(world).attempts == 2


def test_a_crash_during_the_last_attempt_ends_dead_not_in_a_loop(
    world: World, pending: str
) -> None:
    def crash(_: WebhookRequest) -> int:
        raise RuntimeError("the worker died mid-request")

    backoff = Backoff(max_attempts=1)
    with pytest.raises(RuntimeError):
        world.deliver(FakeTransport(responder=crash), backoff=backoff)
    world.wall.advance(timedelta(minutes=1))
    report = world.deliver(FakeTransport(), backoff=backoff)
    assert (report.attempted, report.dead) == (0, 1)
    assert "worker stopped" in (only_delivery(world).last_error or "")


def test_two_workers_deliver_each_message_once(world: World) -> None:
    world.consent()
    for n in range(6):
        airline = world.service(f"airline-{n}")
        world.consult(airline)
        world.subscribe(airline, url=f"https://airline-{n}.example/hooks")
    world.default()
    assert world.fan_out().deliveries == 6
    transport = FakeTransport()
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            world.deliver(transport)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    ids = [r.headers["webhook-id"] for r in transport.requests]
    assert len(ids) == len(set(ids)) == 6
    with transaction(world.engine) as s:
        assert delivery_counts(s) == {"delivered": 6}


def test_the_signed_body_is_the_body_sent(world: World, pending: str) -> None:
    transport = FakeTransport()
    world.deliver(transport)
    (req,) = transport.requests
    assert json.loads(req.body)["data"]["subject"]["id"] == world.rid
    assert req.headers["content-type"] == "application/json"
