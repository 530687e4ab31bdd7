"""SQLite writers take turns: every write transaction holds the turn, and always gives it back."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from chengxin.store.db import make_engine, read_transaction, session_factory, transaction
from chengxin.store.writer_turn import FifoLock, TakingTurns, WriterTurn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite file with one table of numbers."""
    path = tmp_path / "turns.sqlite"
    engine = make_engine(str(path))
    with transaction(engine) as session:
        session.execute(text("CREATE TABLE n (i INTEGER PRIMARY KEY, who TEXT)"))
    engine.dispose()
    return path


def turn_of(path: Path) -> WriterTurn:
    turn = WriterTurn.of(str(path))
    assert turn is not None
    return turn


def is_free(turn: WriterTurn) -> bool:
    """Whether the turn can be had at once (it is then given back)."""
    try:
        turn.acquire(timeout=0.01)
    except sqlite3.OperationalError:
        return False
    turn.release()
    return True


def test_a_write_transaction_holds_the_turn_and_gives_it_back(db: Path) -> None:
    engine = make_engine(str(db))
    turn = turn_of(db)
    try:
        with transaction(engine) as session:
            session.execute(text("INSERT INTO n (who) VALUES ('a')"))
            assert not is_free(turn)
        assert is_free(turn)  # after commit
        with pytest.raises(ValueError), transaction(engine) as session:
            session.execute(text("INSERT INTO n (who) VALUES ('b')"))
            raise ValueError("the caller fails")
        assert is_free(turn)  # after rollback
        with transaction(engine) as session:
            assert session.execute(text("SELECT count(*) FROM n")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_read_transaction_takes_no_turn(db: Path) -> None:
    engine = make_engine(str(db))
    turn = turn_of(db)
    turn.acquire()  # as a writer of this process would
    try:
        with read_transaction(session_factory(engine)) as session:
            assert session.execute(text("SELECT count(*) FROM n")).scalar_one() == 0
    finally:
        turn.release()
        engine.dispose()


def test_a_turn_not_had_in_time_fails_as_sqlite_does(db: Path) -> None:
    turn = turn_of(db)
    held = threading.Event()
    done = threading.Event()

    def holder() -> None:
        turn.acquire()
        held.set()
        done.wait(10)
        turn.release()

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            turn.acquire(timeout=0.05)
    finally:
        done.set()
        t.join()
    assert is_free(turn)


def test_a_failed_begin_gives_the_turn_back(db: Path) -> None:
    conn = sqlite3.connect(str(db), factory=TakingTurns, isolation_level=None)
    try:
        conn.begin_write()
        with pytest.raises(sqlite3.OperationalError):  # a transaction is already open
            conn.begin_write()
        assert not is_free(turn_of(db))  # still the first transaction's
        conn.rollback()
        assert is_free(turn_of(db))
    finally:
        conn.close()


WRITER = """
import sys
from sqlalchemy import text
from chengxin.store.db import make_engine, transaction
path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = make_engine(path)
for _ in range(n):
    with transaction(engine) as session:
        session.execute(text("INSERT INTO n (who) VALUES (:who)"), {"who": who})
"""


def test_threads_and_processes_all_write_in_turn(db: Path) -> None:
    engine = make_engine(str(db))
    inside = 0
    most = 0
    guard = threading.Lock()

    def thread_writer(k: int) -> None:
        nonlocal inside, most
        for _ in range(50):
            with transaction(engine) as session:
                # the transaction begins (and takes the turn) at its first statement
                session.execute(text("INSERT INTO n (who) VALUES (:who)"), {"who": f"t{k}"})
                with guard:
                    inside += 1
                    most = max(most, inside)
                session.execute(text("SELECT count(*) FROM n")).scalar_one()
                with guard:
                    inside -= 1

    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"p{k}", "100"]) for k in range(2)
    ]
    threads = [threading.Thread(target=thread_writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        assert p.wait(120) == 0
    try:
        assert most == 1  # one writer of this process at a time
        with transaction(engine) as session:
            counts = dict(
                session.execute(text("SELECT substr(who, 1, 1), count(*) FROM n GROUP BY 1")).all()
            )
        assert counts == {"t": 400, "p": 200}
        assert is_free(turn_of(db))
    finally:
        engine.dispose()


def test_an_in_memory_database_has_no_turn() -> None:
    assert WriterTurn.of(":memory:") is None
    engine: Engine = make_engine("sqlite://")  # in memory
    try:
        with transaction(engine) as session:
            assert session.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_the_line_is_served_in_the_order_writers_asked() -> None:
    line = FifoLock()
    assert line.acquire(1)
    order: list[int] = []

    def waiter(k: int) -> None:
        assert line.acquire(30)
        order.append(k)
        line.release()

    threads = []
    for k in range(10):
        t = threading.Thread(target=waiter, args=(k,))
        t.start()
        threads.append(t)
        while len(line._waiters) < k + 1:  # each in line before the next asks
            time.sleep(0.001)
    line.release()
    for t in threads:
        t.join()
    assert order == list(range(10))


def test_a_writer_that_gives_up_leaves_the_line() -> None:
    line = FifoLock()
    assert line.acquire(1)
    assert not line.acquire(0.02)  # timed out while the first held it
    assert len(line._waiters) == 0
    line.release()
    assert line.acquire(0.01)  # free again
    line.release()


def test_a_file_that_cannot_be_opened_fails_as_sqlite_does(tmp_path: Path) -> None:
    missing = tmp_path / "no such directory" / "x.sqlite"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an exception in __del__ would surface as a warning
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            sqlite3.connect(missing, factory=TakingTurns)
        gc.collect()


def test_a_turn_taken_ahead_is_had_at_once_or_not_at_all(db: Path) -> None:
    first = sqlite3.connect(db, factory=TakingTurns, isolation_level=None, check_same_thread=False)
    second = sqlite3.connect(db, factory=TakingTurns, isolation_level=None)
    try:
        assert first.try_turn()
        assert not is_free(turn_of(db))
        assert not second.try_turn()  # never waits: another writer has the turn
        first.begin_write()  # with the turn taken ahead, no wait
        first.execute("INSERT INTO n VALUES (1, 'first')")
        first.commit()
        assert is_free(turn_of(db))
        assert second.try_turn()
        second.begin_write()
        second.rollback()
        assert is_free(turn_of(db))
    finally:
        first.close()
        second.close()


def test_a_turn_taken_ahead_is_given_back_if_begin_fails(db: Path) -> None:
    conn = sqlite3.connect(db, factory=TakingTurns, isolation_level=None)
    other = sqlite3.connect(db, isolation_level=None)  # a writer that takes no turns
    try:
        other.execute("BEGIN IMMEDIATE")
        conn.execute("PRAGMA busy_timeout=10")
        assert conn.try_turn()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            conn.begin_write()
        assert is_free(turn_of(db))
    finally:
        other.rollback()
        other.close()
        conn.close()


def test_a_turn_held_by_another_process_is_not_had_ahead(db: Path) -> None:
    script = (
        "import sys; from chengxin.store.writer_turn import WriterTurn;"
        f"t = WriterTurn.of({str(db)!r}); t.acquire(); print('held', flush=True);"
        "sys.stdin.readline(); t.release()"
    )
    conn = sqlite3.connect(db, factory=TakingTurns, isolation_level=None)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "held"
            assert not conn.try_turn()
            assert not turn_of(db).try_acquire()  # this process's line was left free again
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.wait(30) == 0
        finally:
            holder.kill()
    try:
        assert conn.try_turn()
        conn.rollback()
        assert is_free(turn_of(db))
    finally:
        conn.close()
