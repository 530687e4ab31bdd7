"""Fan-out: who hears about a change, and what they learn (hard line 6, least disclosure)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import func, select
from webhook_world import DEPOSIT_FREE, FLIGHTS, World, walk_keys

from chengxin.service.errors import NotRegistered
from chengxin.service.transport import FakeTransport
from chengxin.service.webhooks import (
    TopicNotAllowed,
    TopicUnknown,
    UrlInvalid,
    fan_out,
    list_subscriptions,
    subscribe,
    unsubscribe,
)
from chengxin.store.db import transaction
from chengxin.store.schema import audit_events, deliveries, outbox

pytestmark = [pytest.mark.usefixtures("backend"), pytest.mark.timeout(60)]


def delivery_rows(world: World) -> list[Any]:
    with transaction(world.engine) as s:
        return list(s.execute(select(deliveries).order_by(deliveries.c.id)).all())


def sent_bodies(transport: FakeTransport) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in transport.requests]


def test_a_consulted_consenting_subject_entering_a_list_reaches_the_service(world: World) -> None:
    world.ready()
    world.default()
    report = world.fan_out()
    assert (report.events, report.deliveries) == (2, 1)  # grade.changed and list.entered
    transport = FakeTransport()
    assert world.deliver(transport).delivered == 1
    (body,) = sent_bodies(transport)
    assert body == {
        "type": "list.entered",
        "timestamp": "2026-11-01T12:00:00Z",
        "data": {
            "subject": {"scheme": "cn-rid", "id": world.rid},
            "list": "judgment-defaulters",
            "measures": [{"measure": FLIGHTS, "decision": "deny", "previous": "allow"}],
            "policy_version": world.policy.label,
        },
    }


def test_the_payload_discloses_no_score_grade_records_or_name(world: World) -> None:
    world.ready(topics=("list.entered", "list.left", "measure.changed"))
    world.default()
    world.fan_out()
    transport = FakeTransport()
    world.deliver(transport)
    (body,) = sent_bodies(transport)
    keys = walk_keys(body)
    assert keys == {
        "type",
        "timestamp",
        "data",
        "subject",
        "scheme",
        "id",
        "list",
        "measures",
        "measure",
        "decision",
        "previous",
        "policy_version",
    }
    text = transport.requests[0].body.decode()
    for leak in ("score", "grade", "record", "Zhang San", "amount", "court", "old", "new"):
        assert leak not in text, leak


def test_no_consent_no_delivery(world: World) -> None:
    airline = world.service()
    world.consult(airline)
    world.subscribe(airline)
    world.default()
    assert world.fan_out().deliveries == 0
    assert delivery_rows(world) == []


def test_a_service_that_never_checked_the_subject_hears_nothing(world: World) -> None:
    airline = world.service()
    world.consent()
    world.subscribe(airline)
    other = world.service("airline-2")
    world.consult(other)  # another airline's check does not count for this one
    world.default()
    assert world.fan_out().deliveries == 0


def test_consent_to_another_services_measure_does_not_count(world: World) -> None:
    airline = world.service()
    world.consult(airline)
    world.consent(DEPOSIT_FREE)
    world.subscribe(airline)
    world.default()
    assert world.fan_out().deliveries == 0


def test_a_measure_outside_the_service_scopes_does_not_count(world: World) -> None:
    airline = world.service(scopes=("enforcement.flight_booking_obstructor",))
    world.consult(airline)
    world.consent()
    world.subscribe(airline)
    world.default()
    assert world.fan_out().deliveries == 0


def test_a_list_event_reaches_a_measure_changed_subscriber_as_measure_changed(
    world: World,
) -> None:
    world.ready(topics=("measure.changed",))
    world.default()
    world.fan_out()
    transport = FakeTransport()
    world.deliver(transport)
    (body,) = sent_bodies(transport)
    assert body["type"] == "measure.changed"
    assert "list" not in body["data"]
    assert body["data"]["measures"] == [
        {"measure": FLIGHTS, "decision": "deny", "previous": "allow"}
    ]


def test_a_subscriber_to_list_left_only_hears_the_exit(world: World) -> None:
    world.ready(topics=("list.left",))
    world.default()
    assert world.fan_out().deliveries == 0
    world.perform()
    assert world.fan_out().deliveries == 1
    transport = FakeTransport()
    world.deliver(transport)
    (body,) = sent_bodies(transport)
    assert body["type"] == "list.left"
    assert body["data"]["measures"] == [
        {"measure": FLIGHTS, "decision": "allow", "previous": "deny"}
    ]


def test_a_grade_change_becomes_measure_changed_for_a_consented_reward(world: World) -> None:
    landlord = world.service("landlord-1", "landlord", (DEPOSIT_FREE,))
    world.consult(landlord, DEPOSIT_FREE)
    world.consent(DEPOSIT_FREE)
    world.subscribe(landlord, ("measure.changed",), "https://landlord.example/hooks")
    world.heroic()  # A -> AA: deposit-free rental is now granted
    assert world.fan_out().deliveries == 1
    transport = FakeTransport()
    world.deliver(transport)
    (body,) = sent_bodies(transport)
    assert body["type"] == "measure.changed"
    assert body["data"]["measures"] == [
        {"measure": DEPOSIT_FREE, "decision": "grant", "previous": "allow"}
    ]
    assert "AA" not in transport.requests[0].body.decode()


def test_a_grade_change_that_changes_no_decision_is_not_sent(world: World) -> None:
    world.ready(topics=("measure.changed",))  # an airline: its measures follow lists only
    world.heroic()
    assert world.fan_out().deliveries == 0


def test_services_cannot_subscribe_to_grades_or_unknown_topics(world: World) -> None:
    airline = world.service()
    with pytest.raises(TopicNotAllowed, match="hard line 6"):
        world.subscribe(airline, ("grade.changed",))
    with pytest.raises(TopicUnknown):
        world.subscribe(airline, ("list.changed",))
    with pytest.raises(TopicUnknown):
        world.subscribe(airline, ())


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.example/",
        "/relative",
        "https://user:pw@x.example/",
        "https://x.example/#f",
        "x" * 600,
    ],
)
def test_bad_urls_are_refused(world: World, url: str) -> None:
    with pytest.raises(UrlInvalid):
        world.subscribe(world.service(), url=url)


def test_only_services_subscribe(world: World) -> None:
    from chengxin.service.principals import add_principal

    with transaction(world.engine) as s:
        court = add_principal(
            s,
            name="court",
            role="provider",
            kind="machine",
            provider="court-1",
            scopes=["judicial.judgment_unperformed"],
            now=world.clock.now(),
        )
    with pytest.raises(NotRegistered):
        world.subscribe(court)


def test_the_secret_is_a_standard_webhooks_secret_shown_once(world: World) -> None:
    airline = world.service()
    created = world.subscribe(airline)
    assert created.secret.startswith("whsec_")
    with transaction(world.engine) as s:
        (listed,) = list_subscriptions(s, principal_id=airline.id)
    assert listed == created.subscription
    assert not hasattr(listed, "secret")


def test_unsubscribing_cancels_pending_deliveries(world: World) -> None:
    airline, _ = world.ready()
    world.default()
    world.fan_out()
    (sub,) = delivery_rows(world)
    with transaction(world.engine) as s:
        unsubscribe(
            s, principal_id=airline.id, subscription_id=sub.subscription_id, now=world.clock.now()
        )
    transport = FakeTransport()
    world.deliver(transport)
    assert transport.requests == []
    assert [r.status for r in delivery_rows(world)] == ["cancelled"]


def test_revoking_consent_before_delivery_cancels_it(world: World) -> None:
    world.ready()
    world.default()
    world.fan_out()
    world.revoke_consent()
    transport = FakeTransport()
    report = world.deliver(transport)
    assert (report.attempted, report.cancelled) == (0, 1)
    assert transport.requests == []


def test_a_revoked_principal_gets_nothing_more(world: World) -> None:
    from chengxin.service.principals import revoke

    airline, _ = world.ready()
    world.default()
    world.fan_out()
    with transaction(world.engine) as s:
        revoke(s, name=airline.name, now=world.clock.now())
    transport = FakeTransport()
    assert world.deliver(transport).cancelled == 1
    assert transport.requests == []


def test_events_are_fanned_out_once_and_marked(world: World) -> None:
    world.ready()
    world.default()
    assert world.fan_out().events == 2
    assert world.fan_out().events == 0
    with transaction(world.engine) as s:
        pending = s.execute(
            select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
        ).scalar_one()
        marked = s.execute(select(outbox.c.attempts, outbox.c.next_attempt_at)).all()
    assert pending == 0
    assert {(a, n) for a, n in marked} == {(1, None)}
    assert len(delivery_rows(world)) == 1


def test_a_later_subscription_does_not_hear_earlier_events(world: World) -> None:
    airline = world.service()
    world.consult(airline)
    world.consent()
    world.default()
    world.fan_out()
    world.subscribe(airline)
    assert world.fan_out().deliveries == 0


def test_two_workers_fanning_out_at_once_make_each_delivery_once(world: World) -> None:
    world.ready()
    world.default()
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            with transaction(world.engine) as s:
                fan_out(s, now=world.clock.now())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(delivery_rows(world)) == 1


def test_a_delivered_message_is_audited_without_the_identifier(world: World) -> None:
    airline, _ = world.ready()
    world.default()
    world.fan_out()
    world.deliver(FakeTransport())
    with transaction(world.engine) as s:
        (event,) = s.execute(
            select(audit_events).where(audit_events.c.action == "webhook.delivered")
        ).all()
    assert (event.principal, event.subject_id) == (airline.name, world.subject_id)
    detail = json.loads(event.detail)
    assert detail["measures"] == [{"measure": FLIGHTS, "decision": "deny", "previous": "allow"}]
    assert world.rid not in event.detail


def test_subscribe_needs_a_principal_that_exists(world: World) -> None:
    with transaction(world.engine) as s, pytest.raises(NotRegistered):
        subscribe(
            s,
            principal_id=999,
            url="https://x.example/",
            topics=["list.left"],
            now=world.clock.now(),
        )
