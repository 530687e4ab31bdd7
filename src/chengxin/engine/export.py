"""The ledger's records as partitioned Parquet with a manifest, and batch results in and out.

An export is what a batch engine on another machine scores: a directory that
says exactly which ledger state it holds, so that results can be tied back
to it. Its layout::

    <out>/manifest.json                            written last; see Manifest
    <out>/policy.json                              the policy, canonical JSON
    <out>/subjects/part-0.parquet                  subject_id, kind, region
    <out>/records/domain=<d>/month=<YYYY-MM>/part-<i>.parquet

Records are in the batch plan's input contract (:mod:`chengxin.engine.plan`:
``record_id, subject_id, type, occurred_at, status`` and one typed
``a_<attribute>`` column per attribute the policy declares), partitioned by
their domain and the month of ``occurred_at`` (Hive style, so DuckDB, Spark
and pyarrow read the partition values back as columns). Every status is
exported; the plan decides which count. Identifiers and names are not: a
batch engine needs neither (least disclosure, hard line 6).

The manifest holds the ledger head (sequence number and entry hash) the rows
were read under, in one read transaction; the policy's label and content
hash; the scoring date; rows per partition; and every file's size, rows and
sha256. :func:`verify_export` refuses a directory that differs from its
manifest in any of them. An export is written to a sibling directory and
renamed into place, so a crash leaves no half export under ``<out>``.

Results are written by a batch job (:mod:`chengxin.engine.spark_job`, or
:func:`rescore_export_duckdb`) under ``<out>/results`` unless told otherwise:
``scores/*.parquet``, ``memberships/*.parquet`` and, written last,
``_SUCCESS.json``, which names the export's ledger head, policy hash, date and
manifest hash and lists the result files with their rows. A job removes an
old ``_SUCCESS.json`` before it writes anything, so results without one are
a job that died or is still running, and :func:`read_results` refuses them.

Exports are written to the local disk; they and results are read through
``pyarrow.fs`` (:class:`Location`), so a job on a cluster can read an export
copied to an object store (``s3a://``, ``gs://``) as Spark names it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.json as pj
import pyarrow.parquet as pq
from sqlalchemy import Engine

from chengxin.domain.policy import Policy
from chengxin.engine.duckdb_backend import MEMBERSHIPS_SCHEMA, SCORES_SCHEMA, BatchResult
from chengxin.engine.plan import RECORD_COLUMNS, attribute_columns
from chengxin.store.ledger import GENESIS, Head

__all__ = [
    "ARROW_TYPES",
    "EXPORT_FORMAT",
    "PARTITION_SCHEMA",
    "RESULTS_FORMAT",
    "ROWS_PER_FILE",
    "ROW_GROUP_MAX",
    "ROW_GROUP_MIN",
    "SUBJECTS_SCHEMA",
    "SUCCESS",
    "Export",
    "ExportError",
    "ExportMismatch",
    "FileEntry",
    "Location",
    "Manifest",
    "Partition",
    "Results",
    "ResultsError",
    "StoreSnapshot",
    "clear_success",
    "export_parquet",
    "export_schema",
    "finish_results",
    "read_results",
    "rescore_export_duckdb",
    "store_snapshot",
    "verify_export",
    "write_results",
]

EXPORT_FORMAT = "chengxin-export/1"
"""The ``format`` of a manifest this version writes and reads."""
RESULTS_FORMAT = "chengxin-results/1"
"""The ``format`` of a ``_SUCCESS.json`` this version writes and reads."""
SUCCESS = "_SUCCESS.json"
"""The file a batch job writes last, naming what it scored and what it wrote."""

ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
}
"""Arrow types of the plan's column type names."""

PARTITION_SCHEMA = pa.schema([("domain", pa.string()), ("month", pa.string())])
"""The partition columns of exported records (directory names, not file columns)."""

SUBJECTS_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("kind", pa.string()), ("region", pa.string())]
)
"""The columns of the exported ``subjects``: the plan's two and the region (for breakdowns)."""

ROWS_PER_FILE = 4_000_000
"""Rows per Parquet file of a partition, at most."""
ROW_GROUP_MIN = 1 << 16
"""Rows a partition's writer gathers before it writes a row group (the last may be smaller)."""
ROW_GROUP_MAX = 1 << 20
"""Rows per row group, at most."""
_READ_BATCH = 250_000
_HASH_BLOCK = 1 << 20


class ExportError(ValueError):
    """An export cannot be written or read."""


class ExportMismatch(ExportError):
    """An export's files do not match its manifest."""


class ResultsError(ValueError):
    """Batch results are missing, unfinished, or do not match their ``_SUCCESS.json``."""


def export_schema(attributes: Mapping[str, str]) -> pa.Schema:
    """The Arrow schema of exported records: the plan's columns, then domain and month."""
    columns = {**RECORD_COLUMNS, **attributes}
    fields = [pa.field(name, ARROW_TYPES[type_]) for name, type_ in columns.items()]
    return pa.schema(fields + list(PARTITION_SCHEMA))


# -- where files live ------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A directory on the local disk or in an object store, as pyarrow and Spark name it."""

    fs: Any
    root: str
    uri: str

    @classmethod
    def of(cls, where: str | Path) -> Location:
        """A local path, ``file://…``, or an object-store URI (``s3a://`` is read as ``s3://``)."""
        text = str(where)
        if "://" in text and not text.startswith("file://"):
            scheme, rest = text.split("://", 1)
            fs, root = pafs.FileSystem.from_uri(
                ("s3" if scheme == "s3a" else scheme) + "://" + rest
            )
            return cls(fs, root.rstrip("/"), text.rstrip("/"))
        local = os.path.abspath(text.removeprefix("file://"))
        return cls(pafs.LocalFileSystem(), local, local)

    def child(self, rel: str) -> Location:
        """A directory under this one."""
        return Location(self.fs, self.path(rel), f"{self.uri}/{rel}")

    def path(self, rel: str = "") -> str:
        """The pyarrow path of ``rel``."""
        return f"{self.root}/{rel}" if rel else self.root

    def spark_path(self, rel: str = "") -> str:
        """The path of ``rel`` as Spark reads it."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def exists(self, rel: str = "") -> bool:
        """Whether a file or directory is there."""
        return bool(self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound)

    def files(self, rel: str) -> list[str]:
        """Every file under ``rel`` (recursively), relative to this directory, sorted."""
        selector = pafs.FileSelector(self.path(rel), recursive=True, allow_not_found=True)
        skip = len(self.root) + 1
        return sorted(
            info.path[skip:]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def size(self, rel: str) -> int:
        """A file's size in bytes."""
        return int(self.fs.get_file_info(self.path(rel)).size)

    def sha256(self, rel: str) -> str:
        """A file's sha256, read in blocks."""
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.path(rel)) as stream:
            while block := stream.read(_HASH_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def parquet_rows(self, rel: str) -> int:
        """Rows in a Parquet file, from its footer."""
        with self.fs.open_input_file(self.path(rel)) as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)

    def read_text(self, rel: str) -> str:
        """A text file's contents."""
        with self.fs.open_input_stream(self.path(rel)) as stream:
            return bytes(stream.read()).decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        """Write a text file (object stores write it whole on close)."""
        with self.fs.open_output_stream(self.path(rel)) as stream:
            stream.write(text.encode("utf-8"))

    def delete(self, rel: str) -> None:
        """Remove a file or directory if it is there."""
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(rel))


def _data_files(where: Location, rel: str) -> list[str]:
    """The files under ``rel`` that readers read: Spark's markers and checksums, and any
    other name starting with ``_`` or ``.``, aside (Spark and pyarrow skip those too)."""
    return [p for p in where.files(rel) if not any(s[:1] in "._" for s in p.split("/"))]


def _parquet_parts(where: Location, rel: str) -> list[str]:
    """The Parquet files under ``rel``."""
    return [p for p in _data_files(where, rel) if p.endswith(".parquet")]


# -- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file: its path relative to its root (``/``-separated), bytes, rows and sha256."""

    path: str
    bytes: int
    rows: int | None = None
    sha256: str | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON form (rows and sha256 only where known)."""
        out: dict[str, Any] = {"path": self.path, "bytes": self.bytes}
        if self.rows is not None:
            out["rows"] = self.rows
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileEntry:
        """Read the JSON form."""
        rows, sha = data.get("rows"), data.get("sha256")
        return cls(
            path=str(data["path"]),
            bytes=int(data["bytes"]),
            rows=None if rows is None else int(rows),
            sha256=None if sha is None else str(sha),
        )


@dataclass(frozen=True)
class Partition:
    """The records of one domain and month."""

    domain: str
    month: str
    rows: int
    files: tuple[FileEntry, ...]


@dataclass(frozen=True)
class Manifest:
    """What an export holds and which ledger state it was read under."""

    head: Head
    policy_label: str
    policy_hash: str
    as_of: date
    exported_at: datetime
    columns: dict[str, str]
    partitions: tuple[Partition, ...]
    subjects_rows: int
    subject_files: tuple[FileEntry, ...]
    policy_file: FileEntry
    format: str = EXPORT_FORMAT

    @property
    def records_rows(self) -> int:
        """Records in every partition."""
        return sum(p.rows for p in self.partitions)

    @property
    def attributes(self) -> dict[str, str]:
        """The ``a_<attribute>`` columns and their types."""
        return {k: v for k, v in self.columns.items() if k not in RECORD_COLUMNS}

    def files(self) -> list[FileEntry]:
        """Every file the manifest lists."""
        return [
            self.policy_file,
            *self.subject_files,
            *(f for p in self.partitions for f in p.files),
        ]

    def schema(self) -> pa.Schema:
        """The Arrow schema of the records, partition columns included."""
        return export_schema(self.attributes)

    def as_json(self) -> dict[str, Any]:
        """The manifest as written to ``manifest.json``."""
        return {
            "format": self.format,
            "exported_at": self.exported_at.isoformat(),
            "as_of": self.as_of.isoformat(),
            "ledger_head": {"seq": self.head.seq, "entry_hash": self.head.entry_hash},
            "policy": {
                "label": self.policy_label,
                "content_hash": self.policy_hash,
                "file": self.policy_file.as_json(),
            },
            "records": {
                "rows": self.records_rows,
                "columns": self.columns,
                "partitioned_by": PARTITION_SCHEMA.names,
                "partitions": [
                    {
                        "domain": p.domain,
                        "month": p.month,
                        "rows": p.rows,
                        "files": [f.as_json() for f in p.files],
                    }
                    for p in self.partitions
                ],
            },
            "subjects": {
                "rows": self.subjects_rows,
                "files": [f.as_json() for f in self.subject_files],
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        """Read ``manifest.json``: a wrong format or a missing key is an :class:`ExportError`."""
        if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else None
            raise ExportError(
                f"the manifest's format is {found!r}; this chengxin reads {EXPORT_FORMAT!r}"
            )
        try:
            records = data["records"]
            manifest = cls(
                head=Head(int(data["ledger_head"]["seq"]), str(data["ledger_head"]["entry_hash"])),
                policy_label=str(data["policy"]["label"]),
                policy_hash=str(data["policy"]["content_hash"]),
                as_of=date.fromisoformat(data["as_of"]),
                exported_at=datetime.fromisoformat(data["exported_at"]),
                columns={str(k): str(v) for k, v in records["columns"].items()},
                partitions=tuple(
                    Partition(
                        domain=str(p["domain"]),
                        month=str(p["month"]),
                        rows=int(p["rows"]),
                        files=tuple(FileEntry.from_json(f) for f in p["files"]),
                    )
                    for p in records["partitions"]
                ),
                subjects_rows=int(data["subjects"]["rows"]),
                subject_files=tuple(FileEntry.from_json(f) for f in data["subjects"]["files"]),
                policy_file=FileEntry.from_json(data["policy"]["file"]),
            )
            stated = int(records["rows"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExportError(f"the manifest is malformed: {type(exc).__name__}: {exc}") from None
        unknown = sorted(set(manifest.columns.values()) - set(ARROW_TYPES))
        if unknown:
            raise ExportError(f"the manifest names unknown column types {unknown}")
        if manifest.records_rows != stated:
            raise ExportMismatch(
                f"the manifest says {stated} records but its partitions hold "
                f"{manifest.records_rows}"
            )
        return manifest


# -- reading the store ------------------------------------------------------------------------


class _SqliteRows:
    """Python's own ``sqlite3`` with the two ADBC cursor methods :class:`StoreSnapshot` uses.

    Not ADBC's SQLite driver: it links a second copy of the SQLite library,
    and two copies in one process do not see each other's POSIX locks. When
    the ADBC connection closed, its copy took itself for the file's last
    user, checkpointed and removed the WAL and shared-memory files under the
    process's other connections, whose next write failed with "disk I/O
    error". SQLite stores are small; rows are turned into Arrow batches here.
    """

    def __init__(self, path: str) -> None:
        import sqlite3

        # isolation_level=None: no implicit transactions; StoreSnapshot begins its own.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._cur = self._conn.cursor()
        self._open = True

    def cursor(self) -> _SqliteRows:
        """This object: one cursor a connection is all a snapshot needs."""
        return self

    def execute(self, sql: str) -> None:
        """Run one statement."""
        self._cur.execute(sql)

    def fetchone(self) -> Any:
        """The next row, or None."""
        return self._cur.fetchone()

    def fetch_record_batch(self) -> Iterator[pa.RecordBatch]:
        """The remaining rows as Arrow batches of :data:`_READ_BATCH` rows."""
        names = [d[0] for d in self._cur.description]
        while rows := self._cur.fetchmany(_READ_BATCH):
            columns = [pa.array(column) for column in zip(*rows, strict=True)]
            yield pa.RecordBatch.from_arrays(columns, names=names)

    def close(self) -> None:
        """Close the cursor and the connection (a second call does nothing)."""
        if self._open:
            self._open = False
            self._cur.close()
            self._conn.close()


def _adbc_connect(engine: Engine) -> tuple[Any, str]:
    """A connection in autocommit mode (transactions are begun by hand), and its dialect.

    ADBC for PostgreSQL; Python's ``sqlite3`` for SQLite (see :class:`_SqliteRows`).
    """
    url = engine.url
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ExportError("an in-memory SQLite database cannot be read from another connection")
        return _SqliteRows(url.database), dialect
    if dialect == "postgresql":
        import adbc_driver_postgresql.dbapi as pg_adbc  # type: ignore[import-untyped]

        uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return pg_adbc.connect(uri, autocommit=True), dialect
    raise ExportError(f"chengxin reads SQLite and PostgreSQL, not {dialect}")  # pragma: no cover


class StoreSnapshot:
    """One read transaction on the store: its ledger head, records and subjects, as Arrow."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        cursor.execute("SELECT seq, entry_hash FROM ledger_head WHERE id = 1")
        row = cursor.fetchone()
        self.head = Head(0, GENESIS) if row is None else Head(int(row[0]), str(row[1]))

    def _batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        self._cursor.execute(sql)
        yield from self._cursor.fetch_record_batch()

    def records(
        self, attributes: Mapping[str, str], *, batch_rows: int = _READ_BATCH
    ) -> Iterator[pa.RecordBatch]:
        """Every record in id order, as batches of :func:`export_schema` ``(attributes)``."""
        schema = export_schema(attributes)
        sql = (
            "SELECT id, subject_id, type, domain, occurred_at, status, attributes "
            "FROM records ORDER BY id"
        )
        pending: list[pa.RecordBatch] = []
        size = 0
        for raw in self._batches(sql):
            pending.append(raw)
            size += raw.num_rows
            if size >= batch_rows:
                yield from _contract(pa.Table.from_batches(pending), attributes, schema)
                pending, size = [], 0
        if size:
            yield from _contract(pa.Table.from_batches(pending), attributes, schema)

    def records_table(self, attributes: Mapping[str, str]) -> pa.Table:
        """Every record as one table (for backtests and tests)."""
        schema = export_schema(attributes)
        return pa.Table.from_batches(list(self.records(attributes)), schema=schema)

    def subjects(self) -> pa.Table:
        """Every subject as ``subject_id, kind, region`` (region NULL where unknown), by id."""
        # COALESCE: the SQLite driver takes a column's type from its first rows.
        sql = "SELECT id, kind, COALESCE(region, '') AS region FROM subjects ORDER BY id"
        batches = [b for b in self._batches(sql) if b.num_rows]
        if not batches:
            return SUBJECTS_SCHEMA.empty_table()
        raw = pa.Table.from_batches(batches)
        region = raw.column(2).cast(pa.string())
        region = pc.if_else(pc.equal(region, ""), pa.scalar(None, pa.string()), region)
        return pa.Table.from_arrays(
            [raw.column(0).cast(pa.int64()), raw.column(1).cast(pa.string()), region],
            schema=SUBJECTS_SCHEMA,
        )


@contextmanager
def store_snapshot(engine: Engine) -> Iterator[StoreSnapshot]:
    """A read-only, consistent view of the store (Arrow out) while the block runs.

    SQLite: one deferred read transaction (in WAL mode it keeps its snapshot
    while writers commit). PostgreSQL: REPEATABLE READ, READ ONLY. The head is
    read first, in the same transaction, so it names exactly the rows read.
    """
    conn, dialect = _adbc_connect(engine)
    cursor = conn.cursor()
    try:
        if dialect == "postgresql":
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            cursor.execute("BEGIN DEFERRED")
        try:
            yield StoreSnapshot(cursor)
        finally:
            cursor.execute("ROLLBACK")
    finally:
        cursor.close()
        conn.close()


def _attributes(texts: pa.ChunkedArray, attributes: Mapping[str, str]) -> list[pa.ChunkedArray]:
    """Typed ``a_<name>`` columns parsed from the records' JSON attribute objects."""
    if not attributes:
        return []
    # Dates are ISO text in the JSON (chengxin.domain.records); they are cast after parsing.
    wanted = pa.schema(
        [
            (name[2:], pa.string() if type_ == "date" else ARROW_TYPES[type_])
            for name, type_ in attributes.items()
        ]
    )
    # Canonical JSON escapes newlines inside strings, so the objects are one per line.
    body = "\n".join(texts.to_pylist()).encode()
    options = pj.ParseOptions(explicit_schema=wanted, unexpected_field_behavior="ignore")
    try:
        parsed = pj.read_json(io.BytesIO(body), parse_options=options)
    except pa.ArrowInvalid as exc:
        raise ExportError(
            f"a stored attribute does not have the type the policy declares ({exc}); a policy "
            "that changes an attribute's type must give it a new name"
        ) from None
    out = []
    for name, type_ in attributes.items():
        column = parsed.column(name[2:])
        out.append(column.cast(pa.date32()) if type_ == "date" else column)
    return out


def _contract(
    raw: pa.Table, attributes: Mapping[str, str], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Rows as the store gives them, as batches of the export schema."""
    occurred = raw.column("occurred_at")
    if not pa.types.is_date32(occurred.type):
        occurred = occurred.cast(pa.string()).cast(pa.date32())  # SQLite keeps ISO text
    columns = [
        raw.column("id").cast(pa.int64()),
        raw.column("subject_id").cast(pa.int64()),
        raw.column("type").cast(pa.string()),
        occurred,
        raw.column("status").cast(pa.string()),
        *_attributes(raw.column("attributes").cast(pa.string()), attributes),
        raw.column("domain").cast(pa.string()),
        pc.strftime(occurred, "%Y-%m"),
    ]
    yield from pa.Table.from_arrays(columns, schema=schema).combine_chunks().to_batches()


# -- writing and checking an export ---------------------------------------------------------


def _policy_json(policy: Policy) -> str:
    text = json.dumps(policy.model_dump(mode="json"), sort_keys=True, indent=1) + "\n"
    if Policy.model_validate_json(text).content_hash != policy.content_hash:  # pragma: no cover
        raise ExportError(f"{policy.label} does not survive a round trip through JSON")
    return text


def _partition_of(path: str) -> tuple[str, str]:
    """``(domain, month)`` of ``records/domain=<d>/month=<m>/part-….parquet``."""
    parts = path.split("/")
    if len(parts) != 4 or not parts[1].startswith("domain=") or not parts[2].startswith("month="):
        raise ExportMismatch(f"{path} is not in a records/domain=…/month=… directory")
    unquote = urllib.parse.unquote
    return unquote(parts[1].removeprefix("domain=")), unquote(parts[2].removeprefix("month="))


def _replace(tmp: Path, out: Path) -> None:
    """Move a finished export into place, replacing whatever was at ``out``."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old)


def export_parquet(
    engine: Engine,
    out: Path,
    *,
    policy: Policy,
    as_of: date,
    now: datetime,
    force: bool = False,
    rows_per_file: int = ROWS_PER_FILE,
) -> Manifest:
    """Write every record and subject as partitioned Parquet with a manifest; return it.

    ``policy`` gives the attribute columns and is written beside the data, so
    that a job elsewhere scores with exactly it. ``out`` must not exist, or be
    empty, unless ``force`` (then it is replaced once the new export is whole).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} is not empty: give --force to replace it")
    attributes = attribute_columns(policy)
    schema = export_schema(attributes)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        (tmp / "policy.json").write_text(_policy_json(policy), encoding="utf-8")
        (tmp / "subjects").mkdir()
        (tmp / "records").mkdir()
        with store_snapshot(engine) as snapshot:
            ds.write_dataset(
                pa.RecordBatchReader.from_batches(schema, snapshot.records(attributes)),
                tmp / "records",
                format="parquet",
                partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
                basename_template="part-{i}.parquet",
                existing_data_behavior="error",
                max_rows_per_file=rows_per_file,
                # Rows arrive in id order, spread over many partitions: without a
                # minimum, every batch would leave a tiny row group in each one.
                min_rows_per_group=min(rows_per_file, ROW_GROUP_MIN),
                max_rows_per_group=min(rows_per_file, ROW_GROUP_MAX),
                preserve_order=True,
            )
            subjects = snapshot.subjects()
            head = snapshot.head
        pq.write_table(subjects, tmp / "subjects" / "part-0.parquet")
        where = Location.of(tmp)
        by_partition: dict[tuple[str, str], list[FileEntry]] = {}
        for path in where.files("records"):
            entry = _measure(where, path)
            by_partition.setdefault(_partition_of(path), []).append(entry)
        manifest = Manifest(
            head=head,
            policy_label=policy.label,
            policy_hash=policy.content_hash,
            as_of=as_of,
            exported_at=now,
            columns={**RECORD_COLUMNS, **attributes},
            partitions=tuple(
                Partition(d, m, sum(f.rows or 0 for f in files), tuple(files))
                for (d, m), files in sorted(by_partition.items())
            ),
            subjects_rows=subjects.num_rows,
            subject_files=(_measure(where, "subjects/part-0.parquet"),),
            policy_file=_measure(where, "policy.json", parquet=False),
        )
        (tmp / "manifest.json").write_text(
            json.dumps(manifest.as_json(), indent=1) + "\n", encoding="utf-8"
        )
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _measure(where: Location, path: str, *, parquet: bool = True) -> FileEntry:
    return FileEntry(
        path=path,
        bytes=where.size(path),
        rows=where.parquet_rows(path) if parquet else None,
        sha256=where.sha256(path),
    )


@dataclass(frozen=True)
class Export:
    """A verified export: where it is, its manifest, and readers for its parts."""

    where: Location
    manifest: Manifest
    manifest_sha256: str

    def policy(self) -> Policy:
        """The policy the export was written for (its content hash checked)."""
        policy = Policy.model_validate_json(self.where.read_text("policy.json"))
        if policy.content_hash != self.manifest.policy_hash:
            raise ExportMismatch(
                f"policy.json hashes to {policy.content_hash}, the manifest says "
                f"{self.manifest.policy_hash}"
            )
        return policy

    def records(self) -> ds.Dataset:
        """The records, partition columns included, as an Arrow dataset."""
        return ds.dataset(
            self.where.path("records"),
            filesystem=self.where.fs,
            format="parquet",
            partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
            schema=self.manifest.schema(),
        )

    def subjects(self) -> ds.Dataset:
        """The subjects as an Arrow dataset."""
        return ds.dataset(
            self.where.path("subjects"),
            filesystem=self.where.fs,
            format="parquet",
            schema=SUBJECTS_SCHEMA,
        )

    def results(self, where: str | Path | None = None) -> Location:
        """Where results of this export go: ``where``, or ``results`` inside the export."""
        return self.where.child("results") if where is None else Location.of(where)


def verify_export(where: str | Path, *, hashes: bool = True) -> Export:
    """The export at ``where``, after checking every file against its manifest.

    Refused with :class:`ExportMismatch`, naming the first difference: a file
    listed but missing, a data file not listed, a size, row count or sha256
    (unless ``hashes`` is false) that differs, a file in another partition
    than the manifest says.
    """
    loc = Location.of(where)
    if not loc.exists("manifest.json"):
        raise ExportError(
            f"{loc.uri} has no manifest.json: it is not an export, or its export did not finish"
        )
    text = loc.read_text("manifest.json")
    try:
        manifest = Manifest.from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{loc.uri}/manifest.json is not JSON: {exc}") from None
    listed = {f.path: f for f in manifest.files()}
    present = set(_data_files(loc, "records")) | set(_data_files(loc, "subjects"))
    if loc.exists("policy.json"):
        present.add("policy.json")
    for path in sorted(listed):
        if path not in present:
            raise ExportMismatch(f"{loc.uri}: {path} is in the manifest but missing")
    for path in sorted(present - set(listed)):
        raise ExportMismatch(f"{loc.uri}: {path} is not in the manifest")
    for part in manifest.partitions:
        for f in part.files:
            if _partition_of(f.path) != (part.domain, part.month):
                raise ExportMismatch(
                    f"{loc.uri}: {f.path} is listed under domain={part.domain}/month={part.month}"
                )
        if part.rows != sum(f.rows or 0 for f in part.files):
            raise ExportMismatch(
                f"{loc.uri}: partition domain={part.domain}/month={part.month} says {part.rows} "
                "rows but its files hold another number"
            )
    for f in listed.values():
        _check_file(loc, f, hashes=hashes)
    return Export(loc, manifest, hashlib.sha256(text.encode()).hexdigest())


def _check_file(loc: Location, f: FileEntry, *, hashes: bool) -> None:
    size = loc.size(f.path)
    if size != f.bytes:
        raise ExportMismatch(f"{loc.uri}: {f.path} has {size} bytes, the manifest says {f.bytes}")
    if hashes and f.sha256 is not None:
        digest = loc.sha256(f.path)
        if digest != f.sha256:
            raise ExportMismatch(
                f"{loc.uri}: {f.path} has sha256 {digest}, the manifest says {f.sha256}"
            )
    if f.rows is not None:
        try:
            rows = loc.parquet_rows(f.path)
        except (OSError, pa.ArrowException) as exc:
            raise ExportMismatch(
                f"{loc.uri}: {f.path} is not a readable Parquet file: {exc}"
            ) from None
        if rows != f.rows:
            raise ExportMismatch(f"{loc.uri}: {f.path} has {rows} rows, the manifest says {f.rows}")


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """Finished batch results, as their ``_SUCCESS.json`` describes them."""

    where: Location
    engine: str
    head: Head
    policy_label: str
    policy_hash: str
    as_of: date
    manifest_sha256: str
    started_at: datetime
    finished_at: datetime
    scores: tuple[FileEntry, ...]
    memberships: tuple[FileEntry, ...]

    @property
    def scores_rows(self) -> int:
        """Subjects scored."""
        return sum(f.rows or 0 for f in self.scores)

    @property
    def memberships_rows(self) -> int:
        """List memberships held."""
        return sum(f.rows or 0 for f in self.memberships)

    def as_json(self) -> dict[str, Any]:
        """The ``_SUCCESS.json`` form."""
        return {
            "format": RESULTS_FORMAT,
            "engine": self.engine,
            "ledger_head": {"seq": self.head.seq, "entry_hash": self.head.entry_hash},
            "policy": {"label": self.policy_label, "content_hash": self.policy_hash},
            "as_of": self.as_of.isoformat(),
            "manifest_sha256": self.manifest_sha256,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "scores": {"rows": self.scores_rows, "files": [f.as_json() for f in self.scores]},
            "memberships": {
                "rows": self.memberships_rows,
                "files": [f.as_json() for f in self.memberships],
            },
        }

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """Scores and memberships as Arrow tables in the batch engines' schemas."""
        out = []
        for files, schema in ((self.scores, SCORES_SCHEMA), (self.memberships, MEMBERSHIPS_SCHEMA)):
            parts = []
            for f in files:
                with self.where.fs.open_input_file(self.where.path(f.path)) as handle:
                    parts.append(pq.read_table(handle).select(schema.names).cast(schema))
            out.append(pa.concat_tables(parts) if parts else schema.empty_table())
        return out[0], out[1]


def clear_success(where: Location) -> None:
    """Remove an earlier run's ``_SUCCESS.json``: a job does this before it writes anything."""
    where.delete(SUCCESS)


def finish_results(
    where: Location,
    *,
    export: Export,
    engine: str,
    as_of: date,
    started_at: datetime,
    finished_at: datetime,
) -> Results:
    """Write ``_SUCCESS.json`` for the result files as they now are, last; return it."""
    results = Results(
        where=where,
        engine=engine,
        head=export.manifest.head,
        policy_label=export.manifest.policy_label,
        policy_hash=export.manifest.policy_hash,
        as_of=as_of,
        manifest_sha256=export.manifest_sha256,
        started_at=started_at,
        finished_at=finished_at,
        scores=tuple(_result_file(where, p) for p in _parquet_parts(where, "scores")),
        memberships=tuple(_result_file(where, p) for p in _parquet_parts(where, "memberships")),
    )
    where.write_text(SUCCESS, json.dumps(results.as_json(), indent=1) + "\n")
    return results


def _result_file(where: Location, path: str) -> FileEntry:
    return FileEntry(path=path, bytes=where.size(path), rows=where.parquet_rows(path))


def read_results(where: str | Path | Location) -> Results:
    """Finished results at ``where``, checked against their ``_SUCCESS.json``.

    Refused with :class:`ResultsError` when there is no ``_SUCCESS.json`` (the
    job died or is still running), or a result file is missing, unlisted, or
    holds another number of rows or bytes than it says.
    """
    loc = where if isinstance(where, Location) else Location.of(where)
    if not loc.exists(SUCCESS):
        raise ResultsError(
            f"{loc.uri} has no {SUCCESS}: the batch job did not finish (it died, or is still "
            "running); nothing was loaded; run the job again"
        )
    try:
        data = json.loads(loc.read_text(SUCCESS))
        if data.get("format") != RESULTS_FORMAT:
            raise ResultsError(
                f"{loc.uri}/{SUCCESS} has format {data.get('format')!r}; this chengxin reads "
                f"{RESULTS_FORMAT!r}"
            )
        results = Results(
            where=loc,
            engine=str(data["engine"]),
            head=Head(int(data["ledger_head"]["seq"]), str(data["ledger_head"]["entry_hash"])),
            policy_label=str(data["policy"]["label"]),
            policy_hash=str(data["policy"]["content_hash"]),
            as_of=date.fromisoformat(data["as_of"]),
            manifest_sha256=str(data["manifest_sha256"]),
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(data["finished_at"]),
            scores=tuple(FileEntry.from_json(f) for f in data["scores"]["files"]),
            memberships=tuple(FileEntry.from_json(f) for f in data["memberships"]["files"]),
        )
        stated = (int(data["scores"]["rows"]), int(data["memberships"]["rows"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ResultsError):
            raise
        raise ResultsError(
            f"{loc.uri}/{SUCCESS} is malformed: {type(exc).__name__}: {exc}"
        ) from None
    if stated != (results.scores_rows, results.memberships_rows):
        raise ResultsError(
            f"{loc.uri}/{SUCCESS} says {stated[0]} scores and {stated[1]} memberships but lists "
            f"files of {results.scores_rows} and {results.memberships_rows} rows"
        )
    for part, files in (("scores", results.scores), ("memberships", results.memberships)):
        listed = {f.path for f in files}
        present = set(_data_files(loc, part))
        for path in sorted(listed - present):
            raise ResultsError(f"{loc.uri}: {path} is listed in {SUCCESS} but missing")
        for path in sorted(present - listed):
            raise ResultsError(f"{loc.uri}: {path} was not written by the job that finished")
        for f in files:
            rows = loc.parquet_rows(f.path)
            if rows != f.rows or loc.size(f.path) != f.bytes:
                raise ResultsError(
                    f"{loc.uri}: {f.path} holds {rows} rows, {SUCCESS} says {f.rows}: the "
                    "results were changed after the job finished"
                )
    return results


def write_results(
    result: BatchResult,
    where: Location,
    *,
    export: Export,
    engine: str,
    started_at: datetime,
    finished_at: datetime,
) -> Results:
    """Write an in-process engine's result as batch results of ``export``."""
    clear_success(where)
    for part, table in (("scores", result.scores), ("memberships", result.memberships)):
        where.delete(part)
        where.fs.create_dir(where.path(part), recursive=True)
        with where.fs.open_output_stream(where.path(f"{part}/part-0.parquet")) as stream:
            pq.write_table(table, stream)
    return finish_results(
        where,
        export=export,
        engine=engine,
        as_of=result.as_of,
        started_at=started_at,
        finished_at=finished_at,
    )


def rescore_export_duckdb(
    export: Export,
    *,
    now: datetime,
    results: str | Path | None = None,
    as_of: date | None = None,
    con: Any | None = None,
) -> Results:
    """Score an export with DuckDB in process and write its results as a batch job would."""
    import ibis

    from chengxin.engine.duckdb_backend import rescore_duckdb

    started = time.perf_counter()
    where = export.results(results)
    clear_success(where)
    day = as_of or export.manifest.as_of
    records, subjects = ibis.memtable(export.records()), ibis.memtable(export.subjects())
    result = rescore_duckdb(export.policy(), records, subjects, day, con=con)
    finished = now + timedelta(seconds=time.perf_counter() - started)
    return write_results(
        result, where, export=export, engine="duckdb", started_at=now, finished_at=finished
    )
