"""A policy's rules laid out on the calendar around one scoring date, for the batch plan.

For a scoring date T, every step and expiry duration D of every rule splits
the past at one date, :func:`latest_start` ``(D, T)``: a record that occurred
on or before it has passed D by T, one after it has not (``D.after`` never
decreases, so this is exact, month-end clamping included). Sorting these cut
dates, with T itself as the last, gives intervals of ``occurred_at`` inside
which nothing about a rule changes: its contribution at T, and which of its
dates (occurrence, steps, expiry) are still to come. :class:`Timeline` holds
both for every rule and interval, computed with the domain's own
:meth:`~chengxin.domain.policy.Rule.pct_at` and
:func:`~chengxin.domain.scoring.truncate_pct`, so the batch plan only has to
find each record's interval and look the answers up.

Pure Python, no Ibis: this is the part of the batch path a reader can check
against the domain line by line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise

from chengxin.domain.durations import Duration, add_months, always_before
from chengxin.domain.policy import Policy, Rule
from chengxin.domain.scoring import truncate_pct

__all__ = ["ZERO", "Span", "Timeline", "latest_start", "rule_spans"]

ZERO = Duration()
"""The empty duration: a record's own occurrence date."""

Span = tuple[int, int]
"""A duration as ``(months, days)``."""


def latest_start(duration: Duration, as_of: date) -> date | None:
    """The last date ``d`` with ``duration.after(d) <= as_of`` (None if there is none)."""
    try:
        guess = add_months(as_of - timedelta(days=duration.days), -duration.months)
    except (OverflowError, ValueError):
        return None
    # add_months(add_months(x, -m), m) <= x, so the guess is never past the answer;
    # month-end clamping can leave it a few days short.
    while True:
        try:
            following = guess + timedelta(days=1)
            if duration.after(following) > as_of:
                return guess
        except OverflowError:
            return guess
        guess = following


def rule_spans(rule: Rule) -> list[Duration]:
    """The durations after which a record of ``rule`` changes: 0, each step, the expiry."""
    spans = [ZERO, *(step.after for step in rule.schedule)]
    if rule.expires is not None:
        spans.append(rule.expires)
    return spans


def _value(rule: Rule, occurred: date, as_of: date) -> int:
    """What a record of ``rule`` that occurred on ``occurred`` contributes at ``as_of``."""
    if occurred > as_of:
        return 0
    if rule.expires is not None and rule.expires.after(occurred) <= as_of:
        return 0
    return truncate_pct(rule.points, rule.pct_at(occurred, as_of))


@dataclass(frozen=True)
class Timeline:
    """Every rule's value and pending changes, per interval of ``occurred_at``.

    Interval ``i < len(cuts)`` holds the dates ``(cuts[i-1], cuts[i]]``; the
    last, ``len(cuts)``, holds the dates after ``as_of`` (``cuts[-1]``).
    Tables are flat, indexed by ``rule_index * width + interval``.
    """

    as_of: date
    cuts: tuple[date, ...]
    spans: tuple[Span, ...]
    values: list[int | None]
    first_span: list[int | None]
    span_due: tuple[list[int | None], ...]
    chained: bool

    @property
    def width(self) -> int:
        """Intervals per rule."""
        return len(self.cuts) + 1

    @classmethod
    def of(cls, policy: Policy, as_of: date) -> Timeline:
        """Lay out ``policy``'s rules around ``as_of``."""
        per_rule = [rule_spans(rule) for rule in policy.rules]
        distinct = sorted(
            {s for spans in per_rule for s in spans}, key=lambda d: (d.months, d.days)
        )
        starts = {span: latest_start(span, as_of) for span in distinct if span != ZERO}
        cuts = tuple(sorted({t for t in starts.values() if t is not None and t < as_of} | {as_of}))
        # Consecutive dates in time order from every start: the first one due is the earliest.
        chained = all(always_before(a, b) for spans in per_rule for a, b in pairwise(spans))
        index = {span: i for i, span in enumerate(distinct)}
        values: list[int | None] = []
        first: list[int | None] = []
        due_by_span: list[list[int | None]] = [[] for _ in distinct]
        for rule, spans in zip(policy.rules, per_rule, strict=True):
            for i in range(len(cuts) + 1):
                # Every date in the interval compares with every cut as its last day does.
                day = cuts[i] if i < len(cuts) else as_of + timedelta(days=1)
                due = [s for s in spans if _due(s, day, as_of, starts.get(s))]
                values.append(_value(rule, day, as_of))
                first.append(index[due[0]] if due else None)
                for span, column in zip(distinct, due_by_span, strict=True):
                    column.append(1 if span in due else 0)
        return cls(
            as_of=as_of,
            cuts=cuts,
            spans=tuple((d.months, d.days) for d in distinct),
            values=values,
            first_span=first,
            span_due=tuple(due_by_span),
            chained=chained,
        )


def _due(span: Duration, occurred: date, as_of: date, start: date | None) -> bool:
    """Whether ``span.after(occurred)`` falls after ``as_of``."""
    if span == ZERO:
        return occurred > as_of
    return start is None or occurred > start
