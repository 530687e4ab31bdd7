"""Subjects read themselves; adjudicators and administrators read anyone, with a purpose.

Every read is audited. A subject sees who consulted it and for which
measure (``/v1/me/consultations``), as a credit report lists its inquiries.
A subject asking for anyone through ``/v1/subjects/...`` gets 404 whether or
not that subject exists; services never reach these routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from chengxin.api.deps import DbSession, GuardedRoute, Now, error_responses, require
from chengxin.api.permissions import CONCEAL_SUBJECTS, SUBJECT_READERS, SUBJECTS
from chengxin.api.schemas import (
    ConsultationRead,
    ExplanationRead,
    HistoryRead,
    SummaryRead,
)
from chengxin.domain.identifiers import SubjectId, parse_identifier
from chengxin.service import audit
from chengxin.service.clock import Clock
from chengxin.service.principals import Principal, subject_of
from chengxin.service.subjects import Explanation, explain

router = APIRouter(prefix="/v1", tags=["subjects"], route_class=GuardedRoute)
Me = Annotated[Principal, Depends(require(*SUBJECTS))]
Reader = Annotated[Principal, Depends(require(*SUBJECT_READERS, conceal_from=CONCEAL_SUBJECTS))]
Purpose = Annotated[
    str,
    Query(min_length=1, max_length=120, description="Why the subject is read (audited)."),
]
_ERRORS = error_responses(401, 403, 404, 422, 503)


def _explained(
    session: Session,
    caller: Principal,
    clock: Clock,
    subject: SubjectId,
    action: str,
    purpose: str,
) -> Explanation:
    ex = explain(session, subject=subject, clock=clock)
    audit.record(
        session,
        principal=caller,
        action=action,
        purpose=purpose,
        subject_id=ex.subject.id,
        detail={"policy": ex.policy.label},
        now=clock.now(),
    )
    return ex


def _history(ex: Explanation) -> dict[str, Any]:
    data = ex.as_dict()
    return {"subject": data["subject"], "records": data["records"]}


@router.get("/me", response_model=SummaryRead, responses=_ERRORS, summary="My record in short")
def read_me(session: DbSession, clock: Now, caller: Me) -> dict[str, Any]:
    """The caller's score, grade, lists and record counts under the active policy."""
    ex = _explained(session, caller, clock, subject_of(session, caller), "subject.read", "self")
    data = ex.as_dict()
    return {
        **{k: data[k] for k in ("subject", "policy", "as_of", "score", "grade", "next_change")},
        "lists": data["lists"],
        "records": len(data["records"]),
        "counting": sum(1 for r in data["records"] if r["counts"]),
    }


@router.get(
    "/me/explain",
    response_model=ExplanationRead,
    responses=_ERRORS,
    summary="Every point of my score",
)
def explain_me(session: DbSession, clock: Now, caller: Me) -> dict[str, Any]:
    """Every point of the caller's score: record, rule, schedule step, expiry, policy version."""
    subject = subject_of(session, caller)
    return _explained(session, caller, clock, subject, "subject.explain", "self").as_dict()


@router.get(
    "/me/history", response_model=HistoryRead, responses=_ERRORS, summary="Every record held on me"
)
def history_me(session: DbSession, clock: Now, caller: Me) -> dict[str, Any]:
    """Every record held on the caller, retracted and superseded ones included."""
    subject = subject_of(session, caller)
    return _history(_explained(session, caller, clock, subject, "subject.history", "self"))


@router.get(
    "/me/consultations",
    response_model=list[ConsultationRead],
    responses=_ERRORS,
    summary="Who consulted me",
)
def consultations_me(session: DbSession, caller: Me) -> list[audit.Consultation]:
    """Who checked or read the caller, for which measure and purpose, and when (newest first)."""
    assert caller.subject_id is not None  # a subject principal always has one
    return audit.consultations(session, subject_id=caller.subject_id)


@router.get(
    "/subjects/{scheme}/{id}/explain",
    response_model=ExplanationRead,
    responses=_ERRORS,
    summary="Explain any subject (adjudicators, administrators)",
)
def explain_subject(
    scheme: str, id: str, purpose: Purpose, session: DbSession, clock: Now, caller: Reader
) -> dict[str, Any]:
    """Every point of a subject's score, for a stated purpose (audited)."""
    subject = parse_identifier(scheme, id)
    return _explained(session, caller, clock, subject, "subject.explain", purpose).as_dict()


@router.get(
    "/subjects/{scheme}/{id}/history",
    response_model=HistoryRead,
    responses=_ERRORS,
    summary="Every record held on any subject (adjudicators, administrators)",
)
def history_subject(
    scheme: str, id: str, purpose: Purpose, session: DbSession, clock: Now, caller: Reader
) -> dict[str, Any]:
    """Every record held on a subject, retracted ones included, for a stated purpose (audited)."""
    subject = parse_identifier(scheme, id)
    return _history(_explained(session, caller, clock, subject, "subject.history", purpose))
