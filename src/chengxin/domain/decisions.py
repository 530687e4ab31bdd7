"""Decisions: what a service learns when it checks a measure for a subject.

Precedence, written once:

1. A service not registered for the measure gets no decision at all (the
   caller raises before asking here): least disclosure, hard line 6.
2. A **sanction** whose trigger holds is ``deny``; otherwise ``allow``.
3. A **reward** whose trigger holds is ``grant`` only if the subject has
   consented to the reward; without consent, or when the trigger does not
   hold, the answer is ``allow`` (nothing granted, nothing restricted) and
   carries no reasons, so a service cannot tell standing from consent.
4. A denial carries at most four principal reasons (hard line 5), the policy
   version and the appeal route. For a list entered by a record the reasons
   are the list and the rules behind its entry records; for a grade trigger,
   or a list entered by grade, they are the grade and the rules with the
   largest negative contributions, largest first (as credit reports give
   adverse-action reasons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chengxin.domain.policy import Measure, Policy
from chengxin.domain.scoring import ScoreResult

Outcome = Literal["allow", "deny", "grant"]
MAX_REASONS = 4


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to ``check(subject, measure)``: all a service ever learns."""

    measure: str
    outcome: Outcome
    reasons: tuple[str, ...]
    policy_version: str
    appeal: str | None


class UnknownMeasure(KeyError):
    """The policy has no measure of that code."""


def triggered(policy: Policy, measure: Measure, result: ScoreResult) -> bool:
    """Whether the measure's trigger holds for a scored subject."""
    trig = measure.triggered_by
    if trig.list is not None:
        return trig.list in result.lists
    return result.grade in policy.grades_matching(trig)


def principal_reasons(policy: Policy, measure: Measure, result: ScoreResult) -> tuple[str, ...]:
    """At most four reason codes behind a triggered measure, most important first."""
    reasons: list[str] = []
    trig = measure.triggered_by
    lst = policy.lists_by_code.get(trig.list) if trig.list is not None else None
    if lst is not None and lst.enter.record is not None:
        reasons.append(f"list:{lst.code}")
        member = result.lists.get(lst.code)
        ids = set(member.record_ids) if member else set()
        for c in result.contributions:
            code = f"rule:{c.rule_id}"
            if c.record_id in ids and code not in reasons:
                reasons.append(code)
        if len(reasons) == 1:
            reasons.append(f"record:{lst.enter.record}")
    else:
        # A grade trigger, or a list entered by grade: the grade and the rules
        # that weigh most against the subject explain it.
        if lst is not None:
            reasons.append(f"list:{lst.code}")
        reasons.append(f"grade:{result.grade}")
        weights: dict[str, int] = {}
        for c in result.contributions:
            if policy.is_negative(c.value):
                weights[c.rule_id] = weights.get(c.rule_id, 0) + abs(c.value)
        ranked = sorted(weights, key=lambda rid: (-weights[rid], rid))
        reasons += [f"rule:{rid}" for rid in ranked]
    return tuple(reasons[:MAX_REASONS])


def outcome(measure: Measure, *, hit: bool, consent: bool) -> Outcome:
    """The outcome for a measure whose trigger does or does not hold (rules 2 and 3 above)."""
    if measure.kind == "sanction":
        return "deny" if hit else "allow"
    return "grant" if hit and (consent or not measure.consent_required) else "allow"


def decide(
    policy: Policy, measure_code: str, result: ScoreResult, *, consent: bool = False
) -> Decision:
    """The decision on one measure for a scored subject."""
    measure = policy.measures_by_code.get(measure_code)
    if measure is None:
        raise UnknownMeasure(measure_code)
    verdict = outcome(measure, hit=triggered(policy, measure, result), consent=consent)
    if verdict == "deny":
        reasons = principal_reasons(policy, measure, result)
        return Decision(
            measure_code, "deny", reasons, policy.label, measure.appeal or policy.appeal
        )
    return Decision(measure_code, verdict, (), policy.label, None)
