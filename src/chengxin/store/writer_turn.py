"""Writers of one SQLite file take turns in a queue, instead of polling SQLite's lock.

SQLite lets one transaction write at a time. A writer that finds the lock
taken waits in SQLite's busy handler, which sleeps and tries again -- 1, 2,
5, 10 ... and then 100 ms at a time. Under load the lock then sits free
while every waiter sleeps, and whoever happens to ask next takes it, however
long the others have waited: at 32 concurrent single-record ingests the
rate fell and the p99 reached seconds.

Here each write transaction first takes its *turn*: a lock of the process
(threads block on it and are woken when it is released), then an exclusive
``flock`` on a file beside the database (``<db>-writer``), which the kernel
hands from process to process. Only then does it run ``BEGIN IMMEDIATE``,
which by then finds SQLite's lock free. The turn is given back as soon as
the transaction commits or rolls back (or its connection closes).

SQLite's lock still guards the data; the turn only orders who asks for it.
A writer that does not take turns (another program, an old chengxin) is
waited for by SQLite's busy handler, as before. A turn not had within the
busy timeout fails as SQLite does, with ``database is locked``. Read
transactions never take a turn (WAL readers never wait).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
import time
from typing import Any, ClassVar

__all__ = ["TakingTurns", "WriterTurn"]

TIMEOUT = 30.0
"""Seconds a writer waits for its turn, as long as SQLite's busy timeout."""
_POLL = (0.0002, 0.0005, 0.001, 0.002)
"""Waits between tries of the file lock (short: at most one thread per process polls)."""


class WriterTurn:
    """The turn to write one database file: a process lock, then a file lock between processes."""

    _by_path: ClassVar[dict[str, WriterTurn]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        """The turn of the database at ``path`` (use :meth:`of`, which shares one per file)."""
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = -1

    @classmethod
    def of(cls, database: str) -> WriterTurn | None:
        """The turn of the database file ``database`` (None for an in-memory database)."""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        path = os.path.realpath(database)
        with cls._registry_lock:
            turn = cls._by_path.get(path)
            if turn is None:
                turn = cls._by_path[path] = cls(path)
            return turn

    def _file(self) -> int | None:
        # One descriptor per process (a forked child opens its own: flock is per open file).
        if self._fd is None or self._pid != os.getpid():
            try:
                self._fd = os.open(f"{self.path}-writer", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # a read-only directory: the process lock alone
                self._fd = None
            self._pid = os.getpid()
        return self._fd

    def acquire(self, timeout: float = TIMEOUT) -> None:
        """Wait for the turn; ``database is locked`` if it does not come within ``timeout``."""
        deadline = time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=timeout):
            raise sqlite3.OperationalError("database is locked")
        try:
            fd = self._file()
            if fd is None:
                return
            step = 0
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                        raise
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked")
                time.sleep(_POLL[min(step, len(_POLL) - 1)])
                step += 1
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        """Give the turn to the next writer."""
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


def _after_fork_in_child() -> None:
    # A forked child holds no turn, whatever thread of its parent held one when it forked.
    for turn in WriterTurn._by_path.values():
        turn._thread_lock = threading.Lock()
        turn._fd = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class TakingTurns(sqlite3.Connection):
    """A SQLite connection whose write transactions take the database's :class:`WriterTurn`.

    ``begin_write`` takes the turn and begins ``IMMEDIATE``; ``commit``,
    ``rollback`` and ``close`` give it back.
    """

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        """Open ``database`` as :func:`sqlite3.connect` does."""
        super().__init__(database, *args, **kwargs)
        self.turn = WriterTurn.of(os.fsdecode(database))
        self._holding = False

    def begin_write(self) -> None:
        """Take the turn, then ``BEGIN IMMEDIATE``."""
        took = self.turn is not None and not self._holding
        if took:
            assert self.turn is not None
            self.turn.acquire()
            self._holding = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            if took:  # not a transaction already open, which keeps its turn
                self._give_back()
            raise

    def _give_back(self) -> None:
        if self._holding:
            self._holding = False
            assert self.turn is not None
            self.turn.release()

    def commit(self) -> None:
        """Commit, then give the turn back."""
        try:
            super().commit()
        finally:
            self._give_back()

    def rollback(self) -> None:
        """Roll back, then give the turn back."""
        try:
            super().rollback()
        finally:
            self._give_back()

    def close(self) -> None:
        """Close (an open transaction rolls back), then give the turn back."""
        try:
            super().close()
        finally:
            self._give_back()

    def __del__(self) -> None:
        """A connection dropped unclosed gives its turn back too."""
        self._give_back()
