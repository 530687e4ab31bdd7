"""Lists for those who may see their members: adjudicators, auditors, administrators (audited)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Query

from chengxin.api.deps import DbSession, GuardedRoute, Now, error_responses, require
from chengxin.api.permissions import LIST_READERS
from chengxin.api.schemas import ListMemberRead, ListRead
from chengxin.domain.identifiers import Scheme, SubjectId
from chengxin.service import audit
from chengxin.service.errors import NotFound
from chengxin.service.policies import active_policy
from chengxin.service.principals import Principal
from chengxin.service.subjects import list_counts, list_members

router = APIRouter(prefix="/v1", tags=["lists"], route_class=GuardedRoute)
ListReader = Annotated[Principal, Depends(require(*LIST_READERS))]


@router.get(
    "/lists",
    response_model=list[ListRead],
    responses=error_responses(401, 403, 503),
    summary="The lists of the active policy and their sizes",
)
def read_lists(session: DbSession, clock: Now, caller: ListReader) -> list[ListRead]:
    """Every list of the active policy, whether it is public, and how many are on it now."""
    policy = active_policy(session, on=clock.today()).policy
    counts = list_counts(session)
    return [
        ListRead(
            code=lst.code,
            kind=lst.kind,
            title=lst.title,
            public=lst.public,
            members=counts.get(lst.code, 0),
        )
        for lst in policy.lists
    ]


@router.get(
    "/lists/{code}/members",
    response_model=list[ListMemberRead],
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Current members of a list, with identifiers (audited)",
)
def read_members(
    code: str,
    purpose: Annotated[
        str, Query(min_length=1, max_length=120, description="Why the list is read (audited).")
    ],
    session: DbSession,
    clock: Now,
    caller: ListReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ListMemberRead]:
    """Current members of one list; each member's subject sees this read among its consultations."""
    policy = active_policy(session, on=clock.today()).policy
    if code not in policy.lists_by_code:
        raise NotFound(f"policy {policy.label} has no list {code!r}")
    members = list_members(session, list_code=code, limit=limit)
    subjects = []
    for m in members:
        scheme, value = m.subject.split(":", 1)
        subjects.append(SubjectId(cast(Scheme, scheme), value))
    audit.record_reads(
        session,
        principal=caller,
        action="list.members",
        purpose=purpose,
        subjects=subjects,
        detail={"list": code},
        now=clock.now(),
    )
    return [
        ListMemberRead(
            list=m.list_code,
            kind=m.kind,
            subject=m.subject,
            name=m.name,
            since=m.since,
            until=m.until,
        )
        for m in members
    ]
