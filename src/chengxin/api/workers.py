"""Worker processes for ``chengxin serve``: each worker listens on a socket of its own.

uvicorn's supervisor hands every worker the same listening socket. Whichever
event loop wakes first accepts a burst of the waiting connections, so
keep-alive clients that connect together pile onto one worker while another
idles: at 2,000 checks/s over 32 connections the two workers were measured
at 0.35 and 0.91 of a core, and the busier one queued (p99 52 ms).

Here each worker gets its own socket, bound to the same address with
``SO_REUSEPORT`` (Linux 3.9+): the kernel spreads new connections over the
workers' sockets by a hash of each connection's addresses, and a socket only
joins once its worker listens, so a worker still starting up is sent nothing.
The supervisor binds a worker's socket, starts the worker (which inherits
it), and closes its own copy: when a worker dies, connections still queued on
its socket are reset and the others take the new ones while it is replaced.
Everything else (health pings, replacing a dead or hung worker, SIGHUP,
SIGTTIN, SIGTTOU, SIGTERM) is uvicorn's :class:`~uvicorn.supervisors.Multiprocess`.

Only processes of the same user can join a ``SO_REUSEPORT`` group, so no
other account's program can take a share of the connections.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

__all__ = ["ReusePortWorkers", "bind_reuseport"]

logger = logging.getLogger("uvicorn.error")


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` that other sockets of this user may share."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class ReusePortWorkers(Multiprocess):
    """uvicorn's supervisor, giving each worker its own ``SO_REUSEPORT`` socket."""

    def __init__(self, config: Config, target: Callable[[list[socket.socket] | None], None]):
        """Bind the first socket now, so a port in use fails before any worker starts."""
        first = bind_reuseport(config.host, config.port)
        self.port: int = first.getsockname()[1]
        """The port every worker listens on (the one the system chose, for port 0)."""
        self._first: socket.socket | None = first
        super().__init__(config, target, sockets=[])

    def _socket(self) -> socket.socket:
        if self._first is not None:
            sock, self._first = self._first, None
            return sock
        return bind_reuseport(self.config.host, self.port)

    def _spawn(self) -> Process:
        sock = self._socket()
        try:
            process = Process(self.config, self.target, [sock])
            process.start()  # a spawned child receives its sockets when it starts
        finally:
            sock.close()  # the worker holds it now: this process must not keep it alive
        return process

    def init_processes(self) -> None:
        """Start the workers, each on its own socket."""
        logger.info(
            "Serving on http://%s:%d with %d workers, one socket each",
            self.config.host,
            self.port,
            self.processes_num,
        )
        for _ in range(self.processes_num):
            self.processes.append(self._spawn())

    def restart_all(self) -> None:
        """Replace each worker in turn (SIGHUP)."""
        for idx, process in enumerate(self.processes):
            process.terminate()
            process.join()
            self.processes[idx] = self._spawn()

    def keep_subprocess_alive(self) -> None:
        """Replace a worker that died or stopped answering pings."""
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if self.should_exit.is_set():
                return
            logger.info("Child process [%s] died", process.pid)
            self.processes[idx] = self._spawn()

    def handle_ttin(self) -> None:
        """One more worker (SIGTTIN)."""
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.processes_num += 1
        self.processes.append(self._spawn())
