"""Webhook subscriptions for services, and the dead letters for administrators.

A service subscribes a URL to ``list.entered``, ``list.left`` and
``measure.changed``; the signing secret is in the creation response only.
What a subscription carries, and to whom, is decided in
:mod:`chengxin.service.webhooks` (least disclosure, hard line 6).
Administrators see the deliveries that used up their attempts and send
one again (the retry is audited).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from chengxin.api.deps import JSON, DbSession, GuardedRoute, Now, accepts, error_responses, require
from chengxin.api.errors import ApiError
from chengxin.service import audit, delivery
from chengxin.service import webhooks as hooks
from chengxin.service.principals import Principal

RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a row id (64-bit)")]

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=GuardedRoute)
Service = Annotated[Principal, Depends(require("service"))]
Admin = Annotated[Principal, Depends(require("admin"))]


class SubscriptionCreate(BaseModel):
    """Where to send, and which topics (``list.entered``, ``list.left``, ``measure.changed``)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=hooks.MAX_URL, examples=["https://airline.example/chengxin"])
    topics: list[str] = Field(
        min_length=1, max_length=len(hooks.TOPICS), examples=[["list.entered", "list.left"]]
    )


class SubscriptionRead(BaseModel):
    """A subscription as its service sees it (never the secret again)."""

    id: int
    url: str
    topics: list[str]
    created_at: datetime


class SubscriptionCreated(SubscriptionRead):
    """A new subscription and its Standard Webhooks signing secret, shown this once."""

    secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class DeadLetterRead(BaseModel):
    """A delivery that used up its attempts."""

    id: int
    message_id: str
    subscription_id: int
    service: str
    url: str
    event: str
    attempts: int
    last_error: str | None
    event_at: datetime


class RetryRead(BaseModel):
    """A dead delivery queued again: a fresh round of attempts, the same message id."""

    id: int
    status: str


def _read(sub: hooks.Subscription) -> SubscriptionRead:
    return SubscriptionRead(
        id=sub.id, url=sub.url, topics=list(sub.topics), created_at=sub.created_at
    )


@router.post(
    "/subscriptions",
    status_code=201,
    response_model=SubscriptionCreated,
    responses=error_responses(400, 401, 403, 413, 415, 422),
    summary="Subscribe to changes for the subjects this service consulted",
)
def create_subscription(
    body: SubscriptionCreate, session: DbSession, clock: Now, caller: Service
) -> SubscriptionCreated:
    """Messages come for subjects the service checked and who consented to one of its measures.

    ``grade.changed`` is refused (422 ``topic_not_allowed``): a service learns
    decisions, never grades; ``measure.changed`` carries what a grade change
    does to its measures.
    """
    made = hooks.subscribe(
        session, principal_id=caller.id, url=body.url, topics=body.topics, now=clock.now()
    )
    return SubscriptionCreated(**_read(made.subscription).model_dump(), secret=made.secret)


@router.get(
    "/subscriptions",
    response_model=list[SubscriptionRead],
    responses=error_responses(401, 403),
    summary="This service's subscriptions",
)
def read_subscriptions(session: DbSession, caller: Service) -> list[SubscriptionRead]:
    """The calling service's active subscriptions, oldest first."""
    return [_read(s) for s in hooks.list_subscriptions(session, principal_id=caller.id)]


@router.get(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionRead,
    responses=error_responses(401, 403, 404),
    summary="One of this service's subscriptions",
)
def read_subscription(
    subscription_id: RowId, session: DbSession, caller: Service
) -> SubscriptionRead:
    """A subscription of the calling service (another service's is not found)."""
    return _read(
        hooks.get_subscription(session, principal_id=caller.id, subscription_id=subscription_id)
    )


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404),
    summary="Unsubscribe",
)
def delete_subscription(
    subscription_id: RowId, session: DbSession, clock: Now, caller: Service
) -> Response:
    """Revoke the subscription; its pending deliveries are cancelled."""
    hooks.unsubscribe(
        session, principal_id=caller.id, subscription_id=subscription_id, now=clock.now()
    )
    return Response(status_code=204)


@router.get(
    "/dead-letters",
    response_model=list[DeadLetterRead],
    responses=error_responses(401, 403, 422),
    summary="Deliveries that used up their attempts",
)
def read_dead_letters(
    session: DbSession,
    caller: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterRead]:
    """Dead deliveries, newest event first: service, URL, event, attempts and the last error."""
    return [
        DeadLetterRead(
            id=d.id,
            message_id=d.message_id,
            subscription_id=d.subscription_id,
            service=d.service,
            url=d.url,
            event=d.event,
            attempts=d.attempts,
            last_error=d.last_error,
            event_at=d.event_at,
        )
        for d in delivery.dead_letters(session, limit=limit)
    ]


@router.post(
    "/dead-letters/{delivery_id}:retry",
    status_code=202,
    response_model=RetryRead,
    responses=error_responses(401, 403, 404, 409),
    summary="Send a dead delivery again",
)
@accepts(JSON, "")  # no body needed
def retry_dead_letter(
    delivery_id: RowId, session: DbSession, clock: Now, caller: Admin
) -> RetryRead:
    """Queue a dead delivery for a fresh round of attempts (409 ``delivery_not_dead`` otherwise)."""
    try:
        delivery.retry_dead(session, delivery_id=delivery_id, now=clock.now())
    except delivery.NotDead as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    audit.record(
        session,
        principal=caller,
        action="webhook.retry",
        purpose="dead letter",
        subject_id=None,
        detail={"delivery": delivery_id},
        now=clock.now(),
    )
    return RetryRead(id=delivery_id, status=hooks.PENDING)
