"""``backtest``: what a proposed policy would change, held to the pure scorer subject by subject.

Every count in the report (grade transitions, list entries and exits,
measures' deny/grant counts, the breakdowns) is recomputed here from the
pure scorer's results under both policies.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_world import City, variant

from chengxin.domain.decisions import outcome, triggered
from chengxin.domain.policy import Policy
from chengxin.domain.scoring import ScoreResult, score
from chengxin.service.backtest import POLICY_WIDE, backtest, write_chart
from chengxin.service.errors import Invalid
from chengxin.store.db import transaction
from chengxin.store.schema import subjects

AS_OF = date(2026, 11, 1)


@pytest.fixture
def proposal(city: City) -> Policy:
    """Tickets cost 20 points instead of 5; defaulters stay listed 3 months instead of 2 years."""
    return variant(city.policy, "2026.2", **{"fail-to-yield": -20, "judgment-defaulters": "3m"})


def scored(policy: Policy, city: City) -> dict[int, ScoreResult]:
    return {sid: score(policy, facts, AS_OF) for sid, facts in city.facts().items()}


def applies(policy: Policy, code: str, result: ScoreResult, verdict: str) -> bool:
    """Whether a measure gives ``verdict`` to a scored subject (nobody has consented)."""
    measure = policy.measures_by_code[code]
    return outcome(measure, hit=triggered(policy, measure, result), consent=False) == verdict


def test_the_report_matches_the_pure_scorer(city: City, proposal: Policy) -> None:
    report = backtest(city.engine, policy=proposal, against=city.policy, as_of=AS_OF)
    old, new = scored(city.policy, city), scored(proposal, city)
    assert report.subjects == len(old)
    assert report.transitions == Counter((old[s].grade, new[s].grade) for s in old)
    assert sum(map(sum, report.matrix())) == report.subjects
    assert report.moved == sum(old[s].grade != new[s].grade for s in old) > 0
    assert report.score_down == sum(new[s].score < old[s].score for s in old) > 0
    assert report.score_up == 0
    for lst in report.lists:
        was = {s for s in old if lst.code in old[s].lists}
        now = {s for s in new if lst.code in new[s].lists}
        assert (lst.before, lst.after) == (len(was), len(now)), lst.code
        assert (lst.entered, lst.left) == (len(now - was), len(was - now)), lst.code
        assert len(lst.entered_subjects) == min(5, lst.entered)
    defaulters = next(lst for lst in report.lists if lst.code == "judgment-defaulters")
    assert defaulters.left > 0 and defaulters.entered == 0
    assert all("*" in who for who in defaulters.left_subjects)  # masked, as public lists are
    for m in report.measures:
        was = {s for s in old if applies(city.policy, m.code, old[s], m.outcome)}
        now = {s for s in new if applies(proposal, m.code, new[s], m.outcome)}
        assert (m.before, m.after, m.started, m.stopped) == (
            len(was), len(now), len(now - was), len(was - now)
        ), m.code  # fmt: skip
    flight = next(m for m in report.measures if m.code == "transport.flight_booking")
    assert (flight.outcome, flight.stopped) == ("deny", defaulters.left)


def test_the_breakdowns_add_up(city: City, proposal: Policy) -> None:
    report = backtest(city.engine, policy=proposal, against=city.policy, as_of=AS_OF)
    with transaction(city.engine) as session:
        rows = session.execute(select(subjects.c.kind, subjects.c.region)).all()
    kinds = Counter(r.kind for r in rows)
    assert {b.key: b.subjects for b in report.breakdowns["kind"]} == dict(kinds)
    provinces = Counter((r.region or "")[:2] or "(unknown)" for r in rows)
    assert {b.key: b.subjects for b in report.breakdowns["province"]} == dict(provinces)
    beijing = next(b for b in report.breakdowns["province"] if b.key == "11")
    assert beijing.label == "Beijing"
    for name in ("kind", "province"):
        assert sum(b.changed for b in report.breakdowns[name]) == report.changed
        assert sum(b.grade_moved for b in report.breakdowns[name]) == report.moved
    assert sum(b.changed for b in report.breakdowns["region"]) == report.changed
    assert all(b.changed for b in report.breakdowns["region"])
    domains = {b.key: b for b in report.breakdowns["domain"]}
    # Only ticket and default records are scored differently: societal and judicial.
    assert set(domains) <= {"societal", "judicial"}
    assert domains["societal"].grade_moved > 0 and domains["judicial"].left > 0


def test_a_policy_against_itself_changes_nothing(city: City) -> None:
    report = backtest(city.engine, policy=city.policy, against=city.policy, as_of=AS_OF)
    assert (report.changed, report.moved, report.score_up, report.score_down) == (0, 0, 0, 0)
    assert all(lst.entered == lst.left == 0 for lst in report.lists)
    assert all(m.started == m.stopped == 0 for m in report.measures)
    assert report.breakdowns["domain"] == [] and report.breakdowns["region"] == []


def test_a_change_of_grade_bands_is_policy_wide(city: City) -> None:
    data = city.policy.canonical()
    data["version"] = "2026.3"
    for grade in data["grades"]:
        if grade["grade"] == "A":
            grade["min"] = 1001  # the base score is no longer an A
    stricter = Policy.model_validate(data)
    report = backtest(city.engine, policy=stricter, against=city.policy, as_of=AS_OF)
    assert report.moved > 0
    assert [b.key for b in report.breakdowns["domain"]] == [POLICY_WIDE]


def test_the_json_form(city: City, proposal: Policy) -> None:
    report = backtest(city.engine, policy=proposal, against=city.policy, as_of=AS_OF)
    data = json.loads(json.dumps(report.as_dict()))
    assert data["before"]["policy"] == "national@2026.1"
    assert data["after"]["policy"] == "national@2026.2"
    assert data["grades"]["matrix"] == report.matrix()
    assert data["scores"]["after"]["max"] <= data["scores"]["before"]["max"]
    assert {"province", "region", "kind", "domain"} == set(data["breakdowns"])


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_the_chart(city: City, proposal: Policy, tmp_path: Path, suffix: str) -> None:
    report = backtest(city.engine, policy=proposal, against=city.policy, as_of=AS_OF)
    path = write_chart(report, tmp_path / f"change{suffix}")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:400]
    assert len(data) > 10_000
    with pytest.raises(Invalid, match=r"must end in \.png or \.svg"):
        write_chart(report, tmp_path / "change.pdf")


def test_an_attribute_retyped_by_the_proposal_is_refused(city: City) -> None:
    data = city.policy.canonical()
    data["version"] = "2026.4"
    data["record_types"][0].setdefault("attributes", {})["amount_cny"] = {"type": "str"}
    for rtype in data["record_types"]:
        if "amount_cny" in rtype.get("attributes", {}):
            rtype["attributes"]["amount_cny"] = {"type": "str"}
    data["rules"] = [r for r in data["rules"] if "amount_cny" not in (r.get("when") or "")]
    retyped = Policy.model_validate(data)
    with pytest.raises(Invalid, match=r"attribute 'amount_cny' is int64 under national@2026\.1"):
        backtest(city.engine, policy=retyped, against=city.policy, as_of=AS_OF)


def test_consent_decides_a_reward_s_grants(city: City, proposal: Policy) -> Any:
    rewards = [m for m in proposal.measures if m.kind == "reward" and m.consent_required]
    assert rewards, "the national pack has a reward that needs consent"
    report = backtest(city.engine, policy=proposal, against=city.policy, as_of=AS_OF)
    for m in report.measures:
        if m.code == rewards[0].code:
            assert (m.before, m.after) == (0, 0)  # nobody in the city has consented
