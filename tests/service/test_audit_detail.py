"""A check's audit event, drafted from a memo, is the event the general drafter would make."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chengxin.domain.decisions import Decision
from chengxin.service import audit
from chengxin.service.principals import Principal

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_.0123456789", min_size=1, max_size=12)
DECISIONS = st.builds(
    Decision,
    measure=WORDS,
    outcome=st.sampled_from(["allow", "deny"]),
    reasons=st.lists(WORDS, max_size=3).map(tuple),
    policy_version=WORDS,
    appeal=st.none() | WORDS,
)


@given(
    decision=DECISIONS,
    kind=st.none() | WORDS,
    purpose=st.none() | WORDS,
    subject_id=st.none() | st.integers(1, 10**9),
)
def test_draft_check_is_draft_of_check_detail(
    decision: Decision, kind: str | None, purpose: str | None, subject_id: int | None
) -> None:
    who = Principal(id=7, name="airline", kind="machine", role="service", service_kind=kind)
    now = datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)
    general = audit.draft(
        principal=who,
        action="check",
        purpose=purpose,
        subject_id=subject_id,
        detail=audit.check_detail(who, decision),
        now=now,
    )
    memo = audit.draft_check(
        principal=who, purpose=purpose, subject_id=subject_id, decision=decision, now=now
    )
    assert memo == general
    assert (
        audit.draft_check(  # and again, from the memo
            principal=who, purpose=purpose, subject_id=subject_id, decision=decision, now=now
        )
        == general
    )


def test_a_decision_naming_an_identifier_is_refused_memo_or_not() -> None:
    who = Principal(id=7, name="airline", kind="machine", role="service", service_kind="airline")
    leaky = Decision("travel", "deny", ("11010519491231002X",), "v1", None)
    now = datetime(2026, 11, 28, tzinfo=UTC)
    for _ in range(2):  # a refusal is not remembered as an answer
        with pytest.raises(ValueError, match="looks like an identifier"):
            audit.draft_check(principal=who, purpose=None, subject_id=None, decision=leaky, now=now)
