"""Submitted records: the interchange format checked against the active policy.

One line of a provider's feed (JSON Lines, CSV or Parquet, or one API call)
becomes a :class:`Submission` or is refused with a :class:`RecordRejected`
that names the field and the reason. Nothing here touches storage: whether
``(provider, ref)`` is new, a duplicate or a conflict is for the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from chengxin.domain.identifiers import (
    InvalidIdentifier,
    SubjectId,
    expected_kind,
    parse_identifier,
)
from chengxin.domain.policy import AttributeSpec, Policy

TOP_LEVEL = frozenset(
    {
        "provider",
        "ref",
        "subject",
        "type",
        "occurred_at",
        "attributes",
        "evidence",
        "retracts",
        "amends",
        "reason",
    }
)
SUBJECT_FIELDS = frozenset({"scheme", "id", "kind", "name"})
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""The range of an ``int`` attribute (signed 64-bit)."""


class RecordRejected(ValueError):
    """A submitted line was refused; ``code`` is machine-readable, ``field`` says where."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        # Checking may run in worker processes: keep code and field across pickling.
        return (type(self), (self.code, str(self), self.field))


@dataclass(frozen=True, slots=True)
class SubjectRef:
    """Who a record is about, as the provider named them."""

    id: SubjectId
    kind: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    """A checked line: a new record, an amendment of one, or a retraction."""

    provider: str
    ref: str
    subject: SubjectRef | None
    type: str | None
    domain: str | None
    occurred_at: date | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    evidence: str | None = None
    retracts: str | None = None
    amends: str | None = None
    reason: str | None = None

    @property
    def kind(self) -> str:
        """``record``, ``amendment`` or ``retraction`` (the ledger entry kind)."""
        if self.retracts is not None:
            return "retraction"
        return "amendment" if self.amends is not None else "record"

    def payload(self) -> dict[str, Any]:
        """The canonical content stored (and hashed) in the ledger."""
        out: dict[str, Any] = {"provider": self.provider, "ref": self.ref}
        if self.subject is not None:
            subj: dict[str, Any] = {
                "scheme": self.subject.id.scheme,
                "id": self.subject.id.value,
                "kind": self.subject.kind,
            }
            if self.subject.name:
                subj["name"] = self.subject.name
            out["subject"] = subj
        if self.type is not None:
            out["type"] = self.type
        if self.occurred_at is not None:
            out["occurred_at"] = self.occurred_at.isoformat()
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        for key in ("evidence", "retracts", "amends", "reason"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def _text(raw: Mapping[str, Any], key: str, *, required: bool, limit: int) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise RecordRejected("missing_field", f"'{key}' is required", key)
        return None
    if not isinstance(value, str):
        raise RecordRejected("bad_type", f"'{key}' must be text, got {type(value).__name__}", key)
    value = value.strip()
    if len(value) > limit:
        raise RecordRejected("too_long", f"'{key}' is longer than {limit} characters", key)
    return value


def parse_date(value: Any, where: str) -> date:
    """An ISO ``YYYY-MM-DD`` date, or a RecordRejected naming ``where``."""
    if isinstance(value, datetime):
        return value.date()  # a timestamp (Parquet, say): the day is what counts
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise RecordRejected(
            "bad_date", f"'{where}' must be a date YYYY-MM-DD, got {value!r}", where
        )
    text = value.strip()
    if len(text) > 10 and text[10] in "T ":
        text = text[:10]  # a timestamp: the day is what counts
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RecordRejected(
            "bad_date", f"'{where}' is not a date YYYY-MM-DD: {value!r}", where
        ) from None


def _attribute(name: str, spec: AttributeSpec, value: Any, where: str) -> Any:
    if spec.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise RecordRejected(
                    "bad_attribute",
                    f"attribute '{name}' must be a whole number, got {value!r}",
                    where,
                )
            value = int(value)
        if not INT_MIN <= value <= INT_MAX:
            # Stored and scored as 64-bit integers (PostgreSQL BIGINT, DuckDB BIGINT).
            raise RecordRejected(
                "bad_attribute", f"attribute '{name}' is out of the 64-bit range: {value}", where
            )
        return value
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise RecordRejected(
                "bad_attribute", f"attribute '{name}' must be true or false, got {value!r}", where
            )
        return value
    if spec.type == "date":
        return parse_date(value, where).isoformat()
    if not isinstance(value, str):
        raise RecordRejected(
            "bad_attribute", f"attribute '{name}' must be text, got {value!r}", where
        )
    if spec.values is not None and value not in spec.values:
        raise RecordRejected(
            "bad_attribute",
            f"attribute '{name}' must be one of {', '.join(spec.values)}, got {value!r}",
            where,
        )
    return value


def check_attributes(policy: Policy, type_code: str, raw: Any) -> dict[str, Any]:
    """Attributes checked against the record type's schema (unknown names refused)."""
    if raw is None or raw == "":
        raw = {}
    if not isinstance(raw, Mapping):
        raise RecordRejected("bad_type", "'attributes' must be an object", "attributes")
    schema = policy.types[type_code].attributes
    out: dict[str, Any] = {}
    for name, value in raw.items():
        spec = schema.get(name)
        if spec is None:
            known = ", ".join(schema) or "none"
            raise RecordRejected(
                "unknown_attribute",
                f"record type '{type_code}' has no attribute '{name}' (known: {known})",
                f"attributes.{name}",
            )
        if value is None:
            continue
        out[name] = _attribute(name, spec, value, f"attributes.{name}")
    for name, spec in schema.items():
        if spec.required and name not in out:
            raise RecordRejected(
                "missing_attribute",
                f"record type '{type_code}' requires attribute '{name}'",
                f"attributes.{name}",
            )
    return out


def _subject(raw: Any) -> SubjectRef:
    if not isinstance(raw, Mapping):
        raise RecordRejected("missing_field", "'subject' is required (scheme, id, kind)", "subject")
    if not SUBJECT_FIELDS.issuperset(raw):
        unknown = sorted(set(raw) - SUBJECT_FIELDS)
        raise RecordRejected(
            "unknown_field", f"unknown subject field '{unknown[0]}'", f"subject.{unknown[0]}"
        )
    scheme = _text(raw, "scheme", required=True, limit=16) or ""
    value = raw.get("id")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RecordRejected("missing_field", "'subject.id' is required", "subject.id")
    if not isinstance(value, str):
        # A number would lose leading zeros and cannot hold a check character 'X'.
        raise RecordRejected(
            "bad_type", f"'subject.id' must be text, got {type(value).__name__}", "subject.id"
        )
    try:
        sid = parse_identifier(scheme, value)
    except InvalidIdentifier as exc:
        raise RecordRejected(f"identifier.{exc.code}", str(exc), "subject.id") from None
    kind = _text(raw, "kind", required=True, limit=16) or ""
    allowed = expected_kind(sid.scheme)
    if kind not in allowed:
        raise RecordRejected(
            "wrong_subject_kind",
            f"a {sid.scheme} identifier names a {' or '.join(allowed)}, not a {kind}",
            "subject.kind",
        )
    name = _text(raw, "name", required=False, limit=200)
    return SubjectRef(sid, kind, name)


def _rid_birth(value: str) -> date:
    # The value passed parse_identifier, so its birth date exists (GB 11643 §5.2).
    return date(int(value[6:10]), int(value[10:12]), int(value[12:14]))


def check_submission(raw: Mapping[str, Any], policy: Policy, *, today: date) -> Submission:
    """Check one submitted line against ``policy``; raise RecordRejected with the reason."""
    if not TOP_LEVEL.issuperset(raw):
        unknown = sorted(set(raw) - TOP_LEVEL)
        raise RecordRejected("unknown_field", f"unknown field '{unknown[0]}'", unknown[0])
    provider = _text(raw, "provider", required=True, limit=64) or ""
    ref = _text(raw, "ref", required=True, limit=200) or ""
    retracts = _text(raw, "retracts", required=False, limit=200)
    amends = _text(raw, "amends", required=False, limit=200)
    reason = _text(raw, "reason", required=False, limit=500)
    if retracts is not None and amends is not None:
        raise RecordRejected("conflicting_fields", "a line may retract or amend, not both")
    if retracts is not None:
        if retracts == ref:
            raise RecordRejected("bad_reference", "a retraction needs its own ref", "retracts")
        return Submission(provider, ref, None, None, None, None, retracts=retracts, reason=reason)
    if amends == ref:
        raise RecordRejected("bad_reference", "an amendment needs its own ref", "amends")
    subject = _subject(raw.get("subject"))
    type_code = _text(raw, "type", required=True, limit=80) or ""
    rtype = policy.types.get(type_code)
    if rtype is None:
        raise RecordRejected(
            "unknown_type", f"record type '{type_code}' is not in policy {policy.label}", "type"
        )
    if subject.kind not in rtype.applies_to:
        raise RecordRejected(
            "wrong_subject_kind",
            f"record type '{type_code}' applies to {', '.join(rtype.applies_to)}, "
            f"not to a {subject.kind}",
            "subject.kind",
        )
    if raw.get("occurred_at") in (None, ""):
        raise RecordRejected("missing_field", "'occurred_at' is required", "occurred_at")
    occurred = parse_date(raw.get("occurred_at"), "occurred_at")
    if occurred > today:
        raise RecordRejected(
            "future_date",
            f"occurred_at {occurred} is in the future (today is {today})",
            "occurred_at",
        )
    if subject.id.scheme == "cn-rid":
        born = _rid_birth(subject.id.value)
        if occurred < born:
            raise RecordRejected(
                "before_birth",
                f"occurred_at {occurred} is before the subject's birth ({born})",
                "occurred_at",
            )
    attributes = check_attributes(policy, type_code, raw.get("attributes"))
    evidence = _text(raw, "evidence", required=False, limit=200)
    return Submission(
        provider,
        ref,
        subject,
        type_code,
        rtype.domain,
        occurred,
        attributes,
        evidence,
        amends=amends,
        reason=reason,
    )
