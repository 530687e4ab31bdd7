"""Read a policy from YAML text, keeping file, path and line for every error.

The YAML is composed to nodes first (so each value knows its line), checked
for duplicate keys and alias cycles, turned into plain data, validated by the
model in :mod:`chengxin.domain.policy`, then checked by the linter. Every
problem found is reported, not just the first.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from chengxin.domain.durations import DurationError
from chengxin.domain.expr import ExprError
from chengxin.domain.hardlines import COLLECTIVE_KEYS, HardLine
from chengxin.domain.policy import CODE_PATTERN, NAME_PATTERN, Policy

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy, with where it is."""

    path: str
    message: str
    line: int | None = None
    severity: str = "error"
    hard_line: int | None = None

    def render(self, source: str) -> str:
        """``national.yaml:42: rules[3].expires: ...``."""
        where = f"{source}:{self.line}" if self.line else source
        tag = "warning: " if self.severity == "warning" else ""
        return f"{where}: {self.path}: {tag}{self.message}"


@dataclass
class PolicyError(ValueError):
    """A policy was refused; ``problems`` says what and where."""

    source: str
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"policy {self.source} refused ({len(self.errors)} error(s))"
        return "\n".join([head, *(p.render(self.source) for p in self.problems)])

    @property
    def errors(self) -> list[Problem]:
        """Problems that refuse the policy (warnings excluded)."""
        return [p for p in self.problems if p.severity == "error"]


def render_path(path: Path) -> str:
    """``rules[3].expires`` from ``("rules", 3, "expires")``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class _Reader:
    """Turns composed YAML nodes into data, remembering the line of every path."""

    #: More nodes than any real policy has: an alias "bomb" (nested aliases
    #: that expand exponentially) is refused instead of exhausting memory.
    MAX_NODES = 100_000

    def __init__(self) -> None:
        self.lines: dict[Path, int] = {}
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")
        self._count = 0

    def read(self, node: yaml.Node, path: Path, active: frozenset[int]) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if id(node) in active:
            self.problems.append(
                Problem(
                    render_path(path), "YAML alias refers to itself (a cycle)", self.lines[path]
                )
            )
            return None
        self._count += 1
        if self._count == self.MAX_NODES + 1:
            self.problems.append(
                Problem(
                    render_path(path),
                    f"the document expands to more than {self.MAX_NODES} values "
                    "(nested YAML aliases?)",
                    self.lines[path],
                )
            )
        if self._count > self.MAX_NODES:
            return None
        inner = active | {id(node)}
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
            self.problems.append(
                Problem(
                    render_path(path),
                    f"not a plain YAML value: the tag '{node.tag}' is not allowed",
                    self.lines[path],
                )
            )
            return None
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    key = "<<"
                else:
                    key = self._scalar(key_node, path)
                if not isinstance(key, str):
                    key = str(key)
                if key == "<<":
                    self.problems.append(
                        Problem(
                            render_path(path),
                            "merge keys (<<) are not allowed",
                            self._line(key_node),
                        )
                    )
                    continue
                if key in out:
                    self.problems.append(
                        Problem(
                            render_path((*path, key)),
                            f"key '{key}' appears twice (first on line {self.lines[(*path, key)]})",
                            self._line(key_node),
                        )
                    )
                    continue
                out[key] = self.read(value_node, (*path, key), inner)
                self.lines[(*path, key)] = self._line(key_node)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.read(v, (*path, i), inner) for i, v in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        """A plain value; a tag YAML's safe schema does not know is a problem, not a crash."""
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append(
                Problem(render_path(path), "a key must be plain text", self._line(node))
            )
            return "?"
        try:
            return self._constructor.construct_object(node)  # type: ignore[no-untyped-call]
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.problems.append(
                Problem(render_path(path), f"not a plain YAML value: {problem}", self._line(node))
            )
            return None

    @staticmethod
    def _line(node: yaml.Node) -> int:
        return int(node.start_mark.line) + 1

    def line_of(self, path: Path) -> int | None:
        """The line of the nearest enclosing path that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def _fields_at(model: type[BaseModel], path: Path) -> list[str]:
    """The field names allowed at ``path`` (for 'did you mean' suggestions)."""
    current: Any = model
    keyed = False  # the next part is a key of a mapping of models (record attributes)
    for part in path:
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return []
        ann = info.annotation
        keyed = get_origin(ann) is dict
        found = None
        for cand in (ann, *getattr(ann, "__args__", ())):
            for sub in (cand, *getattr(cand, "__args__", ())):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    found = sub
        if found is None:
            return []
        current = found
    return list(getattr(current, "model_fields", {}))


def _explain(err: Any, path: Path) -> tuple[str, int | None]:
    """A human message for one pydantic error, and the hard line it touches."""
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(path[-1])
        if key in COLLECTIVE_KEYS:
            line = HardLine.NO_COLLECTIVE_PUNISHMENT
            return (
                f"'{key}' cannot be expressed: {line.cite()}; a measure applies to its "
                "subject alone",
                line.number,
            )
        allowed = _fields_at(Policy, path[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        listing = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key '{key}'{hint}{listing}", None
    if kind == "missing":
        return f"'{path[-1]}' is required", None
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, ExprError):
        return f"cannot read {cause.text!r}: {cause}", None
    if isinstance(cause, DurationError):
        return str(cause), None
    msg = str(err["msg"]).removeprefix("Value error, ")
    # Authors write YAML lists; the model keeps them as tuples.
    msg = msg.replace("a valid tuple", "a list").replace("Tuple should", "The list should")
    if kind == "string_pattern_mismatch":
        msg = _PATTERNS.get(str(ctx.get("pattern")), msg)
    shows_input = kind.startswith(("int_", "bool_")) or kind.endswith(("_type", "_parsing"))
    if shows_input or kind in _SHOW_INPUT:
        msg = f"{msg} (got {err.get('input')!r})"
    if kind == "string_type" and isinstance(err.get("input"), int | float):
        msg += "; put quotes around it"
    return msg, None


# What the model's patterns mean, in words.
_PATTERNS = {
    CODE_PATTERN: "should be lower-case words joined by dots, e.g. 'societal.traffic_ticket'",
    NAME_PATTERN: (
        "should be a lower-case name of letters, digits, '-' and '_', e.g. 'judgment-defaulters'"
    ),
    r"^[a-z][a-z0-9_]*$": "should be a lower-case name of letters, digits and '_'",
}

# Pydantic error types whose message does not already show what was written.
_SHOW_INPUT = frozenset(
    {"literal_error", "string_pattern_mismatch", "greater_than_equal", "less_than_equal"}
)


def _yaml_problem(exc: yaml.YAMLError) -> Problem:
    """A :class:`Problem` for YAML that does not parse, at the line it fails."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    context = getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or str(exc)
    message = f"{context}, {problem}" if context else problem
    start = getattr(exc, "context_mark", None)
    if start is not None and line is not None and start.line + 1 != line:
        message += f" (from line {start.line + 1})"
    return Problem("(document)", f"not valid YAML: {message}", line)


def _nested(path: Path, others: list[Path]) -> bool:
    """Whether some other error lies inside ``path`` (and so explains this one)."""
    return any(len(o) > len(path) and o[: len(path)] == path for o in others)


def load_policy_text(text: str, source: str = "<policy>") -> Policy:
    """Parse, validate and lint a policy; raise :class:`PolicyError` listing every problem."""
    from chengxin.domain.lint import lint  # lint imports this module's Problem

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [_yaml_problem(exc)]) from exc
    if node is None:
        raise PolicyError(source, [Problem("(document)", "the file is empty")])
    reader = _Reader()
    data = reader.read(node, (), frozenset())
    if reader.problems:
        raise PolicyError(source, reader.problems)
    if not isinstance(data, dict):
        raise PolicyError(source, [Problem("(document)", "a policy must be a mapping", 1)])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        paths = [tuple(err["loc"]) for err in errors]
        problems = []
        for err, path in zip(errors, paths, strict=True):
            # A list whose items failed is also reported "too short" when it has
            # a minimum length: the item's own error says what is wrong.
            if err["type"] == "too_short" and _nested(path, paths):
                continue
            message, hard = _explain(err, path)
            problems.append(
                Problem(render_path(path), message, reader.line_of(path), hard_line=hard)
            )
        raise PolicyError(source, problems) from None
    found = [
        Problem(p.path, p.message, reader.line_of(p.locator), p.severity, p.hard_line)
        for p in lint(policy)
    ]
    if any(p.severity == "error" for p in found):
        raise PolicyError(source, found)
    return policy


def lint_policy_text(text: str, source: str = "<policy>") -> tuple[Policy | None, list[Problem]]:
    """Every problem (errors and warnings) a policy has, and the policy if it loads."""
    from chengxin.domain.lint import lint

    try:
        policy = load_policy_text(text, source)
    except PolicyError as exc:
        return None, exc.problems
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    reader = _Reader()
    reader.read(node, (), frozenset())
    return policy, [
        Problem(p.path, p.message, reader.line_of(p.locator), p.severity, p.hard_line)
        for p in lint(policy)
    ]
