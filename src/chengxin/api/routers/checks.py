"""Services check a measure for a subject: the decision, never the score or the records.

The path is kept lean for the load target (2,000 checks/s, p99 < 20 ms): the
key check is cached, the decision comes from a pooled fast checker (one
indexed query), and one audit event is appended. A subject chengxin holds
nothing on is answered as a subject with no records, and audited without a
subject, so a check never reveals whether someone is known.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from chengxin.api.deps import DbSession, GuardedRoute, Now, api_state, error_responses, require
from chengxin.api.metrics import observe_check
from chengxin.api.permissions import SERVICES
from chengxin.api.schemas import CheckRead, CheckRequest
from chengxin.domain.identifiers import parse_identifier
from chengxin.service import audit
from chengxin.service.principals import Principal, authorize_check

router = APIRouter(prefix="/v1", tags=["checks"], route_class=GuardedRoute)


@router.post(
    "/checks",
    response_model=CheckRead,
    responses=error_responses(400, 401, 403, 404, 413, 415, 422, 503),
    summary="Check a measure for a subject",
)
def create_check(
    body: CheckRequest,
    request: Request,
    session: DbSession,
    clock: Now,
    caller: Annotated[Principal, Depends(require(*SERVICES))],
) -> CheckRead:
    """The decision, its reason codes (on deny), the policy version and the appeal route.

    A service may check only the measures it is registered for, and only if
    the policy lets its kind of service consult them (hard line 6).
    """
    authorize_check(caller, body.measure)
    subject = parse_identifier(body.subject.scheme, body.subject.id, today=clock.today())
    assert caller.service_kind is not None  # a service always has one
    # Decide before the request's transaction starts: the checker may rescore in
    # its own transaction, which would wait on SQLite's writer lock otherwise.
    with api_state(request).checkers.checker() as checker:
        decision = checker.check(subject, body.measure, caller.service_kind)
    observe_check(request, measure=decision.measure, decision=decision.outcome)
    audit.record_check(
        session,
        principal=caller,
        subject=subject,
        decision=decision,
        purpose=body.purpose,
        now=clock.now(),
    )
    return CheckRead(
        measure=decision.measure,
        decision=decision.outcome,
        reasons=list(decision.reasons),
        policy_version=decision.policy_version,
        appeal=decision.appeal,
    )
