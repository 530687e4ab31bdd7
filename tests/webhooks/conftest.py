"""Webhook fixtures: a subject with services around it, and a real receiver on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine
from webhook_world import Receiver, World

from chengxin.domain.identifiers import parse_identifier
from chengxin.domain.policy import Policy
from chengxin.service.clock import FixedClock
from chengxin.store import repo
from chengxin.store.db import transaction


@pytest.fixture
def world(
    engine: Engine,
    policy: Policy,
    clock: FixedClock,
    ingest: Callable[..., Any],
    record_line: Callable[..., dict[str, Any]],
    rid: Callable[[int], str],
) -> World:
    """Person 1 with one volunteering record (score 1005, grade A); nothing fanned out yet."""
    who = rid(1)
    report = ingest(
        record_line(
            rid=who,
            type="societal.volunteering",
            attributes={"hours": 10},
            occurred_at="2026-09-01",
        )
    )
    assert report.count("accepted") == 1
    with transaction(engine) as s:
        row = repo.find_subject(s, parse_identifier("cn-rid", who))
        assert row is not None
    w = World(engine, clock, policy, ingest, record_line, who, row.id)
    w.fan_out()  # whatever came before the services arrived is nobody's business
    return w


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A :class:`Receiver` serving on an ephemeral loopback port (stopped after the test)."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        timeout = 5

        def do_POST(self) -> None:
            size = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(min(size, 1 << 20))
            status, payload = state.handle(dict(self.headers.items()), body)
            data = b"" if payload is None else json.dumps(payload).encode()
            with state.lock:
                state.answers.append((status, self.headers.get("webhook-id", "")))
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()
