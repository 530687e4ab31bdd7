"""Group commit for the audit trail: events from many requests, one transaction per batch.

A check appends one audit event, and the event must be durable before the
decision is returned (hard line 5: every decision is written). Appending it
in the request's own transaction costs a head lock and a commit per check,
and every writer queues for that one head. The :class:`AuditWriter` takes
events from any thread or request, and one writer thread per process
appends whatever has gathered -- up to ``max_batch`` events, waiting at most
``wait`` for more after the first -- in one transaction: one head lock, one
insert, one commit. Each submitter awaits its event's sequence number,
which it gets only after that commit (or the commit's error); the caller
answers only then. The writer wakes each submitting event loop once per
batch.

The chain is unchanged: events are appended in the order they were
submitted, hash-chained after the head, which each batch locks (a row lock
on PostgreSQL, the writer lock on SQLite), so the writers of several worker
processes interleave whole batches. Subjects are named by internal id in
the draft, or by identifier and resolved to internal ids in the batch (one
query), so an unknown subject is audited without one, as
:func:`chengxin.service.audit.record_check` does. The writer thread holds
one connection from batch to batch (a fresh one after a failed batch).

A caller may hand over a *job* instead of a finished event
(:meth:`AuditWriter.run`): a function that runs on the writer thread just
before the batch's transaction begins and returns a result and the event
that records it -- a check's decision and its audit event. A check then
costs one hand-off to a thread instead of two, and the event loop never
waits on the database. A job that raises gets its error back and appends
nothing. Jobs run outside the writer's transaction, so one that writes in a
transaction of its own (a check that rescores) does not wait for it.

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
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine

from chengxin.domain.identifiers import SubjectId
from chengxin.service import audit
from chengxin.store import repo

log = logging.getLogger("chengxin.audit")

DEFAULT_MAX_BATCH = 256
"""Events appended in one transaction at most."""
DEFAULT_WAIT = timedelta(0)
"""How long the writer waits for more events after the first of a batch (0: take what is there)."""


_T = TypeVar("_T")
Job = Callable[[], tuple[_T, audit.EventDraft]]
"""Work for the writer thread: a result and the audit event that records it."""


@dataclass(frozen=True, slots=True)
class _Pending:
    draft: audit.EventDraft | None
    job: Job[Any] | None
    subject: SubjectId | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[Any, int]]


_Outcome = tuple["asyncio.Future[tuple[Any, int]]", Any, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    """On the submitters' event loop: hand each its result or error (unless it gave up)."""
    for future, value, error in outcomes:
        if future.done():  # the request was cancelled meanwhile
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


_STOP = object()


class AuditWriter:
    """Appends submitted audit events in batches, one transaction each, on its own thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        wait: timedelta = DEFAULT_WAIT,
        observer: Callable[[int], None] | None = None,
    ) -> None:
        """``observer``, if given, is called on the writer thread with each committed batch's
        number of events (for a metric)."""
        self._engine = engine
        self._observer = observer
        self._max = max(1, max_batch)
        self._wait = max(0.0, wait.total_seconds())
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None  # the writer thread's, held between batches
        self._closed = False
        self.batches = 0
        """Transactions committed so far."""
        self.events = 0
        """Events appended so far."""

    async def _submit(
        self, draft: audit.EventDraft | None, job: Job[Any] | None, subject: SubjectId | None
    ) -> tuple[Any, int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int]] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chengxin-audit-writer", daemon=True
                )
                self._thread.start()
            self._queue.put(_Pending(draft, job, subject, loop, future))
        return await future

    async def append(self, draft: audit.EventDraft, *, subject: SubjectId | None = None) -> int:
        """Append an event; its sequence number once committed (the event loop is not blocked).

        With ``subject``, the event's subject is that subject's internal id
        (none if nothing is held on it), resolved in the batch.
        """
        _, seq = await self._submit(draft, None, subject)
        return seq

    async def run(self, job: Job[_T], *, subject: SubjectId | None = None) -> tuple[_T, int]:
        """Run ``job`` on the writer thread; its result once its event is committed, and the seq."""
        return cast("tuple[_T, int]", await self._submit(None, job, subject))

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
                break
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
        self._drop_connection()

    def _connection(self) -> Connection:
        # Held from batch to batch: a pool checkout, its reset and its return cost
        # more than a small batch's insert.
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection is discarded anyway
                conn.close()

    def _write(self, pending: list[_Pending]) -> None:
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        try:
            self._append(pending, outcomes)
        finally:  # one wake-up per event loop per batch
            for loop, items in outcomes.items():
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    loop.call_soon_threadsafe(_settle, items)

    def _append(
        self, pending: list[_Pending], outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]]
    ) -> None:
        batch: list[tuple[_Pending, Any, audit.EventDraft]] = []
        for p in pending:  # jobs first, outside the transaction
            if p.job is None:
                assert p.draft is not None
                batch.append((p, None, p.draft))
                continue
            try:
                result, draft = p.job()
            except Exception as exc:  # the job's own error, for its caller alone
                outcomes.setdefault(p.loop, []).append((p.future, None, exc))
                continue
            batch.append((p, result, draft))
        if not batch:
            return
        try:
            conn = self._connection()
            with conn.begin():
                bulk = repo.Bulk(conn)
                named = {(p.subject.scheme, p.subject.value) for p, _, _ in batch if p.subject}
                ids = repo.subject_ids_bulk(bulk, sorted(named)) if named else {}
                drafts = []
                for p, _, d in batch:
                    if p.subject is not None:
                        found = ids.get((p.subject.scheme, p.subject.value))
                        d = replace(d, subject_id=None if found is None else found[0])
                    drafts.append(d)
                seqs = audit.append_bulk(bulk, drafts)
        except BaseException as exc:  # every submitter learns that its event was not written
            log.exception("audit batch of %d events failed", len(batch))
            self._drop_connection()  # the next batch starts on a fresh one
            for p, _, _ in batch:
                outcomes.setdefault(p.loop, []).append((p.future, None, exc))
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.events += len(batch)
        if self._observer is not None:
            try:
                self._observer(len(batch))
            except Exception:  # a metric must never fail the checks it counts
                log.exception("the audit writer's observer failed")
        for (p, result, _), seq in zip(batch, seqs, strict=True):
            outcomes.setdefault(p.loop, []).append((p.future, (result, seq), None))
