"""The public lists, for anyone: masked identifiers, no names, rate limited by client address.

Only lists the policy marks ``public: true`` are shown. Identifiers are
masked as ``1101**********002X``; a search takes a whole identifier, its
first four characters, or its masked form, never a longer prefix (which
would unmask it). Requests are limited per client address to
``settings.public_rate`` (a moving window); over it, 429 ``rate_limited``
with ``Retry-After``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from chengxin.api.deps import DbSession, GuardedRoute, Now, api_state, error_responses, rate_limit
from chengxin.api.schemas import PublicListMemberRead
from chengxin.service.policies import active_policy
from chengxin.service.principals import public_list_members

router = APIRouter(prefix="/v1/public", tags=["public"], route_class=GuardedRoute)


@router.get(
    "/lists/{code}",
    response_model=list[PublicListMemberRead],
    responses=error_responses(404, 422, 429, 503),
    summary="Search a public list (no credentials needed)",
)
def search_public_list(
    code: str,
    request: Request,
    session: DbSession,
    clock: Now,
    q: Annotated[
        str | None,
        Query(
            max_length=40,
            description="A whole identifier, its first 4 characters, or its masked form.",
            examples=["1101**********002X"],
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[PublicListMemberRead]:
    """Members of a public list matching ``q``, with masked identifiers and no names."""
    client = request.client.host if request.client else "unknown"
    rate_limit(request, api_state(request).public_rate, "public", client)
    policy = active_policy(session, on=clock.today()).policy
    members = public_list_members(session, policy=policy, list_code=code, query=q, limit=limit)
    return [
        PublicListMemberRead(
            list=m.list_code, kind=m.kind, subject=m.subject, since=m.since, until=m.until
        )
        for m in members
    ]
