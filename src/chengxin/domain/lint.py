"""The policy linter: cross-references, contradictions and the hard lines a policy can break.

Errors refuse the policy; warnings are shown to its author. Each finding
carries the path it concerns so the loader can add the line number, and the
number of the hard line it enforces, if any.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from chengxin.domain.durations import always_before
from chengxin.domain.expr import And, Attr, Compare, Expr, In, Not, Or, attributes, check_types
from chengxin.domain.hardlines import HardLine, protected_ground
from chengxin.domain.policy import RETENTION_CEILING, Policy, RecordType
from chengxin.domain.policy_load import Path, render_path


@dataclass(frozen=True, slots=True)
class Finding:
    """One linter finding."""

    locator: Path
    message: str
    severity: str = "error"
    hard_line: int | None = None

    @property
    def path(self) -> str:
        """The rendered path, e.g. ``rules[2].expires``."""
        return render_path(self.locator)


class _Collector:
    def __init__(self) -> None:
        self.found: list[Finding] = []

    def error(self, where: Path, message: str, line: HardLine | None = None) -> None:
        text = f"{line.cite()}: {message}" if line else message
        self.found.append(Finding(where, text, "error", line.number if line else None))

    def warn(self, where: Path, message: str, line: HardLine | None = None) -> None:
        text = f"{line.cite()}: {message}" if line else message
        self.found.append(Finding(where, text, "warning", line.number if line else None))


def _duplicates(c: _Collector, section: str, names: list[str]) -> None:
    counts = Counter(names)
    for i, name in enumerate(names):
        if counts[name] > 1 and names.index(name) != i:
            c.error((section, i), f"'{name}' is defined more than once")


def lint(policy: Policy) -> list[Finding]:
    """Every finding for ``policy``, errors first."""
    c = _Collector()
    _check_names(c, policy)
    _check_scale(c, policy)
    _check_record_types(c, policy)
    _check_rules(c, policy)
    _check_lists(c, policy)
    _check_measures(c, policy)
    return sorted(c.found, key=lambda f: f.severity != "error")


def _check_names(c: _Collector, p: Policy) -> None:
    _duplicates(c, "record_types", [t.code for t in p.record_types])
    _duplicates(c, "rules", [r.id for r in p.rules])
    _duplicates(c, "lists", [x.code for x in p.lists])
    _duplicates(c, "measures", [m.code for m in p.measures])
    _duplicates(c, "grades", [g.grade for g in p.grades])


def _check_scale(c: _Collector, p: Policy) -> None:
    mins = [g.min for g in p.grades]
    for i, g in enumerate(p.grades):
        if mins.count(g.min) > 1 and mins.index(g.min) != i:
            c.error(("grades", i, "min"), f"grades share the lower bound {g.min}: bands overlap")
    for i, g in enumerate(p.grades):
        if g.min > p.scale.max:
            c.warn(
                ("grades", i, "min"),
                f"grade '{g.grade}' starts at {g.min}, above the scale maximum {p.scale.max}: "
                "no score can reach it",
            )
    lowest = min(mins)
    if lowest > p.scale.min:
        c.error(
            ("grades",),
            f"no grade covers scores from {p.scale.min} to {lowest - 1}: the lowest band must "
            f"start at or below the scale minimum {p.scale.min}",
        )
    if p.max_retention > RETENTION_CEILING:
        c.error(
            ("max_retention",),
            f"{p.max_retention} is above the ceiling of {RETENTION_CEILING}",
            HardLine.NOTHING_NEGATIVE_LASTS_FOREVER,
        )


def _check_record_types(c: _Collector, p: Policy) -> None:
    for i, t in enumerate(p.record_types):
        ground = protected_ground(t.category)
        if ground is not None:
            users = [f"rule '{r.id}'" for r in p.rules if r.type == t.code]
            users += [f"list '{x.code}'" for x in p.lists if x.enter.record == t.code]
            users += [f"list '{x.code}' (lifted_by)" for x in p.lists if t.code in x.lifted_by]
            used = f" (used by {', '.join(users)})" if users else ""
            c.error(
                ("record_types", i, "category"),
                f"record type '{t.code}' has category '{t.category}', which is {ground}, "
                f"a protected ground{used}",
                HardLine.NO_PROTECTED_GROUNDS,
            )
        for name in t.attributes:
            ground = protected_ground(name)
            if ground is not None:
                c.error(
                    ("record_types", i, "attributes", name),
                    f"record type '{t.code}' has an attribute '{name}', which is {ground}, "
                    "a protected ground: it may be neither collected nor scored",
                    HardLine.NO_PROTECTED_GROUNDS,
                )
        if t.retention > p.max_retention:
            c.error(
                ("record_types", i, "retention"),
                f"retention {t.retention} of '{t.code}' is above the policy's max_retention "
                f"{p.max_retention}",
                HardLine.NOTHING_NEGATIVE_LASTS_FOREVER,
            )


def _check_condition(c: _Collector, where: Path, owner: str, cond: Expr, t: RecordType) -> None:
    """Type-check a ``when`` against the record type's attributes and their allowed values."""
    schema = {name: spec.type for name, spec in t.attributes.items()}
    for msg in check_types(cond, schema):
        c.error(where, f"{owner}: {msg}")
    for name, value in _string_tests(cond):
        spec = t.attributes.get(name)
        if spec is not None and spec.values is not None and value not in spec.values:
            c.error(
                where,
                f"{owner}: '{value}' is not a value of '{name}' "
                f"(allowed: {', '.join(spec.values)}), so the test never holds as written",
            )


def _string_tests(cond: Expr) -> list[tuple[str, str]]:
    """``(attribute, string literal)`` for every string an attribute is compared with."""
    out: list[tuple[str, str]] = []
    match cond:
        case And(items) | Or(items):
            for item in items:
                out += _string_tests(item)
        case Not(item):
            out += _string_tests(item)
        case Compare(_, left, right) if not isinstance(right, Attr):
            if isinstance(right.value, str):
                out.append((left.name, right.value))
        case In(attr, values):
            out += [(attr.name, v.value) for v in values if isinstance(v.value, str)]
    return out


def _check_rules(c: _Collector, p: Policy) -> None:
    catch_all: dict[str, str] = {}
    seen_when: dict[tuple[str, str], str] = {}
    for i, r in enumerate(p.rules):
        where = ("rules", i)
        t = p.types.get(r.type)
        if t is None:
            c.error((*where, "type"), f"rule '{r.id}' scores unknown record type '{r.type}'")
            continue
        earlier = catch_all.get(r.type)
        if earlier is None and r.when is not None:
            earlier = seen_when.get((r.type, r.when))
        if earlier is not None:
            what = (
                f"every '{r.type}' record"
                if r.type in catch_all
                else f"the same '{r.type}' records (when: {r.when})"
            )
            c.error(
                where,
                f"rule '{r.id}' can never apply: rule '{earlier}' before it matches {what}, "
                "and the first matching rule wins",
            )
        if r.condition is None:
            catch_all.setdefault(r.type, r.id)
        else:
            seen_when.setdefault((r.type, r.when or ""), r.id)
            _check_condition(c, (*where, "when"), f"rule '{r.id}'", r.condition, t)
        if r.points == 0:
            c.error((*where, "points"), f"rule '{r.id}' is worth 0 points and does nothing")
        negative = p.is_negative(r.points)
        if negative and r.expires is None:
            c.error(
                (*where, "expires"),
                f"rule '{r.id}' is negative ({r.points} points) and has no expiry",
                HardLine.NOTHING_NEGATIVE_LASTS_FOREVER,
            )
        elif r.expires is None:
            c.warn(
                where,
                f"rule '{r.id}' has no expiry: it counts for as long as its record is kept, "
                f"although '{r.type}' records are kept only {t.retention}",
            )
        if r.expires is not None and r.expires > t.retention:
            c.error(
                (*where, "expires"),
                f"rule '{r.id}' lasts {r.expires}, longer than the record type's retention "
                f"{t.retention}",
                HardLine.NOTHING_NEGATIVE_LASTS_FOREVER if negative else None,
            )
        previous = None
        for j, step in enumerate(r.schedule):
            if previous is not None and not always_before(previous.after, step.after):
                c.error(
                    (*where, "schedule", j, "after"),
                    f"schedule steps must come in time order from any start date: {step.after} "
                    f"may come on or before the step before it ({previous.after})",
                )
            if r.expires is not None and not always_before(step.after, r.expires):
                c.error(
                    (*where, "schedule", j, "after"),
                    f"step at {step.after} may come on or after the rule expires ({r.expires})",
                )
            if previous is not None and step.pct > previous.pct and negative:
                c.warn(
                    (*where, "schedule", j, "pct"),
                    "a negative record's weight grows with age; schedules usually step down",
                )
            previous = step


def _check_lists(c: _Collector, p: Policy) -> None:
    grade_names = {g.grade for g in p.grades}
    for i, lst in enumerate(p.lists):
        where = ("lists", i)
        entry = lst.enter
        if entry.record is not None:
            t = p.types.get(entry.record)
            if t is None:
                c.error((*where, "enter", "record"), f"unknown record type '{entry.record}'")
            else:
                if entry.condition is not None:
                    owner = f"list '{lst.code}'"
                    _check_condition(c, (*where, "enter", "when"), owner, entry.condition, t)
                if lst.duration is not None and lst.duration > t.retention:
                    c.error(
                        (*where, "duration"),
                        f"list '{lst.code}' lasts {lst.duration}, longer than the retention "
                        f"{t.retention} of its entry record type '{t.code}'",
                        HardLine.NOTHING_NEGATIVE_LASTS_FOREVER if lst.kind == "black" else None,
                    )
        for g in entry.grade_in or ():
            if g not in grade_names:
                c.error((*where, "enter", "grade_in"), f"unknown grade '{g}'")
        if lst.kind == "black":
            if lst.duration is None and entry.record is not None:
                c.error(
                    (*where, "duration"),
                    f"black list '{lst.code}' has no duration",
                    HardLine.NOTHING_NEGATIVE_LASTS_FOREVER,
                )
            elif lst.duration is not None and lst.duration > p.max_retention:
                c.error(
                    (*where, "duration"),
                    f"black list '{lst.code}' lasts {lst.duration}, above max_retention "
                    f"{p.max_retention}",
                    HardLine.NOTHING_NEGATIVE_LASTS_FOREVER,
                )
        if entry.grade_in is not None and lst.duration is not None:
            c.error(
                (*where, "duration"),
                "a list entered by grade lasts exactly as long as the grade; drop 'duration'",
            )
        for j, code in enumerate(lst.lifted_by):
            if code not in p.types:
                c.error((*where, "lifted_by", j), f"unknown record type '{code}'")
            if code == entry.record:
                c.error(
                    (*where, "lifted_by", j),
                    f"'{code}' both enters and lifts list '{lst.code}'",
                )
        if lst.lifted_by and entry.record is None:
            c.error((*where, "lifted_by"), "only a list entered by a record can be lifted by one")


def _check_measures(c: _Collector, p: Policy) -> None:
    grade_names = {g.grade for g in p.grades}
    for i, m in enumerate(p.measures):
        where = ("measures", i)
        trig = m.triggered_by
        if trig.list is not None:
            lst = p.lists_by_code.get(trig.list)
            if lst is None:
                c.error((*where, "triggered_by", "list"), f"unknown list '{trig.list}'")
                continue
            if m.kind == "sanction" and lst.kind == "red":
                c.error(where, f"sanction '{m.code}' is triggered by red list '{lst.code}'")
            if m.kind == "reward" and lst.kind == "black":
                c.error(where, f"reward '{m.code}' is triggered by black list '{lst.code}'")
        for g in (*(trig.grade_in or ()), trig.grade_at_least, trig.grade_at_most):
            if g is not None and g not in grade_names:
                c.error((*where, "triggered_by"), f"unknown grade '{g}'")
        if m.kind == "sanction":
            feeding = p.domains_feeding(trig)
            unrelated = sorted(feeding - set(m.related_domains))
            if not m.related_domains:
                c.error(
                    (*where, "related_domains"),
                    f"sanction '{m.code}' names no related domains",
                    HardLine.PROPORTIONAL_AND_RELATED,
                )
            elif unrelated and not m.legal_basis:
                c.error(
                    (*where, "related_domains"),
                    f"sanction '{m.code}' is fed by records of {', '.join(unrelated)}, which it "
                    f"does not list as related ({', '.join(m.related_domains)}); list them or "
                    "record a legal_basis",
                    HardLine.PROPORTIONAL_AND_RELATED,
                )
            elif unrelated:
                c.warn(
                    (*where, "legal_basis"),
                    f"sanction '{m.code}' is fed by unrelated domains {', '.join(unrelated)} "
                    f"on the legal basis: {m.legal_basis}",
                    HardLine.PROPORTIONAL_AND_RELATED,
                )
        if m.kind == "sanction" and not (m.appeal or p.appeal):
            c.error(
                (*where, "appeal"),
                f"sanction '{m.code}' has no appeal route (and the policy gives none)",
                HardLine.EXPLAINED_AND_CONTESTABLE,
            )
        if m.kind == "reward" and not m.consent_required:
            c.error(
                (*where, "consent_required"),
                f"reward '{m.code}' reveals good standing to a service and so needs the "
                "subject's consent: set consent_required: true",
                HardLine.LEAST_DISCLOSURE,
            )


def referenced_attributes(policy: Policy, record_type: str) -> frozenset[str]:
    """Attributes of ``record_type`` that any rule or list condition reads."""
    names: set[str] = set()
    for r in policy.rules_by_type.get(record_type, ()):
        if r.condition is not None:
            names |= attributes(r.condition)
    for lst in policy.lists:
        if lst.enter.record == record_type and lst.enter.condition is not None:
            names |= attributes(lst.enter.condition)
    return frozenset(names)
