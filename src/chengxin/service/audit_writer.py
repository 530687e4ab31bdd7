"""Group commit for the audit trail: events from many requests, one transaction per batch.

A check appends one audit event, and the event must be durable before the
decision is returned (hard line 5: every decision is written). Appending it
in the request's own transaction costs a head lock and a commit per check,
and every writer queues for that one head. The :class:`AuditWriter` takes
events from any thread or request, and one writer thread per process
appends whatever has gathered -- up to ``max_batch`` events, waiting at most
``wait`` for more after the first -- in one transaction: one head lock, one
insert, one commit. Each submitter gets a future that resolves to its
event's sequence number only after that commit, or fails with the commit's
error; the caller answers only then.

The chain is unchanged: events are appended in the order they were
submitted, hash-chained after the head, which each batch locks (a row lock
on PostgreSQL, the writer lock on SQLite), so the writers of several worker
processes interleave whole batches. Subjects are named by identifier and
resolved to internal ids in the batch (one query), so an unknown subject is
audited without one, as :func:`chengxin.service.audit.record_check` does.

The writer owns its transactions: it is the caller, in the sense of
STYLE.md rule 4, for the events handed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import Engine

from chengxin.domain.identifiers import SubjectId
from chengxin.service import audit
from chengxin.store import repo
from chengxin.store.db import session_factory

log = logging.getLogger("chengxin.audit")

DEFAULT_MAX_BATCH = 256
"""Events appended in one transaction at most."""
DEFAULT_WAIT = timedelta(0)
"""How long the writer waits for more events after the first of a batch (0: take what is there)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    draft: audit.EventDraft
    subject: SubjectId | None
    future: Future[int]


_STOP = object()


class AuditWriter:
    """Appends submitted audit events in batches, one transaction each, on its own thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        wait: timedelta = DEFAULT_WAIT,
    ) -> None:
        self._sessions = session_factory(engine)
        self._max = max(1, max_batch)
        self._wait = max(0.0, wait.total_seconds())
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        """Transactions committed so far."""
        self.events = 0
        """Events appended so far."""

    def submit(self, draft: audit.EventDraft, *, subject: SubjectId | None = None) -> Future[int]:
        """Queue an event; the future gives its sequence number once committed.

        With ``subject``, the event's subject is that subject's internal id
        (none if nothing is held on it), resolved in the batch.
        """
        future: Future[int] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chengxin-audit-writer", daemon=True
                )
                self._thread.start()
            self._queue.put(_Pending(draft, subject, future))
        return future

    async def append(self, draft: audit.EventDraft, *, subject: SubjectId | None = None) -> int:
        """Submit an event and wait, without blocking the event loop, until it is committed."""
        return await asyncio.wrap_future(self.submit(draft, subject=subject))

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    # -- the writer thread ---------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Pending] = [first]  # type: ignore[list-item]
            deadline = time.monotonic() + self._wait
            while len(batch) < self._max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            with self._sessions() as session, session.begin():
                named = {(p.subject.scheme, p.subject.value) for p in batch if p.subject}
                ids = repo.subject_ids(session, sorted(named)) if named else {}
                drafts = []
                for p in batch:
                    d = p.draft
                    if p.subject is not None:
                        found = ids.get((p.subject.scheme, p.subject.value))
                        d = replace(d, subject_id=None if found is None else found[0])
                    drafts.append(d)
                seqs = audit.append(session, drafts)
        except BaseException as exc:  # every submitter learns that its event was not written
            log.exception("audit batch of %d events failed", len(batch))
            for p in batch:
                with contextlib.suppress(InvalidStateError):
                    p.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.events += len(batch)
        for p, seq in zip(batch, seqs, strict=True):
            with contextlib.suppress(InvalidStateError):  # the request was cancelled meanwhile
                p.future.set_result(seq)
