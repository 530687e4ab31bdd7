"""The ledger's records as partitioned Parquet with a manifest, for batch engines to score.

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

Results of a batch job on an export are :mod:`chengxin.engine.results`.

Exports are written to the local disk; they and results are read through
``pyarrow.fs`` (:class:`chengxin.engine.location.Location`), so a job on a
cluster can read an export copied to an object store (``s3a://``,
``gs://``) as Spark names it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pj
import pyarrow.parquet as pq
from sqlalchemy import Engine

from chengxin.domain.policy import Policy
from chengxin.engine.location import Location, data_files
from chengxin.engine.plan import RECORD_COLUMNS, attribute_columns
from chengxin.store.ledger import GENESIS, Head

__all__ = [
    "ARROW_TYPES",
    "EXPORT_FORMAT",
    "PARTITION_SCHEMA",
    "ROWS_PER_FILE",
    "ROW_GROUP_MAX",
    "ROW_GROUP_MIN",
    "SUBJECTS_SCHEMA",
    "Export",
    "ExportError",
    "ExportMismatch",
    "FileEntry",
    "Manifest",
    "Partition",
    "StoreSnapshot",
    "export_parquet",
    "export_schema",
    "store_snapshot",
    "verify_export",
]

EXPORT_FORMAT = "chengxin-export/1"
"""The ``format`` of a manifest this version writes and reads."""

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


class ExportError(ValueError):
    """An export cannot be written or read."""


class ExportMismatch(ExportError):
    """An export's files do not match its manifest."""


def export_schema(attributes: Mapping[str, str]) -> pa.Schema:
    """The Arrow schema of exported records: the plan's columns, then domain and month."""
    columns = {**RECORD_COLUMNS, **attributes}
    fields = [pa.field(name, ARROW_TYPES[type_]) for name, type_ in columns.items()]
    return pa.schema(fields + list(PARTITION_SCHEMA))


# -- where files live ------------------------------------------------------------------------


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
    present = set(data_files(loc, "records")) | set(data_files(loc, "subjects"))
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
