"""The policy model: what a policy author writes, as typed, immutable values.

A policy is read from YAML by :mod:`chengxin.domain.policy_load`, which maps
every error back to a file, a path and a line; the cross-references and the
hard lines are checked by :mod:`chengxin.domain.lint`. This module only says
what may be written. Unknown keys are errors: a typo must never silently
change a policy.

Precedence, written once: a record is matched against the rules for its type
in the order the policy lists them, and the **first** rule whose ``when``
holds gives the record its points; later rules are not consulted. Expiry and
the step schedule of that rule then decide what the record contributes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import date
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from chengxin.domain.durations import Duration, parse_duration
from chengxin.domain.expr import Expr, parse, to_text

Domain = Literal["government", "commercial", "societal", "judicial"]
DOMAINS: tuple[Domain, ...] = ("government", "commercial", "societal", "judicial")
SubjectKindName = Literal["person", "organisation", "public_body"]
AttrType = Literal["int", "str", "bool", "date"]

#: The longest any negative entry may last under any policy (hard line 4).
RETENTION_CEILING = Duration(months=120)

#: Record-type and measure codes: ``societal.traffic_ticket``.
CODE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
#: Rule, list and policy names: ``judgment-defaulters``.
NAME_PATTERN = r"^[a-z][a-z0-9_-]*$"
_CODE = CODE_PATTERN
_NAME = NAME_PATTERN


def _duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    return parse_duration(value)  # type: ignore[arg-type]


PolicyDuration = Annotated[
    Duration, BeforeValidator(_duration), PlainSerializer(str, return_type=str)
]


@lru_cache(maxsize=4096)
def compile_when(text: str) -> Expr:
    """The parsed form of a ``when`` expression (cached: parsing is pure)."""
    return parse(text)


def _when(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'when' must be an expression in quotes, got {value!r}")
    return to_text(compile_when(value))


WhenText = Annotated[str | None, BeforeValidator(_when)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Scale(_Model):
    """Where scores start and the bounds they are clamped to."""

    mode: Literal["score", "penalty_points"] = "score"
    base: int
    min: int
    max: int

    @model_validator(mode="after")
    def _bounds(self) -> Scale:
        if not self.min <= self.base <= self.max:
            raise ValueError(f"need min <= base <= max, got {self.min}, {self.base}, {self.max}")
        return self


class Grade(_Model):
    """A band of scores: a score holds the grade with the highest ``min`` not above it."""

    grade: str = Field(min_length=1, max_length=24)
    min: int
    title: str | None = None


class AttributeSpec(_Model):
    """The type of one attribute a provider sends with a record."""

    type: AttrType
    required: bool = False
    values: tuple[str, ...] | None = None
    title: str | None = None


class RecordType(_Model):
    """A kind of credit information a provider may submit."""

    code: str = Field(pattern=_CODE)
    domain: Domain
    category: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    applies_to: tuple[SubjectKindName, ...] = Field(min_length=1)
    retention: PolicyDuration
    title: str | None = None
    attributes: dict[str, AttributeSpec] = Field(default_factory=dict)

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, AttributeSpec]) -> dict[str, AttributeSpec]:
        for name in value:
            if not re.match(r"^[a-z_][a-z0-9_]*$", name):
                raise ValueError(f"attribute name {name!r} must be lower-case letters, digits, _")
        return value


class Step(_Model):
    """From ``after`` on, a record counts ``pct`` percent of its points."""

    after: PolicyDuration
    pct: int = Field(ge=0, le=100)


class Rule(_Model):
    """Records of ``type`` (where ``when`` holds) give ``points`` until ``expires``."""

    id: str = Field(pattern=_NAME)
    type: str = Field(pattern=_CODE)
    when: WhenText = None
    points: int
    expires: PolicyDuration | None = None
    schedule: tuple[Step, ...] = ()
    title: str | None = None

    @cached_property
    def condition(self) -> Expr | None:
        """The parsed ``when`` expression."""
        return None if self.when is None else compile_when(self.when)

    def pct_at(self, occurred: date, as_of: date) -> int:
        """The percentage of points the rule's schedule gives at ``as_of``."""
        return self.pct_on(self.step_days(occurred), as_of)

    def step_days(self, occurred: date) -> list[date]:
        """The days the schedule's steps take effect for a record of ``occurred``."""
        return [step.after.after(occurred) for step in self.schedule]

    def pct_on(self, step_days: Sequence[date], as_of: date) -> int:
        """:meth:`pct_at`, given the record's :meth:`step_days`: the last step reached."""
        pct = 100
        for step, on in zip(self.schedule, step_days, strict=True):
            if on <= as_of:
                pct = step.pct
        return pct


class ListEntry(_Model):
    """What puts a subject on a list: a record of a type, or a grade."""

    record: str | None = Field(default=None, pattern=_CODE)
    when: WhenText = None
    grade_in: tuple[str, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> ListEntry:
        if (self.record is None) == (self.grade_in is None):
            raise ValueError("give exactly one of 'record' or 'grade_in'")
        if self.when is not None and self.record is None:
            raise ValueError("'when' needs 'record'")
        return self

    @cached_property
    def condition(self) -> Expr | None:
        """The parsed ``when`` expression."""
        return None if self.when is None else compile_when(self.when)


class ListDef(_Model):
    """A red (good standing) or black (restriction) list."""

    code: str = Field(pattern=_NAME)
    kind: Literal["red", "black"]
    title: str | None = None
    public: bool = False
    enter: ListEntry
    duration: PolicyDuration | None = None
    lifted_by: tuple[str, ...] = ()


class Trigger(_Model):
    """What makes a measure apply: membership of a list, or a grade."""

    list: str | None = None
    grade_in: tuple[str, ...] | None = Field(default=None, min_length=1)
    grade_at_least: str | None = None
    grade_at_most: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        given = [
            k
            for k in ("list", "grade_in", "grade_at_least", "grade_at_most")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'list', 'grade_in', 'grade_at_least', 'grade_at_most'"
            )
        return self


class Measure(_Model):
    """A reward or sanction that registered services consult with ``check``."""

    code: str = Field(pattern=_CODE)
    kind: Literal["reward", "sanction"]
    title: str | None = None
    triggered_by: Trigger
    consulted_by: tuple[str, ...] = Field(min_length=1)
    related_domains: tuple[Domain, ...] = ()
    legal_basis: str | None = None
    consent_required: bool = False
    appeal: str | None = None


class Disputes(_Model):
    """How long a dispute may stay open and whether it suspends the record."""

    deadline: PolicyDuration = Duration(days=30)
    suspend_while_open: bool = True


class Policy(_Model):
    """A complete, versioned policy."""

    policy: str = Field(pattern=_NAME)
    version: str = Field(min_length=1, max_length=40)
    title: str | None = None
    description: str | None = None
    max_retention: PolicyDuration = Duration(months=60)
    appeal: str = (
        "Dispute the entry in the subject portal or with the provider; an adjudicator decides "
        "within the dispute deadline."
    )
    scale: Scale
    grades: tuple[Grade, ...] = Field(min_length=1)
    record_types: tuple[RecordType, ...] = Field(min_length=1)
    rules: tuple[Rule, ...] = ()
    lists: tuple[ListDef, ...] = ()
    measures: tuple[Measure, ...] = ()
    disputes: Disputes = Disputes()

    # -- derived views (computed once; the model is immutable) --------------

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON form: comments and layout do not change it."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()

    @property
    def label(self) -> str:
        """``national@2026.1``."""
        return f"{self.policy}@{self.version}"

    @cached_property
    def types(self) -> dict[str, RecordType]:
        """Record types by code."""
        return {t.code: t for t in self.record_types}

    @cached_property
    def rules_by_type(self) -> dict[str, tuple[Rule, ...]]:
        """Rules for each record type, in policy (precedence) order."""
        out: dict[str, list[Rule]] = {}
        for rule in self.rules:
            out.setdefault(rule.type, []).append(rule)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def grades_desc(self) -> tuple[Grade, ...]:
        """Grades from the highest ``min`` to the lowest."""
        return tuple(sorted(self.grades, key=lambda g: -g.min))

    @cached_property
    def lists_by_code(self) -> dict[str, ListDef]:
        """Lists by code."""
        return {lst.code: lst for lst in self.lists}

    @cached_property
    def measures_by_code(self) -> dict[str, Measure]:
        """Measures by code."""
        return {m.code: m for m in self.measures}

    def is_negative(self, points: int) -> bool:
        """Whether points of this sign count against a subject under this scale."""
        return points > 0 if self.scale.mode == "penalty_points" else points < 0

    def clamp(self, raw: int) -> int:
        """A raw score clamped to the scale's bounds."""
        return max(self.scale.min, min(self.scale.max, raw))

    def grade_of(self, score: int) -> str:
        """The grade whose band holds ``score``."""
        for g in self.grades_desc:
            if score >= g.min:
                return g.grade
        return self.grades_desc[-1].grade

    @cached_property
    def grades_best_first(self) -> tuple[Grade, ...]:
        """Grades best first: highest ``min`` first on a score scale, lowest for penalty points."""
        if self.scale.mode == "penalty_points":
            return tuple(reversed(self.grades_desc))
        return self.grades_desc

    @cached_property
    def measure_grades(self) -> dict[str, frozenset[str]]:
        """For each grade-triggered measure, the grades that trigger it."""
        return {
            m.code: self.grades_matching(m.triggered_by)
            for m in self.measures
            if m.triggered_by.list is None
        }

    def grades_matching(self, trigger: Trigger) -> frozenset[str]:
        """The set of grades a grade trigger covers (empty for a list trigger).

        ``grade_at_least: X`` means X or any better grade, ``grade_at_most: X``
        X or any worse one, whichever way the scale counts.
        """
        order = [g.grade for g in self.grades_best_first]
        if trigger.grade_in is not None:
            return frozenset(trigger.grade_in)
        if trigger.grade_at_least is not None:
            return frozenset(order[: order.index(trigger.grade_at_least) + 1])
        if trigger.grade_at_most is not None:
            return frozenset(order[order.index(trigger.grade_at_most) :])
        return frozenset()

    def domains_feeding(self, trigger: Trigger) -> frozenset[str]:
        """The record domains whose records can make ``trigger`` hold (hard line 3)."""
        if trigger.list is not None:
            lst = self.lists_by_code.get(trigger.list)
            if lst is None:
                return frozenset()
            if lst.enter.record is not None:
                t = self.types.get(lst.enter.record)
                return frozenset({t.domain}) if t else frozenset()
            return self.scoring_domains
        return self.scoring_domains

    @cached_property
    def scoring_domains(self) -> frozenset[str]:
        """Domains of the record types some rule scores."""
        return frozenset(self.types[r.type].domain for r in self.rules if r.type in self.types)

    def canonical(self) -> dict[str, Any]:
        """The policy as plain JSON-able data."""
        return self.model_dump(mode="json", exclude_none=True)
