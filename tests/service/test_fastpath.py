"""The fast path for common lines gives the reference's row, or steps aside.

:func:`chengxin.service.fastpath.fast_row` must return exactly the row that
``check_submission`` and its canonical JSON give (the ``Checked`` fields), or
None. These tests hold it to that on a synthetic feed, and on lines with one
field or more changed to values chosen to trip it: refused ones, ones the
reference coerces (whitespace, lower case, full-width digits, timestamps),
and retractions, amendments and reasons.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chengxin.domain.identifiers import make_uscc
from chengxin.domain.policy import Policy
from chengxin.domain.policy_load import load_policy_text
from chengxin.domain.records import SUBJECT_FIELDS, TOP_LEVEL, RecordRejected
from chengxin.service import fastpath
from chengxin.service.checking import RawLines, _check_row, check_chunk, check_lines
from chengxin.service.policies import read_policy_source
from chengxin.synth import CityConfig, write_feed

TODAY = date(2026, 11, 1)
CITY = CityConfig(people=200, seed=11, end=TODAY)
USCC = make_uscc("9", "1", "110105", "MA01X0Y7")


@pytest.fixture(scope="module")
def national() -> Policy:
    """The national pack, loaded (no database needed)."""
    text, _ = read_policy_source("national")
    return load_policy_text(text, "national")


@pytest.fixture(scope="module")
def feed_lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The lines of a small synthetic city's feed, parsed."""
    feed = Path(tmp_path_factory.mktemp("feed")) / "feed.jsonl"
    write_feed(CITY, feed, "jsonl")
    return [orjson.loads(line) for line in feed.read_bytes().splitlines()]


def _reference(raw: Any, policy: Policy) -> tuple[Any, ...] | tuple[str, str, str | None]:
    try:
        return _check_row(7, raw, policy, TODAY)
    except RecordRejected as exc:
        return (exc.code, str(exc), exc.field)


def _agrees(raw: Any, policy: Policy) -> bool:
    """Whether the fast path gave the reference's row (True) or stepped aside (False)."""
    fast = fastpath.fast_row(7, copy.deepcopy(raw), policy, TODAY)
    if fast is None:
        return False
    assert fast == _reference(raw, policy)
    return True


def test_the_fast_path_takes_a_feed_and_gives_the_reference_rows(
    national: Policy, feed_lines: list[dict[str, Any]]
) -> None:
    taken = sum(_agrees(raw, national) for raw in feed_lines)
    # Retractions and amendments are about 1 % of a feed; every other line is common.
    plain = sum("retracts" not in raw for raw in feed_lines)
    assert taken == plain


def test_a_remembered_identifier_gives_the_same_rows(
    national: Policy, feed_lines: list[dict[str, Any]]
) -> None:
    fastpath._IDENTIFIERS.clear()
    first = [fastpath.fast_row(1, raw, national, TODAY) for raw in feed_lines]
    assert fastpath._IDENTIFIERS
    assert [fastpath.fast_row(1, raw, national, TODAY) for raw in feed_lines] == first


ODD_TEXT = st.sampled_from(
    [None, "", " ", "  x  ", "x" * 65, "x" * 201, "X", "é", "张三", "\u3000y\u3000", "a\ud800"]
)
ODD_VALUE = st.one_of(
    ODD_TEXT,
    st.sampled_from(
        [0, 1, -1, 2**63, 1.0, 1.5, 1e3, True, False, [], ["x"], {}, {"a": 1}, "2026-11-02"]
    ),
)
ODD_DATE = st.sampled_from(
    [
        "2026-03-01",
        " 2026-03-01 ",
        "2026-03-01T12:00:00",
        "2026-03-01 12:00",
        "2026-03-01X",
        "20260301",
        "2026-W09-7",
        "2026-11-01",
        "2026-11-02",
        "1900-01-01",
        "1970-01-01",
        "2026-02-30",
        "",
        "yesterday",
        7,
    ]
)
ODD_ID = st.sampled_from(
    [
        "110105197001010016",
        "11010519700101001X",
        "11010519700101001x",
        " 110105-19700101-0016 ",
        "１１０１０５１９７００１０１００１６",
        "110105197001010017",
        "110105202701010016",
        "000000197001010016",
        "1101051970010100",
        USCC,
        USCC.lower(),
        "ACME-42",
        "",
        "   ",
        12,
    ]
)
ODD_ATTRIBUTES = st.sampled_from(
    [
        None,
        "",
        {},
        [],
        "x",
        {"amount_cny": 250_000},
        {"amount_cny": 250_000.0},
        {"amount_cny": 2.5},
        {"amount_cny": "250000"},
        {"amount_cny": 2**63},
        {"amount_cny": True},
        {"amount_cny": None},
        {"amount_cny": 1, "other": 2},
        {"hours": 4},
        {"severity": "minor"},
        {"severity": "grave"},
        {"repeat": True},
        {"repeat": 1},
    ]
)
TOP = [*sorted(TOP_LEVEL), "extra"]  # "extra": a field no line may carry
SUBJECT = [*sorted(SUBJECT_FIELDS), "extra"]


@st.composite
def odd_lines(draw: st.DrawFn, base: list[dict[str, Any]]) -> dict[str, Any]:
    """A feed line with a few fields changed to odd values."""
    raw = copy.deepcopy(draw(st.sampled_from(base)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        key = draw(st.sampled_from(TOP))
        if key == "subject" and isinstance(raw.get("subject"), dict) and draw(st.booleans()):
            skey = draw(st.sampled_from(SUBJECT))
            value = draw(
                ODD_ID
                if skey == "id"
                else st.one_of(st.sampled_from(["cn-rid", "cn-uscc", "generic", "person",
                                                "organisation", "public_body"]), ODD_VALUE)
            )  # fmt: skip
            raw["subject"][skey] = copy.deepcopy(value)  # never the strategy's own object
            continue
        if key in ("retracts", "amends"):
            refs = st.sampled_from([str(raw.get("ref")), "other-ref"])
            value: Any = draw(st.one_of(refs, ODD_TEXT))
        elif key == "type":
            value = draw(
                st.one_of(st.sampled_from(["commercial.tax_arrears", "societal.volunteering",
                                           "commercial.wage_arrears", "nope"]), ODD_VALUE)
            )  # fmt: skip
        elif key == "occurred_at":
            value = draw(ODD_DATE)
        elif key == "attributes":
            value = draw(ODD_ATTRIBUTES)
        else:
            value = draw(ODD_VALUE)
        if value is None and draw(st.booleans()):
            raw.pop(key, None)
        else:
            raw[key] = copy.deepcopy(value)
    return raw


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_odd_line_gets_the_reference_row_or_the_reference_path(
    data: st.DataObject, national: Policy, feed_lines: list[dict[str, Any]]
) -> None:
    raw = data.draw(odd_lines(feed_lines))
    _agrees(raw, national)
    # And through the chunk checker: the same rows and the same refusals either way.
    batch = check_lines([(3, raw)], national, TODAY)
    want = _reference(raw, national)
    if batch.checked:
        assert tuple(batch.checked[0]) == (3, *want[1:])
    else:
        (res,) = batch.rejected
        assert (res.code, res.message, res.field) == want


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_chunk_of_odd_json_lines_checks_as_the_standard_library_reads_it(
    data: st.DataObject, national: Policy, feed_lines: list[dict[str, Any]]
) -> None:
    lines = data.draw(st.lists(odd_lines(feed_lines), min_size=1, max_size=6))
    extra = data.draw(st.sampled_from(['{"amount_cny": 100000000000000000000}', "1.5"]))
    raw = [json.dumps(line).encode() for line in lines]
    if data.draw(st.booleans()):  # an integer past 64 bits, which orjson reads as a float
        raw[0] = raw[0].replace(b'"attributes": {}', b'"attributes": ' + extra.encode())
    numbers = list(range(2, 2 + 2 * len(raw), 2))
    want = check_lines(
        [(n, json.loads(line)) for n, line in zip(numbers, raw, strict=True)], national, TODAY
    )
    assert check_chunk(RawLines(numbers, raw), national, TODAY) == want
