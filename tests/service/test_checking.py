"""Checking lines on worker processes or in process: the same lines, the same ledger.

Also: orjson reads a line exactly as the standard library does, refusals
cross process boundaries intact, and the bulk statements store dates and
timestamps as SQLAlchemy would.
"""

from __future__ import annotations

import json
import pickle
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime, Engine, select

from chengxin.domain.policy import Policy
from chengxin.domain.records import RecordRejected
from chengxin.service.checking import RawLines, check_chunk, check_lines, parse_jsonl_line
from chengxin.service.clock import FixedClock
from chengxin.service.importer import import_file
from chengxin.service.policies import install_policy, read_policy_source
from chengxin.store import ledger
from chengxin.store.db import make_engine, transaction
from chengxin.store.schema import ledger as ledger_table
from chengxin.store.schema import records, snapshots, subjects
from chengxin.synth import CityConfig, write_feed

CITY = CityConfig(people=300, seed=5, end=date(2026, 11, 1))


@pytest.mark.parametrize(
    "line",
    [
        b'{"a": 1, "a": 2}',
        b'{"amount": 100000000000000000000}',  # past 64 bits: orjson would read a float
        b'{"amount": -9223372036854775809}',
        b'{"x": 1.5, "subject": {"id": 2.0}, "attributes": {"n": 1e3}}',
        b'{"x": NaN}',
        b'{"x": "\\ud800"}',  # a lone surrogate: orjson refuses it, json keeps it
        '{"name": "张三", "t": "\\u00e9"}'.encode(),
        b'  {"padded": true}  \r\n',
    ],
)
def test_a_line_reads_as_json_loads_reads_it(line: bytes) -> None:
    got = parse_jsonl_line(line)
    want = json.loads(line.decode())
    assert got == want or (got.keys() == want.keys() and repr(got) == repr(want))  # NaN != NaN
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


@pytest.mark.parametrize(
    ("line", "code", "message"),
    [
        (b"{not json", "bad_json", "not valid JSON: Expecting property name enclosed in double"),
        (b"[1, 2]", "bad_json", "each line must be a JSON object"),
        (b'{"a": "\xff"}', "bad_encoding", "byte 0xff at column 8"),
        (b"\xef\xbb\xbf{}", "bad_json", "not valid JSON: Unexpected UTF-8 BOM"),
    ],
)
def test_an_unreadable_line_says_why(line: bytes, code: str, message: str) -> None:
    got = parse_jsonl_line(line)
    assert isinstance(got, RecordRejected)
    assert got.code == code and message in str(got)


def test_text_that_is_not_unicode_is_refused_not_a_crash(policy: Policy, record_line: Any) -> None:
    line = json.loads(json.dumps(record_line(name="Zhang \ud800")))  # a lone surrogate
    batch = check_lines([(1, line)], policy, date(2026, 11, 1))
    assert batch.checked == []
    (res,) = batch.rejected
    assert (res.line, res.code) == (1, "bad_encoding")


def test_a_refusal_survives_pickling() -> None:
    exc = RecordRejected("bad_date", "'occurred_at' is not a date", "occurred_at")
    back = pickle.loads(pickle.dumps(exc))
    assert (back.code, str(back), back.field) == ("bad_date", str(exc), "occurred_at")


def test_raw_and_parsed_chunks_check_alike(policy: Policy, tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    write_feed(CITY, feed, "jsonl")
    raw = feed.read_bytes().splitlines(keepends=True)
    chunk = RawLines(list(range(1, len(raw) + 1)), raw)
    parsed = [(n, json.loads(line)) for n, line in enumerate(raw, start=1)]
    today = CITY.end
    assert check_chunk(chunk, policy, today) == check_lines(parsed, policy, today)


def _feed_with_bad_lines(tmp_path: Path) -> Path:
    feed = tmp_path / "feed.jsonl"
    write_feed(CITY, feed, "jsonl")
    lines = feed.read_bytes().splitlines(keepends=True)
    lines[10:10] = [b"\n", b"{broken\n", b'{"provider": "p", "ref": "x"}\n', b"   \n"]
    lines.append(lines[20])  # a duplicate
    feed.write_bytes(b"".join(lines))
    return feed


def _chain(engine: Engine) -> tuple[list[tuple[Any, ...]], ledger.Head]:
    with transaction(engine) as session:
        rows = session.execute(
            select(
                ledger_table.c.seq,
                ledger_table.c.kind,
                ledger_table.c.provider,
                ledger_table.c.ref,
                ledger_table.c.payload,
                ledger_table.c.payload_hash,
                ledger_table.c.entry_hash,
            ).order_by(ledger_table.c.seq)
        ).all()
        return [tuple(r) for r in rows], ledger.head(session)


def test_workers_and_in_process_checking_build_the_same_ledger(
    engine: Engine, policy: Policy, sqlite_template: Path, tmp_path: Path
) -> None:
    clock = FixedClock.on(CITY.end)
    feed = _feed_with_bad_lines(tmp_path)
    pooled = import_file(engine, feed, clock=clock, chunk_size=150, workers=2)

    # The same feed into a second, fresh SQLite database, checked in this process.
    other_path = tmp_path / "in-process.sqlite"
    shutil.copyfile(sqlite_template, other_path)
    other = make_engine(str(other_path))
    try:
        text_, source = read_policy_source("national")
        with transaction(other) as session:
            install_policy(
                session,
                text=text_,
                source=source,
                actor="tests",
                reason="test fixture",
                now=clock.now(),
            )
        in_process = import_file(
            other, feed, clock=clock, chunk_size=150, workers=1, rejects=tmp_path / "r2.jsonl"
        )
        other_chain, other_head = _chain(other)
    finally:
        other.dispose()
    pooled_chain, pooled_head = _chain(engine)

    assert pooled.as_dict() | {"rejects_file": None} == in_process.as_dict() | {
        "rejects_file": None
    }
    assert (pooled.rejected, pooled.duplicates) == (2, 1)
    assert pooled.chunks > 3 and pooled.accepted > 500
    assert pooled_chain[1:] == other_chain[1:]  # entry 1 activated the policy, at other times
    assert pooled_head.seq == other_head.seq
    assert pooled.rejects_file is not None
    assert pooled.rejects_file.read_text() == (tmp_path / "r2.jsonl").read_text()
    rejects = [json.loads(x) for x in pooled.rejects_file.read_text().splitlines()]
    assert [(r["line"], r["code"]) for r in rejects] == [(12, "bad_json"), (13, "missing_field")]


def test_bulk_rows_store_dates_and_times_as_sqlalchemy_writes_them(
    engine: Engine, policy: Policy, clock: FixedClock, tmp_path: Path, rows: Any
) -> None:
    feed = tmp_path / "feed.jsonl"
    write_feed(CITY, feed, "jsonl")
    import_file(engine, feed, clock=FixedClock.on(CITY.end), chunk_size=500)
    # Read back through SQLAlchemy's types: dates and aware timestamps, not text.
    rec = rows(records)[0]
    subj = rows(subjects)[0]
    snap = rows(snapshots)[0]
    assert isinstance(rec.occurred_at, date) and isinstance(rec.recorded_at, date)
    assert subj.birth_date is None or isinstance(subj.birth_date, date)
    assert isinstance(snap.as_of, date) and snap.stale is False
    if engine.dialect.name == "sqlite":
        now = FixedClock.on(CITY.end).now()
        written = (
            DateTime(timezone=True).dialect_impl(engine.dialect).bind_processor(engine.dialect)
        )
        assert written is not None
        with transaction(engine) as session:
            conn = session.connection().connection.dbapi_connection
            texts = conn.execute(
                "SELECT r.recorded_at, l.recorded_at, s.created_at, n.computed_at, r.occurred_at "
                "FROM records r JOIN ledger l ON l.seq = r.id "
                "JOIN subjects s ON s.id = r.subject_id "
                "JOIN snapshots n ON n.subject_id = s.id LIMIT 1"
            ).fetchone()
        assert texts[:4] == (written(now),) * 4
        assert texts[4] == rec.occurred_at.isoformat()
