"""The linter: cross-references, contradictions and the hard lines, each named where it bites."""

from __future__ import annotations

import textwrap

import pytest

from chengxin.domain.hardlines import HardLine, HardLineViolation, protected_ground
from chengxin.domain.lint import lint, referenced_attributes
from chengxin.domain.policy_load import (
    PolicyError,
    Problem,
    lint_policy_text,
    load_policy_text,
)

BASE = textwrap.dedent(
    """\
    policy: lint-me
    version: "1"
    max_retention: 5y
    scale: {base: 1000, min: 0, max: 2000}
    grades:
      - {grade: A, min: 1000}
      - {grade: C, min: 600}
      - {grade: D, min: 0}
    record_types:
      - code: societal.ticket
        domain: societal
        category: traffic_safety
        applies_to: [person]
        retention: 2y
        attributes:
          kmh: {type: int}
          severity: {type: str, values: [minor, serious]}
      - code: commercial.arrears
        domain: commercial
        category: taxation
        applies_to: [person, organisation]
        retention: 3y
      - code: judicial.default
        domain: judicial
        category: enforcement
        applies_to: [person]
        retention: 3y
      - code: judicial.performed
        domain: judicial
        category: enforcement
        applies_to: [person]
        retention: 3y
    rules:
      - {id: fast, type: societal.ticket, when: "kmh >= 40", points: -20, expires: 2y}
      - {id: ticket, type: societal.ticket, points: -5, expires: 1y}
      - {id: arrears, type: commercial.arrears, points: -30, expires: 3y}
      - {id: default, type: judicial.default, points: -50, expires: 2y}
    lists:
      - {code: defaulters, kind: black, enter: {record: judicial.default}, duration: 2y,
         lifted_by: [judicial.performed]}
      - {code: honour-roll, kind: red, enter: {grade_in: [A]}}
    measures:
      - {code: transport.flight_booking, kind: sanction, triggered_by: {list: defaulters},
         consulted_by: [airline], related_domains: [judicial]}
      - {code: rental.deposit_free, kind: reward, triggered_by: {grade_at_least: A},
         consulted_by: [landlord], consent_required: true}
    """
)


def line_of(text: str, fragment: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line containing ``fragment``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(hits) >= nth, f"{fragment!r} not in the text"
    return hits[nth - 1]


def errors(text: str) -> list[Problem]:
    """The errors of a policy that must be refused."""
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "lint-me.yaml")
    found = info.value.errors
    assert found
    return found


def one_error(text: str) -> Problem:
    """The single error of a policy refused for one reason."""
    found = errors(text)
    assert len(found) == 1, [p.render("lint-me.yaml") for p in found]
    return found[0]


def warnings(text: str) -> list[Problem]:
    """The warnings of a policy that loads."""
    policy, problems = lint_policy_text(text, "lint-me.yaml")
    assert policy is not None, [p.render("lint-me.yaml") for p in problems]
    return [p for p in problems if p.severity == "warning"]


def add_rule(rule: str) -> str:
    """BASE with one more rule at the end of its rules."""
    return BASE.replace("\nlists:\n", f"\n  - {rule}\nlists:\n")


def with_measure(measure: str) -> str:
    """BASE with one more measure at the end."""
    return BASE + f"  - {measure}\n"


def test_base_policy_is_clean() -> None:
    policy, problems = lint_policy_text(BASE, "lint-me.yaml")
    assert policy is not None
    assert problems == []


# --- cross-references -----------------------------------------------------------------------------


def test_rule_for_an_unknown_type() -> None:
    text = add_rule("{id: ghost, type: societal.tickets, points: -5, expires: 1y}")
    p = one_error(text)
    assert p.path == "rules[4].type"
    assert p.message == "rule 'ghost' scores unknown record type 'societal.tickets'"
    assert p.line == line_of(text, "id: ghost")


def test_catch_all_rule_shadows_a_later_one() -> None:
    text = add_rule("{id: slow, type: societal.ticket, when: 'kmh < 10', points: -1, expires: 1y}")
    p = one_error(text)
    assert p.path == "rules[4]"
    assert "rule 'slow' can never apply: rule 'ticket' before it matches every" in p.message
    assert "the first matching rule wins" in p.message
    assert p.line == line_of(text, "id: slow")


def test_same_condition_shadows_a_later_rule() -> None:
    text = BASE.replace(
        "{id: ticket, type: societal.ticket, points: -5, expires: 1y}",
        "{id: ticket, type: societal.ticket, when: '40 <= kmh', points: -5, expires: 1y}",
    )
    p = one_error(text)
    assert "rule 'ticket' can never apply: rule 'fast' before it matches the same" in p.message
    assert "(when: kmh >= 40)" in p.message
    assert p.line == line_of(text, "id: ticket")


def test_duplicate_rule_ids() -> None:
    text = add_rule("{id: arrears, type: commercial.arrears, points: -1, expires: 1y}")
    messages = [p.message for p in errors(text)]
    assert "'arrears' is defined more than once" in messages


def test_zero_points_does_nothing() -> None:
    text = BASE.replace("points: -30", "points: 0")
    p = one_error(text)
    assert (p.path, p.message) == (
        "rules[2].points",
        "rule 'arrears' is worth 0 points and does nothing",
    )


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        ("speed >= 40", "unknown attribute 'speed'"),
        ("kmh >= 'fast'", "'kmh' is int but 'fast' is str"),
        ("severity == 'serius'", "'serius' is not a value of 'severity' (allowed: minor, serious)"),
        ("severity in ['minor', 'grave']", "'grave' is not a value of 'severity'"),
    ],
)
def test_ill_typed_when_names_the_rule(when: str, fragment: str) -> None:
    text = BASE.replace('when: "kmh >= 40"', f'when: "{when}"')
    p = one_error(text)
    assert p.path == "rules[0].when"
    assert p.message.startswith("rule 'fast': ")
    assert fragment in p.message
    assert p.line == line_of(text, "id: fast")


def test_unknown_list_and_grade_in_a_trigger() -> None:
    text = with_measure(
        "{code: a.b, kind: sanction, triggered_by: {list: defaulter}, consulted_by: [x], "
        "related_domains: [judicial]}"
    )
    assert one_error(text).message == "unknown list 'defaulter'"
    text = with_measure(
        "{code: a.b, kind: reward, triggered_by: {grade_at_least: AA}, consulted_by: [x], "
        "consent_required: true}"
    )
    p = one_error(text)
    assert (p.path, p.message) == ("measures[2].triggered_by", "unknown grade 'AA'")


# --- contradictions -------------------------------------------------------------------------------


def test_list_lifted_by_its_own_entry_type() -> None:
    text = BASE.replace("lifted_by: [judicial.performed]", "lifted_by: [judicial.default]")
    p = one_error(text)
    assert p.path == "lists[0].lifted_by[0]"
    assert p.message == "'judicial.default' both enters and lifts list 'defaulters'"
    assert p.line == line_of(text, "lifted_by: [judicial.default]")


def test_reward_triggered_by_a_black_list() -> None:
    text = with_measure(
        "{code: rental.vip, kind: reward, triggered_by: {list: defaulters}, "
        "consulted_by: [landlord], consent_required: true}"
    )
    p = one_error(text)
    assert p.message == "reward 'rental.vip' is triggered by black list 'defaulters'"
    assert p.line == line_of(text, "code: rental.vip")


def test_sanction_triggered_by_a_red_list() -> None:
    text = with_measure(
        "{code: a.b, kind: sanction, triggered_by: {list: honour-roll}, consulted_by: [x], "
        "related_domains: [government, commercial, societal, judicial]}"
    )
    assert one_error(text).message == "sanction 'a.b' is triggered by red list 'honour-roll'"


def test_overlapping_grade_bands() -> None:
    text = BASE.replace(
        "  - {grade: C, min: 600}", "  - {grade: C, min: 600}\n  - {grade: B, min: 600}"
    )
    p = one_error(text)
    assert p.path == "grades[2].min"
    assert p.message == "grades share the lower bound 600: bands overlap"
    assert p.line == line_of(text, "grade: B")


def test_duplicate_grade_names() -> None:
    text = BASE.replace("{grade: C, min: 600}", "{grade: A, min: 600}")
    assert "'A' is defined more than once" in [p.message for p in errors(text)]


def test_gap_below_the_lowest_grade() -> None:
    text = BASE.replace("{grade: D, min: 0}", "{grade: D, min: 100}")
    p = one_error(text)
    assert p.path == "grades"
    assert "no grade covers scores from 0 to 99" in p.message


def test_grade_above_the_scale_maximum_is_a_warning() -> None:
    text = BASE.replace(
        "  - {grade: A, min: 1000}", "  - {grade: S, min: 5000}\n  - {grade: A, min: 1000}"
    )
    (w,) = warnings(text)
    assert w.path == "grades[0].min"
    assert "no score can reach it" in w.message


def test_list_by_grade_with_a_duration() -> None:
    text = BASE.replace("enter: {grade_in: [A]}}", "enter: {grade_in: [A]}, duration: 1y}")
    assert "drop 'duration'" in one_error(text).message


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ("[{after: 6m, pct: 50}, {after: 3m, pct: 20}]", "schedule steps must come in time order"),
        ("[{after: 2y, pct: 50}]", "step at 2y may come on or after the rule expires (2y)"),
        ("[{after: 1m, pct: 50}, {after: 30d, pct: 20}]", "30d may come on or before"),
        # 30 days is after one month from 1 February: the order depends on the start.
        ("[{after: 30d, pct: 50}, {after: 1m, pct: 20}]", "1m may come on or before"),
    ],
)
def test_schedule_must_step_in_time_order_from_every_start(schedule: str, fragment: str) -> None:
    text = BASE.replace(
        "points: -20, expires: 2y}", f"points: -20, expires: 2y,\n     schedule: {schedule}}}"
    )
    p = one_error(text)
    assert p.path.startswith("rules[0].schedule[")
    assert fragment in p.message
    assert p.line == line_of(text, "schedule:")


def test_a_growing_negative_schedule_is_a_warning() -> None:
    text = BASE.replace(
        "points: -20, expires: 2y}",
        "points: -20, expires: 2y,\n     schedule: [{after: 6m, pct: 50}, {after: 1y, pct: 80}]}",
    )
    (w,) = warnings(text)
    assert w.path == "rules[0].schedule[1].pct"


# --- hard line 1: no collective punishment --------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("applies_to_relatives: true", "applies_to_relatives"),
        ("extends_to: [spouse]", "extends_to"),
        ("family_members: [children]", "family_members"),
    ],
)
def test_reaching_beyond_the_subject_cannot_be_expressed(extra: str, key: str) -> None:
    text = BASE.replace("consulted_by: [airline],", f"consulted_by: [airline], {extra},")
    p = one_error(text)
    assert p.path == f"measures[0].{key}"
    assert p.hard_line == 1
    assert "hard line 1 (no collective punishment)" in p.message
    assert p.message.startswith(f"'{key}' cannot be expressed")
    assert p.line == line_of(text, key)


def test_collective_key_on_a_list_is_refused_too() -> None:
    text = BASE.replace("duration: 2y,\n", "duration: 2y, household: true,\n")
    p = one_error(text)
    assert (p.path, p.hard_line) == ("lists[0].household", 1)


# --- hard line 2: no scoring of protected grounds -------------------------------------------------


@pytest.mark.parametrize(
    ("category", "ground"),
    [
        ("religion", "religion"),
        ("political_opinion", "political opinion"),
        ("online_speech", "expression"),
        ("trade_union", "trade-union membership"),
        ("marital_status", "family status"),
        ("health", "health"),
    ],
)
def test_protected_category_is_refused_naming_the_rule(category: str, ground: str) -> None:
    text = BASE.replace("category: traffic_safety", f"category: {category}")
    found = errors(text)
    p = found[0]
    assert p.path == "record_types[0].category"
    assert p.hard_line == 2
    assert p.message.startswith("hard line 2 (no scoring of protected grounds): ")
    assert f"has category '{category}', which is {ground}, a protected ground" in p.message
    assert "(used by rule 'fast', rule 'ticket')" in p.message
    assert p.line == line_of(text, f"category: {category}")


def test_protected_category_names_the_list_it_feeds() -> None:
    text = BASE.replace(
        "  - code: judicial.default\n    domain: judicial\n    category: enforcement",
        "  - code: judicial.default\n    domain: judicial\n    category: petition",
    )
    p = one_error(text)
    assert "which is assembly" in p.message
    assert "rule 'default', list 'defaulters'" in p.message


def test_protected_attribute_is_refused() -> None:
    text = BASE.replace(
        "      kmh: {type: int}", "      kmh: {type: int}\n      religion: {type: str}"
    )
    p = one_error(text)
    assert p.path == "record_types[0].attributes.religion"
    assert p.hard_line == 2
    assert p.line == line_of(text, "religion:")


def test_protected_ground_synonyms() -> None:
    assert protected_ground("Sexual-Orientation") == "sexual orientation"
    assert protected_ground("traffic_safety") is None


# --- hard line 3: proportional and related --------------------------------------------------------

GRADE_SANCTION = (
    "{code: city.housing, kind: sanction, triggered_by: {grade_in: [D]}, "
    "consulted_by: [housing_office], related_domains: [commercial]%s}"
)


def test_sanction_fed_by_unrelated_domains_without_legal_basis_is_refused() -> None:
    text = with_measure(GRADE_SANCTION % "")
    p = one_error(text)
    assert p.path == "measures[2].related_domains"
    assert p.hard_line == 3
    assert p.message == (
        "hard line 3 (proportional and related sanctions): sanction 'city.housing' is fed by "
        "records of judicial, societal, which it does not list as related (commercial); list "
        "them or record a legal_basis"
    )
    assert p.line == line_of(text, "code: city.housing")


def test_sanction_fed_by_unrelated_domains_with_a_legal_basis_is_a_warning() -> None:
    text = with_measure(GRADE_SANCTION % ", legal_basis: City ordinance 12 art. 4")
    (w,) = warnings(text)
    assert w.hard_line == 3
    assert w.path == "measures[2].legal_basis"
    assert "fed by unrelated domains judicial, societal on the legal basis: City ordinance 12" in (
        w.message
    )
    assert w.line == line_of(text, "code: city.housing")


def test_sanction_naming_no_related_domain_is_refused_even_with_a_legal_basis() -> None:
    text = BASE.replace("related_domains: [judicial]}", "legal_basis: a statute}")
    p = one_error(text)
    assert (p.path, p.hard_line) == ("measures[0].related_domains", 3)
    assert "names no related domains" in p.message


def test_sanction_by_a_list_of_one_domain_is_related() -> None:
    assert warnings(BASE) == []


# --- hard line 4: nothing negative lasts for ever -------------------------------------------------


def test_negative_rule_without_expiry() -> None:
    text = BASE.replace("points: -30, expires: 3y}", "points: -30}")
    p = one_error(text)
    assert p.path == "rules[2].expires"
    assert p.hard_line == 4
    assert p.message == (
        "hard line 4 (nothing negative lasts for ever): rule 'arrears' is negative (-30 points) "
        "and has no expiry"
    )
    assert p.line == line_of(text, "id: arrears")


def test_positive_rule_without_expiry_is_a_warning() -> None:
    (w,) = warnings(add_rule("{id: bonus, type: judicial.performed, points: 10}"))
    assert "has no expiry" in w.message


def test_black_list_without_duration() -> None:
    text = BASE.replace("duration: 2y,\n", "\n")
    p = one_error(text)
    assert (p.path, p.hard_line) == ("lists[0].duration", 4)
    assert "black list 'defaulters' has no duration" in p.message
    assert p.line == line_of(text, "code: defaulters")


def test_black_list_longer_than_its_records_are_kept() -> None:
    text = BASE.replace("duration: 2y,", "duration: 4y,")
    p = one_error(text)
    assert (p.path, p.hard_line) == ("lists[0].duration", 4)
    assert "longer than the retention 3y of its entry record type 'judicial.default'" in p.message


@pytest.mark.parametrize("value", ["11y", "10y1d", "5000d", "121m"])
def test_retention_above_the_ten_year_ceiling(value: str) -> None:
    text = BASE.replace("max_retention: 5y", f"max_retention: {value}")
    p = one_error(text)
    assert (p.path, p.hard_line) == ("max_retention", 4)
    assert "above the ceiling of 10y" in p.message
    assert p.line == line_of(text, "max_retention")


def test_ten_years_is_allowed() -> None:
    assert warnings(BASE.replace("max_retention: 5y", "max_retention: 10y")) == []


def test_record_retention_above_max_retention() -> None:
    text = BASE.replace("retention: 3y\n", "retention: 6y\n", 1)
    p = one_error(text)
    assert (p.path, p.hard_line) == ("record_types[1].retention", 4)
    assert "retention 6y of 'commercial.arrears' is above the policy's max_retention 5y" in (
        p.message
    )


def test_rule_outlasting_its_record_compares_lengths_not_units() -> None:
    text = BASE.replace("points: -5, expires: 1y}", "points: -5, expires: 800d}")
    p = one_error(text)
    assert p.message.endswith(
        "rule 'ticket' lasts 800d, longer than the record type's retention 2y"
    )
    assert warnings(BASE.replace("points: -5, expires: 1y}", "points: -5, expires: 700d}")) == []


# --- hard line 5 and 6 ----------------------------------------------------------------------------


def test_sanction_without_any_appeal_route() -> None:
    text = BASE.replace("max_retention: 5y", "max_retention: 5y\nappeal: ''")
    p = one_error(text)
    assert (p.path, p.hard_line) == ("measures[0].appeal", 5)


def test_reward_without_consent() -> None:
    text = BASE.replace("consent_required: true", "consent_required: false")
    p = one_error(text)
    assert p.path == "measures[1].consent_required"
    assert p.hard_line == 6
    assert p.message.startswith("hard line 6 (least disclosure): reward 'rental.deposit_free'")
    assert "set consent_required: true" in p.message
    assert p.line == line_of(text, "consent_required: false")


def test_reward_with_consent_left_out() -> None:
    text = BASE.replace(", consent_required: true", "")
    assert one_error(text).hard_line == 6


# --- the linter as a function ---------------------------------------------------------------------


def test_errors_come_before_warnings() -> None:
    text = with_measure(GRADE_SANCTION % ", legal_basis: ordinance")
    text = text.replace("points: -30, expires: 3y}", "points: -30}")
    policy, problems = lint_policy_text(text, "x")
    assert policy is None
    assert [p.severity for p in problems] == ["error", "warning"]
    findings = lint(
        load_policy_text(with_measure(GRADE_SANCTION % ", legal_basis: ordinance"), "x")
    )
    assert [f.severity for f in findings] == ["warning"]


def test_referenced_attributes() -> None:
    policy = load_policy_text(BASE, "x")
    assert referenced_attributes(policy, "societal.ticket") == {"kmh"}
    assert referenced_attributes(policy, "judicial.default") == frozenset()


def test_hard_line_violation_cites_the_line_and_why() -> None:
    err = HardLineViolation(HardLine.NO_COLLECTIVE_PUNISHMENT, "spouse named")
    assert str(err).startswith("hard line 1 (no collective punishment): spouse named; ")
    assert err.line.number == 1
