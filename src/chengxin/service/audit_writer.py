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

A job may also return no event (None): nothing is appended for it, and its
caller gets sequence number 0 (a check that must rescore its subject first,
which its caller then does where waiting is harmless).

*Inline* (``inline=True``, what the API uses on SQLite, where a batch costs
no round trip): there is no hand-off at all while the writers' turn is free.
The events and jobs submitted during one pass of the event loop are gathered
and, at the end of that pass, run and committed on the loop itself. Two
threads taking turns at the GIL cost more than the work they share: in
process (``bench/bench_check_route.py``), a check took 370 µs of CPU with
the thread and 274-284 µs inline. The loop must never wait on another writer,
though: the turn is only taken if it is free at once
(:meth:`~chengxin.store.writer_turn.TakingTurns.try_turn`); if another
writer has it, the batch, its jobs already run, goes to the writer thread,
and so does every batch after it until that thread has caught up, so the
chain order is still submission order.

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
from chengxin.store.writer_turn import TakingTurns

log = logging.getLogger("chengxin.audit")

DEFAULT_MAX_BATCH = 256
"""Events appended in one transaction at most."""
DEFAULT_WAIT = timedelta(0)
"""How long the writer waits for more events after the first of a batch (0: take what is there)."""


_T = TypeVar("_T")
Job = Callable[[], tuple[_T, audit.EventDraft | None]]
"""Work for the writer: a result and the audit event that records it (None: no event)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    draft: audit.EventDraft | None
    job: Job[Any] | None
    subject: SubjectId | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[Any, int]]
    result: Any = None  # a job's, run inline, whose event the writer thread commits


_Ready = tuple[_Pending, Any, audit.EventDraft]  # a submission, its result and its event


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
        inline: bool = False,
    ) -> None:
        """``observer``, if given, is called with each committed batch's number of events (for
        a metric). ``inline``: batches run on the submitting event loop while the writers'
        turn is free (SQLite; see the module's text)."""
        self._engine = engine
        self._inline = inline
        self._gathered: list[_Pending] = []  # inline: this pass's submissions
        self._loop_conn: Connection | None = None  # inline: the loop's, held between batches
        self._behind = 0  # inline: events handed to the thread and not yet settled
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
        pending = _Pending(draft, job, subject, loop, future)
        if self._inline:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            self._gathered.append(pending)
            if len(self._gathered) == 1:  # the first of this pass: flush once the pass ends
                if self._wait:
                    loop.call_later(self._wait, self._flush)
                else:
                    loop.call_soon(self._flush)
        else:
            self._enqueue([pending])
        return await future

    def _enqueue(self, items: list[_Pending]) -> None:
        with self._lock:
            if self._closed and not self._inline:
                raise RuntimeError("the audit writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chengxin-audit-writer", daemon=True
                )
                self._thread.start()
            if self._inline:
                self._behind += len(items)
            for item in items:
                self._queue.put(item)

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
        """Write what is queued, then stop the thread (and let go of the loop's connection)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
        self._drop_connection(on_loop=True)

    # -- inline: on the submitting event loop ------------------------------------

    def _flush(self) -> None:
        pending, self._gathered = self._gathered, []
        for start in range(0, len(pending), self._max):
            outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
            try:
                ready = self._run_jobs(pending[start : start + self._max], outcomes)
                if ready:
                    self._commit_here_or_hand_over(ready, outcomes)
            finally:
                for items in outcomes.values():
                    _settle(items)

    def _commit_here_or_hand_over(
        self, ready: list[_Ready], outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]]
    ) -> None:
        with self._lock:
            behind = self._behind > 0
        if not behind:
            try:
                dbapi = self._connection(on_loop=True).connection.dbapi_connection
                free = not isinstance(dbapi, TakingTurns) or dbapi.try_turn()
            except Exception as exc:
                self._failed(ready, outcomes, exc, on_loop=True)
                return
            if free:
                self._commit(ready, outcomes, on_loop=True)
                return
        # Another writer has the turn (or the thread has batches still to write): the
        # thread waits for it, in submission order, and the loop goes on.
        self._enqueue([replace(p, draft=d, job=None, result=r) for p, r, d in ready])

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

    def _connection(self, *, on_loop: bool) -> Connection:
        # Held from batch to batch: a pool checkout, its reset and its return cost
        # more than a small batch's insert. The loop and the thread each have one.
        conn = self._loop_conn if on_loop else self._conn
        if conn is None:
            conn = self._engine.connect()
            if on_loop:
                self._loop_conn = conn
            else:
                self._conn = conn
        return conn

    def _drop_connection(self, *, on_loop: bool = False) -> None:
        if on_loop:
            conn, self._loop_conn = self._loop_conn, None
        else:
            conn, self._conn = self._conn, None
        if conn is not None:  # returned to the pool, which rolls back (and gives the turn back)
            with contextlib.suppress(Exception):  # a broken connection is discarded anyway
                conn.close()

    def _write(self, pending: list[_Pending]) -> None:
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        try:
            ready = self._run_jobs(pending, outcomes)
            if ready:
                self._commit(ready, outcomes, on_loop=False)
        finally:  # one wake-up per event loop per batch
            if self._inline:
                with self._lock:
                    self._behind -= len(pending)
            for loop, items in outcomes.items():
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    loop.call_soon_threadsafe(_settle, items)

    def _run_jobs(
        self, pending: list[_Pending], outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]]
    ) -> list[_Ready]:
        """Each submission's result and event: jobs run first, outside the transaction."""
        ready: list[_Ready] = []
        for p in pending:
            if p.job is None:
                assert p.draft is not None
                ready.append((p, p.result, p.draft))
                continue
            try:
                result, draft = p.job()
            except Exception as exc:  # the job's own error, for its caller alone
                outcomes.setdefault(p.loop, []).append((p.future, None, exc))
                continue
            if draft is None:  # nothing to record: the caller gets its result at once
                outcomes.setdefault(p.loop, []).append((p.future, (result, 0), None))
                continue
            ready.append((p, result, draft))
        return ready

    def _commit(
        self,
        batch: list[_Ready],
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]],
        *,
        on_loop: bool,
    ) -> None:
        """Append ``batch``'s events in one transaction; each submitter's outcome."""
        try:
            conn = self._connection(on_loop=on_loop)
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
            self._failed(batch, outcomes, exc, on_loop=on_loop)
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

    def _failed(
        self,
        batch: list[_Ready],
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]],
        exc: BaseException,
        *,
        on_loop: bool,
    ) -> None:
        log.exception("audit batch of %d events failed", len(batch), exc_info=exc)
        self._drop_connection(on_loop=on_loop)  # the next batch starts on a fresh one
        for p, _, _ in batch:
            outcomes.setdefault(p.loop, []).append((p.future, None, exc))
