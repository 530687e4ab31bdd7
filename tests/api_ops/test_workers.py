"""``chengxin serve --workers N``: a listening socket per worker, and a dead worker replaced."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from api_ops.opstools import Server, serve_command, server_env, start_server, stop_server
from chengxin.api.workers import bind_reuseport

pytestmark = pytest.mark.slow


def listening(pid: int, port: int) -> set[str]:
    """The listening sockets (``socket:[inode]``) process ``pid`` holds on ``port``."""
    proc = psutil.Process(pid)
    return {
        os.readlink(f"/proc/{pid}/fd/{c.fd}")
        for c in proc.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def worker_sockets(srv: Server) -> dict[int, set[str]]:
    """The listening sockets on the server's port of each child process that holds one, by pid.

    (The supervisor's other child, multiprocessing's resource tracker, holds none.)
    """
    port = int(srv.url.rsplit(":", 1)[1])
    found = {}
    for child in psutil.Process(srv.process.pid).children():
        try:
            held = listening(child.pid, port)
        except (psutil.NoSuchProcess, FileNotFoundError):
            continue
        if held:
            found[child.pid] = held
    return found


def wait_for(condition: object, seconds: float = 60) -> None:
    """Poll ``condition()`` until it is true (fail after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture
def two_workers(tmp_path: Path, sqlite_template: Path, cheap_hashes: None) -> Server:
    """``chengxin serve --workers 2`` on a copy of the template database."""
    db = tmp_path / "chengxin.sqlite"
    shutil.copyfile(sqlite_template, db)
    return start_server(str(db), tmp_path / "server.log", keys={}, backend="sqlite", workers=2)


def test_each_worker_listens_on_a_socket_of_its_own(two_workers: Server) -> None:
    srv = two_workers
    try:
        wait_for(lambda: len(worker_sockets(srv)) == 2)
        held = list(worker_sockets(srv).values())
        assert all(len(s) == 1 for s in held)
        assert held[0] != held[1]  # two sockets, not one shared
        # the supervisor keeps none: a socket only it held would take connections
        assert listening(srv.process.pid, int(srv.url.rsplit(":", 1)[1])) == set()
        served = set()
        for _ in range(40):  # a new connection each time: the kernel spreads them
            with srv.client() as c:
                r = c.get("/healthz")
                assert r.status_code == 200
                served.add(r.headers["x-request-id"][:16])
        assert len(served) == 2  # both workers answered (ids carry a per-process prefix)
    finally:
        assert stop_server(srv) == 0


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(two_workers: Server) -> None:
    srv = two_workers
    try:
        wait_for(lambda: len(worker_sockets(srv)) == 2)
        before = worker_sockets(srv)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        # while it is replaced, every new connection reaches the surviving worker
        for _ in range(20):
            with srv.client() as c:
                assert c.get("/healthz").status_code == 200
        wait_for(lambda: victim not in worker_sockets(srv) and len(worker_sockets(srv)) == 2)
        after = worker_sockets(srv)
        assert set(after) - set(before)  # a new worker
        assert len({next(iter(s)) for s in after.values()}) == 2
        with srv.client() as c:
            assert c.get("/readyz").status_code == 200
        died = [x for x in srv.log_lines() if f"[{victim}] died" in x["message"]]
        assert died
    finally:
        assert stop_server(srv) == 0


def test_a_port_in_use_is_refused_before_any_worker_starts(
    tmp_path: Path, sqlite_template: Path
) -> None:
    db = tmp_path / "chengxin.sqlite"
    shutil.copyfile(sqlite_template, db)
    with socket.socket() as taken:  # an ordinary listener, not one of a SO_REUSEPORT group
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [*serve_command(str(db), port, workers=2), "--json"],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=120,
        )
    assert run.returncode == 1
    error = json.loads(run.stdout.strip().splitlines()[-1])["error"]
    assert f"cannot listen on 127.0.0.1:{port}" in error


def test_sockets_of_one_group_share_a_port_and_an_outsider_cannot() -> None:
    first = bind_reuseport("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = bind_reuseport("127.0.0.1", port)
    try:
        first.listen()
        second.listen()
        with pytest.raises(OSError), socket.socket() as plain:
            plain.bind(("127.0.0.1", port))
    finally:
        first.close()
        second.close()
