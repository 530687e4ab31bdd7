"""A visitor, a subject and a policy reader use the pages in Chromium.

Each test clicks through the pages as a person would, from the start page,
and checks what the page shows against the service layer's own answer.
A screenshot of each page lands in the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine

from chengxin.domain.identifiers import parse_identifier
from chengxin.domain.policy import Policy
from chengxin.service import audit
from chengxin.service.clock import FixedClock
from chengxin.service.principals import add_principal
from chengxin.service.subjects import check, explain
from chengxin.store.db import transaction

PASSWORD = "a long enough password"


@pytest.fixture
def defaulter(
    engine: Engine,
    clock: FixedClock,
    policy: Policy,
    rid: Callable[[int], str],
    ingest: Any,
    record_line: Any,
) -> str:
    """Person 0: a judgment defaulter with a traffic ticket, a portal log-in, and one check."""
    ingest(
        record_line(rid=rid(0)),
        record_line(
            rid=rid(0),
            provider="traffic-police-110000",
            type="societal.fail_to_yield_pedestrian",
            occurred_at="2026-06-01",
            attributes={},
        ),
    )
    subject = parse_identifier("cn-rid", rid(0))
    with transaction(engine) as session:
        add_principal(
            session,
            name="zhang",
            role="subject",
            kind="person",
            subject=subject,
            password=PASSWORD,
            now=clock.now(),
        )
        airline = add_principal(
            session,
            name="east-air",
            role="service",
            kind="machine",
            service_kind="airline",
            scopes=("transport.flight_booking",),
            now=clock.now(),
        )
        decision = check(
            session,
            subject=subject,
            measure="transport.flight_booking",
            service="airline",
            clock=clock,
        )
        audit.record_check(
            session,
            principal=airline,
            subject=subject,
            decision=decision,
            purpose="booking MU5101",
            now=clock.now(),
        )
    return rid(0)


def test_a_visitor_finds_a_public_list_and_searches_it(
    page: Any, live_server: str, defaulter: str, tmp_path: Path
) -> None:
    page.goto(live_server + "/")
    expect(page.get_by_role("heading", name="Public lists")).to_be_visible()
    page.get_by_role("link", name="Judgment defaulters").click()
    masked = defaulter[:4] + "*" * 10 + defaulter[-4:]
    expect(page.locator("#members")).to_contain_text(masked)
    page.get_by_label("Identifier").fill(defaulter)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#members tbody tr")).to_have_count(1)
    expect(page.locator("#members")).to_contain_text(masked)
    expect(page.locator("#members")).not_to_contain_text(defaulter)
    assert "Zhang San" not in page.content()
    page.screenshot(path=str(tmp_path / "public-list.png"), full_page=True)
    page.get_by_label("Identifier").fill(defaulter[:9])  # longer than 4: would unmask
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("alert")).to_contain_text("a longer prefix would unmask it")
    expect(page.locator("#members")).to_have_count(0)


def test_a_reader_sees_the_whole_policy(page: Any, live_server: str, policy: Policy) -> None:
    page.goto(live_server + "/")
    page.get_by_role("link", name="The policy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(policy.label)
    expect(page.locator("#grades tbody tr")).to_have_count(len(policy.grades))
    expect(page.locator("#measures tbody tr")).to_have_count(len(policy.measures))
    expect(page.locator("#lists tbody tr")).to_have_count(len(policy.lists))


def test_a_subject_logs_in_reads_every_point_and_logs_out(
    page: Any,
    live_server: str,
    defaulter: str,
    engine: Engine,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    page.goto(live_server + "/")
    page.get_by_role("link", name="Log in").first.click()
    page.get_by_label("Name").fill("zhang")
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("the name or the password is wrong")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(live_server + "/me")
    with transaction(engine) as session:
        ex = explain(session, subject=parse_identifier("cn-rid", defaulter), clock=clock)
    expect(page.locator("#score")).to_have_text(str(ex.result.score))
    expect(page.locator("#grade")).to_have_text(ex.result.grade)
    expect(page.locator("#points tbody tr")).to_have_count(len(ex.result.contributions) + 1)
    expect(page.locator("#lists")).to_contain_text("Judgment defaulters")
    expect(page.locator("#effects")).to_contain_text("transport.flight_booking")
    expect(page.locator("#consultations")).to_contain_text("east-air")
    expect(page.locator("#consultations")).to_contain_text("booking MU5101")
    expect(page.get_by_role("img", name=f"score {ex.result.score}")).to_be_visible()
    page.screenshot(path=str(tmp_path / "portal.png"), full_page=True)

    page.get_by_role("button", name="Log out zhang").click()
    expect(page).to_have_url(live_server + "/")
    page.goto(live_server + "/me")
    expect(page).to_have_url(live_server + "/login")


def test_a_revoked_account_loses_its_session_at_once(
    page: Any, live_server: str, defaulter: str, engine: Engine, clock: FixedClock
) -> None:
    from chengxin.service.principals import revoke

    page.goto(live_server + "/login")
    page.get_by_label("Name").fill("zhang")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(live_server + "/me")
    with transaction(engine) as session:
        revoke(session, name="zhang", now=clock.now())
    page.reload()  # the portal re-reads the principal on every request
    expect(page).to_have_url(live_server + "/login")


def _log_in(page: Any, base: str, name: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_every_read_is_seen_by_the_subject_and_the_auditor(
    page: Any, live_server: str, defaulter: str, engine: Engine, clock: FixedClock, tmp_path: Path
) -> None:
    with transaction(engine) as session:
        for name, role in (("judge-li", "adjudicator"), ("auditor-wu", "auditor")):
            add_principal(
                session, name=name, role=role, kind="person", password=PASSWORD, now=clock.now()
            )
    # An adjudicator reads the subject for a dispute.
    _log_in(page, live_server, "judge-li")
    page.get_by_role("link", name="Read a subject").click()
    page.get_by_label("Subject").fill(f"cn-rid:{defaulter}")
    page.get_by_label("Purpose").fill("dispute 2026/117")
    page.get_by_role("button", name="Read").click()
    expect(page.locator("#lists")).to_contain_text("Judgment defaulters")
    page.screenshot(path=str(tmp_path / "console-subject.png"), full_page=True)
    page.get_by_role("button", name="Log out judge-li").click()
    # The subject sees that read among the consultations of its record.
    _log_in(page, live_server, "zhang")
    expect(page.locator("#consultations")).to_contain_text("judge-li")
    expect(page.locator("#consultations")).to_contain_text("dispute 2026/117")
    page.get_by_role("button", name="Log out zhang").click()
    # The auditor finds both reads in the trail, and both chains intact.
    _log_in(page, live_server, "auditor-wu")
    page.get_by_role("link", name="Audit trail").click()
    page.get_by_label("Verify the chains").check()
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#chains")).to_contain_text("intact")
    expect(page.locator("#chains tbody tr")).to_have_count(2)
    expect(page.locator("#events")).to_contain_text("dispute 2026/117")
    expect(page.locator("#events")).to_contain_text("subject.read")
    page.screenshot(path=str(tmp_path / "console-audit.png"), full_page=True)
