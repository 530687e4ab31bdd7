"""Hypothesis strategies for valid identifiers, shared by the tests that need subjects."""

from __future__ import annotations

import datetime

from hypothesis import strategies as st

from chengxin.domain.identifiers import USCC_ALPHABET, known_regions, make_rid, make_uscc

EARLIEST_BIRTH = datetime.date(1900, 1, 1)
LATEST_BIRTH = datetime.date(2020, 12, 31)


@st.composite
def _rid(draw: st.DrawFn, min_birth: datetime.date, max_birth: datetime.date) -> str:
    birth = draw(st.dates(min_value=min_birth, max_value=max_birth))
    region = draw(st.sampled_from(known_regions(birth.year)))
    return make_rid(region, birth, draw(st.integers(min_value=0, max_value=999)))


def rids(
    min_birth: datetime.date = EARLIEST_BIRTH, max_birth: datetime.date = LATEST_BIRTH
) -> st.SearchStrategy[str]:
    """Valid canonical cn-rid values: a region in use in the birth year, any sequence."""
    return _rid(min_birth, max_birth)


@st.composite
def _uscc(draw: st.DrawFn) -> str:
    return make_uscc(
        draw(st.sampled_from("123456789")),
        draw(st.sampled_from("123456789")),
        draw(st.sampled_from(known_regions())),
        draw(st.text(alphabet=USCC_ALPHABET, min_size=8, max_size=8)),
    )


def usccs() -> st.SearchStrategy[str]:
    """Valid canonical cn-uscc values over known region codes and any organisation code."""
    return _uscc()
