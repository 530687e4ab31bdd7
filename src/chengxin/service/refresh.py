"""Refreshing stale scores: rescore every subject whose snapshot is marked stale.

A bulk import marks the subjects it touches stale chunk by chunk
(:func:`chengxin.service.rescore.mark_stale`) and calls
:func:`refresh_stale` when its last chunk is in; ``chengxin rescore`` may
call it too. Results are written a chunk per transaction through the
real-time path's :func:`~chengxin.service.rescore.store_results`, so
notifications go out only for what changed, and a refresh that dies half way
leaves the rest stale, to be refreshed again.

Two ways to score, one semantics (the agreement tests hold them equal):

* few stale subjects: the pure scorer, reading each chunk's records inside
  the chunk's transaction;
* many: the batch engine (DuckDB, :func:`chengxin.engine.duckdb_backend.rescore_duckdb`)
  on the stale subjects' records read in one go (ADBC on SQLite). The
  ledger head's sequence number is read with them; a chunk is written from
  those results only if the head has not moved since, and otherwise scored
  again by the pure scorer, so a concurrent ingest is never overwritten.

Every chunk takes the ledger head lock before reading what it writes, so an
ingest either lands before the chunk reads (and is scored) or waits for the
chunk to commit (and marks its subjects stale again).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import Engine

from chengxin.domain.policy import Policy
from chengxin.service.clock import Clock
from chengxin.service.policies import active_policy
from chengxin.service.rescore import Listed, RescoreSummary, rescore_subjects, store_results
from chengxin.store import ledger
from chengxin.store.db import transaction
from chengxin.store.repo import Bulk

CHUNK = 20_000
"""Stale subjects written per transaction."""
ENGINE_MIN = 20_000
"""From this many stale subjects on, the batch engine scores them."""


class _Listing(NamedTuple):
    kind: str
    since: date | None
    until: date | None


class _EngineScore(NamedTuple):
    """One subject's row of the batch engine's results, as store_results reads it."""

    as_of: date
    score: int
    grade: str
    next_change: date | None
    lists: Mapping[str, Listed]


def preload_engine() -> None:
    """Import the batch engine now (a bulk import does it while its workers start).

    The engine scores a large refresh in a forked child, which inherits what
    this process has imported; importing Ibis and DuckDB there instead costs
    seconds on the refresh's path. Nothing is opened: no connection, no thread.
    """
    with contextlib.suppress(ImportError):
        import chengxin.engine.duckdb_backend  # noqa: F401


def _stale_ids(bulk: Bulk, after: int, limit: int) -> list[int]:
    found = bulk.rows(
        "SELECT subject_id FROM snapshots WHERE stale = ? AND subject_id > ? "
        "ORDER BY subject_id LIMIT ?",
        (True, after, limit),
    )
    return [int(r[0]) for r in found]


def _count_stale(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(
            Bulk(session).rows("SELECT count(*) FROM snapshots WHERE stale = ?", (True,))[0][0]
        )


def refresh_stale(
    engine: Engine,
    *,
    clock: Clock,
    progress: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
    use_engine: bool | None = None,
) -> RescoreSummary:
    """Rescore every stale subject as of today, a chunk per transaction; say what changed.

    ``use_engine``: score with the batch engine (True), the pure scorer
    (False), or the engine from ``ENGINE_MIN`` stale subjects on, the pure
    scorer if the engine cannot compile the policy (None).
    """
    stale = _count_stale(engine)
    if stale == 0:
        return RescoreSummary()
    if use_engine is False or (use_engine is None and stale < ENGINE_MIN):
        return _refresh_pure(engine, clock=clock, progress=progress, chunk=chunk)
    try:
        return _refresh_with_engine(engine, clock=clock, progress=progress, chunk=chunk)
    except _EngineUnavailable:
        if use_engine:
            raise
        return _refresh_pure(engine, clock=clock, progress=progress, chunk=chunk)


def _refresh_pure(
    engine: Engine, *, clock: Clock, progress: Callable[[int], None] | None, chunk: int
) -> RescoreSummary:
    today = clock.today()
    total = RescoreSummary()
    policy: Policy | None = None
    last = 0
    while True:
        with transaction(engine) as session:
            bulk = Bulk(session)
            if not _stale_ids(bulk, last, 1):
                break
            ledger.head(session, lock=True)
            if policy is None:
                policy = active_policy(session, on=today).policy
            ids = _stale_ids(bulk, last, chunk)
            if not ids:
                break
            total.add(
                rescore_subjects(
                    session, policy=policy, subject_ids=ids, as_of=today, now=clock.now()
                )
            )
        last = ids[-1]
        if progress is not None:
            progress(len(ids))
    return total


# -- the batch engine --------------------------------------------------------------


@dataclass
class _Inputs:
    head: int
    subjects: Any  # pa.Table: subject_id, kind
    records: Any  # pa.Table: record_id, subject_id, type, occurred_at, status, attributes


@dataclass
class _Batch:
    head: int  # the ledger head when the records were read
    scores: Any  # pa.Table: subject_id, score, grade, next_change
    memberships: Any  # pa.Table: subject_id, list_code, kind, since, until


_SUBJECTS_SQL = (
    "SELECT s.id AS subject_id, s.kind AS kind FROM subjects s "
    "JOIN snapshots sn ON sn.subject_id = s.id WHERE sn.stale = ? ORDER BY s.id"
)
_RECORDS_SQL = (
    "SELECT r.id AS record_id, r.subject_id AS subject_id, r.type AS type, "
    "r.occurred_at AS occurred_at, r.status AS status, r.attributes AS attributes "
    "FROM records r JOIN snapshots sn ON sn.subject_id = r.subject_id "
    "WHERE sn.stale = ? AND r.status IN ('active', 'disputed')"
)


_ALL_RECORDS_SQL = (
    "SELECT id AS record_id, subject_id, type, occurred_at, status, attributes "
    "FROM records WHERE status IN ('active', 'disputed')"
)


def _adbc_read(path: str) -> _Inputs:
    """The stale subjects and their records, as Arrow, over ADBC (one read transaction).

    When many subjects are stale (a bulk import's refresh), reading every
    record in table order and dropping the others in DuckDB is several times
    faster than a join that fetches each record through the subject index.
    """
    import adbc_driver_sqlite.dbapi as adbc

    with adbc.connect(path) as conn, conn.cursor() as cur:
        cur.execute("SELECT seq FROM ledger_head WHERE id = 1")
        row = cur.fetchone()
        head = int(row[0]) if row else 0
        cur.execute(_SUBJECTS_SQL, (True,))
        subjects = cur.fetch_arrow_table()
        cur.execute("SELECT count(*) FROM snapshots")
        (everyone,) = cur.fetchone() or (0,)
        if subjects.num_rows * 4 >= everyone:
            cur.execute(_ALL_RECORDS_SQL)
        else:
            cur.execute(_RECORDS_SQL, (True,))
        records = cur.fetch_arrow_table()
        conn.rollback()
    return _Inputs(head, subjects, records)


def _read_session(engine: Engine) -> _Inputs:
    """The stale subjects and their records, as Arrow, through the session's connection."""
    import pyarrow as pa

    with transaction(engine) as session:
        bulk = Bulk(session)
        head = ledger.head(session).seq
        subj = bulk.rows(_SUBJECTS_SQL, (True,))
        recs = bulk.rows(_RECORDS_SQL, (True,))
    subjects = pa.table(
        {
            "subject_id": pa.array([r[0] for r in subj], pa.int64()),
            "kind": pa.array([r[1] for r in subj], pa.string()),
        }
    )
    cols: list[Sequence[Any]] = list(zip(*recs, strict=True)) if recs else [()] * 6
    records = pa.table(
        {
            "record_id": pa.array(cols[0], pa.int64()),
            "subject_id": pa.array(cols[1], pa.int64()),
            "type": pa.array(cols[2], pa.string()),
            "occurred_at": pa.array(cols[3], pa.date32()),
            "status": pa.array(cols[4], pa.string()),
            "attributes": pa.array(cols[5], pa.string()),
        }
    )
    return _Inputs(head, subjects, records)


def _score(policy: Policy, as_of: date, inputs: _Inputs) -> _Batch:
    """Score the inputs with the batch engine; ``a_<attribute>`` columns from the JSON text."""
    import duckdb

    from chengxin.engine.duckdb_backend import rescore_duckdb
    from chengxin.engine.plan import attribute_columns

    cols = [
        "record_id::BIGINT AS record_id",
        "subject_id::BIGINT AS subject_id",
        "type",
        "CAST(occurred_at AS DATE) AS occurred_at",
        "status",
    ]
    for column, kind in attribute_columns(policy).items():
        path = "$." + column.removeprefix("a_")
        if kind == "string":
            cols.append(f"json_extract_string(attributes, '{path}') AS {column}")
        elif kind == "date":
            cols.append(f"CAST(json_extract_string(attributes, '{path}') AS DATE) AS {column}")
        else:
            sql_type = {"int64": "BIGINT", "boolean": "BOOLEAN"}[kind]
            cols.append(f"CAST(json_extract(attributes, '{path}') AS {sql_type}) AS {column}")
    con = duckdb.connect()
    try:
        con.register("raw", inputs.records)
        con.register("stale", inputs.subjects)
        records = con.sql(
            f"SELECT {', '.join(cols)} FROM raw WHERE subject_id IN (SELECT subject_id FROM stale)"
        ).to_arrow_table()
    finally:
        con.close()
    batch = rescore_duckdb(policy, records, inputs.subjects, as_of)
    return _Batch(inputs.head, batch.scores, batch.memberships)


def _in_child(fn: Callable[[], _Batch]) -> _Batch:
    """``fn()`` in a forked child process (``fn`` is inherited, not pickled); its result."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def run() -> None:
        try:
            send.send((True, fn()))
        except BaseException as exc:  # reported to the parent, which raises it
            send.send((False, exc))

    proc = ctx.Process(target=run, daemon=True)
    proc.start()
    send.close()
    try:
        ok, value = receive.recv()
    finally:
        receive.close()
        proc.join()
    if not ok:
        raise value
    assert isinstance(value, _Batch)
    return value


def _batch_sqlite(engine: Engine, policy: Policy, as_of: date) -> _Batch:
    """Read (ADBC) and score the stale subjects in a child process.

    The ADBC driver links its own copy of SQLite. Two copies in one process
    do not see each other's POSIX locks: closing the ADBC connection then
    checkpoints and deletes the WAL under the sqlite3 module's connections,
    and their later commits are lost (sqlite.org/howtocorrupt.html, 2.2.1).
    A child process is an ordinary second process to SQLite, and safe; only
    the results come back.
    """
    path = engine.url.database
    assert path, "an in-memory SQLite database has no second connection"
    return _in_child(lambda: _score(policy, as_of, _adbc_read(path)))


def _batch_session(engine: Engine, policy: Policy, as_of: date) -> _Batch:
    """Read the stale subjects through the session and score them here (PostgreSQL)."""
    return _score(policy, as_of, _read_session(engine))


def _results(policy: Policy, as_of: date, scores: Any, memberships: Any) -> dict[int, _EngineScore]:
    lists: dict[int, dict[str, Listed]] = {}
    m = memberships.to_pydict()
    # In policy order, as the pure scorer lists them (and so the outbox is the same).
    order = {lst.code: i for i, lst in enumerate(policy.lists)}
    rows = sorted(
        zip(m["subject_id"], m["list_code"], m["kind"], m["since"], m["until"], strict=True),
        key=lambda r: (r[0], order[r[1]]),
    )
    for sid, code, kind, since, until in rows:
        lists.setdefault(sid, {})[code] = _Listing(kind, since, until)
    none: dict[str, Listed] = {}
    return {
        sid: _EngineScore(as_of, score, grade, nxt, lists.get(sid, none))
        for sid, score, grade, nxt in zip(
            scores.column("subject_id").to_pylist(),
            scores.column("score").to_pylist(),
            scores.column("grade").to_pylist(),
            scores.column("next_change").to_pylist(),
            strict=True,
        )
    }


def _parts(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class _EngineUnavailable(RuntimeError):
    """The batch engine is not installed, or cannot compile this policy (nothing was written)."""


def _refresh_with_engine(
    engine: Engine, *, clock: Clock, progress: Callable[[int], None] | None, chunk: int
) -> RescoreSummary:
    today = clock.today()
    with transaction(engine) as session:
        policy = active_policy(session, on=today).policy
    try:
        from chengxin.engine.plan import PlanError

        if engine.dialect.name == "sqlite":
            batch = _batch_sqlite(engine, policy, today)
        else:
            batch = _batch_session(engine, policy, today)
    except (ImportError, PlanError, NotImplementedError) as exc:  # Ibis: NotImplementedError
        raise _EngineUnavailable(str(exc)) from exc
    results = _results(policy, today, batch.scores, batch.memberships)
    total = RescoreSummary()
    for part in _parts(sorted(results), chunk):
        with transaction(engine) as session:
            top = ledger.head(session, lock=True)
            if top.seq == batch.head:
                mine = {sid: results[sid] for sid in part}
                total.add(store_results(session, policy=policy, results=mine, now=clock.now()))
            else:  # the ledger moved since the read: score this chunk afresh
                total.add(
                    rescore_subjects(
                        session, policy=policy, subject_ids=part, as_of=today, now=clock.now()
                    )
                )
        if progress is not None:
            progress(len(part))
    # Subjects marked stale after the read (by a concurrent ingest) are still stale.
    total.add(_refresh_pure(engine, clock=clock, progress=progress, chunk=chunk))
    return total


# Shared with the time-travel report in :mod:`chengxin.service.batch`.
Inputs = _Inputs
score_inputs = _score
