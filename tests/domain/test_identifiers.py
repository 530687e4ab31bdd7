"""Identifiers: public examples, agreement with python-stdnum, what the check characters catch."""

from __future__ import annotations

import datetime
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st
from id_strategies import rids, usccs
from stdnum import exceptions as stdnum_exceptions
from stdnum.cn import ric, uscc

from chengxin.domain.identifiers import (
    SCHEMES,
    USCC_ALPHABET,
    InvalidIdentifier,
    SubjectId,
    expected_kind,
    known_regions,
    make_rid,
    make_uscc,
    mask,
    org_code_check_digit,
    parse_identifier,
    parse_qualified,
    region_in_use,
    region_of,
    rid_birth_date,
    rid_region,
    rid_region_name,
    uscc_region,
)

RID_CHARACTERS = "0123456789X"
GENERIC_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"


def _with_check(body17: str) -> str:
    """A cn-rid body completed with its correct check character."""
    return body17 + ric.calc_check_digit(body17 + "0")


def _refusal(scheme: str, value: str, **kwargs: datetime.date) -> InvalidIdentifier:
    with pytest.raises(InvalidIdentifier) as info:
        parse_identifier(scheme, value, **kwargs)
    return info.value


# --- public examples -------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "value"),
    [
        ("cn-rid", "11010519491231002X"),  # GB 11643-1999's example
        ("cn-rid", "360426199101010071"),  # python-stdnum's example
        ("cn-uscc", "91110000600037341L"),  # python-stdnum's example
        ("generic", "DE-2024.x:17_a"),
    ],
)
def test_public_examples_are_valid(scheme: str, value: str) -> None:
    parsed = parse_identifier(scheme, value)
    assert parsed == SubjectId(scheme, value)  # type: ignore[arg-type]
    assert str(parsed) == f"{scheme}:{value}"
    assert parse_qualified(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("scheme", "value", "code", "reason"),
    [
        (
            "cn-rid",
            "11010519491231002",
            "wrong_length",
            "resident identity number must have 18 characters, got 17",
        ),
        ("cn-rid", "1101A519491231002X", "bad_character", "character 5 'A' is not a digit"),
        ("cn-rid", "11010519491231002Y", "bad_character", "character 18 'Y' is not a digit or 'X'"),
        (
            "cn-rid",
            "110105194912310021",
            "bad_check_character",
            "check character should be 'X', got '1' (ISO 7064 MOD 11-2)",
        ),
        (
            "cn-rid",
            _with_check("11010519491331002"),
            "impossible_birth_date",
            "birth date 19491331 does not exist",
        ),
        (
            "cn-rid",
            _with_check("11010519490229002"),
            "impossible_birth_date",
            "birth date 19490229 does not exist",
        ),
        (
            "cn-rid",
            _with_check("99010519491231002"),
            "unknown_region",
            "region code 990105 is unknown",
        ),
        # Known province, unknown county: stdnum 2.2 raises KeyError here, not InvalidComponent.
        (
            "cn-rid",
            _with_check("11999919491231002"),
            "unknown_region",
            "region code 119999 is unknown",
        ),
        # GB 11643's other example: stdnum's table has 440524 only from 1983 on.
        (
            "cn-rid",
            "440524188001010014",
            "unknown_region",
            "region code 440524 was not in use in birth year 1880",
        ),
        ("cn-rid", " - ", "empty", "identifier is empty"),
        (
            "cn-uscc",
            "91110000600037341",
            "wrong_length",
            "unified social credit code must have 18 characters, got 17",
        ),
        (
            "cn-uscc",
            "91I10000600037341L",
            "bad_character",
            "character 3 'I' is not in the GB 32100 alphabet (0-9, A-H, J-N, P-R, T, U, W-Y)",
        ),
        (
            "cn-uscc",
            "Y1110000600037341L",
            "bad_character",
            "character 1 'Y' is not a digit (characters 1-8 must be digits)",
        ),
        (
            "cn-uscc",
            "91110000600037341M",
            "bad_check_character",
            "check character should be 'L', got 'M' (GB 32100 mod 31)",
        ),
        ("generic", "  ", "empty", "identifier is empty"),
        (
            "generic",
            "ab c",
            "bad_character",
            "character 3 ' ' is not allowed in a generic identifier "
            "(A-Z, a-z, 0-9, '.', '_', ':', '-')",
        ),
        (
            "generic",
            "a" * 65,
            "wrong_length",
            "generic identifier must have at most 64 characters, got 65",
        ),
        (
            "passport",
            "X123",
            "unknown_scheme",
            "unknown identifier scheme 'passport' (expected one of cn-rid, cn-uscc, generic)",
        ),
    ],
)
def test_refusals_name_the_reason(scheme: str, value: str, code: str, reason: str) -> None:
    error = _refusal(scheme, value)
    assert (error.code, str(error), error.scheme, error.value) == (code, reason, scheme, value)


def test_birth_date_in_the_future_is_refused_only_given_today() -> None:
    value = make_rid("110105", datetime.date(2030, 1, 2), 1)
    error = _refusal("cn-rid", value, today=datetime.date(2030, 1, 1))
    assert (error.code, str(error)) == ("future_birth_date", "birth date 20300102 is in the future")
    assert parse_identifier("cn-rid", value, today=datetime.date(2030, 1, 2)).value == value
    assert parse_identifier("cn-rid", value).value == value


def test_region_must_be_in_use_in_the_birth_year() -> None:
    # 110112 (Tongzhou district) is in stdnum's table from 1997 on.
    assert parse_identifier("cn-rid", make_rid("110112", datetime.date(1997, 1, 1), 5))
    error = _refusal("cn-rid", make_rid("110112", datetime.date(1996, 12, 31), 5))
    assert str(error) == "region code 110112 was not in use in birth year 1996"
    assert not region_in_use("110112", 1996)
    assert region_in_use("110112", 1997)
    assert not region_in_use("999999", 2000)


def test_invalid_identifier_pickles() -> None:
    error = _refusal("cn-rid", "110105194912310021")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, str(copy), copy.scheme, copy.value) == (
        error.code,
        str(error),
        error.scheme,
        error.value,
    )


def test_qualified_form_needs_a_scheme() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_qualified("11010519491231002X")
    assert info.value.code == "unknown_scheme"
    assert parse_qualified("generic:a:b") == SubjectId("generic", "a:b")


# --- canonical form --------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "11010519491231002x",
        " 110105 19491231 002X ",
        "110105-19491231-002x",
        "１１０１０５１９４９１２３１００２ｘ",  # full-width, as Chinese input methods type it
        "110105–19491231–002X\n",  # en dashes
    ],
)
def test_rid_canonical_form(written: str) -> None:
    assert parse_identifier("cn-rid", written).value == "11010519491231002X"


def test_uscc_canonical_form() -> None:
    assert parse_identifier("cn-uscc", "9111 0000 6000 3734-1l").value == "91110000600037341L"


def test_generic_keeps_case_and_inner_characters() -> None:
    assert parse_identifier("generic", " Ab-c:1.x_ ").value == "Ab-c:1.x_"
    assert parse_identifier("generic", "a" * 64).value == "a" * 64


# --- the check characters --------------------------------------------------


def test_design_reference_figures_match_stdnum() -> None:
    # DESIGN.md: GB 11643 weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2,
    # sum mod 11 -> 1 0 X 9 8 7 6 5 4 3 2.
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    assert weights == tuple(pow(2, 17 - i, 11) for i in range(17))
    body = "11010519491231002"
    total = sum(int(c) * w for c, w in zip(body, weights, strict=True))
    assert "10X98765432"[total % 11] == ric.calc_check_digit(body + "0") == "X"
    # GB 32100 weights 3^(i-1) mod 31; stdnum's table is the same.
    assert tuple(pow(3, i, 31) for i in range(17)) == (
        1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
    )  # fmt: skip
    assert uscc._alphabet == USCC_ALPHABET


@given(st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17))
def test_uscc_fast_check_agrees_with_stdnum(body: str) -> None:
    number = "0" * 8 + body[8:]
    expected = uscc.calc_check_digit(number)
    assert parse_identifier("cn-uscc", number + expected).value == number + expected
    wrong = USCC_ALPHABET[(USCC_ALPHABET.index(expected) + 1) % 31]
    assert _refusal("cn-uscc", number + wrong).code == "bad_check_character"


@given(rids())
def test_every_single_substitution_in_a_rid_is_refused(value: str) -> None:
    # ISO 7064 MOD 11-2 weighs position i (1-17) by 2^(18-i) mod 11, never 0; 11 is prime and two
    # digits differ by 1-9, so changing one digit changes the sum mod 11 and so the check
    # character. A new check character is wrong by definition. 'X' is allowed only last.
    for i, old in enumerate(value):
        for new in RID_CHARACTERS.replace(old, ""):
            changed = value[:i] + new + value[i + 1 :]
            expected = "bad_character" if new == "X" and i < 17 else "bad_check_character"
            assert _refusal("cn-rid", changed).code == expected, (changed, i)
            assert not ric.is_valid(changed)


@given(usccs())
def test_every_single_substitution_in_a_uscc_is_refused(value: str) -> None:
    # GB 32100 weighs position i (1-17) by 3^(i-1) mod 31, never 0; 31 is prime and two
    # characters' values (0-30) differ by 1-30, so changing one changes the sum mod 31 and so
    # the check character. The check maps onto all 31 characters, so a different check
    # character is wrong. Letters in characters 1-8 are refused before the check (stdnum).
    for i, old in enumerate(value):
        for new in USCC_ALPHABET.replace(old, ""):
            changed = value[:i] + new + value[i + 1 :]
            expected = "bad_character" if i < 8 and not new.isdigit() else "bad_check_character"
            assert _refusal("cn-uscc", changed).code == expected, (changed, i)
            assert not uscc.is_valid(changed)


# --- agreement with python-stdnum ------------------------------------------

_STDNUM_CODES = {
    stdnum_exceptions.InvalidLength: {"wrong_length", "empty"},
    stdnum_exceptions.InvalidFormat: {"bad_character"},
    stdnum_exceptions.InvalidChecksum: {"bad_check_character"},
    stdnum_exceptions.InvalidComponent: {"impossible_birth_date", "unknown_region"},
    KeyError: {"unknown_region"},  # stdnum 2.2, known province with an unknown county
}


def _stdnum_refusal(validate: object, number: str) -> type[Exception] | None:
    try:
        validate(number)  # type: ignore[operator]
    except (stdnum_exceptions.ValidationError, KeyError) as error:
        return type(error)
    return None


@st.composite
def rid_like(draw: st.DrawFn) -> str:
    """Mostly well-formed cn-rid candidates that fail in every possible way."""
    region = draw(
        st.sampled_from(known_regions()) | st.text(alphabet="0123456789", min_size=6, max_size=6)
    )
    birth = draw(
        st.dates(datetime.date(1800, 1, 1), datetime.date(2030, 12, 31)).map(
            lambda d: f"{d:%Y%m%d}"
        )
        | st.text(alphabet="0123456789", min_size=8, max_size=8)
    )
    body = region + birth + draw(st.text(alphabet="0123456789", min_size=3, max_size=3))
    tail = draw(st.sampled_from(["check", "wrong check", "random"]))
    if tail == "random":
        return draw(st.text(alphabet=RID_CHARACTERS + "AI", min_size=15, max_size=19))
    check = ric.calc_check_digit(body + "0")
    return body + (check if tail == "check" else "0" if check == "X" else "X")


@given(rid_like())
def test_rid_verdict_agrees_with_stdnum(value: str) -> None:
    refused_by_stdnum = _stdnum_refusal(ric.validate, value)
    try:
        parsed = parse_identifier("cn-rid", value)
    except InvalidIdentifier as error:
        assert refused_by_stdnum is not None
        assert error.code in _STDNUM_CODES[refused_by_stdnum]
    else:
        assert refused_by_stdnum is None
        assert rid_birth_date(parsed.value) == ric.get_birth_date(value)


@given(
    st.text(alphabet=USCC_ALPHABET + "IOSVZ", min_size=16, max_size=19)
    | st.text(alphabet="0123456789", min_size=8, max_size=8).flatmap(
        lambda head: st.text(alphabet=USCC_ALPHABET, min_size=9, max_size=9).map(
            lambda tail: (head + tail) + uscc.calc_check_digit(head + tail)
        )
    )
)
def test_uscc_verdict_agrees_with_stdnum(value: str) -> None:
    refused_by_stdnum = _stdnum_refusal(uscc.validate, value)
    try:
        parse_identifier("cn-uscc", value)
    except InvalidIdentifier as error:
        assert refused_by_stdnum is not None
        assert error.code in _STDNUM_CODES[refused_by_stdnum]
    else:
        assert refused_by_stdnum is None


@given(st.sampled_from(known_regions()), st.integers(min_value=1900, max_value=2030))
def test_known_regions_by_year_agree_with_stdnum(region: str, year: int) -> None:
    try:
        ric.get_birth_place(f"{region}{year}0101000X")
    except (stdnum_exceptions.ValidationError, KeyError):
        accepted = False
    else:
        accepted = True
    assert region_in_use(region, year) == accepted
    assert (region in known_regions(year)) == accepted


@pytest.mark.parametrize("year", [1982, 1983, 1996, 1997, 2020])
def test_known_regions_of_a_year_agree_with_stdnum_everywhere(year: int) -> None:
    # Years either side of the most common dates in stdnum's table, every code.
    in_use = set(known_regions(year))
    for region in known_regions():
        try:
            ric.get_birth_place(f"{region}{year}0101000X")
        except (stdnum_exceptions.ValidationError, KeyError):
            assert region not in in_use, region
        else:
            assert region in in_use, region


# --- round trips and helpers -----------------------------------------------


@given(rids())
def test_generated_rids_round_trip(value: str) -> None:
    parsed = parse_identifier("cn-rid", value)
    assert parsed.value == value
    assert parse_qualified(str(parsed)) == parsed
    assert parse_identifier("cn-rid", value.lower().replace("x", " x")) == parsed
    assert ric.validate(value) == value
    assert rid_birth_date(value) == ric.get_birth_date(value)
    assert rid_region(value) == region_of(parsed) == value[:6]
    assert rid_region_name(value)
    assert make_rid(value[:6], rid_birth_date(value), int(value[14:17])) == value


@given(usccs())
def test_generated_usccs_round_trip(value: str) -> None:
    parsed = parse_identifier("cn-uscc", value)
    assert parsed.value == value
    assert parse_qualified(str(parsed)) == parsed
    assert uscc.validate(value) == value
    assert uscc_region(value) == region_of(parsed) == value[2:8]
    assert value[16] == org_code_check_digit(value[8:16])


def test_org_code_check_digit_public_example() -> None:
    # 60003734-1 is the organisation code inside stdnum's example USCC.
    assert org_code_check_digit("60003734") == "1"
    assert make_uscc("9", "1", "110000", "60003734") == "91110000600037341L"


def test_generators_refuse_malformed_parts() -> None:
    with pytest.raises(ValueError, match="region must be 6 digits"):
        make_rid("11010", datetime.date(2000, 1, 1), 1)
    with pytest.raises(ValueError, match=r"sequence must be 0\.\.999"):
        make_rid("110105", datetime.date(2000, 1, 1), 1000)
    with pytest.raises(ValueError, match="registration_dept must be 1 digit"):
        make_uscc("Y", "1", "110000", "60003734")
    with pytest.raises(ValueError, match="org_code_body must be 8 characters"):
        make_uscc("9", "1", "110000", "6000373I")


def test_region_names_and_kinds() -> None:
    assert rid_region_name("11010519491231002X") == "北京市朝阳区"
    assert region_of(SubjectId("generic", "abc")) is None
    assert expected_kind("cn-rid") == ("person",)
    assert expected_kind("cn-uscc") == ("organisation", "public_body")
    assert expected_kind("generic") == ("person", "organisation", "public_body")
    assert SCHEMES == ("cn-rid", "cn-uscc", "generic")
    with pytest.raises(InvalidIdentifier) as info:
        expected_kind("passport")
    assert info.value.code == "unknown_scheme"


# --- masking ---------------------------------------------------------------


def test_mask_examples() -> None:
    assert mask(SubjectId("cn-rid", "11010519491231002X")) == "1101**********002X"
    assert mask(SubjectId("cn-uscc", "91110000600037341L")) == "9111**********341L"
    assert mask(SubjectId("generic", "AB1234CD")) == "AB****CD"
    assert mask(SubjectId("generic", "AB123CD")) == "*******"


@given(
    rids().map(lambda v: SubjectId("cn-rid", v)) | usccs().map(lambda v: SubjectId("cn-uscc", v))
)
def test_mask_never_shows_more_than_8_of_18(subject_id: SubjectId) -> None:
    masked = mask(subject_id)
    assert len(masked) == 18
    shown = [i for i, c in enumerate(masked) if c != "*"]
    assert len(shown) <= 8
    assert all(masked[i] == subject_id.value[i] for i in shown)


@given(st.text(alphabet=GENERIC_CHARACTERS.replace("*", ""), min_size=1, max_size=64))
def test_mask_shows_at_most_half_of_a_generic_id(value: str) -> None:
    masked = mask(parse_identifier("generic", value))
    assert len(masked) == len(value)
    assert len(masked.replace("*", "")) <= min(4, len(value) // 2)
