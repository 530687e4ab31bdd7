"""The audit trail, for auditors: query events and verify the hash chains.

Reading the trail is itself audited (who watches the watchers): an
``audit.read`` event names the subject filtered on, if any.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from chengxin.api.deps import DbSession, GuardedRoute, Now, error_responses, require
from chengxin.api.permissions import AUDITORS
from chengxin.api.schemas import AuditEventRead, AuditVerifyRead, ChainRead
from chengxin.domain.identifiers import parse_qualified
from chengxin.service import audit
from chengxin.service.principals import Principal
from chengxin.store.ledger import VerifyResult
from chengxin.store.ledger import verify as verify_ledger
from chengxin.store.repo import get_subject

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=GuardedRoute)
Auditor = Annotated[Principal, Depends(require(*AUDITORS))]


@router.get(
    "/events",
    response_model=list[AuditEventRead],
    responses=error_responses(401, 403, 422),
    summary="Query the audit trail (newest first)",
)
def read_events(
    session: DbSession,
    clock: Now,
    caller: Auditor,
    subject: Annotated[
        str | None, Query(max_length=90, description="scheme:identifier, e.g. cn-rid:1101…")
    ] = None,
    subject_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="internal subject id")
    ] = None,
    principal: Annotated[str | None, Query(max_length=120)] = None,
    action: Annotated[str | None, Query(max_length=40, examples=["check"])] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 instant")] = None,
    before: Annotated[int | None, Query(ge=1, description="only events before this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[audit.AuditEvent]:
    """Events matching every filter given, newest first; page with ``before``."""
    if subject is not None:
        found = audit.subject_id_of(session, parse_qualified(subject))
        if found is None or (subject_id is not None and subject_id != found):
            return []
        subject_id = found
    got = audit.events(
        session,
        subject_id=subject_id,
        principal=principal,
        action=action,
        since=since,
        before=before,
        limit=limit,
    )
    if subject_id is not None and not got and get_subject(session, subject_id) is None:
        subject_id = None  # an id naming nobody: the read is audited without a subject
    audit.record(
        session,
        principal=caller,
        action="audit.read",
        purpose="audit",
        subject_id=subject_id,
        detail={"action": action, "events": len(got)},
        now=clock.now(),
    )
    return got


def _chain(res: VerifyResult) -> ChainRead:
    return ChainRead(
        ok=res.ok,
        entries=res.entries,
        head=res.head_hash,
        broken_at=res.broken_at,
        problem=res.problem,
    )


@router.get(
    "/verify",
    response_model=AuditVerifyRead,
    responses=error_responses(401, 403),
    summary="Verify the audit chain (and the ledger)",
)
def verify(
    session: DbSession,
    caller: Auditor,
    ledger: Annotated[bool, Query(description="also walk the ledger's chain")] = False,
) -> AuditVerifyRead:
    """Walk the audit chain (and the ledger's, when asked); name the first broken entry."""
    return AuditVerifyRead(
        audit=_chain(audit.verify_audit(session)),
        ledger=_chain(verify_ledger(session)) if ledger else None,
    )
