"""The hash-chained ledger: appends verify, every kind of tampering is caught and located."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, select, update

from chengxin.store import ledger
from chengxin.store.db import transaction
from chengxin.store.schema import ledger as ledger_table
from chengxin.store.schema import ledger_head

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def entries(n: int, tag: str = "e") -> list[ledger.NewEntry]:
    """``n`` distinct record entries."""
    return [
        ledger.NewEntry(
            kind="record",
            payload=ledger.canonical_json({"ref": f"{tag}-{i}", "n": i, "text": "张三"}),
            provider="court-1",
            ref=f"{tag}-{i}",
        )
        for i in range(n)
    ]


def append(engine: Engine, items: list[ledger.NewEntry]) -> list[int]:
    with transaction(engine) as session:
        return ledger.append(session, items, now=NOW)


def verify(engine: Engine) -> ledger.VerifyResult:
    with transaction(engine) as session:
        return ledger.verify(session)


def tamper(engine: Engine, stmt: object) -> None:
    with transaction(engine) as session:
        session.execute(stmt)  # type: ignore[call-overload]


@pytest.fixture
def chain(engine: Engine) -> Engine:
    """A ledger of five entries appended in two transactions."""
    assert append(engine, entries(3, "a")) == [1, 2, 3]
    assert append(engine, entries(2, "b")) == [4, 5]
    return engine


def test_empty_ledger_verifies(engine: Engine) -> None:
    res = verify(engine)
    assert res.ok
    assert (res.entries, res.head_hash) == (0, ledger.GENESIS)


def test_append_links_each_entry_to_the_one_before(chain: Engine) -> None:
    with transaction(chain) as session:
        got = session.execute(select(ledger_table).order_by(ledger_table.c.seq)).all()
        top = ledger.head(session)
    assert [r.seq for r in got] == [1, 2, 3, 4, 5]
    prev = ledger.GENESIS
    for r in got:
        assert r.prev_hash == prev
        assert r.payload_hash == ledger.sha256_hex(r.payload)
        assert r.entry_hash == ledger.entry_hash(
            r.seq, r.kind, r.provider, r.ref, r.payload_hash, prev
        )
        prev = r.entry_hash
    assert top == ledger.Head(5, prev)
    res = verify(chain)
    assert res.ok and res.entries == 5 and res.head_hash == prev
    assert res.problem is None


def test_append_nothing_is_a_no_op(chain: Engine) -> None:
    assert append(chain, []) == []
    assert verify(chain).entries == 5


def test_progress_reports_the_entries_walked(chain: Engine) -> None:
    seen: list[int] = []
    with transaction(chain) as session:
        res = ledger.verify(session, progress=seen.append, batch=2)
    assert res.ok
    assert seen == [2, 4, 5]


def test_a_changed_payload_is_named(chain: Engine) -> None:
    tamper(
        chain,
        update(ledger_table).where(ledger_table.c.seq == 3).values(payload='{"ref":"a-2","n":99}'),
    )
    res = verify(chain)
    assert not res.ok
    assert res.broken_at == 3
    assert "payload" in (res.problem or "")


def test_a_changed_entry_hash_is_named(chain: Engine) -> None:
    tamper(chain, update(ledger_table).where(ledger_table.c.seq == 2).values(entry_hash="f" * 64))
    res = verify(chain)
    assert (res.ok, res.broken_at) == (False, 2)


def test_a_rewritten_payload_with_its_hash_breaks_the_entry_hash(chain: Engine) -> None:
    forged = '{"ref":"a-1","n":0}'
    tamper(
        chain,
        update(ledger_table)
        .where(ledger_table.c.seq == 2)
        .values(payload=forged, payload_hash=ledger.sha256_hex(forged)),
    )
    res = verify(chain)
    assert (res.ok, res.broken_at) == (False, 2)


def test_a_fully_rehashed_entry_breaks_the_next_link(chain: Engine) -> None:
    # A forger who recomputes entry 2's hashes still breaks entry 3's prev_hash.
    with transaction(chain) as session:
        one = session.execute(select(ledger_table).where(ledger_table.c.seq == 1)).one()
        forged = '{"ref":"a-1","forged":true}'
        ph = ledger.sha256_hex(forged)
        h = ledger.entry_hash(2, "record", "court-1", "a-1", ph, one.entry_hash)
        session.execute(
            update(ledger_table)
            .where(ledger_table.c.seq == 2)
            .values(payload=forged, payload_hash=ph, entry_hash=h)
        )
    res = verify(chain)
    assert (res.ok, res.broken_at) == (False, 3)
    assert "link" in (res.problem or "")


def test_a_deleted_middle_entry_is_named(chain: Engine) -> None:
    tamper(chain, delete(ledger_table).where(ledger_table.c.seq == 3))
    res = verify(chain)
    assert (res.ok, res.broken_at) == (False, 3)
    assert "missing" in (res.problem or "")


def test_a_deleted_last_entry_is_caught_by_the_head(chain: Engine) -> None:
    tamper(chain, delete(ledger_table).where(ledger_table.c.seq == 5))
    res = verify(chain)
    assert (res.ok, res.broken_at) == (False, 5)


def test_a_head_moved_back_is_caught(chain: Engine) -> None:
    with transaction(chain) as session:
        four = session.execute(select(ledger_table).where(ledger_table.c.seq == 4)).one()
        session.execute(update(ledger_head).values(seq=4, entry_hash=four.entry_hash))
    res = verify(chain)
    assert not res.ok
    # Entry 5 is in the chain but not covered by the head.
    assert res.broken_at == 5


def test_a_head_with_a_wrong_hash_is_caught(chain: Engine) -> None:
    tamper(chain, update(ledger_head).values(entry_hash="0" * 63 + "1"))
    res = verify(chain)
    assert not res.ok
    assert res.broken_at == 5


def test_an_erased_payload_still_verifies(chain: Engine) -> None:
    # Erasure after retention: the payload goes, its hash stays (DESIGN: "Record").
    tamper(
        chain,
        update(ledger_table).where(ledger_table.c.seq == 2).values(payload=None, erased_at=NOW),
    )
    res = verify(chain)
    assert res.ok and res.entries == 5
    # ...and appending after an erasure keeps the chain whole.
    append(chain, entries(1, "c"))
    assert verify(chain).ok


def test_erasing_cannot_hide_a_changed_hash(chain: Engine) -> None:
    tamper(
        chain,
        update(ledger_table)
        .where(ledger_table.c.seq == 2)
        .values(payload=None, erased_at=NOW, payload_hash="e" * 64),
    )
    assert verify(chain).broken_at == 2


def test_concurrent_appends_keep_one_chain(engine: Engine) -> None:
    """Two connections append batches at once; the head row lock serialises them."""
    rounds, size = 12, 5
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            start.wait(timeout=10)
            for i in range(rounds):
                append(engine, entries(size, f"{tag}{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    res = verify(engine)
    assert res.ok, res.problem
    assert res.entries == 2 * rounds * size
    with transaction(engine) as session:
        seqs = session.scalars(select(ledger_table.c.seq).order_by(ledger_table.c.seq)).all()
    assert seqs == list(range(1, 2 * rounds * size + 1))


def test_verify_does_not_write(engine: Engine, state: Callable[..., object]) -> None:
    before = state()
    assert verify(engine).ok
    assert state() == before


@pytest.mark.parametrize(
    "payload",
    [
        {"b": 1, "a": [True, False, None], "c": {"z": "张三", "y": -(2**63)}},
        {"text": 'line\nbreak\t"quoted" \\ \u2028 \x7f \x00 😀', "n": 2**63 - 1},
        {"é": 1, "e": 2, "Z": 3, "a": 4, "𝔸": 5},
        [],
    ],
)
def test_canonical_json_is_the_documented_text(payload: object) -> None:
    # Stored hashes depend on this text byte for byte: changing it would break
    # the verification of every ledger already written.
    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert ledger.canonical_json(payload) == expected


def test_the_hash_formulas_are_pinned() -> None:
    payload = ledger.canonical_json({"provider": "court-1", "ref": "r-1"})
    assert payload == '{"provider":"court-1","ref":"r-1"}'
    ph = ledger.sha256_hex(payload)
    assert ph == hashlib.sha256(payload.encode()).hexdigest()
    assert ledger.entry_hash(7, "record", "court-1", "r-1", ph, ledger.GENESIS) == (
        hashlib.sha256(f"7|record|court-1|r-1|{ph}|{ledger.GENESIS}".encode()).hexdigest()
    )
    assert ledger.entry_hash(1, "policy.activation", None, None, ph, ledger.GENESIS) == (
        hashlib.sha256(f"1|policy.activation|||{ph}|{ledger.GENESIS}".encode()).hexdigest()
    )
