"""The shipped policy packs load, lint clean, and give the worked examples' answers."""

from __future__ import annotations

from dataclasses import fields
from datetime import date, timedelta
from importlib.resources import files

import pytest

from chengxin.domain.decisions import MAX_REASONS, decide
from chengxin.domain.policy import Policy
from chengxin.domain.policy_load import lint_policy_text
from chengxin.domain.scoring import RecordFact, score
from chengxin.policies import load_pack, pack_names, pack_text

DAY = date(2024, 3, 1)
PACKS = pack_names()


def rec(rid: int, type_: str, day: date = DAY, **attrs: object) -> RecordFact:
    return RecordFact(id=rid, type=type_, occurred_at=day, attributes=attrs)


def eve(day: date) -> date:
    return day - timedelta(days=1)


# --- every pack -----------------------------------------------------------------------------------


def test_the_packs_are_the_yaml_files_shipped_in_the_package() -> None:
    shipped = sorted(
        p.name.removesuffix(".yaml")
        for p in files("chengxin.policies").iterdir()
        if p.name.endswith(".yaml")
    )
    assert shipped == PACKS
    assert {"national", "city-points", "driving-points"} <= set(PACKS)


@pytest.mark.parametrize("name", PACKS)
def test_pack_loads_and_lints_without_errors(name: str) -> None:
    policy = load_pack(name)
    assert isinstance(policy, Policy)
    assert policy.policy == name
    loaded, problems = lint_policy_text(pack_text(name), f"{name}.yaml")
    assert loaded == policy
    assert [p.message for p in problems if p.severity == "error"] == []
    assert policy.content_hash.startswith("sha256:")


@pytest.mark.parametrize("name", PACKS)
def test_pack_warnings_are_only_the_declared_legal_bases(name: str) -> None:
    _, problems = lint_policy_text(pack_text(name), f"{name}.yaml")
    for p in problems:
        assert p.hard_line == 3 and p.path.endswith(".legal_basis"), p.render(name)


def test_only_city_points_leans_on_a_legal_basis_for_unrelated_domains() -> None:
    _, problems = lint_policy_text(pack_text("city-points"), "city-points.yaml")
    flagged = sorted(p.message.split("'")[1] for p in problems)
    assert flagged == ["city.fast_track_permits", "city.public_housing_priority"]
    assert all("societal" in p.message and p.line for p in problems)


def test_unknown_pack_is_a_key_error_naming_the_shipped_ones() -> None:
    with pytest.raises(KeyError, match="national"):
        load_pack("nationl")


@pytest.mark.parametrize("name", PACKS)
def test_every_reward_needs_consent_and_every_negative_rule_expires(name: str) -> None:
    policy = load_pack(name)
    assert all(m.consent_required for m in policy.measures if m.kind == "reward")
    assert all(r.expires is not None for r in policy.rules if policy.is_negative(r.points))
    assert all(lst.duration or lst.enter.grade_in for lst in policy.lists if lst.kind == "black")


# --- national -------------------------------------------------------------------------------------


def test_judgment_defaulter_is_listed_and_denied_a_flight_with_reasons_and_appeal() -> None:
    national = load_pack("national")
    default = rec(1, "judicial.judgment_unperformed", amount_cny=250_000)
    result = score(national, [default], DAY)
    member = result.lists["judgment-defaulters"]
    assert (member.kind, member.since, member.until, member.record_ids) == (
        "black",
        DAY,
        date(2026, 3, 1),
        (1,),
    )
    decision = decide(national, "transport.flight_booking", result)
    assert decision.outcome == "deny"
    assert decision.reasons == ("list:judgment-defaulters", "rule:large-default")
    assert decision.policy_version == "national@2026.1"
    assert decision.appeal is not None and "enforcing court" in decision.appeal
    # A service learns nothing else: no score, grade or records on the decision.
    assert [f.name for f in fields(decision)] == [
        "measure",
        "outcome",
        "reasons",
        "policy_version",
        "appeal",
    ]


def test_performing_the_judgment_lifts_the_list_the_same_day() -> None:
    national = load_pack("national")
    default = rec(1, "judicial.judgment_unperformed", DAY, amount_cny=50_000)
    performed = rec(2, "judicial.judgment_performed", DAY + timedelta(days=40))
    before = score(national, [default, performed], eve(performed.occurred_at))
    after = score(national, [default, performed], performed.occurred_at)
    assert "judgment-defaulters" in before.lists
    assert before.next_change == performed.occurred_at
    assert "judgment-defaulters" not in after.lists
    allowed = decide(national, "transport.flight_booking", after)
    assert (allowed.outcome, allowed.reasons, allowed.appeal) == ("allow", (), None)
    # The score still carries the judgment: lifting a list is not erasing a record.
    assert after.score == 1000 - 50


def test_defaulter_listing_ends_after_two_years_without_performance() -> None:
    national = load_pack("national")
    default = rec(1, "judicial.judgment_unperformed", DAY, amount_cny=50_000)
    end = date(2026, 3, 1)
    assert "judgment-defaulters" in score(national, [default], eve(end)).lists
    assert "judgment-defaulters" not in score(national, [default], end).lists


def test_a_sanction_reaches_only_its_registered_measure() -> None:
    national = load_pack("national")
    result = score(national, [rec(1, "judicial.judgment_unperformed", amount_cny=1)], DAY)
    assert decide(national, "procurement.public_tender", result).outcome == "allow"


# --- city points ----------------------------------------------------------------------------------


def test_traffic_ticket_and_heroic_act_score_1025() -> None:
    city = load_pack("city-points")
    records = [rec(1, "societal.traffic_ticket"), rec(2, "societal.heroic_act")]
    result = score(city, records, DAY)
    assert (result.score, result.grade) == (1025, "A")
    assert sorted((c.rule_id, c.value) for c in result.contributions) == [
        ("heroic-act", 30),
        ("traffic-ticket", -5),
    ]


def test_a_ticket_steps_down_to_half_truncated_then_expires_on_its_day() -> None:
    city = load_pack("city-points")
    ticket = [rec(1, "societal.traffic_ticket", date(2024, 2, 29))]
    one_year, two_years = date(2025, 2, 28), date(2026, 2, 28)  # 29 Feb clamps
    assert score(city, ticket, eve(one_year)).score == 995
    assert score(city, ticket, one_year).score == 998  # -5 x 50% = -2.5, truncated to -2
    assert score(city, ticket, one_year).next_change == two_years
    assert score(city, ticket, eve(two_years)).score == 998
    assert score(city, ticket, two_years).score == 1000
    assert score(city, ticket, two_years).next_change is None


def test_records_expire_exactly_at_occurred_at_plus_expires() -> None:
    city = load_pack("city-points")
    records = [rec(1, "societal.littering", date(2024, 1, 31))]
    end = date(2025, 1, 31)
    assert score(city, records, eve(date(2024, 1, 31))).score == 1000
    assert score(city, records, date(2024, 1, 31)).score == 997
    assert score(city, records, eve(end)).score == 997
    assert score(city, records, end).score == 1000


def test_a_late_bill_is_not_a_default() -> None:
    city = load_pack("city-points")
    late = rec(1, "commercial.unpaid_utility_bill", amount_cny=300, days_overdue=30)
    unpaid = rec(2, "commercial.unpaid_utility_bill", amount_cny=300, days_overdue=120)
    assert score(city, [late], DAY).score == 1000
    assert score(city, [unpaid], DAY).score == 990


def test_grade_c_warns_and_restricts_nothing() -> None:
    city = load_pack("city-points")
    records = [rec(i, "judicial.judgment_unperformed", amount_cny=1000) for i in range(4)]
    result = score(city, records, DAY)
    assert (result.score, result.grade) == (800, "C")
    assert set(result.lists) == {"warned"}
    for code in ("city.public_housing_priority", "city.fast_track_permits"):
        assert decide(city, code, result).outcome == "allow"


def test_grade_d_blacklists_and_sanctions_with_four_reasons() -> None:
    city = load_pack("city-points")
    records = [rec(i, "judicial.judgment_unperformed", amount_cny=1000) for i in range(8)]
    records += [rec(9, "societal.traffic_ticket"), rec(10, "societal.littering")]
    result = score(city, records, DAY)
    assert (result.score, result.grade) == (592, "D")
    assert set(result.lists) == {"city-black-list"}
    decision = decide(city, "city.public_housing_priority", result)
    assert decision.outcome == "deny"
    assert decision.reasons == (
        "list:city-black-list",
        "grade:D",
        "rule:judgment-unperformed",
        "rule:traffic-ticket",
    )
    assert len(decision.reasons) == MAX_REASONS
    assert decision.appeal is not None and "portal" in decision.appeal


@pytest.mark.parametrize(
    ("records", "consent", "outcome"),
    [
        ([], True, "grant"),  # 1000 is grade A
        ([], False, "allow"),
        ([rec(1, "judicial.judgment_unperformed", amount_cny=1)], True, "allow"),  # 950: B
        ([rec(1, "judicial.judgment_unperformed", amount_cny=1)], False, "allow"),
    ],
)
def test_reward_needs_consent_and_never_carries_reasons(
    records: list[RecordFact], consent: bool, outcome: str
) -> None:
    city = load_pack("city-points")
    result = score(city, records, DAY)
    decision = decide(city, "rental.deposit_free", result, consent=consent)
    assert decision.outcome == outcome
    assert (decision.reasons, decision.appeal) == ((), None)


def test_model_residents_list_at_aaa_and_heating_discount_with_consent() -> None:
    city = load_pack("city-points")
    records = [
        rec(1, "societal.heroic_act"),
        rec(2, "societal.blood_donation"),
        rec(3, "societal.volunteering", hours=8),
        rec(4, "societal.volunteering", hours=2),
    ]
    result = score(city, records, DAY)
    assert (result.score, result.grade) == (1045, "AA")
    records.append(rec(5, "societal.blood_donation"))
    result = score(city, records, DAY)
    assert (result.score, result.grade, set(result.lists)) == (1055, "AAA", {"model-residents"})
    assert decide(city, "city.heating_discount", result, consent=True).outcome == "grant"
    assert decide(city, "city.heating_discount", result).outcome == "allow"


# --- driving points -------------------------------------------------------------------------------


EIGHT_POINTS = [
    rec(1, "societal.drink_driving", bac_mg_100ml=120),  # 3 points, 10y
    rec(2, "societal.red_light", seconds_red=2),  # 2 points, 5y
    rec(3, "societal.speeding", kmh_over=45),  # 2 points, 5y
    rec(4, "societal.phone_while_driving"),  # 1 point, 2y6m
]


def test_eight_points_withdraw_the_licence() -> None:
    driving = load_pack("driving-points")
    result = score(driving, EIGHT_POINTS, DAY)
    assert (result.score, result.grade) == (8, "withdrawn")
    decision = decide(driving, "licence.withdrawal", result)
    assert decision.outcome == "deny"
    # At most four reasons: the grade and the heaviest rules, ties by name.
    assert decision.reasons == (
        "grade:withdrawn",
        "rule:drunk-driving",
        "rule:red-light-1s",
        "rule:speeding-41",
    )


def test_a_one_point_offence_expires_after_2y6m_and_the_grade_drops_to_caution() -> None:
    driving = load_pack("driving-points")
    expiry = date(2026, 9, 1)
    before = score(driving, EIGHT_POINTS, eve(expiry))
    after = score(driving, EIGHT_POINTS, expiry)
    assert (before.score, before.grade, before.next_change) == (8, "withdrawn", expiry)
    assert (after.score, after.grade) == (7, "caution")
    assert decide(driving, "licence.withdrawal", after).outcome == "allow"
    assert after.next_change == date(2029, 3, 1)  # the 2-point offences, after 5y
    assert score(driving, EIGHT_POINTS, date(2029, 3, 1)).grade == "clear"  # 3 points
    assert score(driving, EIGHT_POINTS, date(2034, 3, 1)).score == 0  # 10y


@pytest.mark.parametrize(
    ("attrs", "points"),
    [
        ({"kmh_over": 15}, 0),
        ({"kmh_over": 21}, 1),
        ({"kmh_over": 35}, 1),
        ({"kmh_over": 35, "in_town": True}, 2),
        ({"kmh_over": 41}, 2),
    ],
)
def test_speeding_bands(attrs: dict[str, object], points: int) -> None:
    driving = load_pack("driving-points")
    assert score(driving, [rec(1, "societal.speeding", **attrs)], DAY).score == points


def test_drink_driving_below_the_criminal_threshold_is_two_points_for_five_years() -> None:
    driving = load_pack("driving-points")
    r = [rec(1, "societal.drink_driving", bac_mg_100ml=60)]
    assert score(driving, r, DAY).score == 2
    assert score(driving, r, eve(date(2029, 3, 1))).score == 2
    assert score(driving, r, date(2029, 3, 1)).score == 0
