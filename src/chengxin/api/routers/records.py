"""Providers write records: one line, or a batch of up to 10,000 (all-or-nothing or per line).

``(provider, ref)`` makes every line idempotent: a repeat is a ``duplicate``
carrying the original ledger entry. An ``Idempotency-Key`` header makes a
whole request idempotent: the same key with the same body returns the
stored response; with a different body, 409 ``idempotency_conflict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import ORJSONResponse
from sqlalchemy.orm import Session

from chengxin.api.deps import DbSession, GuardedRoute, Now, bulk, error_responses, require
from chengxin.api.errors import ApiError
from chengxin.api.metrics import observe_ingest
from chengxin.api.permissions import PROVIDERS
from chengxin.api.schemas import RecordBatchCreate, RecordBatchRead, RecordCreate, RecordResult
from chengxin.domain.policy import Policy
from chengxin.service import audit
from chengxin.service.checking import CheckedLines, check_lines
from chengxin.service.clock import Clock
from chengxin.service.ingest import BatchReport, LineResult, store_checked
from chengxin.service.policies import active_policy
from chengxin.service.prefetch import Prefetched, prefetch
from chengxin.service.principals import (
    IdempotencyConflict,
    Principal,
    StoredResponse,
    authorize_lines,
    remember,
    replay,
    request_hash,
)
from chengxin.store.db import read_transaction

router = APIRouter(prefix="/v1", tags=["records"], route_class=GuardedRoute)
Provider = Annotated[Principal, Depends(require(*PROVIDERS))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Repeat a request safely: the same key and body return the first response.",
    ),
]
_ERRORS = error_responses(400, 401, 403, 409, 413, 415, 422, 503)


class Checking(NamedTuple):
    """Lines checked against a policy, ready to store."""

    policy: Policy
    checked: CheckedLines
    prefetched: Prefetched | None = None


def _result(r: LineResult) -> dict[str, Any]:
    """``RecordResult(...).model_dump()``, written out: a batch builds a thousand of them,
    while it holds the writer lock (tests/api/test_records.py holds the two alike)."""
    return {
        "line": r.line,
        "status": r.status,
        "ref": r.ref,
        "seq": r.seq,
        "code": r.code,
        "message": r.message,
        "field": r.field,
    }


def _observe(request: Request, report: BatchReport, *, stored: bool) -> None:
    """Count the lines for the metrics; an atomic batch that stored nothing counts as rejected."""
    if stored:
        observe_ingest(
            request,
            {
                "accepted": report.count("accepted"),
                "duplicate": report.count("duplicate"),
                "rejected": report.count("rejected"),
            },
        )
    else:
        observe_ingest(request, {"rejected": len(report.results)})


def _check(
    request: Request, clock: Clock, lines: Sequence[dict[str, Any]], *, prefetch_facts: bool = False
) -> Checking:
    """Check the lines against the active policy before any write lock is taken.

    Checking is pure computation, most of a batch's cost: doing it before the
    request's transaction begins keeps the writer lock (SQLite's, or the
    ledger head's row lock) for the append alone. With ``prefetch_facts`` the
    records of the lines' subjects are read too, for the rescoring
    (service/prefetch.py).
    """
    today = clock.today()
    with read_transaction(request.app.state.sessions) as reader:
        policy = active_policy(reader, on=today).policy
        checked = check_lines(list(enumerate(lines, start=1)), policy, today)
        if not prefetch_facts or not checked.checked:
            return Checking(policy, checked)
        return Checking(policy, checked, prefetch(reader, checked, policy=policy, as_of=today))


def _submit(session: Session, caller: Principal, clock: Clock, checking: Checking) -> BatchReport:
    report = store_checked(
        session,
        policy=checking.policy,
        batch=checking.checked,
        now=clock.now(),
        today=clock.today(),
        prefetched=checking.prefetched,
    )
    accepted = [r.seq for r in report.results if r.status == "accepted" and r.seq is not None]
    if accepted:
        audit.record(
            session,
            principal=caller,
            action="records.submit",
            purpose=None,
            subject_id=None,
            detail={
                "accepted": len(accepted),
                "duplicates": report.count("duplicate"),
                "rejected": report.count("rejected"),
                "first_seq": min(accepted),
                "last_seq": max(accepted),
            },
            now=clock.now(),
        )
    return report


def _replayed(
    session: Session, caller: Principal, key: str | None, request: Request, body: Any
) -> tuple[StoredResponse | None, str]:
    if key is None:  # nothing to replay or remember: no digest needed
        return None, ""
    digest = request_hash(request.method, request.url.path, body)
    try:
        return replay(session, principal_id=caller.id, key=key, request_hash=digest), digest
    except IdempotencyConflict as exc:
        raise ApiError(409, exc.code, str(exc)) from None


def _respond(
    session: Session,
    caller: Principal,
    clock: Clock,
    key: str | None,
    digest: str,
    status: int,
    body: dict[str, Any],
) -> ORJSONResponse:
    if key is not None:
        remember(
            session,
            principal_id=caller.id,
            key=key,
            request_hash=digest,
            status_code=status,
            body=body,
            now=clock.now(),
        )
    return ORJSONResponse(body, status)


@router.post(
    "/records",
    status_code=201,
    response_model=RecordResult,
    responses={
        200: {"model": RecordResult, "description": "A duplicate of a stored line"},
        **_ERRORS,
    },
    summary="Submit one record, amendment or retraction",
)
def create_record(
    body: RecordCreate,
    request: Request,
    session: DbSession,
    clock: Now,
    caller: Provider,
    idempotency_key: IdempotencyKey = None,
) -> ORJSONResponse:
    """Store one interchange line: 201 accepted, 200 duplicate, 422 rejected with its reason."""
    line = body.line()
    authorize_lines(caller, [line])
    checking = _check(request, clock, [line])
    stored, digest = _replayed(session, caller, idempotency_key, request, line)
    if stored is not None:
        return ORJSONResponse(stored.body, stored.status_code)
    report = _submit(session, caller, clock, checking)
    _observe(request, report, stored=True)
    (result,) = report.results
    if result.status == "rejected":
        raise ApiError(
            422, result.code or "rejected", result.message or "rejected", field=result.field
        )
    status = 201 if result.status == "accepted" else 200
    return _respond(session, caller, clock, idempotency_key, digest, status, _result(result))


@router.post(
    "/records:batch",
    response_model=RecordBatchRead,
    responses=_ERRORS,
    summary="Submit up to 10,000 lines, all-or-nothing or per line",
)
@bulk  # the collector is off for the whole request (deps.bulk)
def create_records(
    body: RecordBatchCreate,
    request: Request,
    session: DbSession,
    clock: Now,
    caller: Provider,
    idempotency_key: IdempotencyKey = None,
) -> ORJSONResponse:
    """Store a batch. ``atomic``: any rejected line stores nothing (422 ``batch_rejected``)."""
    limit: int = request.app.state.runtime.settings.max_batch
    if len(body.records) > limit:
        raise ApiError(422, "batch_too_large", f"a batch has at most {limit} lines")
    lines = body.lines()
    authorize_lines(caller, lines)
    checking = _check(request, clock, lines, prefetch_facts=True)
    stored, digest = _replayed(
        session, caller, idempotency_key, request, {"records": lines, "atomic": body.atomic}
    )
    if stored is not None:
        return ORJSONResponse(stored.body, stored.status_code)
    report = _submit(session, caller, clock, checking)
    results = [_result(r) for r in report.results]
    _observe(request, report, stored=not (body.atomic and report.rejected))
    if body.atomic and report.rejected:
        raise ApiError(  # the request's transaction rolls back: nothing is stored
            422,
            "batch_rejected",
            f"{len(report.rejected)} of {len(results)} lines were rejected; nothing was stored",
            results=[r for r in results if r["status"] == "rejected"],
        )
    # RecordBatchRead(...).model_dump(), written out (see _result).
    data = {
        "accepted": report.count("accepted"),
        "duplicates": report.count("duplicate"),
        "rejected": report.count("rejected"),
        "results": results,
    }
    return _respond(session, caller, clock, idempotency_key, digest, 200, data)
