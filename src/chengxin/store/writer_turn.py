"""Writers of one SQLite file take turns in a queue, instead of polling SQLite's lock.

SQLite lets one transaction write at a time. A writer that finds the lock
taken waits in SQLite's busy handler, which sleeps and tries again -- 1, 2,
5, 10 ... and then 100 ms at a time. Under load the lock then sits free
while every waiter sleeps, and whoever happens to ask next takes it, however
long the others have waited: at 32 concurrent single-record ingests the
rate fell and the p99 reached seconds.

Here each write transaction first takes its *turn*: a place in its
process's line (a lock handed to waiters in the order they asked), then an
exclusive ``flock`` on a file beside the database (``<db>-writer``), for
which the kernel wakes the waiting process the moment the holder lets go.
Only then does it run ``BEGIN IMMEDIATE``, which by then finds SQLite's lock
free. The turn is given back as soon as the transaction commits or rolls
back (or its connection closes).

SQLite's lock still guards the data; the turn only orders who asks for it.
A writer that does not take turns (another program, an old chengxin) is
waited for by SQLite's busy handler, as before. A turn not had within the
busy timeout (30 s in the process's line) fails as SQLite does, with
``database is locked``. Read transactions never take a turn (WAL readers
never wait).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections import deque
from typing import Any, ClassVar

__all__ = ["FifoLock", "TakingTurns", "WriterTurn"]

TIMEOUT = 30.0
"""Seconds a writer waits for its turn, as long as SQLite's busy timeout."""


class FifoLock:
    """A lock handed to its waiters in the order they asked (``threading.Lock`` lets any
    waiter, or the releasing thread itself, take it next)."""

    def __init__(self) -> None:
        """A free lock with no waiters."""
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float) -> bool:
        """Take the lock, waiting in line at most ``timeout`` seconds; whether it was had."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            baton = threading.Lock()
            baton.acquire()
            self._waiters.append(baton)
        if baton.acquire(timeout=timeout):
            return True  # handed over by release()
        with self._mutex:
            try:
                self._waiters.remove(baton)
            except ValueError:
                return True  # handed over just as the wait ended: ours after all
            return False

    def try_acquire(self) -> bool:
        """Take the lock if it is free (no one holds it, so no one waits); never waits."""
        with self._mutex:
            if self._held:
                return False
            self._held = True
            return True

    def release(self) -> None:
        """Hand the lock to the longest waiter, or free it."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # still held: now by that waiter
            else:
                self._held = False


class WriterTurn:
    """The turn to write one database file: a lock of the process, then a file lock."""

    _by_path: ClassVar[dict[str, WriterTurn]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        """The turn of the database at ``path`` (use :meth:`of`, which shares one per file)."""
        self.path = path
        self._line = FifoLock()
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
        """Wait for the turn; ``database is locked`` if this process's line does not move
        within ``timeout``.

        Between processes the wait is the kernel's (a blocking ``flock``, woken
        the moment the holder lets go), so it lasts as long as the other
        process's transaction; only the first writer in each process's line
        waits there.
        """
        if not self._line.acquire(timeout):
            raise sqlite3.OperationalError("database is locked")
        self._lock_file(fcntl.LOCK_EX)

    def try_acquire(self) -> bool:
        """Take the turn if no writer of any process has it; never waits."""
        return self._line.try_acquire() and self._lock_file(fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _lock_file(self, flags: int) -> bool:
        # With the process's line held: the file lock, or the line given back.
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, flags)
        except BlockingIOError:  # LOCK_NB only: another process's writer has it
            self._line.release()
            return False
        except BaseException:
            self._line.release()
            raise
        return True

    def release(self) -> None:
        """Give the turn to the next writer."""
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._line.release()


def _after_fork_in_child() -> None:
    # A forked child holds no turn, whatever thread of its parent held one when it forked.
    for turn in WriterTurn._by_path.values():
        turn._line = FifoLock()
        turn._fd = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class TakingTurns(sqlite3.Connection):
    """A SQLite connection whose write transactions take the database's :class:`WriterTurn`.

    ``begin_write`` takes the turn and begins ``IMMEDIATE``; ``commit``,
    ``rollback`` and ``close`` give it back.
    """

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        """Open ``database`` as :func:`sqlite3.connect` does."""
        self._holding = False  # before the base can fail: __del__ runs on a failed open too
        self._taken_ahead = False  # by try_turn, for the next begin_write
        super().__init__(database, *args, **kwargs)
        self.turn = WriterTurn.of(os.fsdecode(database))

    def try_turn(self) -> bool:
        """Take the turn now if it is free (True), for a ``begin_write`` that then cannot wait
        for it; False if another writer has it. A connection without a turn always may."""
        if self.turn is None or self._holding:
            return True
        if not self.turn.try_acquire():
            return False
        self._holding = self._taken_ahead = True
        return True

    def begin_write(self) -> None:
        """Take the turn (unless :meth:`try_turn` took it), then ``BEGIN IMMEDIATE``."""
        ahead, self._taken_ahead = self._taken_ahead, False
        took = self.turn is not None and (ahead or not self._holding)
        if took and not ahead:
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
        self._taken_ahead = False
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
