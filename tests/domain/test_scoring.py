"""The pure scorer: worked cases of the written semantics, then its properties."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_strategies import (
    STATUSES,
    attribute_values,
    days,
    policies,
    policy_dicts,
    record_facts,
    scenarios,
)

from chengxin.domain.durations import Duration, add_months, always_before, parse_duration
from chengxin.domain.lint import lint
from chengxin.domain.policy import Policy, Trigger
from chengxin.domain.scoring import (
    RecordFact,
    ScoreResult,
    base_result,
    counts,
    first_rule,
    score,
    truncate_pct,
)

# Each example draws a whole policy: fewer examples than the default, no deadline.
props = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_policy(**overrides: Any) -> Policy:
    """A small score-mode policy; ``overrides`` replace top-level sections."""
    data: dict[str, Any] = {
        "policy": "unit",
        "version": "1",
        "scale": {"base": 100, "min": 0, "max": 200},
        "grades": [{"grade": "good", "min": 100}, {"grade": "poor", "min": 0}],
        "record_types": [
            {
                "code": "societal.ticket",
                "domain": "societal",
                "category": "traffic_safety",
                "applies_to": ["person"],
                "retention": "3y",
                "attributes": {"kmh": {"type": "int"}, "repeat": {"type": "bool"}},
            },
            {
                "code": "judicial.default",
                "domain": "judicial",
                "category": "enforcement",
                "applies_to": ["person"],
                "retention": "3y",
            },
            {
                "code": "judicial.performed",
                "domain": "judicial",
                "category": "enforcement",
                "applies_to": ["person"],
                "retention": "3y",
            },
        ],
        "rules": [
            {
                "id": "fast",
                "type": "societal.ticket",
                "when": "kmh >= 40",
                "points": -20,
                "expires": "2y",
            },
            {
                "id": "ticket",
                "type": "societal.ticket",
                "points": -5,
                "expires": "1y",
                "schedule": [{"after": "6m", "pct": 50}],
            },
            {"id": "default", "type": "judicial.default", "points": -30, "expires": "2y"},
        ],
        "lists": [
            {
                "code": "defaulters",
                "kind": "black",
                "enter": {"record": "judicial.default"},
                "duration": "2y",
                "lifted_by": ["judicial.performed"],
            },
            {"code": "poor-grade", "kind": "black", "enter": {"grade_in": ["poor"]}},
        ],
    }
    data.update(overrides)
    return Policy.model_validate(data)


def rec(rid: int, type_: str, day: date, status: str = "active", **attrs: object) -> RecordFact:
    return RecordFact(id=rid, type=type_, occurred_at=day, attributes=attrs, status=status)


D0 = date(2024, 1, 31)


# --- integer arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "pct", "value"),
    [
        (-5, 50, -2),
        (5, 50, 2),
        (-5, 100, -5),
        (-3, 33, 0),
        (-1, 99, 0),
        (-7, 0, 0),
        (7, 30, 2),
        (-100, 50, -50),
        (-150, 60, -90),
    ],
)
def test_truncate_pct_truncates_toward_zero(points: int, pct: int, value: int) -> None:
    assert truncate_pct(points, pct) == value


@given(st.integers(-(10**6), 10**6), st.integers(0, 100))
def test_truncate_pct_is_int_and_never_exceeds_the_points(points: int, pct: int) -> None:
    value = truncate_pct(points, pct)
    assert type(value) is int
    assert abs(value) <= abs(points)
    assert value == int(Fraction(points * pct, 100))  # int() of a Fraction truncates toward 0


# --- first match, expiry and schedules ------------------------------------------------------------


def test_first_matching_rule_wins_and_missing_attribute_falls_through() -> None:
    policy = make_policy()

    def rule_id(r: RecordFact) -> str | None:
        rule = first_rule(policy, r)
        return None if rule is None else rule.id

    assert rule_id(rec(1, "societal.ticket", D0, kmh=50)) == "fast"
    assert rule_id(rec(1, "societal.ticket", D0, kmh=10)) == "ticket"
    assert rule_id(rec(1, "societal.ticket", D0, kmh="50")) == "ticket"  # wrong type: unknown
    assert rule_id(rec(1, "societal.ticket", D0)) == "ticket"
    assert rule_id(rec(1, "judicial.performed", D0)) is None


def test_record_counts_from_its_day_until_the_day_before_it_expires() -> None:
    policy = make_policy()
    r = rec(1, "judicial.default", D0)
    expiry = date(2026, 1, 31)
    assert score(policy, [r], D0 - timedelta(days=1)).score == 100
    assert score(policy, [r], D0).score == 70
    assert score(policy, [r], expiry - timedelta(days=1)).score == 70
    assert score(policy, [r], expiry).score == 100


def test_schedule_steps_down_on_its_day_with_month_end_clamping() -> None:
    policy = make_policy()
    r = rec(1, "societal.ticket", date(2023, 8, 31))  # +6m = 29 Feb 2024 (clamped)
    before = score(policy, [r], date(2024, 2, 28))
    after = score(policy, [r], date(2024, 2, 29))
    assert (before.score, before.contributions[0].pct) == (95, 100)
    assert (after.score, after.contributions[0].pct, after.contributions[0].value) == (98, 50, -2)
    assert before.next_change == date(2024, 2, 29)
    assert after.next_change == date(2024, 8, 31)  # 1y after 31 Aug 2023
    assert score(policy, [r], date(2024, 8, 31)).contributions == ()


def test_contribution_explains_itself() -> None:
    policy = make_policy()
    result = score(policy, [rec(7, "societal.ticket", D0, kmh=45)], D0)
    (c,) = result.contributions
    assert (c.record_id, c.rule_id, c.points, c.pct, c.value) == (7, "fast", -20, 100, -20)
    assert c.expires_on == date(2026, 1, 31)


def test_score_is_clamped_but_raw_is_kept() -> None:
    policy = make_policy()
    records = [rec(i, "judicial.default", D0) for i in range(5)]
    result = score(policy, records, D0)
    assert (result.raw, result.score, result.grade) == (-50, 0, "poor")


def test_no_records_is_the_base() -> None:
    result = base_result(make_policy(), D0)
    assert (result.score, result.grade, result.contributions, result.next_change) == (
        100,
        "good",
        (),
        None,
    )
    assert result.lists == {}


# --- statuses -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["retracted", "superseded", "overturned", "erased"])
def test_inactive_records_never_count(status: str) -> None:
    policy = make_policy()
    assert not counts(policy, rec(1, "judicial.default", D0, status))
    result = score(policy, [rec(1, "judicial.default", D0, status)], D0)
    assert result.score == 100 and "defaulters" not in result.lists


def test_disputed_records_count_only_when_the_policy_does_not_suspend() -> None:
    disputed = rec(1, "judicial.default", D0, "disputed")
    suspending = make_policy()
    counting = make_policy(disputes={"suspend_while_open": False})
    assert score(suspending, [disputed], D0).score == 100
    assert score(counting, [disputed], D0).score == 70
    assert "defaulters" in score(counting, [disputed], D0).lists


# --- lists ----------------------------------------------------------------------------------------


def test_list_by_record_runs_for_its_duration() -> None:
    policy = make_policy()
    r = rec(3, "judicial.default", D0)
    member = score(policy, [r], D0).lists["defaulters"]
    assert (member.kind, member.since, member.until, member.record_ids) == (
        "black",
        D0,
        date(2026, 1, 31),
        (3,),
    )
    assert "defaulters" in score(policy, [r], date(2026, 1, 30)).lists
    assert "defaulters" not in score(policy, [r], date(2026, 1, 31)).lists


def test_a_lift_on_the_entry_day_lifts_and_a_later_entry_re_enters() -> None:
    policy = make_policy()
    entry = rec(1, "judicial.default", D0)
    lift = rec(2, "judicial.performed", D0)
    again = rec(3, "judicial.default", D0 + timedelta(days=10))
    assert "defaulters" not in score(policy, [entry, lift], D0).lists
    result = score(policy, [entry, lift, again], D0 + timedelta(days=10))
    assert result.lists["defaulters"].record_ids == (3,)
    assert score(policy, [entry, lift], D0 - timedelta(days=1)).next_change == D0


def test_a_retracted_lift_does_not_lift() -> None:
    policy = make_policy()
    records = [rec(1, "judicial.default", D0), rec(2, "judicial.performed", D0, "retracted")]
    assert "defaulters" in score(policy, records, D0).lists


def test_list_by_grade_follows_the_grade() -> None:
    policy = make_policy()
    r = rec(1, "societal.ticket", D0)
    assert "poor-grade" in score(policy, [r], D0).lists
    assert "poor-grade" not in score(policy, [r], date(2025, 1, 31)).lists


def test_list_entry_condition() -> None:
    policy = make_policy(
        lists=[
            {
                "code": "fast",
                "kind": "black",
                "enter": {"record": "societal.ticket", "when": "kmh >= 40"},
                "duration": "1y",
            }
        ]
    )
    assert "fast" in score(policy, [rec(1, "societal.ticket", D0, kmh=41)], D0).lists
    assert "fast" not in score(policy, [rec(1, "societal.ticket", D0, kmh=39)], D0).lists
    assert "fast" not in score(policy, [rec(1, "societal.ticket", D0)], D0).lists


# --- penalty points -------------------------------------------------------------------------------


def test_penalty_points_grade_order_is_best_first_from_zero() -> None:
    policy = make_policy(
        scale={"mode": "penalty_points", "base": 0, "min": 0, "max": 20},
        grades=[
            {"grade": "clear", "min": 0},
            {"grade": "warning", "min": 4},
            {"grade": "withdrawn", "min": 8},
        ],
        rules=[{"id": "ticket", "type": "societal.ticket", "points": 3, "expires": "1y"}],
        lists=[],
    )
    assert [g.grade for g in policy.grades_best_first] == ["clear", "warning", "withdrawn"]
    assert policy.grades_matching(Trigger(grade_at_least="warning")) == {"clear", "warning"}
    assert policy.grades_matching(Trigger(grade_at_most="warning")) == {"warning", "withdrawn"}
    records = [rec(i, "societal.ticket", D0) for i in range(3)]
    assert (score(policy, records, D0).score, score(policy, records, D0).grade) == (9, "withdrawn")
    assert policy.is_negative(3) and not policy.is_negative(-1)


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "text", "end"),
    [
        (date(2024, 1, 31), "1m", date(2024, 2, 29)),
        (date(2023, 1, 31), "1m", date(2023, 2, 28)),
        (date(2024, 2, 29), "1y", date(2025, 2, 28)),
        (date(2024, 1, 31), "2y6m", date(2026, 7, 31)),
        (date(2024, 1, 31), "1m1d", date(2024, 3, 1)),
        (date(2024, 1, 1), "2w", date(2024, 1, 15)),
    ],
)
def test_duration_after_adds_months_then_days(start: date, text: str, end: date) -> None:
    assert parse_duration(text).after(start) == end


def test_durations_compare_by_length_not_by_field() -> None:
    assert parse_duration("400d") > parse_duration("1y")
    assert parse_duration("5000d") > parse_duration("10y")
    assert parse_duration("2y6m") < parse_duration("10y")
    assert parse_duration("12m") == parse_duration("1y")
    assert max(parse_duration("30d"), parse_duration("1m")) == parse_duration("1m")


@given(
    st.builds(Duration, st.integers(0, 30), st.integers(0, 70)),
    st.builds(Duration, st.integers(0, 30), st.integers(0, 70)),
    st.dates(date(1990, 1, 1), date(2100, 12, 31)),
)
def test_always_before_holds_from_every_start(a: Duration, b: Duration, start: date) -> None:
    if always_before(a, b):
        assert a.after(start) < b.after(start)


@given(st.dates(date(1990, 1, 1), date(2100, 12, 31)), st.integers(0, 400))
def test_add_months_clamps_and_is_monotone(start: date, months: int) -> None:
    end = add_months(start, months)
    assert end.day <= start.day
    assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == months
    assert add_months(start, months + 1) > end


# --- properties -----------------------------------------------------------------------------------


def _values(obj: object) -> Iterator[object]:
    """Every value reachable in a result (dataclass fields, mappings, sequences)."""
    yield obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _values(getattr(obj, f.name))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _values(k)
            yield from _values(v)
    elif isinstance(obj, tuple | list):
        for v in obj:
            yield from _values(v)


def _visible(result: ScoreResult) -> tuple[object, ...]:
    """What a snapshot shows: everything but the date it was taken."""
    return (result.score, result.raw, result.grade, result.contributions, result.lists)


@props
@given(policy_dicts())
def test_generated_policies_are_valid_and_lint_clean(data: dict[str, Any]) -> None:
    policy = Policy.model_validate(data)
    assert [f.message for f in lint(policy) if f.severity == "error"] == []


@props
@given(scenarios())
def test_score_is_an_int_within_the_scale_and_has_no_floats(
    case: tuple[Policy, list[RecordFact], date],
) -> None:
    policy, records, as_of = case
    result = score(policy, records, as_of)
    assert type(result.score) is int and type(result.raw) is int
    assert policy.scale.min <= result.score <= policy.scale.max
    assert result.score == policy.clamp(result.raw)
    assert result.grade == policy.grade_of(result.score)
    assert result.raw == policy.scale.base + sum(c.value for c in result.contributions)
    assert not any(isinstance(v, float) for v in _values(result))


@props
@given(scenarios())
def test_a_record_counts_only_from_its_day_until_its_expiry(
    case: tuple[Policy, list[RecordFact], date],
) -> None:
    policy, records, as_of = case
    result = score(policy, records, as_of)
    by_id = {r.id: r for r in records}
    counted = {c.record_id for c in result.contributions}
    for c in result.contributions:
        assert c.occurred_at <= as_of
        assert c.expires_on is None or as_of < c.expires_on
        assert counts(policy, by_id[c.record_id])
    for r in records:
        rule = first_rule(policy, r)
        live = (
            counts(policy, r)
            and rule is not None
            and r.occurred_at <= as_of
            and (rule.expires is None or as_of < rule.expires.after(r.occurred_at))
        )
        assert (r.id in counted) == live


def _extras(
    policy: Policy, records: list[RecordFact], data: st.DataObject
) -> list[tuple[RecordFact, int]]:
    """A few more active records for the subject, each with the points its rule gives."""
    drawn = data.draw(record_facts(policy, min_size=1, max_size=6))
    out = []
    for i, extra in enumerate(drawn):
        extra = dataclasses.replace(extra, id=len(records) + 1 + i, status="active")
        rule = first_rule(policy, extra)
        if rule is not None:
            out.append((extra, rule.points))
    return out


@props
@given(scenarios(mode="score"), st.data())
def test_adding_a_negative_record_never_raises_the_score(
    case: tuple[Policy, list[RecordFact], date], data: st.DataObject
) -> None:
    policy, records, as_of = case
    before = score(policy, records, as_of)
    for extra, points in _extras(policy, records, data):
        if points < 0:
            after = score(policy, [*records, extra], as_of)
            assert after.raw <= before.raw
            assert after.score <= before.score


@props
@given(scenarios(mode="penalty_points"), st.data())
def test_adding_a_penalty_never_lowers_the_points(
    case: tuple[Policy, list[RecordFact], date], data: st.DataObject
) -> None:
    policy, records, as_of = case
    before = score(policy, records, as_of)
    for extra, points in _extras(policy, records, data):
        if points > 0:
            assert score(policy, [*records, extra], as_of).score >= before.score


@props
@given(scenarios(), st.sampled_from(["retracted", "superseded", "overturned"]))
def test_retracted_and_superseded_records_never_count(
    case: tuple[Policy, list[RecordFact], date], status: str
) -> None:
    policy, records, as_of = case
    dead = [dataclasses.replace(r, id=r.id + 1000, status=status) for r in records]
    assert score(policy, dead, as_of) == base_result(policy, as_of)
    assert score(policy, [*records, *dead], as_of) == score(policy, records, as_of)


@props
@given(scenarios())
def test_disputed_records_count_iff_the_policy_does_not_suspend(
    case: tuple[Policy, list[RecordFact], date],
) -> None:
    policy, records, as_of = case
    disputed = [dataclasses.replace(r, status="disputed") for r in records]
    active = [dataclasses.replace(r, status="active") for r in records]
    got = score(policy, disputed, as_of)
    if policy.disputes.suspend_while_open:
        assert got == base_result(policy, as_of)
    else:
        assert got == score(policy, active, as_of)


@props
@given(scenarios())
def test_nothing_changes_before_next_change(case: tuple[Policy, list[RecordFact], date]) -> None:
    policy, records, as_of = case
    result = score(policy, records, as_of)
    if result.next_change is None:
        later = score(policy, records, as_of + timedelta(days=4000))
        assert _visible(later) == _visible(result)
        return
    assert result.next_change > as_of
    eve = score(policy, records, result.next_change - timedelta(days=1))
    assert _visible(eve) == _visible(result)
    assert eve.next_change == result.next_change
    middle = as_of + (result.next_change - as_of) // 2
    assert _visible(score(policy, records, middle)) == _visible(result)


@props
@given(scenarios())
def test_score_ignores_record_order(case: tuple[Policy, list[RecordFact], date]) -> None:
    policy, records, as_of = case
    forward = score(policy, records, as_of)
    backward = score(policy, list(reversed(records)), as_of)
    assert (forward.score, forward.grade, forward.lists, forward.next_change) == (
        backward.score,
        backward.grade,
        backward.lists,
        backward.next_change,
    )
    assert sorted(forward.contributions, key=lambda c: c.record_id) == sorted(
        backward.contributions, key=lambda c: c.record_id
    )


@props
@given(scenarios())
def test_unexplained_scores_differ_only_in_listing_no_contributions(
    case: tuple[Policy, list[RecordFact], date],
) -> None:
    policy, records, as_of = case
    explained = score(policy, records, as_of)
    bare = score(policy, records, as_of, explain=False)
    assert bare.contributions == ()
    assert bare == dataclasses.replace(explained, contributions=())


@props
@given(policies(), days(), attribute_values(), st.sampled_from(STATUSES))
def test_a_record_never_counts_the_day_before_it_occurs_or_on_its_expiry(
    policy: Policy, day: date, attrs: dict[str, object], status: str
) -> None:
    for t in policy.record_types:
        r = RecordFact(id=1, type=t.code, occurred_at=day, attributes=attrs, status=status)
        assert score(policy, [r], day - timedelta(days=1)).contributions == ()
        rule = first_rule(policy, r)
        if rule is not None and rule.expires is not None:
            assert score(policy, [r], rule.expires.after(day)).contributions == ()
            if counts(policy, r):
                assert score(policy, [r], rule.expires.after(day) - timedelta(days=1)).contributions
