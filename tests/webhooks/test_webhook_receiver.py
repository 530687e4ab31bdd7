"""Delivery to a real receiver on 127.0.0.1: HTTP, retries, exactly-once effect, refusals."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from webhook_world import FLIGHTS, Receiver, World

from chengxin.service.delivery import Backoff
from chengxin.service.transport import HttpxTransport, WebhookRequest, WebhookResponse

pytestmark = [pytest.mark.usefixtures("backend"), pytest.mark.timeout(60)]


def test_retries_reach_a_real_receiver_with_exactly_one_effect(
    world: World, receiver: Receiver
) -> None:
    airline = world.service()
    world.consult(airline)
    world.consent()
    created = world.subscribe(airline, url=receiver.url)
    receiver.secret = created.secret
    world.default()
    world.perform()
    assert world.fan_out().deliveries == 2  # entered, then left
    backoff = Backoff()
    with HttpxTransport() as transport:
        first = world.deliver(transport, backoff=backoff)
        assert (first.attempted, first.failed) == (2, 2)  # the receiver fails first attempts
        for _ in range(5):  # bounded: the retries are due within 30 s of wall time
            world.wall.advance(timedelta(seconds=30))
            world.deliver(transport, backoff=backoff)
    assert [s for s, _ in receiver.answers] == [500, 500, 204, 204]
    assert len(receiver.effects) == 2
    topics = [e["payload"]["type"] for e in receiver.effects]
    assert sorted(topics) == ["list.entered", "list.left"]
    for effect in receiver.effects:
        assert effect["payload"]["data"]["measures"][0]["measure"] == FLIGHTS


def test_a_resend_after_a_lost_answer_has_no_second_effect(
    world: World, receiver: Receiver
) -> None:
    airline = world.service()
    world.consult(airline)
    world.consent()
    receiver.secret = world.subscribe(airline, url=receiver.url).secret
    world.default()
    world.fan_out()
    with HttpxTransport() as transport:

        class DiesAfterSending:
            """The receiver answers, then the worker dies before recording the answer."""

            def send(self, request: WebhookRequest) -> WebhookResponse:
                transport.send(request)
                raise RuntimeError("worker killed")

        world.deliver(transport)  # attempt 1: the receiver fails it
        world.wall.advance(timedelta(seconds=30))
        with pytest.raises(RuntimeError):
            world.deliver(DiesAfterSending())  # attempt 2: acted on, answer lost
        world.wall.advance(timedelta(seconds=60))
        assert world.deliver(transport).delivered == 1  # attempt 3: a duplicate
    assert [s for s, _ in receiver.answers] == [500, 204, 204]
    assert len({i for _, i in receiver.answers}) == 1
    assert len(receiver.effects) == 1


def test_the_receiver_refuses_replays_forgeries_and_stale_messages(
    world: World, receiver: Receiver
) -> None:
    airline = world.service()
    world.consult(airline)
    world.consent()
    receiver.secret = world.subscribe(airline, url=receiver.url).secret
    world.default()
    world.fan_out()
    captured: list[WebhookRequest] = []
    with HttpxTransport() as transport:

        class Capture:
            def send(self, request: WebhookRequest) -> WebhookResponse:
                captured.append(request)
                return transport.send(request)

        world.deliver(Capture())
        world.wall.advance(timedelta(seconds=30))
        world.deliver(Capture())
    good = captured[-1]
    with httpx.Client(timeout=5, trust_env=False) as client:

        def post(headers: dict[str, str], body: bytes = good.body) -> httpx.Response:
            return client.post(receiver.url, content=body, headers=headers)

        replay = post(dict(good.headers))
        assert replay.status_code == 409
        assert replay.json()["error"]["code"] == "replayed"
        forged = post(dict(good.headers), good.body.replace(b"deny", b"allo"))
        assert forged.status_code == 401
        assert forged.json()["error"]["code"] == "signature_invalid"
        stale = post(dict(good.headers) | {"webhook-timestamp": "1700000000"})
        assert stale.status_code == 400
        assert stale.json()["error"]["code"] == "timestamp_out_of_range"
    assert len(receiver.effects) == 1


def test_an_unreachable_receiver_is_a_failed_attempt(world: World) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    airline = world.service()
    world.consult(airline)
    world.consent()
    world.subscribe(airline, url=f"http://127.0.0.1:{port}/hooks")
    world.default()
    world.fan_out()
    with HttpxTransport(timeout=2) as transport:
        report = world.deliver(transport)
    assert (report.attempted, report.failed) == (1, 1)


def test_a_redirect_is_not_followed(world: World, receiver: Receiver) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("location", receiver.url)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        airline = world.service()
        world.consult(airline)
        world.consent()
        receiver.secret = world.subscribe(
            airline, url=f"http://127.0.0.1:{server.server_address[1]}/old"
        ).secret
        world.default()
        world.fan_out()
        with HttpxTransport() as transport:
            report = world.deliver(transport)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert report.failed == 1
    assert receiver.answers == []
