"""File import: JSON Lines, CSV or Parquet, in chunks, with a rejects file.

Each chunk is one transaction (ledger, records, scores), so an interrupted
import keeps every chunk it finished and re-running it adds only what is
missing: ``(provider, ref)`` makes every line idempotent. Bad lines go to the
rejects file with their line number, field and reason while good lines land.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine

from chengxin.domain.records import RecordRejected
from chengxin.service.clock import Clock
from chengxin.service.ingest import LineResult, ingest_batch
from chengxin.service.policies import active_policy
from chengxin.service.rescore import RescoreSummary
from chengxin.store.db import transaction

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
Line = tuple[int, Mapping[str, Any] | RecordRejected]


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
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    number,
                    RecordRejected(
                        "bad_encoding",
                        f"line is not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}",
                    ),
                )
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield (
                    number,
                    RecordRejected("bad_json", f"not valid JSON: {exc.msg} at column {exc.colno}"),
                )
                continue
            if not isinstance(obj, dict):
                yield number, RecordRejected("bad_json", "each line must be a JSON object")
                continue
            yield number, obj


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


def import_file(
    engine: Engine,
    path: Path,
    *,
    clock: Clock,
    fmt: Format | None = None,
    chunk_size: int = 20_000,
    rejects: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import a feed file chunk by chunk; each chunk commits on its own."""
    lines = read_lines(path, fmt)
    summary = ImportSummary()
    rejects_path = rejects or path.with_name(path.name + ".rejects.jsonl")
    reject_fh = None
    try:
        with transaction(engine) as session:
            # The policy in force today, not one activated to start later.
            policy = active_policy(session, on=clock.today()).policy
        batch: list[Line] = []

        def flush() -> None:
            nonlocal reject_fh
            with transaction(engine) as session:
                report = ingest_batch(
                    session, policy=policy, lines=batch, now=clock.now(), today=clock.today()
                )
            summary.chunks += 1
            summary.lines += len(batch)
            summary.accepted += report.count("accepted")
            summary.duplicates += report.count("duplicate")
            summary.rescore.add(report.rescore)
            bad = report.rejected
            summary.rejected += len(bad)
            if bad:
                if reject_fh is None:
                    reject_fh = rejects_path.open("w", encoding="utf-8")
                    summary.rejects_file = rejects_path
                reject_fh.write("".join(_reject_line(r) + "\n" for r in bad))
                reject_fh.flush()
            if progress is not None:
                progress(len(batch))
            batch.clear()

        for item in lines:
            batch.append(item)
            if len(batch) >= chunk_size:
                flush()
        if batch:
            flush()
    finally:
        if reject_fh is not None:
            reject_fh.close()
    return summary
