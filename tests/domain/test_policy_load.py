"""Reading a policy from YAML: every refusal says what is wrong and where."""

from __future__ import annotations

import textwrap

import pytest

from chengxin.domain.policy import Policy
from chengxin.domain.policy_load import (
    PolicyError,
    Problem,
    lint_policy_text,
    load_policy_text,
    render_path,
)

GOOD = textwrap.dedent(
    """\
    # A small policy the cases below break one way at a time.
    policy: tiny
    version: "1"
    scale: {base: 1000, min: 0, max: 2000}
    grades:
      - {grade: A, min: 1000}
      - {grade: D, min: 0}
    record_types:
      - code: societal.ticket
        domain: societal
        category: traffic_safety
        applies_to: [person]
        retention: 2y
        attributes:
          kmh: {type: int}
    rules:
      - id: ticket
        type: societal.ticket
        when: "kmh >= 20"
        points: -5
        expires: 1y
        schedule: [{after: 6m, pct: 50}]
    """
)


def line_of(text: str, fragment: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line containing ``fragment``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(hits) >= nth, f"{fragment!r} not in the text"
    return hits[nth - 1]


def refused(text: str) -> list[Problem]:
    """The problems of a policy that must be refused."""
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "tiny.yaml")
    assert info.value.errors, "refused without an error"
    return info.value.problems


def only(text: str) -> Problem:
    """The single problem of a policy that must be refused for one reason."""
    problems = refused(text)
    assert len(problems) == 1, [p.render("tiny.yaml") for p in problems]
    return problems[0]


def test_the_good_policy_loads() -> None:
    policy = load_policy_text(GOOD, "tiny.yaml")
    assert policy.label == "tiny@1"
    assert policy.rules[0].when == "kmh >= 20"


# --- unknown keys ---------------------------------------------------------------------------------


def test_unknown_key_with_a_typo_suggests_the_right_one() -> None:
    text = GOOD.replace("    expires: 1y", "    expirs: 1y")
    p = only(text)
    assert p.path == "rules[0].expirs"
    assert p.line == line_of(text, "expirs:")
    assert "unknown key 'expirs' (did you mean 'expires'?)" in p.message
    assert "allowed here: id, type, when, points, expires, schedule, title" in p.message


def test_unknown_key_inside_a_record_attribute_lists_the_attribute_keys() -> None:
    text = GOOD.replace("kmh: {type: int}", "kmh: {type: int, requred: true}")
    p = only(text)
    assert p.path == "record_types[0].attributes.kmh.requred"
    assert p.line == line_of(text, "requred")
    assert "did you mean 'required'?" in p.message
    assert "allowed here: type, required, values, title" in p.message


def test_unknown_top_level_key() -> None:
    text = GOOD + "dispute: {deadline: 30d}\n"
    p = only(text)
    assert (p.path, p.line) == ("dispute", line_of(text, "dispute:"))
    assert "did you mean 'disputes'?" in p.message


def test_missing_required_key() -> None:
    text = GOOD.replace("scale: {base: 1000, min: 0, max: 2000}\n", "")
    p = only(text)
    assert (p.path, p.message) == ("scale", "'scale' is required")


# --- YAML -----------------------------------------------------------------------------------------


def test_duplicate_key_names_both_lines() -> None:
    text = GOOD.replace("    points: -5\n", "    points: -5\n    points: -10\n")
    p = only(text)
    first, second = line_of(text, "points:"), line_of(text, "points:", 2)
    assert p.path == "rules[0].points"
    assert p.line == second
    assert p.message == f"key 'points' appears twice (first on line {first})"


def test_malformed_yaml_gives_the_line() -> None:
    text = GOOD.replace("applies_to: [person]", "applies_to: [person")
    p = only(text)
    assert p.path == "(document)"
    assert p.message.startswith("not valid YAML:")
    assert "flow sequence" in p.message
    assert p.line is not None and p.line >= line_of(text, "applies_to")


def test_bad_indentation_is_malformed_yaml() -> None:
    text = GOOD.replace("    domain: societal", "   domain: societal")
    p = only(text)
    assert p.message.startswith("not valid YAML:")
    assert p.line == line_of(text, "domain: societal")


def test_alias_cycle_is_refused_not_recursed() -> None:
    text = GOOD + "lists: &loop\n  - *loop\n"
    p = only(text)
    assert p.message == "YAML alias refers to itself (a cycle)"
    assert p.path == "lists[0]"
    assert p.line == line_of(text, "lists: &loop")


def test_alias_bomb_is_refused() -> None:
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    p = only("\n".join(rows) + "\n")
    assert "expands to more than" in p.message


def test_merge_keys_are_refused() -> None:
    text = (
        GOOD
        + "lists:\n  - &base {code: a, kind: red, enter: {grade_in: [A]}}\n"
        + ("  - {<<: *base, code: b}\n")
    )
    p = only(text)
    assert p.message == "merge keys (<<) are not allowed"
    assert p.line == line_of(text, "<<:")


def test_python_tags_are_refused_not_run() -> None:
    text = GOOD.replace('version: "1"', "version: !!python/object/apply:os.getcwd []")
    p = only(text)
    assert p.path == "version"
    assert "not a plain YAML value" in p.message
    assert p.line == line_of(text, "version:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- a\n- b\n", "a policy must be a mapping"),
    ],
)
def test_not_a_policy_document(text: str, message: str) -> None:
    assert only(text).message == message


def test_two_documents_are_refused() -> None:
    p = only(GOOD + "---\npolicy: other\n")
    assert "expected a single document" in p.message
    assert p.line == line_of(GOOD + "---\n", "---")


# --- types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path", "fragment"),
    [
        ("points: -5", "points: ten", "rules[0].points", "valid integer"),
        ("points: -5", "points: -2.5", "rules[0].points", "(got -2.5)"),
        ('version: "1"', "version: 2026.1", "version", "put quotes around it"),
        ("domain: societal", "domain: social", "record_types[0].domain", "(got 'social')"),
        (
            "applies_to: [person]",
            "applies_to: person",
            "record_types[0].applies_to",
            "Input should be a list (got 'person')",
        ),
        (
            "applies_to: [person]",
            "applies_to: [people]",
            "record_types[0].applies_to[0]",
            "'person', 'organisation' or 'public_body'",
        ),
        (
            "kmh: {type: int}",
            "kmh: {type: float}",
            "record_types[0].attributes.kmh.type",
            "(got 'float')",
        ),
        ("pct: 50", "pct: 150", "rules[0].schedule[0].pct", "less than or equal to 100"),
        (
            "code: societal.ticket",
            "code: Ticket",
            "record_types[0].code",
            "lower-case words joined by dots",
        ),
        ("id: ticket", "id: Ticket Rule", "rules[0].id", "lower-case name"),
        ("base: 1000", "base: 3000", "scale", "need min <= base <= max, got 0, 3000, 2000"),
    ],
)
def test_wrong_types_name_the_field_the_value_and_the_line(
    old: str, new: str, path: str, fragment: str
) -> None:
    text = GOOD.replace(old, new)
    p = only(text)
    assert p.path == path
    assert fragment in p.message
    assert p.line == line_of(text, new.split(":")[0] + ":")


def test_every_problem_is_reported_not_only_the_first() -> None:
    text = GOOD.replace("points: -5", "points: ten").replace("domain: societal", "domain: x")
    problems = refused(text)
    assert [p.path for p in problems] == ["record_types[0].domain", "rules[0].points"]
    assert [p.line for p in problems] == [line_of(text, "domain:"), line_of(text, "points:")]


def test_a_bad_item_does_not_also_make_its_list_too_short() -> None:
    p = only(GOOD.replace("domain: societal", "domain: x"))
    assert p.path == "record_types[0].domain"


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1x", "cannot read duration '1x': use whole numbers with units y, m, w, d"),
        ("5", "duration 5 has no unit: write e.g. '5d', '5m' or '5y'"),
        ("'5'", "duration '5' has no unit"),
        ("1.5y", "cannot read duration '1.5y'"),
        ("1.5", "a duration must be text such as '2y' or '30d', got 1.5"),
        ("0d", "duration '0d' is zero"),
        ("-1y", "cannot read duration '-1y'"),
        ("true", "a duration must be text"),
    ],
)
def test_bad_durations(value: str, message: str) -> None:
    text = GOOD.replace("expires: 1y", f"expires: {value}")
    p = only(text)
    assert p.path == "rules[0].expires"
    assert message in p.message
    assert p.line == line_of(text, "expires:")


def test_bad_duration_in_a_schedule_step() -> None:
    text = GOOD.replace("after: 6m", "after: six months")
    p = only(text)
    assert p.path == "rules[0].schedule[0].after"
    assert "cannot read duration 'six months'" in p.message
    assert p.line == line_of(text, "schedule:")


# --- when -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        ("kmh >> 20", "unexpected token '>' at column 6"),
        ("kmh = 20", "use '==' to test equality"),
        ("kmh >= 20.5", "float 20.5 is not allowed"),
        ("kmh >= 20 and", "unexpected end of input"),
        ("kmh >= len(x)", "function len() is not allowed"),
        ("kmh + 1 > 20", "arithmetic is not allowed"),
    ],
)
def test_bad_when_names_the_expression_and_the_column(when: str, fragment: str) -> None:
    text = GOOD.replace('when: "kmh >= 20"', f'when: "{when}"')
    p = only(text)
    assert p.path == "rules[0].when"
    assert p.message.startswith(f"cannot read {when!r}: ")
    assert fragment in p.message
    assert p.line == line_of(text, "when:")


def test_when_must_be_text() -> None:
    p = only(GOOD.replace('when: "kmh >= 20"', "when: 20"))
    assert p.message == "'when' must be an expression in quotes, got 20"


def test_when_is_stored_in_canonical_form() -> None:
    policy = load_policy_text(GOOD.replace('"kmh >= 20"', '"(kmh>=20)"'), "tiny.yaml")
    assert policy.rules[0].when == "kmh >= 20"


# --- content hash ---------------------------------------------------------------------------------

REFORMATTED = textwrap.dedent(
    """\
    policy: tiny
    version: '1'
    grades: [{min: 1000, grade: A}, {grade: D, min: 0}]
    scale:
      max: 2000
      min: 0
      base: 1000   # where everyone starts
    record_types:
      - {code: societal.ticket, domain: societal, category: traffic_safety,
         applies_to: [person], retention: 24m, attributes: {kmh: {type: int}}}
    rules:
      - {id: ticket, type: societal.ticket, when: "(kmh>=20)", points: -5, expires: 12m,
         schedule: [{pct: 50, after: 6m}]}
    disputes: {deadline: 30d}
    """
)


def test_content_hash_ignores_comments_layout_order_and_spelling_of_durations() -> None:
    a = load_policy_text(GOOD, "a.yaml")
    b = load_policy_text(REFORMATTED, "b.yaml")
    assert a == b
    assert a.content_hash == b.content_hash


def test_content_hash_changes_with_the_points() -> None:
    a = load_policy_text(GOOD, "a.yaml")
    b = load_policy_text(GOOD.replace("points: -5", "points: -6"), "b.yaml")
    assert a.content_hash != b.content_hash


def test_content_hash_changes_with_the_version_and_the_condition() -> None:
    base = load_policy_text(GOOD, "a.yaml").content_hash
    assert load_policy_text(GOOD.replace('"1"', '"2"'), "b").content_hash != base
    assert load_policy_text(GOOD.replace("kmh >= 20", "kmh > 20"), "c").content_hash != base


def test_canonical_form_round_trips() -> None:
    policy = load_policy_text(GOOD, "a.yaml")
    assert Policy.model_validate(policy.canonical()) == policy


# --- rendering ------------------------------------------------------------------------------------


def test_error_renders_file_line_path_and_message() -> None:
    text = GOOD.replace("    expires: 1y", "    expirs: 1y")
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "tiny.yaml")
    rendered = str(info.value).splitlines()
    assert rendered[0] == "policy tiny.yaml refused (1 error(s))"
    assert rendered[1].startswith(f"tiny.yaml:{line_of(text, 'expirs')}: rules[0].expirs: ")


def test_render_path() -> None:
    assert render_path(("rules", 3, "expires")) == "rules[3].expires"
    assert render_path(()) == "(document)"


def test_lint_policy_text_returns_warnings_with_lines_for_a_policy_that_loads() -> None:
    text = GOOD + (
        "  - {id: bonus, type: societal.ticket, points: 5}\n"  # shadowed? no: first has a when
    )
    policy, problems = lint_policy_text(text, "tiny.yaml")
    assert policy is not None
    (p,) = problems
    assert p.severity == "warning"
    assert p.line == line_of(text, "id: bonus")
    assert "has no expiry" in p.message
    assert p.render("tiny.yaml").startswith(f"tiny.yaml:{p.line}: rules[1]: warning: ")


def test_lint_policy_text_returns_the_problems_of_a_refused_policy() -> None:
    policy, problems = lint_policy_text(GOOD.replace("points: -5", "points: x"), "tiny.yaml")
    assert policy is None
    assert [p.path for p in problems] == ["rules[0].points"]
