"""Checkpoints of a SQLite write-ahead log on a thread of their own, never in a commit.

SQLite in WAL mode appends each commit to ``<db>-wal``; a *checkpoint*
copies those pages into the database file. By default the commit that
takes the log past 1,000 pages does it, there and then, while it holds the
writer lock: a server committing a few hundred audit batches a second saw
one commit in a few hundred take 10-16 ms, and every writer of every
worker waited behind it (the p99 of ``POST /v1/checks``).

An engine made with ``make_engine(db, background_checkpoints=True)`` turns
that off on its connections (``PRAGMA wal_autocheckpoint=0``), and a
:class:`Checkpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` every
``every`` seconds on a connection of its own instead. A passive checkpoint
takes no writer lock: commits go on while it copies. If another process's
checkpointer is at work, SQLite says busy and this one waits for its next
turn.

The log starts again from its beginning only when a writer finds every page
of it copied, and under steady commits a passive checkpoint never catches
up with them: the log grew by 20 MB/s at 2,000 checks/s, and every read
searched a longer index. So once the log holds ``restart_pages`` or more,
the checkpointer copies the pages committed meanwhile (once more without
the turn), then takes the writers' turn (:mod:`chengxin.store.writer_turn`)
for a last checkpoint of the few pages left: the next writer then starts
the log again. Writers wait for that last step only, a millisecond or so.

A checkpoint that fails is logged and tried again; the log then only grows
until one succeeds, and nothing is lost (the log *is* the data).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from chengxin.store.writer_turn import WriterTurn

log = logging.getLogger("chengxin.store")

DEFAULT_EVERY = 0.5
"""Seconds between checkpoints."""
DEFAULT_RESTART_PAGES = 1000
"""Log pages from which the log is started again (SQLite's own checkpoint threshold)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What one ``PRAGMA wal_checkpoint(PASSIVE)`` reported."""

    busy: bool
    """Another connection was checkpointing: nothing was done."""
    log_pages: int
    """Pages in the write-ahead log."""
    copied_pages: int
    """Pages of the log now in the database file."""


class Checkpointer:
    """Checkpoints one SQLite database every ``every`` seconds on a daemon thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        every: float = DEFAULT_EVERY,
        restart_pages: int = DEFAULT_RESTART_PAGES,
    ) -> None:
        """For the database file at ``path`` (not started: see :meth:`start`)."""
        self.path = Path(path)
        self.every = every
        self.restart_pages = restart_pages
        self._turn = WriterTurn.of(str(self.path))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        """Checkpoints done so far (busy ones not counted)."""
        self.failures = 0
        """Checkpoints that raised."""
        self.restarts = 0
        """Times the writers' turn was taken so the log could start again."""

    def checkpoint(self, conn: sqlite3.Connection) -> Checkpoint:
        """One passive checkpoint on ``conn``."""
        busy, log_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return Checkpoint(bool(busy), int(log_pages), int(copied))

    def round(self, conn: sqlite3.Connection) -> Checkpoint:
        """A passive checkpoint, and if the log is long, the steps that let it start again."""
        done = self.checkpoint(conn)
        if done.busy or done.log_pages < self.restart_pages or self._turn is None:
            return done
        self.checkpoint(conn)  # what was committed while the first one copied
        self._turn.acquire()
        try:
            done = self.checkpoint(conn)  # no commit can land now: the log is all copied
        finally:
            self._turn.release()
        self.restarts += 1
        return done

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="chengxin-checkpointer", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after a last checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            while True:
                stopping = self._stop.wait(self.every)
                try:
                    if not self.round(conn).busy:
                        self.checkpoints += 1
                except sqlite3.Error:
                    self.failures += 1
                    log.exception("checkpoint of %s failed; trying again", self.path)
                if stopping:
                    return
        finally:
            conn.close()
