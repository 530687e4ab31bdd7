"""File import: JSON Lines, CSV and Parquet; rejects with line numbers; idempotent, resumable."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from chengxin.domain.policy import Policy
from chengxin.service.clock import FixedClock
from chengxin.service.importer import CSV_COLUMNS, ImportError_, import_file
from chengxin.service.policies import activate, add_policy, read_policy_source
from chengxin.store import ledger
from chengxin.store.db import transaction
from chengxin.store.schema import records, snapshots

Rows = Callable[..., Sequence[Any]]


def write_jsonl(path: Path, lines: Sequence[dict[str, Any] | bytes | str]) -> Path:
    with path.open("wb") as fh:
        for item in lines:
            if isinstance(item, bytes):
                fh.write(item)
            elif isinstance(item, str):
                fh.write(item.encode())
            else:
                fh.write(json.dumps(item, ensure_ascii=False).encode())
            fh.write(b"\n")
    return path


def flat(line: dict[str, Any]) -> dict[str, Any]:
    """A record line in the flattened CSV/Parquet form."""
    out: dict[str, Any] = {c: None for c in CSV_COLUMNS}
    for key, value in line.items():
        if key == "subject":
            for k, v in value.items():
                out[f"subject.{k}"] = v
        elif key == "attributes":
            out["attributes"] = json.dumps(value)
        else:
            out[key] = value
    return out


def write_csv(path: Path, lines: Sequence[dict[str, Any]], encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for line in lines:
            writer.writerow(flat(line))
    return path


def rejects_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def run_import(engine: Engine, policy: Policy, clock: FixedClock) -> Callable[..., Any]:
    def run(path: Path, **kw: Any) -> Any:
        return import_file(engine, path, clock=clock, **kw)

    return run


@pytest.fixture
def good(record_line: Any, rid: Callable[[int], str]) -> Callable[[int], dict[str, Any]]:
    """``good(n)``: a valid line for person n."""

    def make(n: int) -> dict[str, Any]:
        return record_line(rid=rid(n), ref=f"exec-{n}")

    return make


def test_jsonl_good_lines_land_and_bad_ones_go_to_the_rejects_file(
    run_import: Any, good: Any, tmp_path: Path, rows: Rows
) -> None:
    feed = write_jsonl(
        tmp_path / "feed.jsonl",
        [
            good(1),
            "",  # blank lines are skipped but still counted
            "{not json",
            "[1, 2]",
            good(2) | {"occurred_at": "2030-01-01"},
            b'{"provider": "court", "ref": "bad-\xff"}',
            good(3),
            good(4) | {"attributes": {"amount_cny": 10**20}},
        ],
    )
    summary = run_import(feed, chunk_size=3)
    assert (summary.lines, summary.accepted, summary.rejected, summary.duplicates) == (7, 2, 5, 0)
    assert summary.chunks == 3
    assert summary.rejects_file == tmp_path / "feed.jsonl.rejects.jsonl"
    bad = rejects_of(summary.rejects_file)
    assert [(r["line"], r["code"]) for r in bad] == [
        (3, "bad_json"),
        (4, "bad_json"),
        (5, "future_date"),
        (6, "bad_encoding"),
        (8, "bad_attribute"),
    ]
    assert bad[2]["field"] == "occurred_at" and bad[2]["ref"] == "exec-2"
    assert "0xff" in bad[3]["message"]
    assert sorted(r.ref for r in rows(records)) == ["exec-1", "exec-3"]


def test_a_line_of_invalid_utf8_is_refused_alone(
    run_import: Any, good: Any, tmp_path: Path, rows: Rows
) -> None:
    latin1 = json.dumps(good(2) | {"name": "Zoë"}, ensure_ascii=False).encode("latin-1")
    feed = write_jsonl(tmp_path / "feed.jsonl", [good(1), latin1, good(3)])
    summary = run_import(feed, rejects=tmp_path / "bad.jsonl")
    assert (summary.accepted, summary.rejected) == (2, 1)
    (bad,) = rejects_of(tmp_path / "bad.jsonl")
    assert (bad["line"], bad["code"]) == (2, "bad_encoding")
    assert len(rows(records)) == 2


def test_a_utf8_bom_is_accepted(run_import: Any, good: Any, tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(good(1)).encode() + b"\n")
    assert run_import(path).accepted == 1


def test_csv_good_rows_land_and_bad_rows_are_numbered(
    run_import: Any, good: Any, tmp_path: Path, rows: Rows
) -> None:
    bad_id = good(2) | {"subject": good(2)["subject"] | {"id": "110105197001010000"}}
    feed = write_csv(
        tmp_path / "feed.csv",
        [good(1) | {"subject": good(1)["subject"] | {"name": "张三"}}, bad_id, good(3), good(4)],
    )
    lines = feed.read_text(encoding="utf-8").splitlines()
    assert '"{""amount_cny"": 250000}"' in lines[3]
    lines[3] = lines[3].replace('"{""amount_cny"": 250000}"', '"{amount_cny: 250000"')
    lines[4] += ",surplus"
    feed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = run_import(feed)
    assert (summary.lines, summary.accepted, summary.rejected) == (4, 1, 3)
    bad = rejects_of(summary.rejects_file)
    assert [(r["line"], r["code"], r["field"]) for r in bad] == [
        (3, "identifier.bad_check_character", "subject.id"),
        (4, "bad_json", "attributes"),
        (5, "bad_csv", None),
    ]
    (rec,) = rows(records)
    assert (rec.ref, json.loads(rec.attributes)) == ("exec-1", {"amount_cny": 250_000})


def test_a_csv_with_an_unknown_column_is_refused_whole(
    run_import: Any, good: Any, tmp_path: Path, state: Any
) -> None:
    feed = write_csv(tmp_path / "feed.csv", [good(1)])
    body = feed.read_text(encoding="utf-8").replace("evidence", "evidense", 1)
    feed.write_text(body, encoding="utf-8")
    before = state()
    with pytest.raises(ImportError_, match="evidense"):
        run_import(feed)
    assert state() == before


def test_a_gbk_csv_is_refused_whole_naming_line_and_byte(
    run_import: Any, good: Any, tmp_path: Path, state: Any
) -> None:
    lines = [good(1), good(2), good(3) | {"subject": good(3)["subject"] | {"name": "张三"}}]
    feed = write_csv(tmp_path / "gbk.csv", lines, encoding="gbk")
    first_bad = "张".encode("gbk")[0]
    before = state()
    with pytest.raises(ImportError_) as err:
        run_import(feed)
    message = str(err.value)
    assert "not UTF-8" in message
    assert "line 4" in message  # header + two ASCII rows
    assert f"0x{first_bad:02x}" in message
    assert "iconv" in message
    assert state() == before


def _parquet(path: Path, lines: Sequence[dict[str, Any]], occurred: pa.DataType) -> Path:
    cols = {c: [flat(x)[c] for x in lines] for c in CSV_COLUMNS}
    fields = [pa.field(c, occurred if c == "occurred_at" else pa.string()) for c in CSV_COLUMNS]
    if occurred != pa.string():
        to_py: Callable[[str], Any] = (
            date.fromisoformat if occurred == pa.date32() else datetime.fromisoformat
        )
        cols["occurred_at"] = [None if v is None else to_py(v) for v in cols["occurred_at"]]
    pq.write_table(pa.table(cols, schema=pa.schema(fields)), path)
    return path


@pytest.mark.parametrize(
    "occurred",
    [pa.string(), pa.date32(), pa.timestamp("us")],
    ids=["string", "date32", "timestamp"],
)
def test_parquet_good_rows_land_and_bad_rows_are_numbered(
    occurred: pa.DataType, run_import: Any, good: Any, tmp_path: Path, rows: Rows
) -> None:
    bad_attr = good(2) | {"attributes": {"amount_cny": "lots"}}
    future = good(3) | {"occurred_at": "2027-01-01"}
    feed = _parquet(tmp_path / "feed.parquet", [good(1), bad_attr, future, good(4)], occurred)
    summary = run_import(feed)
    assert (summary.lines, summary.accepted, summary.rejected) == (4, 2, 2)
    bad = rejects_of(summary.rejects_file)
    assert [(r["line"], r["code"], r["field"]) for r in bad] == [
        (2, "bad_attribute", "attributes.amount_cny"),
        (3, "future_date", "occurred_at"),
    ]
    assert sorted(r.ref for r in rows(records)) == ["exec-1", "exec-4"]
    assert {str(r.occurred_at) for r in rows(records)} == {"2026-03-01"}


def test_a_corrupt_parquet_file_is_refused(run_import: Any, tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ImportError_, match="not a readable Parquet file"):
        run_import(path)


@pytest.mark.parametrize("name", ["feed.xlsx", "missing.jsonl"])
def test_unknown_format_or_missing_file_is_refused(
    name: str, run_import: Any, tmp_path: Path
) -> None:
    path = tmp_path / name
    if name.endswith(".xlsx"):
        path.write_bytes(b"PK")
    with pytest.raises(ImportError_):
        run_import(path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_reimporting_a_file_adds_nothing(
    fmt: str, run_import: Any, good: Any, tmp_path: Path, state: Any
) -> None:
    lines = [good(n) for n in range(1, 8)]
    lines.append(good(8) | {"occurred_at": "2999-01-01"})
    path = tmp_path / f"feed.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, lines)
    elif fmt == "csv":
        write_csv(path, lines)
    else:
        _parquet(path, lines, pa.string())
    first = run_import(path, chunk_size=3)
    assert (first.accepted, first.rejected) == (7, 1)
    before = state()
    again = run_import(path, chunk_size=3)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 7, 1)
    assert again.rescore.subjects == 0
    assert state() == before


@pytest.fixture
def failing_insert(engine: Engine, backend: str) -> Iterator[Callable[[str], None]]:
    """``fail_on(ref)``: the database itself refuses to insert the record with that ref.

    A trigger, not a mock: the failure comes from inside the chunk's
    transaction, after its ledger entries were written.
    """
    installed: list[str] = []

    def fail_on(ref: str) -> None:
        with transaction(engine) as session:
            if backend == "sqlite":
                session.execute(
                    text(
                        "CREATE TRIGGER boom BEFORE INSERT ON records "
                        f"WHEN NEW.ref = '{ref}' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                    )
                )
            else:
                session.execute(
                    text(
                        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                        f"IF NEW.ref = '{ref}' THEN RAISE EXCEPTION 'disk on fire'; END IF; "
                        "RETURN NEW; END $$"
                    )
                )
                session.execute(
                    text(
                        "CREATE TRIGGER boom BEFORE INSERT ON records "
                        "FOR EACH ROW EXECUTE FUNCTION boom()"
                    )
                )
        installed.append(ref)

    def remove() -> None:
        with transaction(engine) as session:
            if backend == "sqlite":
                session.execute(text("DROP TRIGGER IF EXISTS boom"))
            else:
                session.execute(text("DROP TRIGGER IF EXISTS boom ON records"))
                session.execute(text("DROP FUNCTION IF EXISTS boom()"))

    fail_on.remove = remove  # type: ignore[attr-defined]
    yield fail_on
    if installed:
        remove()


def test_an_interrupted_import_keeps_whole_chunks_and_a_rerun_completes_it(
    run_import: Any,
    good: Any,
    tmp_path: Path,
    engine: Engine,
    rows: Rows,
    failing_insert: Any,
) -> None:
    feed = write_jsonl(tmp_path / "feed.jsonl", [good(n) for n in range(1, 10)])
    failing_insert("exec-6")  # the third chunk of two
    with pytest.raises(DBAPIError, match="disk on fire"):
        run_import(feed, chunk_size=2)
    # Chunks 1 and 2 committed; chunk 3 left nothing, not even its ledger entries.
    assert sorted(r.ref for r in rows(records)) == [f"exec-{n}" for n in range(1, 5)]
    assert len(rows(snapshots)) == 4
    with transaction(engine) as session:
        res = ledger.verify(session)
    assert res.ok and res.entries == 1 + 4
    failing_insert.remove()
    summary = run_import(feed, chunk_size=2)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (5, 4, 0)
    assert len(rows(records)) == 9
    with transaction(engine) as session:
        res = ledger.verify(session)
    assert res.ok and res.entries == 1 + 9


def test_import_uses_the_policy_in_force_today(
    engine: Engine, policy: Policy, clock: FixedClock, record_line: Any, tmp_path: Path
) -> None:
    # A later version, effective next year, requires an attribute today's does not.
    text_, _ = read_policy_source("national")
    later = text_.replace('version: "2026.1"', 'version: "2027.1"').replace(
        "      hours: {type: int, required: true}",
        "      hours: {type: int, required: true}\n      organiser: {type: str, required: true}",
    )
    with transaction(engine) as session:
        stored = add_policy(session, text=later, source="later.yaml", now=clock.now())
        activate(
            session,
            policy_id=stored.id,
            actor="tests",
            reason="next year",
            now=clock.now(),
            effective_from=date(2027, 1, 1),
        )
    line = record_line(type="societal.volunteering", attributes={"hours": 4})
    feed = write_jsonl(tmp_path / "feed.jsonl", [line])
    summary = import_file(engine, feed, clock=clock)
    assert (summary.accepted, summary.rejected) == (1, 0)
