"""Checking submitted lines: the pure half of ingest, in process or on worker processes.

Everything a line needs before the database is consulted -- parsing it,
checking it against the policy (domain/records.py), its canonical JSON and
sha256, the values its subject and record rows will hold -- depends on the
line, the policy and the date alone. :func:`check_lines` does it in process;
:class:`CheckerPool` does it for whole chunks on ``fork``-ed worker
processes (each loads the policy from its source text once), so a bulk import
keeps the parent for the database work. Both give the same :class:`Checked`
rows for the same lines, so a ledger does not depend on how it was filled.
"""

from __future__ import annotations

import gc
import json
import marshal
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from multiprocessing.pool import AsyncResult, Pool
from operator import itemgetter
from types import TracebackType
from typing import Any, Literal, NamedTuple

import orjson

from chengxin.domain.identifiers import region_of
from chengxin.domain.policy import Policy
from chengxin.domain.records import RecordRejected, check_submission
from chengxin.service.fastpath import fast_row
from chengxin.store.ledger import canonical_json, sha256_hex

Status = Literal["accepted", "duplicate", "rejected"]
Line = tuple[int, Mapping[str, Any] | RecordRejected]
"""A numbered line of a feed: the parsed object, or why it could not be read."""


@dataclass(frozen=True, slots=True)
class LineResult:
    """What became of one submitted line."""

    line: int
    status: Status
    ref: str | None = None
    seq: int | None = None
    code: str | None = None
    message: str | None = None
    field: str | None = None


class Checked(NamedTuple):
    """A line that passed the policy's checks, with everything its rows need.

    Flat, of text and integers: workers send chunks of them as plain tuples.
    """

    line: int
    provider: str
    ref: str
    kind: str  # the ledger entry kind: record, amendment or retraction
    payload: str  # canonical JSON, as stored and hashed
    payload_hash: str
    target: str | None  # the ref a retraction or amendment names
    # The subject, as its ``subjects`` row holds it (all None for a retraction):
    scheme: str | None
    value: str | None
    subject_kind: str | None
    name: str | None
    region: str | None
    birth_date: str | None  # ISO date (cn-rid only)
    # The record:
    type: str | None
    domain: str | None
    occurred_at: str | None  # ISO date
    attributes: str | None  # canonical JSON
    evidence: str | None

    @property
    def subject_key(self) -> tuple[str, str] | None:
        """(scheme, value) of the subject the line names; None for a retraction."""
        return None if self.scheme is None or self.value is None else (self.scheme, self.value)


@dataclass(slots=True)
class CheckedLines:
    """A chunk of lines after checking: the good ones in line order, and the refused ones."""

    lines: int = 0
    checked: list[Checked] = field(default_factory=list)
    rejected: list[LineResult] = field(default_factory=list)


def rejected_line(line: int, exc: RecordRejected, ref: str | None = None) -> LineResult:
    """The result of a line refused with ``exc``."""
    return LineResult(line, "rejected", ref, code=exc.code, message=str(exc), field=exc.field)


def check_line(line: int, raw: Mapping[str, Any], policy: Policy, today: date) -> Checked:
    """Check one parsed line; raise :class:`RecordRejected` with the reason."""
    return Checked._make(fast_row(line, raw, policy, today) or _check_row(line, raw, policy, today))


def _check_row(line: int, raw: Mapping[str, Any], policy: Policy, today: date) -> tuple[Any, ...]:
    """:func:`check_line`'s fields as a plain tuple."""
    sub = check_submission(raw, policy, today=today)
    try:
        payload = canonical_json(sub.payload())
        attributes = canonical_json(dict(sub.attributes)) if sub.attributes else "{}"
    except orjson.JSONEncodeError:  # a lone surrogate that json.loads let through
        raise RecordRejected("bad_encoding", "line holds text that is not valid Unicode") from None
    target = sub.retracts or sub.amends
    subj = sub.subject
    if subj is None:
        return (
            line, sub.provider, sub.ref, sub.kind, payload, sha256_hex(payload), target,
            None, None, None, None, None, None, None, None, None, None, None,
        )  # fmt: skip
    sid = subj.id
    assert sub.occurred_at is not None
    return (
        line,
        sub.provider,
        sub.ref,
        sub.kind,
        payload,
        sha256_hex(payload),
        target,
        sid.scheme,
        sid.value,
        subj.kind,
        subj.name,
        region_of(sid),
        # GB 11643: characters 7-14 are the birth date YYYYMMDD.
        f"{sid.value[6:10]}-{sid.value[10:12]}-{sid.value[12:14]}"
        if sid.scheme == "cn-rid"
        else None,
        sub.type,
        sub.domain,
        sub.occurred_at.isoformat(),
        attributes,
        sub.evidence,
    )


def _check_rows(
    lines: Iterable[Line], policy: Policy, today: date
) -> tuple[int, list[tuple[Any, ...]], list[LineResult]]:
    count = 0
    rows: list[tuple[Any, ...]] = []
    refused: list[LineResult] = []
    for number, raw in lines:
        count += 1
        if isinstance(raw, RecordRejected):
            refused.append(rejected_line(number, raw))
            continue
        row = fast_row(number, raw, policy, today)  # the common good line
        if row is not None:
            rows.append(row)
            continue
        try:
            rows.append(_check_row(number, raw, policy, today))
        except RecordRejected as exc:
            ref = raw.get("ref")
            refused.append(rejected_line(number, exc, ref if isinstance(ref, str) else None))
    return count, rows, refused


def check_lines(lines: Iterable[Line], policy: Policy, today: date) -> CheckedLines:
    """Check numbered lines in process."""
    count, rows, refused = _check_rows(lines, policy, today)
    return CheckedLines(count, [Checked._make(r) for r in rows], refused)


# -- JSON Lines -------------------------------------------------------------------


def _has_float(obj: dict[str, Any]) -> bool:
    if float in map(type, obj.values()):
        return True
    subject, attributes = obj.get("subject"), obj.get("attributes")
    return (type(subject) is dict and float in map(type, subject.values())) or (
        type(attributes) is dict and float in map(type, attributes.values())
    )


def parse_jsonl_line(raw: bytes) -> Mapping[str, Any] | RecordRejected:
    """One JSON Lines line as an object, or why it cannot be read.

    orjson parses; a line it refuses, or one holding a float (orjson reads
    integers past 64 bits as floats), is read again with :func:`json.loads`,
    so every line means exactly what it meant to the standard library.
    """
    try:
        obj = orjson.loads(raw)
        if type(obj) is dict and not _has_float(obj):
            return obj
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RecordRejected(
            "bad_encoding",
            f"line is not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}",
        )
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return RecordRejected("bad_json", f"not valid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(obj, dict):
        return RecordRejected("bad_json", "each line must be a JSON object")
    return obj


@dataclass(frozen=True, slots=True)
class RawLines:
    """Non-blank lines of a JSON Lines file, as bytes, with their line numbers."""

    numbers: list[int]
    lines: list[bytes]

    def __len__(self) -> int:
        return len(self.lines)


def jsonl_chunks(fh: Iterable[bytes], size: int) -> Iterator[RawLines]:
    """The non-blank lines of an open JSON Lines file, ``size`` at a time (a BOM is dropped)."""
    numbers: list[int] = []
    lines: list[bytes] = []
    for number, raw in enumerate(fh, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if raw.isspace() or not raw:
            continue
        numbers.append(number)
        lines.append(raw)
        if len(lines) >= size:
            yield RawLines(numbers, lines)
            numbers, lines = [], []
    if lines:
        yield RawLines(numbers, lines)


def parse_jsonl(chunk: RawLines) -> Iterator[Line]:
    """The numbered objects of a chunk of JSON Lines."""
    for number, raw in zip(chunk.numbers, chunk.lines, strict=True):
        yield number, parse_jsonl_line(raw)


def _check_raw_rows(
    chunk: RawLines, policy: Policy, today: date
) -> tuple[int, list[tuple[Any, ...]], list[LineResult]]:
    """:func:`_check_rows` of a chunk of JSON Lines, parsed here.

    A line orjson reads as an object goes to the fast path as it is: the fast
    path takes no float anywhere (where orjson and :func:`json.loads` may read
    a number differently), so what it takes reads alike either way. Any other
    line is read by :func:`parse_jsonl_line` and checked the reference way.
    """
    rows: list[tuple[Any, ...]] = []
    slow: list[Line] = []
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for number, raw in zip(chunk.numbers, chunk.lines, strict=True):
        try:
            obj = loads(raw)
        except decode_error:
            obj = None
        if type(obj) is dict:
            row = fast_row(number, obj, policy, today)
            if row is not None:
                rows.append(row)
                continue
        slow.append((number, parse_jsonl_line(raw)))
    if not slow:
        return len(chunk), rows, []
    _, more, refused = _check_rows(slow, policy, today)
    if more:  # back into line order
        rows = sorted(rows + more, key=itemgetter(0))
    return len(chunk), rows, refused


def check_chunk(chunk: RawLines | Sequence[Line], policy: Policy, today: date) -> CheckedLines:
    """Parse (JSON Lines) and check a chunk of lines."""
    if isinstance(chunk, RawLines):
        count, rows, refused = _check_raw_rows(chunk, policy, today)
        return CheckedLines(count, [Checked._make(r) for r in rows], refused)
    return check_lines(chunk, policy, today)


# -- worker processes ------------------------------------------------------------------


class _Pauses:
    """The collector's pauses running in this process: a count, so they may overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.was_on = True


_pauses = _Pauses()


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a bulk job, as it was afterwards.

    A chunk allocates hundreds of thousands of small, acyclic objects (freed by
    reference counting), and every allocation burst sets off collections that
    walk the whole heap: about a third of the import's time when left on.
    Pauses are counted, not nested: the collector is off from the first to
    begin until the last to end, whatever the order they end in (two batch
    requests of one server overlap), and on again then if it was on before.
    """
    with _pauses.lock:
        if _pauses.running == 0:
            _pauses.was_on = gc.isenabled()
            gc.disable()
        _pauses.running += 1
    try:
        yield
    finally:
        with _pauses.lock:
            _pauses.running -= 1
            if _pauses.running == 0 and _pauses.was_on:
                gc.enable()


_worker_policy: Policy | None = None


def _init_worker(source: str, label: str, content_hash: str) -> None:
    from chengxin.domain.policy_load import load_policy_text

    global _worker_policy
    gc.disable()  # see gc_paused; the worker lives for one import
    policy = load_policy_text(source, label)
    if policy.content_hash != content_hash:  # pragma: no cover - the stored source is the policy
        raise RuntimeError(f"policy {label} does not load to its stored hash")
    _worker_policy = policy


Packed = tuple[int, bytes, list[LineResult]]
"""A worker's checked chunk: lines read, the Checked rows marshalled, the refused lines."""


def _check_in_worker(chunk: RawLines | Sequence[Line], today: date) -> Packed:
    assert _worker_policy is not None, "worker was not initialised"
    if isinstance(chunk, RawLines):
        count, rows, refused = _check_raw_rows(chunk, _worker_policy, today)
    else:
        count, rows, refused = _check_rows(chunk, _worker_policy, today)
    # marshal (format 2: no sharing) writes and reads a list of flat tuples of text and
    # integers several times faster than pickle; both ends are this same Python.
    return count, marshal.dumps(rows, 2), refused


def _unpack(packed: Packed) -> CheckedLines:
    count, blob, refused = packed
    make = Checked._make
    return CheckedLines(count, list(map(make, marshal.loads(blob))), refused)


class CheckerPool:
    """Worker processes that check chunks in order, a few chunks ahead of the caller.

    :meth:`map` yields each chunk's :class:`CheckedLines` in the order the
    chunks came. At most ``ahead`` chunks are in flight, so memory stays
    bounded however large the file. Use as a context manager.
    """

    def __init__(
        self,
        *,
        source: str,
        label: str,
        content_hash: str,
        today: date,
        workers: int,
        ahead: int | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self._pool: Pool = ctx.Pool(workers, _init_worker, (source, label, content_hash))
        self._today = today
        self.ahead = ahead or workers + 1
        self._pending: deque[AsyncResult[Packed]] = deque()

    def __enter__(self) -> CheckerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pool.terminate()
        self._pool.join()

    def map(self, chunks: Iterable[RawLines | Sequence[Line]]) -> Iterator[CheckedLines]:
        """Check every chunk, keeping ``ahead`` in flight; yield the results in order."""
        for chunk in chunks:
            self._pending.append(self._pool.apply_async(_check_in_worker, (chunk, self._today)))
            if len(self._pending) >= self.ahead:
                yield _unpack(self._pending.popleft().get())
        while self._pending:
            yield _unpack(self._pending.popleft().get())


def default_workers() -> int:
    """Worker processes for a large import: one per core (the parent's database work
    overlaps theirs)."""
    return os.cpu_count() or 1
