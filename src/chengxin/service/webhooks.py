"""Webhooks: subscriptions, and fan-out from the outbox to the services entitled to hear.

Who learns what (hard line 6, least disclosure), written once:

1. Only an active subscription of an active service principal receives anything.
2. The service must have consulted the subject: an audit event with action
   ``check`` by that principal for that subject.
3. It hears only through the measures it is registered for -- the policy's
   measures in its scopes whose ``consulted_by`` names its service kind, as
   ``check`` requires -- and only those to which the subject has a consent
   that is not revoked.
4. A list event reaches it only through a measure that list triggers; a grade
   change only as ``measure.changed``, for the measures whose decision the new
   grade changes. A message carries the topic, the subject's identifier (which
   the service already used), the list or the measures with their decisions,
   the policy version and the time: never a score, a grade, a record or a name.
5. A subscription to the event's own topic gets it under that topic; failing
   that, a subscription to ``measure.changed`` gets it as ``measure.changed``;
   otherwise nothing is sent. Services cannot subscribe to ``grade.changed``.

Rules 1 and 3 are checked again before every delivery attempt
(:mod:`chengxin.service.delivery`): a revoked subscription, principal or
consent cancels what is still pending.

The outbox columns, as webhooks use them: ``delivered_at`` is the instant the
row was fanned out (its deliveries were created in the same transaction),
``attempts`` counts the fan-out passes that claimed it (so 1), and
``next_attempt_at`` is when it may be fanned out (NULL once it has been).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from chengxin.domain.decisions import outcome
from chengxin.domain.policy import Measure, Policy
from chengxin.service.errors import Invalid, NotFound, NotRegistered
from chengxin.service.policies import active_policy, get_policy
from chengxin.service.principals import Principal
from chengxin.store.schema import (
    audit_events,
    consents,
    deliveries,
    outbox,
    principals,
    subjects,
    subscriptions,
)

TOPICS = ("list.entered", "list.left", "measure.changed")
"""What a service may subscribe to."""
CONSULTED = "check"
"""The audit action that shows a service consulted a subject (rule 2)."""
DISCLOSED = "webhook.delivered"
"""The audit action recorded when a message reaches a service (every disclosure is audited)."""

PENDING, DELIVERED, DEAD, CANCELLED = "pending", "delivered", "dead", "cancelled"
MAX_URL = 500


class TopicNotAllowed(Invalid):
    """A subscription asked for a topic that would disclose more than a decision (hard line 6)."""

    code = "topic_not_allowed"


class TopicUnknown(Invalid):
    """A subscription named a topic that does not exist."""

    code = "topic_unknown"


class UrlInvalid(Invalid):
    """A subscription URL that is not an absolute http(s) URL without credentials."""

    code = "url_invalid"


# ----------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class Subscription:
    """A service's subscription, without its secret."""

    id: int
    principal_id: int
    url: str
    topics: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedSubscription:
    """A new subscription and its signing secret (shown this once)."""

    subscription: Subscription
    secret: str


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def as_utc(value: datetime) -> datetime:
    """A stored instant as an aware UTC datetime (SQLite gives them back naive)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_url(url: str) -> str:
    if len(url) > MAX_URL:
        raise UrlInvalid(f"url is longer than {MAX_URL} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UrlInvalid(f"url is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UrlInvalid("url must be an absolute http:// or https:// URL")
    if parsed.userinfo:
        raise UrlInvalid("url must not carry credentials; messages are signed instead")
    if parsed.fragment:
        raise UrlInvalid("url must not have a #fragment")
    return url


def _check_topics(topics: Sequence[str]) -> tuple[str, ...]:
    if not topics:
        raise TopicUnknown(f"name at least one topic: {', '.join(TOPICS)}")
    for t in topics:
        if t == "grade.changed":
            raise TopicNotAllowed(
                "a service never learns a grade (hard line 6, least disclosure); subscribe "
                "to measure.changed to hear when a grade change alters a decision"
            )
        if t not in TOPICS:
            raise TopicUnknown(f"unknown topic {t!r}; topics are {', '.join(TOPICS)}")
    return tuple(sorted(set(topics)))


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=int(row.id),
        principal_id=int(row.principal_id),
        url=row.url,
        topics=tuple(json.loads(row.topics)),
        created_at=as_utc(row.created_at),
        revoked_at=as_utc(row.revoked_at) if row.revoked_at is not None else None,
    )


def subscribe(
    session: Session, *, principal_id: int, url: str, topics: Sequence[str], now: datetime
) -> CreatedSubscription:
    """Subscribe a service principal to topics at ``url``; the secret is returned only here."""
    url, chosen = _check_url(url), _check_topics(topics)
    who = session.execute(
        select(principals.c.role, principals.c.service_kind).where(principals.c.id == principal_id)
    ).first()
    if who is None or who.role != "service" or not who.service_kind:
        raise NotRegistered("only a service principal with a service kind may subscribe")
    secret = new_secret()
    new_id = session.execute(
        insert(subscriptions)
        .values(
            principal_id=principal_id,
            url=url,
            secret=secret,
            topics=json.dumps(list(chosen)),
            created_at=now,
        )
        .returning(subscriptions.c.id)
    ).scalar_one()
    sub = Subscription(int(new_id), principal_id, url, chosen, now, None)
    return CreatedSubscription(sub, secret)


def list_subscriptions(
    session: Session, *, principal_id: int, include_revoked: bool = False
) -> list[Subscription]:
    """A principal's subscriptions, oldest first."""
    stmt = select(subscriptions).where(subscriptions.c.principal_id == principal_id)
    if not include_revoked:
        stmt = stmt.where(subscriptions.c.revoked_at.is_(None))
    return [_subscription(r) for r in session.execute(stmt.order_by(subscriptions.c.id))]


def get_subscription(session: Session, *, principal_id: int, subscription_id: int) -> Subscription:
    """One of the principal's active subscriptions; another's is reported as not found."""
    row = session.execute(
        select(subscriptions).where(
            subscriptions.c.id == subscription_id,
            subscriptions.c.principal_id == principal_id,
            subscriptions.c.revoked_at.is_(None),
        )
    ).first()
    if row is None:
        raise NotFound(f"no subscription {subscription_id}")
    return _subscription(row)


def unsubscribe(
    session: Session, *, principal_id: int, subscription_id: int, now: datetime
) -> None:
    """Revoke a subscription and cancel its pending deliveries."""
    get_subscription(session, principal_id=principal_id, subscription_id=subscription_id)
    session.execute(
        update(subscriptions).where(subscriptions.c.id == subscription_id).values(revoked_at=now)
    )
    session.execute(
        update(deliveries)
        .where(deliveries.c.subscription_id == subscription_id, deliveries.c.status == PENDING)
        .values(status=CANCELLED, next_attempt_at=None, last_error="subscription revoked")
    )


# --------------------------------------------------------- what is disclosed


@dataclass(frozen=True, slots=True)
class Receiver:
    """An active subscription of an active service principal (rule 1)."""

    subscription_id: int
    principal: Principal
    topics: frozenset[str]


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An outbox row as fan-out and delivery read it."""

    topic: str
    subject_id: int
    created_at: datetime
    data: Mapping[str, Any]

    @classmethod
    def of(cls, row: Any) -> OutboxEvent:
        """From a row with the outbox's topic, subject_id, created_at and payload."""
        return cls(row.topic, int(row.subject_id), as_utc(row.created_at), json.loads(row.payload))


def registered_measures(policy: Policy, service: Principal) -> list[Measure]:
    """The measures a service may consult (rule 3): in its scopes, and naming its kind."""
    return [
        m
        for m in policy.measures
        if service.service_kind in m.consulted_by and m.code in service.scopes
    ]


def _changes(policy: Policy, event: OutboxEvent, measures: list[Measure]) -> list[dict[str, str]]:
    """Each measure whose decision the event changes, with the decision before and after."""
    out = []
    for m in measures:
        trig = m.triggered_by
        if event.topic in ("list.entered", "list.left"):
            if trig.list is None or trig.list != event.data.get("list"):
                continue
            after = event.topic == "list.entered"
            before = not after
        elif event.topic == "grade.changed":
            if trig.list is not None:
                continue
            grades = policy.grades_matching(trig)
            before = event.data.get("old") in grades
            after = event.data.get("new") in grades
        else:
            continue
        # Only consented measures get here, so the decision is what check would give.
        was, now_ = outcome(m, hit=before, consent=True), outcome(m, hit=after, consent=True)
        if was != now_:
            out.append({"measure": m.code, "decision": now_, "previous": was})
    return out


def compose_message(
    policy: Policy,
    event: OutboxEvent,
    receiver: Receiver,
    *,
    consented: set[str],
    subject: tuple[str, str],
) -> tuple[str, dict[str, Any]] | None:
    """The topic and body one receiver gets for one event, or None (rules 3 to 5)."""
    mine = [m for m in registered_measures(policy, receiver.principal) if m.code in consented]
    changes = _changes(policy, event, mine)
    if not changes:
        return None
    data: dict[str, Any] = {
        "subject": {"scheme": subject[0], "id": subject[1]},
        "measures": changes,
        "policy_version": policy.label,
    }
    if event.topic in receiver.topics and event.topic != "grade.changed":
        topic = event.topic
        data["list"] = event.data["list"]
    elif "measure.changed" in receiver.topics:
        topic = "measure.changed"
    else:
        return None
    stamp = event.created_at.isoformat().replace("+00:00", "Z")
    # The payload shape Standard Webhooks recommends: type, timestamp, data.
    return topic, {"type": topic, "timestamp": stamp, "data": data}


class PolicyCache:
    """Policies by label, parsed once (an event names the policy that raised it)."""

    def __init__(self) -> None:
        self._by_label: dict[str, Policy] = {}

    def get(self, session: Session, label: str | None) -> Policy:
        """The policy ``label`` names (the active one if it names none that is stored)."""
        key = label or ""
        if key not in self._by_label:
            try:
                found = get_policy(session, ref=key).policy if "@" in key else None
            except NotFound:
                found = None
            if found is None:
                return active_policy(session).policy  # not cached: activations change
            self._by_label[key] = found
        return self._by_label[key]


def active_receivers(
    session: Session, *, now: datetime, subscription_ids: Sequence[int] = ()
) -> list[Receiver]:
    """The receivers rule 1 allows now (of these subscriptions, if any are named)."""
    stmt = (
        select(subscriptions.c.id.label("subscription_id"), subscriptions.c.topics, principals)
        .join(principals, principals.c.id == subscriptions.c.principal_id)
        .where(
            subscriptions.c.revoked_at.is_(None),
            principals.c.role == "service",
            principals.c.service_kind.is_not(None),
            principals.c.revoked_at.is_(None),
            (principals.c.expires_at.is_(None)) | (principals.c.expires_at > now),
        )
        .order_by(subscriptions.c.id)
    )
    if subscription_ids:
        stmt = stmt.where(subscriptions.c.id.in_(list(subscription_ids)))
    return [
        Receiver(
            int(r.subscription_id),
            Principal(
                id=int(r.id),
                name=r.name,
                kind=r.kind,
                role=r.role,
                service_kind=r.service_kind,
                scopes=frozenset(json.loads(r.scopes or "[]")),
            ),
            frozenset(json.loads(r.topics)),
        )
        for r in session.execute(stmt)
    ]


def _consulted(session: Session, subject_ids: Sequence[int], names: Sequence[str]) -> set[Any]:
    """(subject id, principal name) for every service that checked one of these subjects."""
    if not subject_ids or not names:
        return set()
    rows = session.execute(
        select(audit_events.c.subject_id, audit_events.c.principal)
        .where(
            audit_events.c.action == CONSULTED,
            audit_events.c.subject_id.in_(list(subject_ids)),
            audit_events.c.principal.in_(list(names)),
        )
        .distinct()
    )
    return {(int(r.subject_id), r.principal) for r in rows}


def consents_by_subject(session: Session, subject_ids: Sequence[int]) -> dict[int, set[str]]:
    """The measures each subject has a consent to that is not revoked (rule 3)."""
    out: dict[int, set[str]] = {}
    if not subject_ids:
        return out
    rows = session.execute(
        select(consents.c.subject_id, consents.c.measure).where(
            consents.c.subject_id.in_(list(subject_ids)), consents.c.revoked_at.is_(None)
        )
    )
    for r in rows:
        out.setdefault(int(r.subject_id), set()).add(r.measure)
    return out


def identifiers_by_subject(
    session: Session, subject_ids: Sequence[int]
) -> dict[int, tuple[str, str]]:
    """Each subject's (scheme, identifier), which a message names (rule 4)."""
    if not subject_ids:
        return {}
    rows = session.execute(
        select(subjects.c.id, subjects.c.scheme, subjects.c.value).where(
            subjects.c.id.in_(list(subject_ids))
        )
    )
    return {int(r.id): (r.scheme, r.value) for r in rows}


# ------------------------------------------------------------------ fan-out


@dataclass
class FanOutReport:
    """How many outbox events were fanned out and how many deliveries they made."""

    events: int = 0
    deliveries: int = 0


def new_message_id() -> str:
    """A message id for Standard Webhooks' ``webhook-id``: unique, stable across attempts."""
    return "msg_" + secrets.token_hex(16)


def fan_out(session: Session, *, now: datetime, limit: int = 500) -> FanOutReport:
    """Turn outbox events not yet fanned out into deliveries for the services that may hear them.

    Each event is claimed (``delivered_at`` set) in the caller's transaction
    together with its deliveries, so two workers never fan out the same event.
    An event nobody may hear is claimed all the same: a later subscription
    hears only what happens after it.
    """
    report = FanOutReport()
    candidates = [
        int(i)
        for i in session.execute(
            select(outbox.c.id)
            .where(
                outbox.c.delivered_at.is_(None),
                (outbox.c.next_attempt_at.is_(None)) | (outbox.c.next_attempt_at <= now),
            )
            .order_by(outbox.c.id)
            .limit(limit)
        ).scalars()
    ]
    if not candidates:
        return report
    claimed = set(
        session.execute(
            update(outbox)
            .where(outbox.c.id.in_(candidates), outbox.c.delivered_at.is_(None))
            .values(delivered_at=now, attempts=outbox.c.attempts + 1, next_attempt_at=None)
            .returning(outbox.c.id)
        ).scalars()
    )
    report.events = len(claimed)
    receivers = active_receivers(session, now=now)
    if not claimed or not receivers:
        return report
    rows = session.execute(
        select(outbox).where(outbox.c.id.in_(sorted(claimed))).order_by(outbox.c.id)
    ).all()
    sids = sorted({int(r.subject_id) for r in rows if r.subject_id is not None})
    consulted = _consulted(session, sids, [r.principal.name for r in receivers])
    consented = consents_by_subject(session, sids)
    idents = identifiers_by_subject(session, sids)
    pols = PolicyCache()
    new: list[dict[str, Any]] = []
    for row in rows:
        if row.subject_id is None:
            continue
        event = OutboxEvent.of(row)
        policy = pols.get(session, event.data.get("policy"))
        for rec in receivers:
            if (event.subject_id, rec.principal.name) not in consulted:
                continue
            msg = compose_message(
                policy,
                event,
                rec,
                consented=consented.get(event.subject_id, set()),
                subject=idents[event.subject_id],
            )
            if msg is not None:
                new.append(dict(outbox_id=int(row.id), subscription_id=rec.subscription_id))
    if new:
        fresh = {"status": PENDING, "attempts": 0, "next_attempt_at": now}
        session.execute(
            insert(deliveries), [d | fresh | {"message_id": new_message_id()} for d in new]
        )
    report.deliveries = len(new)
    return report
