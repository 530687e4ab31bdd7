"""Webhook test helpers: a consulted subject, services, consents, subscriptions, a receiver."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, update

from chengxin.domain.policy import Policy
from chengxin.service import audit
from chengxin.service.clock import FixedClock
from chengxin.service.delivery import Backoff, DeliveryReport, deliver_due
from chengxin.service.principals import Principal, add_principal
from chengxin.service.transport import (
    SeenMessages,
    Transport,
    WebhookRejected,
    verify_webhook,
)
from chengxin.service.webhooks import CreatedSubscription, FanOutReport, fan_out, subscribe
from chengxin.store.db import transaction
from chengxin.store.schema import consents

FLIGHTS = "transport.flight_booking"
DEPOSIT_FREE = "rental.deposit_free"


@dataclass
class World:
    """One person (rid 1) with a record, and helpers to build who may hear about them."""

    engine: Engine
    clock: FixedClock
    policy: Policy
    ingest: Callable[..., Any]
    record_line: Callable[..., dict[str, Any]]
    rid: str
    subject_id: int
    wall: FixedClock = field(
        default_factory=lambda: FixedClock(datetime.now(UTC).replace(microsecond=0))
    )

    def service(
        self, name: str = "airline-1", kind: str = "airline", scopes: Sequence[str] = (FLIGHTS,)
    ) -> Principal:
        """A service principal registered for ``scopes``."""
        with transaction(self.engine) as s:
            return add_principal(
                s,
                name=name,
                role="service",
                kind="machine",
                service_kind=kind,
                scopes=scopes,
                now=self.clock.now(),
            )

    def consult(self, who: Principal, measure: str = FLIGHTS) -> None:
        """``who`` checks the subject (the audit event the check API writes)."""
        with transaction(self.engine) as s:
            audit.record(
                s,
                principal=who,
                action="check",
                purpose="booking",
                subject_id=self.subject_id,
                detail={"measure": measure, "decision": "allow"},
                now=self.clock.now(),
            )

    def consent(self, measure: str = FLIGHTS) -> None:
        """The subject consents to ``measure``."""
        with transaction(self.engine) as s:
            s.execute(
                insert(consents).values(
                    subject_id=self.subject_id, measure=measure, granted_at=self.clock.now()
                )
            )

    def revoke_consent(self, measure: str = FLIGHTS) -> None:
        """The subject withdraws consent to ``measure``."""
        with transaction(self.engine) as s:
            s.execute(
                update(consents)
                .where(consents.c.subject_id == self.subject_id, consents.c.measure == measure)
                .values(revoked_at=self.clock.now())
            )

    def subscribe(
        self,
        who: Principal,
        topics: Sequence[str] = ("list.entered", "list.left"),
        url: str = "https://airline.example/hooks",
    ) -> CreatedSubscription:
        """``who`` subscribes to ``topics``."""
        with transaction(self.engine) as s:
            return subscribe(s, principal_id=who.id, url=url, topics=topics, now=self.clock.now())

    def default(self) -> None:
        """The subject leaves a large judgment unperformed: enters judgment-defaulters."""
        report = self.ingest(self.record_line(rid=self.rid, occurred_at="2026-10-01"))
        assert report.rescore.entered == 1

    def perform(self) -> None:
        """The subject performs the judgment: leaves judgment-defaulters."""
        report = self.ingest(
            self.record_line(
                rid=self.rid,
                type="judicial.judgment_performed",
                attributes=None,
                occurred_at="2026-10-20",
            )
        )
        assert report.rescore.left == 1

    def heroic(self) -> None:
        """A heroic act lifts the subject from A to AA."""
        report = self.ingest(
            self.record_line(
                rid=self.rid,
                type="societal.heroic_act",
                attributes=None,
                occurred_at="2026-10-15",
            )
        )
        assert report.rescore.grade_changes == 1

    def fan_out(self) -> FanOutReport:
        """One fan-out pass, committed."""
        with transaction(self.engine) as s:
            return fan_out(s, now=self.clock.now())

    def deliver(
        self,
        transport: Transport,
        *,
        clock: FixedClock | None = None,
        backoff: Backoff | None = None,
    ) -> DeliveryReport:
        """One delivery pass on the wall clock (or ``clock``)."""
        return deliver_due(
            self.engine, transport=transport, clock=clock or self.wall, backoff=backoff
        )

    def ready(self, topics: Sequence[str] = ("list.entered", "list.left")) -> tuple[Principal, str]:
        """An airline that consulted the subject, with consent, subscribed; its secret."""
        airline = self.service()
        self.consult(airline)
        self.consent()
        created = self.subscribe(airline, topics)
        return airline, created.secret


def walk_keys(value: Any) -> set[str]:
    """Every key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in walk_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in walk_keys(v)}
    return set()


# ----------------------------------------------------------- a real receiver


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies with ``standardwebhooks``.

    It refuses the first attempt of every message with 500 (without acting on
    it), then acts once per message id and answers 204; duplicates get 204 and
    no second effect. Bad signatures, stale timestamps and replays get the
    4xx and error code :func:`verify_webhook` names.
    """

    secret: str = ""
    url: str = ""
    attempts: dict[str, int] = field(default_factory=dict)
    effects: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, str]] = field(default_factory=list)
    seen: SeenMessages = field(default_factory=SeenMessages)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        """Verify, then fail the first attempt, act once, acknowledge duplicates."""
        from standardwebhooks import Webhook
        from standardwebhooks.webhooks import WebhookVerificationError

        try:
            msg = verify_webhook(
                self.secret, headers, body, now=datetime.now(UTC), seen_ids=self.seen
            )
            # The reference implementation must agree (it checks the signature and its
            # five-minute window against the real clock).
            Webhook(self.secret).verify(body, headers)
        except WebhookRejected as exc:
            return exc.status, {"error": {"code": exc.code, "message": str(exc)}}
        except WebhookVerificationError as exc:  # pragma: no cover - a disagreement
            return 401, {"error": {"code": "reference_disagrees", "message": str(exc)}}
        with self.lock:
            n = self.attempts[msg.message_id] = self.attempts.get(msg.message_id, 0) + 1
            if n == 1:
                return 500, {"error": {"code": "try_again", "message": "first attempt fails"}}
            if msg.message_id not in {e["id"] for e in self.effects}:
                self.effects.append({"id": msg.message_id, "payload": msg.payload})
        return 204, None
