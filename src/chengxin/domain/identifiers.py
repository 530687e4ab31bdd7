"""Subject identifiers: parse, validate, mask and generate them.

Three schemes:

``cn-rid``
    Resident identity number, GB 11643-1999: 6-digit region code, birth date
    ``YYYYMMDD``, 3-digit sequence, ISO 7064 MOD 11-2 check character.
``cn-uscc``
    Unified social credit code, GB 32100-2015: registration department,
    organisation type, 6-digit region code, 9-character organisation code
    (GB 11714), mod-31 check character.
``generic``
    Any 1 to 64 characters of ``[A-Za-z0-9._:-]``, kept exactly as given
    (surrounding whitespace aside), for deployments outside China.

python-stdnum (``stdnum.cn.ric``, ``stdnum.cn.uscc``) is the authority: a
``cn-*`` value is accepted exactly when stdnum's ``validate`` accepts it, and
the refusal names which check failed. The checks run in stdnum's order --
length, characters, check character, then (``cn-rid`` only) birth date and
region -- so a value with several faults reports the first. Two consequences
of following stdnum, kept on purpose and pinned by the tests:

* ``cn-rid`` region: stdnum's table (GB/T 2260 codes with the years each was
  in use) must know the code *in the birth year*. A code that is unknown, or
  was created after or abolished before the birth year, is refused with
  ``unknown_region``. This refuses some real numbers (a code is assigned when
  the card is issued, not at birth; GB 11643's own example
  ``440524188001010014`` is refused).
* ``cn-uscc``: stdnum requires characters 1-8 to be digits, although
  GB 32100 allows letters such as ``Y`` or ``N`` as registration department.
  It does not check the region code.

For throughput (the import path checks 50,000 records/s) the birth date and
the USCC check character are computed here with the same arithmetic as stdnum,
and stdnum's region verdicts are cached per (region, birth year); the tests
hold these fast paths to stdnum's own functions.
"""

from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from stdnum import numdb
from stdnum.cn import ric, uscc
from stdnum.exceptions import ValidationError
from stdnum.util import clean

Scheme = Literal["cn-rid", "cn-uscc", "generic"]
"""How a subject is identified."""
SubjectKind = Literal["person", "organisation", "public_body"]
"""What a subject is."""

SCHEMES: Final[tuple[str, ...]] = get_args(Scheme)
"""Every identifier scheme, in a stable order."""

USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""GB 32100 characters, in value order 0-30 (no I, O, S, V, Z)."""

_USCC_ALPHABET_TEXT = "0-9, A-H, J-N, P-R, T, U, W-Y"
_USCC_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
# USCC character -> the base-34 digit of the same value (see _parse_uscc).
_USCC_TO_BASE34 = str.maketrans(USCC_ALPHABET, "0123456789ABCDEFGHIJKLMNOPQRSTU")
# stdnum.cn.uscc.validate requires digits in characters 1-8.
_USCC_DIGIT_PREFIX = 8
_USCC_FORMAT = re.compile(r"[0-9]{8}[0-9A-HJ-NP-RTUW-Y]{10}")
_RID_LAST = frozenset("0123456789X")
_GENERIC_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_GENERIC_MAX = 64
_REGION_CACHE_MAX = 1 << 16

_KINDS: Final[dict[str, tuple[SubjectKind, ...]]] = {
    "cn-rid": ("person",),
    "cn-uscc": ("organisation", "public_body"),
    "generic": ("person", "organisation", "public_body"),
}


class InvalidIdentifier(ValueError):
    """An identifier was refused; `code` is machine-readable, str(e) is the human reason.

    Codes: ``empty``, ``wrong_length``, ``bad_character``, ``bad_check_character``,
    ``impossible_birth_date``, ``future_birth_date``, ``unknown_region``,
    ``unknown_scheme``. ``value`` is the value as given, before canonicalisation.
    """

    code: str
    scheme: str
    value: str

    def __init__(self, code: str, reason: str, scheme: str, value: str) -> None:
        super().__init__(reason)
        self.code = code
        self.scheme = scheme
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, str(self), self.scheme, self.value))


@dataclass(frozen=True, slots=True)
class SubjectId:
    """A validated identifier: scheme + canonical value (build it with `parse_identifier`)."""

    scheme: Scheme
    value: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}"


def parse_identifier(scheme: str, value: str, *, today: datetime.date | None = None) -> SubjectId:
    """Canonicalise and validate ``value`` under ``scheme``; raise `InvalidIdentifier` if refused.

    ``cn-*`` values lose spaces and hyphens (Unicode look-alikes and full-width
    forms first become ASCII) and are upper-cased. A ``cn-rid`` birth date after
    ``today`` is refused; without ``today`` there is no such check (the domain
    has no clock).
    """
    if scheme == "cn-rid":
        return SubjectId("cn-rid", _parse_rid(_canonical(value), value, today))
    if scheme == "cn-uscc":
        return SubjectId("cn-uscc", _parse_uscc(_canonical(value), value))
    if scheme == "generic":
        return SubjectId("generic", _parse_generic(value))
    raise InvalidIdentifier(
        "unknown_scheme",
        f"unknown identifier scheme {scheme!r} (expected one of {', '.join(SCHEMES)})",
        scheme,
        value,
    )


def parse_qualified(text: str, *, today: datetime.date | None = None) -> SubjectId:
    """Parse the ``scheme:value`` form that ``str(SubjectId)`` produces."""
    scheme, sep, value = text.partition(":")
    if not sep:
        raise InvalidIdentifier("unknown_scheme", f"{text!r} has no 'scheme:' prefix", "", text)
    return parse_identifier(scheme, value, today=today)


def _canonical(value: str) -> str:
    if not value.isascii():
        # NFKC turns full-width digits and letters into ASCII; stdnum's clean
        # maps the Unicode dashes and spaces it knows.
        value = clean(unicodedata.normalize("NFKC", value))
    return value.replace(" ", "").replace("-", "").strip().upper()


def _refuse(code: str, reason: str, scheme: str, value: str) -> InvalidIdentifier:
    return InvalidIdentifier(code, reason, scheme, value)


def _check_length(number: str, name: str, scheme: str, raw: str) -> None:
    if not number:
        raise _refuse("empty", "identifier is empty", scheme, raw)
    if len(number) != 18:
        raise _refuse(
            "wrong_length", f"{name} must have 18 characters, got {len(number)}", scheme, raw
        )


def _parse_rid(number: str, raw: str, today: datetime.date | None) -> str:
    _check_length(number, "resident identity number", "cn-rid", raw)
    body = number[:17]
    if not (body.isascii() and body.isdigit() and number[17] in _RID_LAST):
        for i, c in enumerate(number):
            if i < 17 and c not in "0123456789":
                reason = f"character {i + 1} {c!r} is not a digit"
                raise _refuse("bad_character", reason, "cn-rid", raw)
        reason = f"character 18 {number[17]!r} is not a digit or 'X'"
        raise _refuse("bad_character", reason, "cn-rid", raw)
    expected = ric.calc_check_digit(number)
    if number[17] != expected:
        reason = f"check character should be {expected!r}, got {number[17]!r} (ISO 7064 MOD 11-2)"
        raise _refuse("bad_check_character", reason, "cn-rid", raw)
    # Same arithmetic as stdnum.cn.ric.get_birth_date, without its re-cleaning.
    try:
        birth = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        reason = f"birth date {number[6:14]} does not exist"
        raise _refuse("impossible_birth_date", reason, "cn-rid", raw) from None
    if today is not None and birth > today:
        reason = f"birth date {number[6:14]} is in the future"
        raise _refuse("future_birth_date", reason, "cn-rid", raw)
    problem = _REGION_PROBLEMS.get(number[:10], _UNSEEN)
    if problem is _UNSEEN:
        problem = _region_problem(number)
    if problem is not None:
        raise _refuse("unknown_region", problem, "cn-rid", raw)
    return number


# (region code + birth year) -> None if stdnum accepts the region, else the reason.
_REGION_PROBLEMS: dict[str, str | None] = {}
_UNSEEN = "unseen"  # a sentinel never stored as a reason


def _region_problem(number: str) -> str | None:
    """stdnum's verdict on the region of a cn-rid whose birth date is valid, cached.

    Read from stdnum's own region table (see :func:`_region_spans`, which mirrors
    ``stdnum.cn.ric.get_birth_place``) so a cold lookup costs a dict access, not a
    walk of the table; the tests hold the two to the same verdicts.
    """
    region, year = number[:6], int(number[6:10])
    spans = _region_spans().get(region)
    if spans is None:
        problem: str | None = f"region code {region} is unknown"
    elif not any(a <= year <= b for a, b in spans):
        problem = f"region code {region} was not in use in birth year {year}"
    else:
        problem = None
    if len(_REGION_PROBLEMS) >= _REGION_CACHE_MAX:
        _REGION_PROBLEMS.clear()
    _REGION_PROBLEMS[number[:10]] = problem
    return problem


def _parse_uscc(number: str, raw: str) -> str:
    _check_length(number, "unified social credit code", "cn-uscc", raw)
    if not _USCC_FORMAT.fullmatch(number):
        _refuse_uscc_character(number, raw)
    # GB 32100: check = -(sum of value_i * 3^(i-1)) mod 31. Read backwards in base 34,
    # the 17 characters give sum of value_i * 34^(i-1), and 34 = 3 (mod 31).
    total = int(number[16::-1].translate(_USCC_TO_BASE34), 34)
    expected = USCC_ALPHABET[-total % 31]
    if number[17] != expected:
        reason = f"check character should be {expected!r}, got {number[17]!r} (GB 32100 mod 31)"
        raise _refuse("bad_check_character", reason, "cn-uscc", raw)
    return number


def _refuse_uscc_character(number: str, raw: str) -> None:
    for i, c in enumerate(number):
        if c not in _USCC_VALUE:
            reason = (
                f"character {i + 1} {c!r} is not in the GB 32100 alphabet ({_USCC_ALPHABET_TEXT})"
            )
            raise _refuse("bad_character", reason, "cn-uscc", raw)
        if i < _USCC_DIGIT_PREFIX and _USCC_VALUE[c] > 9:
            reason = f"character {i + 1} {c!r} is not a digit (characters 1-8 must be digits)"
            raise _refuse("bad_character", reason, "cn-uscc", raw)
    raise AssertionError(f"{number!r} matches the USCC format")  # pragma: no cover


def _parse_generic(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise _refuse("empty", "identifier is empty", "generic", raw)
    if len(value) > _GENERIC_MAX:
        reason = f"generic identifier must have at most {_GENERIC_MAX} characters, got {len(value)}"
        raise _refuse("wrong_length", reason, "generic", raw)
    for i, c in enumerate(value):
        if c not in _GENERIC_CHARS:
            reason = (
                f"character {i + 1} {c!r} is not allowed in a generic identifier "
                "(A-Z, a-z, 0-9, '.', '_', ':', '-')"
            )
            raise _refuse("bad_character", reason, "generic", raw)
    return value


def rid_birth_date(value: str) -> datetime.date:
    """Birth date of a valid cn-rid."""
    number = parse_identifier("cn-rid", value).value
    return datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))


def rid_region(value: str) -> str:
    """6-digit region code (GB/T 2260) of a valid cn-rid, e.g. ``"110105"``."""
    return parse_identifier("cn-rid", value).value[:6]


def rid_region_name(value: str) -> str | None:
    """Province and county name of a valid cn-rid's region as of its birth year, from stdnum."""
    number = parse_identifier("cn-rid", value).value
    try:
        place = ric.get_birth_place(number)
    except (ValidationError, KeyError):  # pragma: no cover - parse_identifier checked it
        return None
    province, county = str(place.get("province", "")), str(place.get("county", ""))
    name = province if county in ("", province) else province + county
    return name or None


def uscc_region(value: str) -> str:
    """6-digit administrative division code (characters 3-8) of a valid cn-uscc."""
    return parse_identifier("cn-uscc", value).value[2:8]


def region_of(subject_id: SubjectId) -> str | None:
    """Region code of a cn-rid or cn-uscc; None for a generic identifier."""
    if subject_id.scheme == "cn-rid":
        return subject_id.value[:6]
    if subject_id.scheme == "cn-uscc":
        return subject_id.value[2:8]
    return None


def mask(subject_id: SubjectId) -> str:
    """The value for public lists: cn-* show the first and last 4 characters, generic 2 and 2.

    A generic value shorter than 8 characters is masked entirely, so that at
    least half of it stays hidden. The length is kept.
    """
    value = subject_id.value
    shown = 2 if subject_id.scheme == "generic" else 4
    if len(value) < 4 * shown:
        return "*" * len(value)
    return value[:shown] + "*" * (len(value) - 2 * shown) + value[-shown:]


def expected_kind(scheme: str) -> tuple[SubjectKind, ...]:
    """Subject kinds a scheme can identify: cn-rid people, cn-uscc bodies, generic any."""
    try:
        return _KINDS[scheme]
    except KeyError:
        reason = f"unknown identifier scheme {scheme!r} (expected one of {', '.join(SCHEMES)})"
        raise InvalidIdentifier("unknown_scheme", reason, scheme, "") from None


def make_rid(region: str, birth: datetime.date, sequence: int) -> str:
    """Build a cn-rid: region + YYYYMMDD + 3-digit sequence + check (refused if region unknown)."""
    if not (len(region) == 6 and region.isascii() and region.isdigit()):
        raise ValueError(f"region must be 6 digits, got {region!r}")
    if not 0 <= sequence <= 999:
        raise ValueError(f"sequence must be 0..999, got {sequence}")
    if birth.year < 1000:
        raise ValueError(f"birth year must have 4 digits, got {birth.year}")
    body = f"{region}{birth:%Y%m%d}{sequence:03d}"
    # stdnum's calc_check_digit expects the number with a check character slot.
    return body + str(ric.calc_check_digit(body + "0"))


def org_code_check_digit(body: str) -> str:
    """GB 11714 organisation code check character for an 8-character body (stdnum has none)."""
    if len(body) != 8 or not all(c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" for c in body):
        raise ValueError(f"organisation code body must be 8 of 0-9, A-Z, got {body!r}")
    # GB 11714-1997: digits count 0-9, letters A-Z 10-35; weights 3 7 9 10 5 8 4 2;
    # check = 11 - (sum mod 11), with 10 written 'X' and 11 written '0'.
    total = sum(int(c, 36) * w for c, w in zip(body, (3, 7, 9, 10, 5, 8, 4, 2), strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else str(check % 11)


def make_uscc(registration_dept: str, org_type: str, region: str, org_code_body: str) -> str:
    """Build a valid cn-uscc; the GB 11714 and GB 32100 check characters are computed."""
    for name, part, size in (
        ("registration_dept", registration_dept, 1),
        ("org_type", org_type, 1),
        ("region", region, 6),
    ):
        # stdnum.cn.uscc requires characters 1-8 to be digits.
        if not (len(part) == size and part.isascii() and part.isdigit()):
            raise ValueError(f"{name} must be {size} digit(s), got {part!r}")
    if len(org_code_body) != 8 or any(c not in _USCC_VALUE for c in org_code_body):
        raise ValueError(
            f"org_code_body must be 8 characters of {_USCC_ALPHABET_TEXT}, got {org_code_body!r}"
        )
    body = (
        registration_dept + org_type + region + org_code_body + org_code_check_digit(org_code_body)
    )
    return body + str(uscc.calc_check_digit(body))


@functools.cache
def _region_spans() -> dict[str, tuple[tuple[int, int], ...]]:
    """Region code -> the year spans stdnum's table gives it (always: one wide span)."""
    spans: dict[str, tuple[tuple[int, int], ...]] = {}
    for _length, low, high, _props, counties in numdb.get("cn/loc").prefixes:
        for province in range(int(low), int(high) + 1):
            for _clen, clow, chigh, props, _children in counties:
                if "county" not in props:  # pragma: no cover - every county line has one
                    continue
                entries = _county_spans(str(props["county"]))
                for county in range(int(clow), int(chigh) + 1):
                    spans[f"{province:02d}{county:04d}"] = entries
    return dict(sorted(spans.items()))


def _county_spans(county: str) -> tuple[tuple[int, int], ...]:
    # Mirrors stdnum.cn.ric.get_birth_place: comma-separated "[start-end]name"
    # entries, either bound optional; an entry without brackets is always in use.
    out: list[tuple[int, int]] = []
    for entry in county.split(","):
        if not entry.startswith("["):
            return ((1, 9999),)
        start, end = entry[1:].split("]")[0].split("-")
        out.append((int(start) if start else 1, int(end) if end else 9999))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def known_regions(year: int | None = None) -> tuple[str, ...]:
    """Region codes stdnum knows, sorted; with ``year``, those a cn-rid born that year may use."""
    spans = _region_spans()
    if year is None:
        return tuple(spans)
    return tuple(code for code, s in spans.items() if any(a <= year <= b for a, b in s))


def region_in_use(region: str, year: int) -> bool:
    """Whether stdnum accepts ``region`` in a cn-rid born in ``year``."""
    return any(a <= year <= b for a, b in _region_spans().get(region, ()))
