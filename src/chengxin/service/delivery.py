"""Webhook delivery: signed posts with retries and exponential back-off, and dead letters.

Fan-out (:mod:`chengxin.service.webhooks`) creates a pending delivery per
receiver of an outbox event; this module attempts them. Rules 1 and 3 of
that module are checked again before every attempt: a revoked subscription,
principal or consent cancels what is still pending.

Delivery is at least once. An attempt first commits its claim -- attempt
counted, the next attempt already scheduled -- then posts outside any
transaction, then commits the answer; a crash in between leaves the delivery
pending and due again at the scheduled time, never lost and never marked
twice (the answer is recorded only against the attempt that claimed it). The
message id is stable across attempts, so receivers deduplicate on it.
Messages are signed as Standard Webhooks specifies, by the
``standardwebhooks`` package (see :mod:`chengxin.service.transport`, which
also holds the receiver's check). A delivery that used up its attempts is
dead: listed for operators, and retried only by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Update, func, select, update
from sqlalchemy.orm import Session

from chengxin.service import audit
from chengxin.service.clock import Clock
from chengxin.service.errors import NotFound, ServiceError
from chengxin.service.principals import Principal
from chengxin.service.transport import Transport, TransportError, WebhookRequest, sign
from chengxin.service.webhooks import (
    CANCELLED,
    DEAD,
    DELIVERED,
    DISCLOSED,
    PENDING,
    FanOutReport,
    OutboxEvent,
    PolicyCache,
    active_receivers,
    as_utc,
    compose_message,
    consents_by_subject,
    fan_out,
    identifiers_by_subject,
)
from chengxin.store.db import transaction
from chengxin.store.schema import deliveries, outbox, principals, subscriptions


class NotDead(ServiceError):
    """Only a dead delivery can be retried by hand."""

    code = "delivery_not_dead"


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try again: ``base`` × 2^(attempt−1), capped, half of it jittered; then dead.

    The jitter is "equal jitter" (half the delay fixed, half uniform) so the
    schedule always grows while retries from many deliveries spread out. It is
    drawn from a hash of the message id and attempt number: deterministic, and
    the same on every worker.
    """

    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)
    max_attempts: int = 8

    def delay(self, message_id: str, attempt: int) -> timedelta:
        """How long to wait after failed attempt ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.base * (1 << max(0, attempt - 1)))
        digest = hashlib.sha256(f"{message_id}:{attempt}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        half = ceiling / 2
        return half + half * fraction


@dataclass
class DeliveryReport:
    """What one delivery pass did."""

    attempted: int = 0
    delivered: int = 0
    failed: int = 0  # will be retried
    dead: int = 0
    cancelled: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-able form."""
        return dict(asdict(self))


def _changed(session: Session, stmt: Update) -> int:
    """Execute an UPDATE and return how many rows it changed (0: someone else got there)."""
    return int(cast(CursorResult[Any], session.execute(stmt)).rowcount)


def _body(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: int
    attempt: int
    request: WebhookRequest | None = None  # None: cancelled or dead at claim time
    outcome: str | None = None
    to: Principal | None = None
    subject_id: int | None = None
    body: Mapping[str, Any] | None = None


def _claim(
    session: Session, delivery_id: int, *, now: datetime, backoff: Backoff, pols: PolicyCache
) -> _Claim | None:
    """Count and schedule the next attempt of a due delivery and build its request."""
    row = session.execute(
        select(deliveries, subscriptions.c.url, subscriptions.c.secret, outbox.c.topic)
        .add_columns(outbox.c.subject_id, outbox.c.created_at, outbox.c.payload)
        .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
        .join(outbox, outbox.c.id == deliveries.c.outbox_id)
        .where(deliveries.c.id == delivery_id)
    ).first()
    if (
        row is None
        or row.status != PENDING
        or row.next_attempt_at is None
        or as_utc(row.next_attempt_at) > now
    ):
        return None  # another worker took it
    guard = (
        deliveries.c.id == delivery_id,
        deliveries.c.status == PENDING,
        deliveries.c.attempts == row.attempts,
    )

    def finish(status: str, error: str) -> _Claim | None:
        done = _changed(
            session,
            update(deliveries)
            .where(*guard)
            .values(status=status, next_attempt_at=None, last_error=error),
        )
        return _Claim(delivery_id, int(row.attempts), outcome=status) if done else None

    if row.attempts >= backoff.max_attempts:
        return finish(DEAD, f"no answer recorded for attempt {row.attempts} (worker stopped)")
    active = active_receivers(session, now=now, subscription_ids=[int(row.subscription_id)])
    if not active:
        return finish(CANCELLED, "subscription or service principal no longer active")
    rec = active[0]
    event = OutboxEvent.of(row)
    sid = event.subject_id
    msg = compose_message(
        pols.get(session, event.data.get("policy")),
        event,
        rec,
        consented=consents_by_subject(session, [sid]).get(sid, set()),
        subject=identifiers_by_subject(session, [sid])[sid],
    )
    if msg is None:
        return finish(CANCELLED, "nothing left to disclose (consent revoked)")
    attempt = int(row.attempts) + 1
    claimed = _changed(
        session,
        update(deliveries)
        .where(*guard)
        .values(attempts=attempt, next_attempt_at=now + backoff.delay(row.message_id, attempt)),
    )
    if not claimed:
        return None
    body = _body(msg[1])
    headers = sign(row.secret, message_id=row.message_id, at=now, body=body)
    request = WebhookRequest(row.url, headers, body.encode())
    return _Claim(delivery_id, attempt, request, to=rec.principal, subject_id=sid, body=msg[1])


def _record(
    session: Session, claim: _Claim, *, error: str | None, now: datetime, backoff: Backoff
) -> str:
    """Store the answer to a claimed attempt; returns the status it leaves."""
    guard = (
        deliveries.c.id == claim.delivery_id,
        deliveries.c.status == PENDING,
        deliveries.c.attempts == claim.attempt,
    )
    if error is None:
        values: dict[str, Any] = {
            "status": DELIVERED,
            "delivered_at": now,
            "next_attempt_at": None,
            "last_error": None,
        }
    elif claim.attempt >= backoff.max_attempts:
        values = {"status": DEAD, "next_attempt_at": None, "last_error": error}
    else:
        values = {"last_error": error}  # the next attempt was scheduled by the claim
    done = _changed(session, update(deliveries).where(*guard).values(**values))
    if not done:
        return "stale"
    if error is None and claim.to is not None and claim.body is not None:
        # What the service learnt, without the identifier (audit details hold no personal data).
        data = claim.body["data"]
        audit.record(
            session,
            principal=claim.to,
            action=DISCLOSED,
            purpose="webhook subscription",
            subject_id=claim.subject_id,
            detail={
                "topic": claim.body["type"],
                "list": data.get("list"),
                "measures": [dict(m) for m in data["measures"]],
                "delivery": claim.delivery_id,
            },
            now=now,
        )
    return str(values.get("status", PENDING))


def deliver_due(
    engine: Engine,
    *,
    transport: Transport,
    clock: Clock,
    limit: int = 100,
    backoff: Backoff | None = None,
) -> DeliveryReport:
    """Attempt up to ``limit`` due deliveries, each claim and each answer in its own transaction."""
    backoff = backoff or Backoff()
    report = DeliveryReport()
    pols = PolicyCache()
    with transaction(engine) as session:
        due = [
            int(i)
            for i in session.execute(
                select(deliveries.c.id)
                .where(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= clock.now())
                .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
                .limit(limit)
            ).scalars()
        ]
    for delivery_id in due:
        with transaction(engine) as session:
            claim = _claim(session, delivery_id, now=clock.now(), backoff=backoff, pols=pols)
        if claim is None:
            continue
        if claim.request is None:
            report.dead += claim.outcome == DEAD
            report.cancelled += claim.outcome == CANCELLED
            continue
        report.attempted += 1
        try:
            answer = transport.send(claim.request)
            error = None if answer.ok else f"HTTP {answer.status}: {answer.body[:200]}"
        except TransportError as exc:
            error = str(exc)[:500]
        with transaction(engine) as session:
            status = _record(session, claim, error=error, now=clock.now(), backoff=backoff)
        report.delivered += status == DELIVERED
        report.failed += status == PENDING
        report.dead += status == DEAD
    return report


def pump(
    engine: Engine,
    *,
    transport: Transport,
    clock: Clock,
    limit: int = 100,
    backoff: Backoff | None = None,
) -> tuple[FanOutReport, DeliveryReport]:
    """One pass of the delivery worker: fan out new events, then attempt what is due."""
    with transaction(engine) as session:
        fanned = fan_out(session, now=clock.now(), limit=max(limit, 500))
    sent = deliver_due(engine, transport=transport, clock=clock, limit=limit, backoff=backoff)
    return fanned, sent


# ------------------------------------------------------------- dead letters


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery that used up its attempts: for operators (it names the service and URL)."""

    id: int
    message_id: str
    subscription_id: int
    service: str
    url: str
    event: str
    outbox_id: int
    attempts: int
    last_error: str | None
    event_at: datetime


def dead_letters(session: Session, *, limit: int = 100) -> list[DeadLetter]:
    """Dead deliveries, newest event first."""
    rows = session.execute(
        select(deliveries, principals.c.name, subscriptions.c.url, outbox.c.topic)
        .add_columns(outbox.c.created_at)
        .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
        .join(principals, principals.c.id == subscriptions.c.principal_id)
        .join(outbox, outbox.c.id == deliveries.c.outbox_id)
        .where(deliveries.c.status == DEAD)
        .order_by(outbox.c.created_at.desc(), deliveries.c.id.desc())
        .limit(limit)
    )
    return [
        DeadLetter(
            id=int(r.id),
            message_id=r.message_id,
            subscription_id=int(r.subscription_id),
            service=r.name,
            url=r.url,
            event=r.topic,
            outbox_id=int(r.outbox_id),
            attempts=int(r.attempts),
            last_error=r.last_error,
            event_at=as_utc(r.created_at),
        )
        for r in rows
    ]


def retry_dead(session: Session, *, delivery_id: int, now: datetime) -> None:
    """Give a dead delivery a fresh round of attempts, the first one now (same message id)."""
    status = session.execute(
        select(deliveries.c.status).where(deliveries.c.id == delivery_id)
    ).scalar_one_or_none()
    if status is None:
        raise NotFound(f"no delivery {delivery_id}")
    if status != DEAD:
        raise NotDead(f"delivery {delivery_id} is {status}, not dead")
    session.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status == DEAD)
        .values(status=PENDING, attempts=0, next_attempt_at=now)
    )


def delivery_counts(session: Session) -> dict[str, int]:
    """Deliveries by status."""
    rows = session.execute(select(deliveries.c.status, func.count()).group_by(deliveries.c.status))
    return {str(r[0]): int(r[1]) for r in rows}
