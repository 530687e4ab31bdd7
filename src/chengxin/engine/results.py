"""Batch results of an export: scores and memberships, and the ``_SUCCESS.json`` written last.

Results are written by a batch job (:mod:`chengxin.engine.spark_job`, or
:func:`rescore_export_duckdb`) under ``<export>/results`` unless told otherwise:
``scores/*.parquet``, ``memberships/*.parquet`` and, written last,
``_SUCCESS.json``, which names the export's ledger head, policy hash, date and
manifest hash and lists the result files with their rows. A job removes an
old ``_SUCCESS.json`` before it writes anything, so results without one are
a job that died or is still running, and :func:`read_results` refuses them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from chengxin.engine.duckdb_backend import MEMBERSHIPS_SCHEMA, SCORES_SCHEMA, BatchResult
from chengxin.engine.export import Export, FileEntry
from chengxin.engine.location import Location, data_files, parquet_parts
from chengxin.store.ledger import Head

__all__ = [
    "RESULTS_FORMAT",
    "SUCCESS",
    "Results",
    "ResultsError",
    "clear_success",
    "finish_results",
    "read_results",
    "rescore_export_duckdb",
    "write_results",
]

RESULTS_FORMAT = "chengxin-results/1"
"""The ``format`` of a ``_SUCCESS.json`` this version writes and reads."""
SUCCESS = "_SUCCESS.json"
"""The file a batch job writes last, naming what it scored and what it wrote."""


class ResultsError(ValueError):
    """Batch results are missing, unfinished, or do not match their ``_SUCCESS.json``."""


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
        scores=tuple(_result_file(where, p) for p in parquet_parts(where, "scores")),
        memberships=tuple(_result_file(where, p) for p in parquet_parts(where, "memberships")),
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
        present = set(data_files(loc, part))
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
