"""File import: JSON Lines, CSV or Parquet, in chunks, with a rejects file.

Each chunk is one transaction (ledger, records, and the stale mark on every
subject it touched), so an interrupted import keeps every chunk it finished
and re-running it adds only what is missing: ``(provider, ref)`` makes every
line idempotent. Bad lines go to the rejects file with their line number,
field and reason while good lines land. When the last chunk is in, the
stale subjects are rescored (:func:`chengxin.service.refresh.refresh_stale`);
an import that dies before that leaves them stale, never wrong.

Checking lines is pure work: a large file is checked on worker processes
(:class:`chengxin.service.checking.CheckerPool`) a few chunks ahead of the
database work, which stays in this process, in file order.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, select

from chengxin.domain.records import RecordRejected
from chengxin.service.checking import (
    CheckedLines,
    CheckerPool,
    Line,
    LineResult,
    RawLines,
    check_chunk,
    default_workers,
    gc_paused,
    jsonl_chunks,
    parse_jsonl,
)
from chengxin.service.clock import Clock
from chengxin.service.ingest import store_checked
from chengxin.service.policies import active_policy
from chengxin.service.refresh import preload_engine, refresh_stale
from chengxin.service.rescore import RescoreSummary
from chengxin.store import repo
from chengxin.store.db import transaction
from chengxin.store.schema import policies

Format = Literal["jsonl", "csv", "parquet"]
CSV_COLUMNS = (
    "provider",
    "ref",
    "subject.scheme",
    "subject.id",
    "subject.kind",
    "subject.name",
    "type",
    "occurred_at",
    "attributes",
    "evidence",
    "retracts",
    "amends",
    "reason",
)
POOL_MIN_BYTES = 8 << 20
"""Files smaller than this are checked in process unless ``workers`` is given."""
GROWING_TABLES = ("ledger", "records", "subjects", "snapshots")
KNOWN_SUBJECTS_MAX = 2_000_000
"""Subjects whose ids an import remembers across chunks (about 250 bytes each)."""


class ImportError_(ValueError):
    """The file as a whole cannot be read (nothing was stored from it)."""


def detect_format(path: Path) -> Format:
    """The format a file's name says it has."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise ImportError_(f"cannot tell the format of {path.name}: use .jsonl, .csv or .parquet")


def _jsonl(path: Path) -> Iterator[Line]:
    with path.open("rb") as fh:
        for chunk in jsonl_chunks(fh, 10_000):
            yield from parse_jsonl(chunk)


def _flat_to_record(row: Mapping[str, Any]) -> Mapping[str, Any] | RecordRejected:
    out: dict[str, Any] = {}
    subject: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or value == "":
            continue
        if key.startswith("subject."):
            subject[key.removeprefix("subject.")] = value
        elif key == "attributes":
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    return RecordRejected(
                        "bad_json", f"'attributes' is not valid JSON: {exc.msg}", "attributes"
                    )
            out["attributes"] = value
        else:
            out[key] = value
    if subject:
        out["subject"] = subject
    return out


def _check_header(columns: list[str], path: Path) -> None:
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        raise ImportError_(
            f"{path.name}: unknown column(s) {', '.join(unknown)}; "
            f"expected {', '.join(CSV_COLUMNS)}"
        )


def _csv(path: Path) -> Iterator[Line]:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportError_(
            f"{path.name} is not UTF-8: byte 0x{data[exc.start]:02x} on line {line}; "
            "re-encode it (for example `iconv -f GBK -t UTF-8`)"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    _check_header(list(reader.fieldnames or []), path)
    for row in reader:
        number = reader.line_num
        if None in row:
            yield number, RecordRejected("bad_csv", "row has more fields than the header")
            continue
        yield number, _flat_to_record(row)


def _parquet(path: Path) -> Iterator[Line]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ImportError_(f"{path.name} is not a readable Parquet file: {exc}") from None
    _check_header(list(pf.schema_arrow.names), path)
    number = 0
    for batch in pf.iter_batches(batch_size=20_000):
        for row in batch.to_pylist():
            number += 1
            yield number, _flat_to_record(row)


def read_lines(path: Path, fmt: Format | None = None) -> Iterator[Line]:
    """The lines of a feed file, numbered, each a dict or the reason it could not be read."""
    if not path.exists():
        raise ImportError_(f"{path} does not exist")
    kind = fmt or detect_format(path)
    return {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[kind](path)


@dataclass
class ImportSummary:
    """What an import did."""

    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    chunks: int = 0
    rescore: RescoreSummary = field(default_factory=RescoreSummary)
    rejects_file: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "lines": self.lines,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "chunks": self.chunks,
            "rescored_subjects": self.rescore.subjects,
            "grade_changes": self.rescore.grade_changes,
            "list_entries": self.rescore.entered,
            "list_exits": self.rescore.left,
            "rejects_file": str(self.rejects_file) if self.rejects_file else None,
        }


def _reject_line(r: LineResult) -> str:
    return json.dumps(
        {"line": r.line, "ref": r.ref, "code": r.code, "field": r.field, "message": r.message},
        ensure_ascii=False,
    )


def _batched(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    it = iter(lines)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _chunks(path: Path, fmt: Format | None, size: int) -> Iterator[RawLines | Sequence[Line]]:
    """The file's lines, ``size`` at a time: JSON Lines raw (parsed where it is checked)."""
    if not path.exists():
        raise ImportError_(f"{path} does not exist")
    if (fmt or detect_format(path)) == "jsonl":
        with path.open("rb") as fh:
            yield from jsonl_chunks(fh, size)
    else:
        yield from _batched(read_lines(path, fmt), size)


def import_file(
    engine: Engine,
    path: Path,
    *,
    clock: Clock,
    fmt: Format | None = None,
    chunk_size: int = 20_000,
    rejects: Path | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ImportSummary:
    """Import a feed file chunk by chunk, each committed on its own; then rescore.

    ``workers`` processes check the lines (default: one per core for a file of
    ``POOL_MIN_BYTES`` or more, else none); ``1`` checks them in this process.
    """
    summary = ImportSummary()
    rejects_path = rejects or path.with_name(path.name + ".rejects.jsonl")
    reject_fh = None
    today = clock.today()
    chunks = _chunks(path, fmt, chunk_size)
    try:
        first = next(chunks, None)  # reads the header: a file refused whole stores nothing
        with transaction(engine) as session:
            # The policy in force today, not one activated to start later.
            stored = active_policy(session, on=today)
            source, name = session.execute(
                select(policies.c.source, policies.c.name).where(policies.c.id == stored.id)
            ).one()
        policy = stored.policy
        if workers is None:
            workers = default_workers() if path.stat().st_size >= POOL_MIN_BYTES else 1

        known: dict[tuple[str, str], tuple[int, str]] = {}

        def store(batch: CheckedLines) -> None:
            nonlocal reject_fh
            with transaction(engine) as session:
                report = store_checked(
                    session,
                    policy=policy,
                    batch=batch,
                    now=clock.now(),
                    today=today,
                    rescore=False,
                    line_results=False,
                    known_subjects=known,
                )
            if len(known) < KNOWN_SUBJECTS_MAX:  # committed: these ids are for good
                known.update(report.subjects)
            summary.chunks += 1
            if summary.chunks & (summary.chunks - 1) == 0:  # chunks 1, 2, 4, 8...: tables grew
                with transaction(engine) as session:
                    repo.update_statistics(session, GROWING_TABLES)
            summary.lines += batch.lines
            summary.accepted += report.count("accepted")
            summary.duplicates += report.count("duplicate")
            bad = report.rejected
            summary.rejected += len(bad)
            if bad:
                if reject_fh is None:
                    reject_fh = rejects_path.open("w", encoding="utf-8")
                    summary.rejects_file = rejects_path
                reject_fh.write("".join(_reject_line(r) + "\n" for r in bad))
                reject_fh.flush()
            if progress is not None:
                progress(batch.lines)

        every = itertools.chain([] if first is None else [first], chunks)
        if workers > 1 and first is not None:
            with (
                gc_paused(),
                CheckerPool(
                    source=source,
                    label=f"{name} (stored)",
                    content_hash=policy.content_hash,
                    today=today,
                    workers=workers,
                ) as pool,
            ):
                # A large file ends in a large refresh: import its engine while this
                # process mostly waits for the workers' first chunks (after they forked).
                warm = threading.Thread(target=preload_engine, name="preload-engine")
                warm.start()
                try:
                    for batch in pool.map(every):
                        store(batch)
                finally:
                    warm.join()
        else:
            with gc_paused():
                for chunk in every:
                    store(check_chunk(chunk, policy, today))
    finally:
        if reject_fh is not None:
            reject_fh.close()
    with gc_paused():
        summary.rescore.add(refresh_stale(engine, clock=clock))
    return summary
