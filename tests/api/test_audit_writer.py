"""Group commit of audit events: batched, chained, and no answer before its event is committed."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from chengxin.domain.identifiers import parse_identifier
from chengxin.service import audit
from chengxin.service.audit_writer import AuditWriter
from chengxin.service.clock import FixedClock
from chengxin.service.principals import Principal
from chengxin.store.db import transaction
from chengxin.store.schema import audit_events

with warnings.catch_warnings():  # see conftest.py
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

Auth = Callable[[str], dict[str, str]]
Rows = Callable[..., Any]

pytestmark = pytest.mark.usefixtures("backend")


def event(who: Principal, clock: FixedClock, n: int) -> audit.EventDraft:
    return audit.draft(
        principal=who,
        action="check",
        purpose=f"booking {n}",
        subject_id=None,
        detail={"n": n},
        now=clock.now(),
    )


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
def test_concurrent_events_are_committed_in_batches_and_the_chain_verifies(
    engine: Engine,
    clock: FixedClock,
    principals: dict[str, tuple[Principal, str]],
    rid: Callable[[int], str],
    rows: Rows,
    inline: bool,
) -> None:
    service, _ = principals["service"]
    known = parse_identifier("cn-rid", rid(1))  # the subject principal's row exists
    unknown = parse_identifier("cn-rid", rid(777))
    # A long wait gathers all 50 submissions on the thread; inline, one pass of the loop
    # does. At most 20 go in one transaction.
    observed: list[int] = []
    wait = timedelta(seconds=0 if inline else 5)
    writer = AuditWriter(engine, max_batch=20, wait=wait, observer=observed.append, inline=inline)

    async def submit_all() -> list[int]:
        return await asyncio.gather(
            *(
                writer.append(event(service, clock, n), subject=known if n % 2 else unknown)
                for n in range(50)
            )
        )

    try:
        seqs = asyncio.run(submit_all())
    finally:
        writer.close()
    assert seqs == list(range(1, 51))  # submission order is chain order
    assert (writer.batches, writer.events) == (3, 50)
    assert observed == [20, 20, 10]  # what the metric chengxin_audit_batch_events is told
    stored = rows(audit_events)
    assert [e.purpose for e in stored] == [f"booking {n}" for n in range(50)]
    assert {e.subject_id is None for e in stored[0::2]} == {True}
    assert {e.subject_id is not None for e in stored[1::2]} == {True}
    with transaction(engine) as session:
        assert audit.verify_audit(session).ok


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
def test_a_job_that_fails_gets_its_error_and_the_others_of_its_batch_are_written(
    engine: Engine,
    clock: FixedClock,
    principals: dict[str, tuple[Principal, str]],
    rows: Rows,
    inline: bool,
) -> None:
    service, _ = principals["service"]
    writer = AuditWriter(
        engine, max_batch=4, wait=timedelta(seconds=0 if inline else 5), inline=inline
    )

    def job(n: int) -> Callable[[], tuple[str, audit.EventDraft | None]]:
        def run() -> tuple[str, audit.EventDraft | None]:
            if n == 1:
                raise LookupError("no such measure")
            if n == 3:
                return "decided elsewhere", None  # no event: nothing appended for it
            return f"decision {n}", event(service, clock, n)

        return run

    async def submit_all() -> list[Any]:
        return await asyncio.gather(*(writer.run(job(n)) for n in range(4)), return_exceptions=True)

    try:
        first, failed, third, abstained = asyncio.run(submit_all())
    finally:
        writer.close()
    assert first == ("decision 0", 1) and third == ("decision 2", 2)
    assert isinstance(failed, LookupError)
    assert abstained == ("decided elsewhere", 0)
    assert [e.purpose for e in rows(audit_events)] == ["booking 0", "booking 2"]


def test_inline_batches_go_to_the_thread_while_another_writer_has_the_turn(
    engine: Engine,
    clock: FixedClock,
    principals: dict[str, tuple[Principal, str]],
    rows: Rows,
    backend: str,
) -> None:
    if backend != "sqlite":
        pytest.skip("writers take turns on SQLite only")
    service, _ = principals["service"]
    where: list[str] = []
    writer = AuditWriter(
        engine, observer=lambda _: where.append(threading.current_thread().name), inline=True
    )
    holder = engine.raw_connection()  # another writer, holding the turn
    dbapi: Any = holder.dbapi_connection
    dbapi.begin_write()

    async def scenario() -> tuple[list[int], int]:
        ticks = 0
        first = asyncio.gather(*(writer.append(event(service, clock, n)) for n in range(3)))
        for _ in range(20):  # the loop goes on while the turn is taken
            await asyncio.sleep(0.005)
            ticks += 1
        assert not first.done()
        again = writer.append(event(service, clock, 3))  # behind the first: to the thread too
        dbapi.rollback()  # the other writer lets go
        seqs = [*await first, await again]
        await asyncio.sleep(0)
        seqs.append(await writer.append(event(service, clock, 4)))  # caught up: inline again
        return seqs, ticks

    try:
        seqs, ticks = asyncio.run(scenario())
    finally:
        writer.close()
        holder.close()
    assert ticks == 20
    assert seqs == [1, 2, 3, 4, 5]  # submission order is chain order
    assert where[0] == "chengxin-audit-writer" and where[-1] == threading.current_thread().name
    assert [e.purpose for e in rows(audit_events)] == [f"booking {n}" for n in range(5)]
    with transaction(engine) as session:
        assert audit.verify_audit(session).ok


def test_no_decision_is_given_when_its_audit_event_cannot_be_committed(
    app: FastAPI,
    auth: Auth,
    rid: Callable[[int], str],
    rows: Rows,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: Any, **__: Any) -> list[int]:
        raise OSError("disk full")

    monkeypatch.setattr(audit, "append_bulk", broken)
    body = {
        "subject": {"scheme": "cn-rid", "id": rid(1)},
        "measure": "transport.flight_booking",
        "purpose": "booking MU5101",
    }
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/checks", json=body, headers=auth("service"))
    assert r.status_code == 500
    assert "decision" not in r.text
    assert rows(audit_events) == []


def test_a_batch_after_a_failed_one_is_written_on_a_fresh_connection(
    engine: Engine,
    clock: FixedClock,
    principals: dict[str, tuple[Principal, str]],
    rows: Rows,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, _ = principals["service"]
    real = audit.append_bulk
    calls: list[Any] = []

    def fails_once(bulk: Any, drafts: Any) -> list[int]:
        calls.append(bulk)
        if len(calls) == 1:
            raise OSError("disk full")
        return real(bulk, drafts)

    monkeypatch.setattr(audit, "append_bulk", fails_once)
    writer = AuditWriter(engine)

    async def one(n: int) -> Any:
        try:
            return await writer.append(event(service, clock, n))
        except OSError as exc:
            return exc

    try:
        failed = asyncio.run(one(0))
        held = writer._conn
        second, third = asyncio.run(one(1)), asyncio.run(one(2))
    finally:
        writer.close()
    assert isinstance(failed, OSError)
    assert held is None  # the failed batch's connection was let go
    assert (second, third) == (1, 2)
    assert writer._conn is None  # and the held one is given back when the writer closes
    assert [e.purpose for e in rows(audit_events)] == ["booking 1", "booking 2"]
    with transaction(engine) as session:
        assert audit.verify_audit(session).ok
