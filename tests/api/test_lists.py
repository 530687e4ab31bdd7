"""Lists: identifiers for adjudicators and auditors (audited); masked for the public."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from chengxin.api.app import create_app
from chengxin.api.settings import Settings
from chengxin.domain.identifiers import make_rid
from chengxin.service.clock import FixedClock
from chengxin.store.schema import audit_events

Auth = Callable[[str], dict[str, str]]
State = Callable[..., Any]
Rows = Callable[..., Any]

pytestmark = pytest.mark.usefixtures("backend")


@pytest.fixture
def listed(ingest: Any, record_line: Any, rid: Callable[[int], str]) -> list[str]:
    """Persons 2-4 on the public defaulter list; person 5 on the private obstructor list."""
    people = [rid(n) for n in (2, 3, 4)]
    lines = [record_line(rid=who, name=f"Name {who}") for who in people]
    lines.append(
        record_line(
            rid=rid(5), type="judicial.obstruction_of_enforcement", attributes=None, name="Li Si"
        )
    )
    assert ingest(*lines).count("accepted") == 4
    return people


def test_list_readers_see_sizes_and_members_and_each_member_sees_the_read(
    client: TestClient, auth: Auth, listed: list[str], rows: Rows
) -> None:
    sizes = client.get("/v1/lists", headers=auth("auditor")).json()
    assert {s["code"]: (s["members"], s["public"]) for s in sizes} == {
        "judgment-defaulters": (3, True),
        "enforcement-obstructors": (1, False),
        "serious-market-violators": (0, True),
        "honour-roll": (0, False),
    }
    r = client.get(
        "/v1/lists/judgment-defaulters/members",
        params={"purpose": "quarterly review"},
        headers=auth("adjudicator"),
    )
    assert r.status_code == 200, r.text
    members = r.json()
    assert [m["subject"] for m in members] == [f"cn-rid:{who}" for who in listed]
    assert members[0]["name"] == f"Name {listed[0]}" and members[0]["list"] == "judgment-defaulters"
    events = rows(audit_events)
    assert len(events) == 3 and {e.action for e in events} == {"list.members"}
    assert len({e.subject_id for e in events}) == 3
    assert {e.purpose for e in events} == {"quarterly review"}


def test_members_need_a_purpose_and_a_known_list(
    client: TestClient, auth: Auth, listed: list[str], state: State
) -> None:
    before = state()
    r = client.get("/v1/lists/judgment-defaulters/members", headers=auth("auditor"))
    assert r.status_code == 422 and "purpose" in r.json()["error"]["message"]
    r = client.get(
        "/v1/lists/no-such-list/members", params={"purpose": "x"}, headers=auth("auditor")
    )
    assert r.status_code == 404
    assert state() == before


def test_the_public_sees_masked_identifiers_without_names_and_no_credentials_needed(
    client: TestClient, listed: list[str], state: State
) -> None:
    before = state()
    r = client.get("/v1/public/lists/judgment-defaulters")
    assert r.status_code == 200, r.text
    got = r.json()
    assert [m["subject"] for m in got] == [who[:4] + "*" * 10 + who[-4:] for who in listed]
    assert all(set(m) == {"list", "kind", "subject", "since", "until"} for m in got)
    assert not any(who in r.text for who in listed) and "Name" not in r.text
    assert state() == before  # public reads are not audited: nothing is written


def test_public_search_by_whole_prefix_or_masked_form_never_unmasks(
    client: TestClient, listed: list[str], rid: Callable[[int], str]
) -> None:
    def search(q: str) -> Any:
        return client.get("/v1/public/lists/judgment-defaulters", params={"q": q})

    target = listed[1]
    masked = target[:4] + "*" * 10 + target[-4:]
    whole = search(target).json()
    assert [m["subject"] for m in whole] == [masked]
    assert len(search(masked).json()) >= 1
    assert all(m["subject"] == masked for m in search(masked).json())
    assert len(search(target[:4]).json()) == 3
    assert search(rid(5)).json() == []  # on a private list only
    assert search(rid(600)).json() == []
    other = make_rid("310101", date(1980, 1, 1), 1)
    assert search(other[:4]).json() == []
    for bad in (target[:8], target[:4] + "12" + "*" * 8 + target[-4:], "11%", "x'--"):
        r = search(bad)
        assert r.status_code == 422, bad
        assert r.json()["error"]["code"] == "invalid"


def test_private_and_unknown_lists_are_not_public(client: TestClient, listed: list[str]) -> None:
    for code in ("enforcement-obstructors", "honour-roll", "nonexistent"):
        r = client.get(f"/v1/public/lists/{code}")
        assert r.status_code == 404
        assert r.json()["error"]["message"] == f"there is no public list {code!r}"


def test_public_search_is_rate_limited_per_client_with_retry_after(
    db_url: str, engine: Engine, clock: FixedClock, listed: list[str]
) -> None:
    app = create_app(Settings(db=db_url, public_rate="3/minute"), engine=engine, clock=clock)
    with TestClient(app) as c, TestClient(app, client=("203.0.113.9", 4000)) as other:
        for _ in range(3):
            assert c.get("/v1/public/lists/judgment-defaulters").status_code == 200
        r = c.get("/v1/public/lists/judgment-defaulters")
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert other.get("/v1/public/lists/judgment-defaulters").status_code == 200
