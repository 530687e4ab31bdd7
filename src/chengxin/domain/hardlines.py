"""The six hard lines, named once, so every refusal can cite the one it enforces.

These are the lines DESIGN.md draws; the linter, the ingest path and the
check path raise :class:`HardLineViolation` with the line's number and title
so that whoever hits one learns what it is and why it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    title: str
    why: str


class HardLine(Enum):
    """One of the six hard lines chengxin enforces in code."""

    NO_COLLECTIVE_PUNISHMENT = _Line(
        1,
        "no collective punishment",
        "a measure applies to its subject alone; nothing can reach a relative, employee, "
        "household member or anyone else",
    )
    NO_PROTECTED_GROUNDS = _Line(
        2,
        "no scoring of protected grounds",
        "political opinion, expression, religion, ethnicity, assembly, trade-union membership, "
        "health, sexual orientation and family status are never scored",
    )
    PROPORTIONAL_AND_RELATED = _Line(
        3,
        "proportional and related sanctions",
        "a sanction may be fed only by records of the domains it names as related, unless the "
        "policy records a legal basis (EU AI Act Art. 5(1)(c))",
    )
    NOTHING_NEGATIVE_LASTS_FOREVER = _Line(
        4,
        "nothing negative lasts for ever",
        "every negative rule and every black list expires, within the retention ceiling",
    )
    EXPLAINED_AND_CONTESTABLE = _Line(
        5,
        "every decision is explained and contestable",
        "a denial carries at most four principal reasons and an appeal route; disputes have "
        "deadlines and are decided by a person",
    )
    LEAST_DISCLOSURE = _Line(
        6,
        "least disclosure",
        "a service learns only the decision for the measure it is registered for; rewards that "
        "reveal good standing need consent; public lists mask identifiers",
    )

    @property
    def number(self) -> int:
        """The line's number in DESIGN.md."""
        return self.value.number

    @property
    def title(self) -> str:
        """The line's short title."""
        return self.value.title

    @property
    def why(self) -> str:
        """One sentence on what the line protects."""
        return self.value.why

    def cite(self) -> str:
        """``hard line 2 (no scoring of protected grounds)``."""
        return f"hard line {self.number} ({self.title})"


class HardLineViolation(ValueError):
    """Something asked for what a hard line forbids."""

    def __init__(self, line: HardLine, message: str) -> None:
        super().__init__(f"{line.cite()}: {message}; {line.why}")
        self.line = line
        self.detail = message


# Categories a record type may never have (hard line 2). Synonyms map to the
# ground they belong to, so a renamed category does not slip through.
PROTECTED_CATEGORIES: dict[str, str] = {
    "political_opinion": "political opinion",
    "politics": "political opinion",
    "political_activity": "political opinion",
    "expression": "expression",
    "speech": "expression",
    "online_speech": "expression",
    "publication": "expression",
    "press": "expression",
    "religion": "religion",
    "belief": "religion",
    "worship": "religion",
    "ethnicity": "ethnicity",
    "race": "ethnicity",
    "nationality": "ethnicity",
    "assembly": "assembly",
    "protest": "assembly",
    "petition": "assembly",
    "trade_union": "trade-union membership",
    "trade_union_membership": "trade-union membership",
    "union_membership": "trade-union membership",
    "health": "health",
    "disability": "health",
    "medical": "health",
    "sexual_orientation": "sexual orientation",
    "gender_identity": "sexual orientation",
    "family_status": "family status",
    "marital_status": "family status",
    "relatives": "family status",
    "family": "family status",
}

# Keys an author might write to reach beyond the subject (hard line 1). None of
# them exists in the policy schema; naming them lets the error cite the line.
COLLECTIVE_KEYS: frozenset[str] = frozenset(
    {
        "applies_to_relatives",
        "relatives",
        "family",
        "family_members",
        "household",
        "spouse",
        "children",
        "parents",
        "dependants",
        "dependents",
        "extends_to",
        "also_applies_to",
        "propagate",
        "propagate_to",
        "employees",
        "legal_representative",
        "associates",
        "guarantors",
    }
)


def protected_ground(category: str) -> str | None:
    """The protected ground a record category falls under, or None."""
    key = category.strip().lower().replace("-", "_").replace(" ", "_")
    return PROTECTED_CATEGORIES.get(key)
