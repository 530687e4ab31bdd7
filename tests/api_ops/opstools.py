"""Helpers of the operations tests: principals with keys, log capture, a running server."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from chengxin.api.logging import JsonFormatter
from chengxin.domain.identifiers import make_rid, parse_identifier
from chengxin.service.principals import ROLES, Role, add_principal, issue_key
from chengxin.store.db import transaction

with warnings.catch_warnings():
    # starlette 0.49's testclient names anyio.abc.BlockingPortal at import time, which
    # anyio 4.16 deprecates; drop this when starlette stops doing so.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

PROVIDER_CODE = "court-110105"
PROVIDER_TYPES = ("judicial.judgment_unperformed", "judicial.judgment_performed")
SERVICE_MEASURES = ("transport.flight_booking", "rental.deposit_free")

__all__ = ["TestClient"]


def person_rid(n: int = 0) -> str:
    """A valid cn-rid for test person ``n`` (as tests/conftest.py makes them)."""
    return make_rid("110105", date(1970, 1, 1) + timedelta(days=n // 1000), n % 1000)


def wrong_check(rid: str) -> str:
    """``rid`` with a check character that is a valid character but wrong (GB 11643)."""
    return rid[:17] + ("0" if rid[17] != "0" else "1")


def registration(role: Role, subject_rid: str) -> dict[str, Any]:
    """What a principal of ``role`` is registered for in these tests."""
    if role == "provider":
        return {"provider": PROVIDER_CODE, "scopes": PROVIDER_TYPES}
    if role == "service":
        return {"service_kind": "airline", "scopes": SERVICE_MEASURES}
    if role == "subject":
        return {"subject": parse_identifier("cn-rid", subject_rid)}
    return {}


def make_principals(engine: Engine, *, now: datetime, subject_rid: str) -> dict[Role, str]:
    """A machine principal ``<role>-1`` of every role; their API keys by role."""
    keys: dict[Role, str] = {}
    with transaction(engine) as session:
        for role in ROLES:
            p = add_principal(
                session,
                name=f"{role}-1",
                role=role,
                kind="machine",
                now=now,
                **registration(role, subject_rid),
            )
            keys[role] = issue_key(session, principal_id=p.id, now=now)
    return keys


def bearer(key: str) -> dict[str, str]:
    """The Authorization header presenting ``key``."""
    return {"Authorization": f"Bearer {key}"}


@dataclass
class LogCapture:
    """What the ``chengxin`` loggers (and the root logger) wrote, as JSON lines."""

    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def text(self) -> str:
        """Everything logged so far."""
        return self.stream.getvalue()

    def lines(self, logger: str | None = None) -> list[dict[str, Any]]:
        """Every line, parsed (each must be one JSON object), from ``logger`` if named."""
        out = [json.loads(line) for line in self.text.splitlines()]
        return [x for x in out if logger is None or x["logger"] == logger]


@contextmanager
def capture_logs() -> Iterator[LogCapture]:
    """Capture every record that reaches the root logger (``chengxin`` at INFO) as JSON."""
    capture = LogCapture()
    handler = logging.StreamHandler(capture.stream)
    handler.setFormatter(JsonFormatter())
    root, ours = logging.getLogger(), logging.getLogger("chengxin")
    level, propagate = ours.level, ours.propagate
    root.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = True
    try:
        yield capture
    finally:
        root.removeHandler(handler)
        ours.setLevel(level)
        ours.propagate = propagate


# -- a running server ---------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(db: str, port: int, *, workers: int = 1) -> list[str]:
    """``chengxin serve`` on loopback, as an operator would type it."""
    return [
        sys.executable,
        "-m",
        "chengxin.cli",
        "serve",
        "--db",
        db,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def server_env() -> dict[str, str]:
    """The environment of a test server: no inherited metrics directory, a fixed secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHENGXIN_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["CHENGXIN_SESSION_SECRET"] = "test-secret"
    env["CHENGXIN_PUBLIC_RATE"] = "1000/minute"
    return env


@dataclass
class Server:
    """A ``chengxin serve`` process on 127.0.0.1 and what the tests know about it."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    keys: dict[Role, str]
    backend: str
    facts: dict[str, Any] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        """A client of the server (loopback only)."""
        return httpx.Client(base_url=self.url, timeout=30)

    def log_lines(self) -> list[dict[str, Any]]:
        """The server's stderr so far, parsed: every line must be one JSON object."""
        text = self.log_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def access_lines(self) -> list[dict[str, Any]]:
        """The server's per-request lines."""
        return [x for x in self.log_lines() if x["logger"] == "chengxin.access"]


def start_server(
    db: str,
    log_path: Path,
    *,
    keys: dict[Role, str],
    backend: str,
    workers: int = 1,
    tmpdir: Path | None = None,
) -> Server:
    """Start ``chengxin serve`` and wait until ``/readyz`` answers 200 (at most 120 s)."""
    port = free_port()
    env = server_env()
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    log = log_path.open("wb")
    process = subprocess.Popen(
        serve_command(db, port, workers=workers),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    server = Server(f"http://127.0.0.1:{port}", process, log_path, keys, backend)
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                if client.get("/readyz").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"serve was not ready in 120 s:\n{log_path.read_text()}")


def stop_server(server: Server) -> int:
    """SIGTERM the server (it shuts down gracefully); SIGKILL it after 30 s. Its exit code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)
    return int(server.process.returncode)
