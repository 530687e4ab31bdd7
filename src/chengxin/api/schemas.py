"""Request and response bodies, named by role (``RecordCreate``, ``CheckRead``), apart from tables.

Requests forbid unknown fields: a typo is a 422 naming the field, never a
silently ignored value. Responses say only what their reader may learn: a
``CheckRead`` has the decision, never the score or the records.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_BATCH = 10_000
"""The most lines one batch request may carry."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- errors -------------------------------------------------------------------


class ErrorDetail(_Response):
    """A machine-readable code and a human message (more fields for some codes)."""

    model_config = ConfigDict(extra="allow")
    code: str = Field(examples=["forbidden"])
    message: str = Field(examples=["the service role may not do this"])


class ErrorRead(_Response):
    """Every 4xx and 5xx body."""

    error: ErrorDetail


# -- records ------------------------------------------------------------------


class SubjectRefCreate(_Request):
    """Who a record is about, as the provider names them."""

    scheme: str = Field(max_length=16, examples=["cn-rid"])
    id: str = Field(max_length=64, examples=["11010519491231002X"])
    kind: str = Field(max_length=16, examples=["person"])
    name: str | None = Field(default=None, max_length=200, examples=["Zhang San"])


class RecordCreate(_Request):
    """One interchange line (DESIGN.md): a record, an amendment (``amends``) or a retraction."""

    provider: str = Field(max_length=64, examples=["court-110105"])
    ref: str = Field(max_length=200, examples=["(2024)0105-exec-123"])
    subject: SubjectRefCreate | None = None
    type: str | None = Field(
        default=None, max_length=80, examples=["judicial.judgment_unperformed"]
    )
    occurred_at: str | None = Field(default=None, max_length=40, examples=["2024-03-01"])
    attributes: dict[str, Any] | None = Field(default=None, examples=[{"amount_cny": 250000}])
    evidence: str | None = Field(default=None, max_length=200)
    retracts: str | None = Field(default=None, max_length=200)
    amends: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=500)

    def line(self) -> dict[str, Any]:
        """The line as the ingest path reads it (absent fields left out)."""
        return self.model_dump(exclude_none=True)


class RecordBatchCreate(_Request):
    """Up to 10,000 lines; ``atomic`` stores all of them or none."""

    records: list[RecordCreate] = Field(min_length=1, max_length=MAX_BATCH)
    atomic: bool = Field(
        default=True,
        description="true: if any line is rejected nothing is stored; false: per-line results",
    )

    def lines(self) -> list[dict[str, Any]]:
        """Every record's :meth:`RecordCreate.line`, in one serialisation (not one per line)."""
        records: list[dict[str, Any]] = self.model_dump(exclude_none=True, include={"records"})[
            "records"
        ]
        return records


class RecordResult(_Response):
    """What became of one line."""

    line: int
    status: Literal["accepted", "duplicate", "rejected"]
    ref: str | None = None
    seq: int | None = Field(
        default=None, description="the ledger entry (the original one for a duplicate)"
    )
    code: str | None = None
    message: str | None = None
    field: str | None = None


class RecordBatchRead(_Response):
    """What became of a batch."""

    accepted: int
    duplicates: int
    rejected: int
    results: list[RecordResult]


# -- checks -------------------------------------------------------------------


class SubjectIdIn(_Request):
    """A subject identifier: scheme and value."""

    scheme: Literal["cn-rid", "cn-uscc", "generic"] = Field(examples=["cn-rid"])
    id: str = Field(min_length=1, max_length=64, examples=["11010519491231002X"])


class CheckRequest(_Request):
    """A service's question: may this subject have this measure, and why it asks."""

    subject: SubjectIdIn
    measure: str = Field(min_length=1, max_length=80, examples=["transport.flight_booking"])
    purpose: str = Field(min_length=1, max_length=120, examples=["booking MU5101"])


class CheckRead(_Response):
    """All a service ever learns: the decision, never the score or the records."""

    measure: str
    decision: Literal["allow", "deny", "grant"]
    reasons: list[str] = Field(description="at most four principal reason codes (on deny)")
    policy_version: str
    appeal: str | None = Field(description="how the subject contests a denial")


# -- subjects -----------------------------------------------------------------


class SubjectRead(_Response):
    """A subject as the subject itself (or an adjudicator) sees it."""

    scheme: str
    id: str
    kind: str
    name: str | None


class ContributionRead(_Response):
    """One record's contribution to a score."""

    record_id: int
    record_type: str
    rule: str
    rule_title: str | None
    points: int
    pct: int
    value: int
    occurred_at: str
    expires_on: str | None


class ListPlaceRead(_Response):
    """A subject's place on a list and the records that put it there."""

    list_: str = Field(alias="list")
    kind: str
    since: str | None
    until: str | None
    records: list[int]


class HistoryEntryRead(_Response):
    """One record of a subject, whatever its status (retracted and superseded included)."""

    record_id: int
    type: str
    occurred_at: str
    provider: str
    ref: str
    status: str
    attributes: dict[str, Any]
    supersedes: int | None
    counts: bool
    value: int
    on_list: bool


class ExplanationRead(_Response):
    """Every point of a score: record, rule, schedule step, expiry, policy version."""

    subject: SubjectRead
    policy: str
    policy_hash: str
    as_of: str
    base: int
    score: int
    raw: int
    grade: str
    next_change: str | None
    contributions: list[ContributionRead]
    lists: list[ListPlaceRead]
    records: list[HistoryEntryRead]


class SummaryRead(_Response):
    """A subject's own record in short."""

    subject: SubjectRead
    policy: str
    as_of: str
    score: int
    grade: str
    next_change: str | None
    lists: list[ListPlaceRead]
    records: int = Field(description="records held, whatever their status")
    counting: int = Field(description="records that count today")


class HistoryRead(_Response):
    """Every record held on a subject."""

    subject: SubjectRead
    records: list[HistoryEntryRead]


class ConsultationRead(_Response):
    """Someone consulted the subject: who, for which measure and purpose, when."""

    at: datetime
    principal: str
    role: str
    action: str
    purpose: str | None
    measure: str | None
    decision: str | None


# -- lists --------------------------------------------------------------------


class ListRead(_Response):
    """A list of the active policy and how many are on it."""

    code: str
    kind: str
    title: str | None
    public: bool
    members: int


class ListMemberRead(_Response):
    """A member of a list, as an adjudicator or auditor sees it."""

    list_: str = Field(alias="list")
    kind: str
    subject: str
    name: str | None
    since: date | None
    until: date | None


class PublicListMemberRead(_Response):
    """A member of a public list, as the public sees it: a masked identifier, no name."""

    list_: str = Field(alias="list")
    kind: str
    subject: str = Field(examples=["1101**********002X"])
    since: date | None
    until: date | None


# -- policies -----------------------------------------------------------------


class PolicyRead(_Response):
    """The policy in force."""

    label: str
    policy: str
    version: str
    content_hash: str
    document: dict[str, Any]


class PolicyLintRequest(_Request):
    """A policy to lint, as YAML text (or send the YAML itself as ``text/yaml``)."""

    yaml: str = Field(min_length=1)


class ProblemRead(_Response):
    """One problem a policy has."""

    path: str
    line: int | None
    severity: str
    message: str
    hard_line: int | None


class PolicyLintRead(_Response):
    """Every problem found; ``ok`` when none is an error."""

    ok: bool
    policy: str | None
    content_hash: str | None
    problems: list[ProblemRead]


class PolicyActivate(_Request):
    """Activate a policy: new YAML text, or a stored ``name@version`` / content hash."""

    yaml: str | None = Field(default=None, min_length=1)
    policy: str | None = Field(
        default=None, min_length=1, max_length=120, examples=["national@2026.1"]
    )
    reason: str = Field(min_length=1, max_length=2000, description="kept in the ledger")
    effective_from: date | None = Field(default=None, description="default today")
    rescore: bool = Field(default=True, description="rescore everyone after activation")


class PolicyActivationRead(_Response):
    """The activation, as kept in the ledger."""

    activated: str
    content_hash: str
    ledger_seq: int
    effective_from: date


# -- audit --------------------------------------------------------------------


class AuditEventRead(_Response):
    """One event of the audit trail."""

    seq: int
    at: datetime
    principal: str
    role: str
    action: str
    purpose: str | None
    subject_id: int | None
    detail: dict[str, Any]
    entry_hash: str


class ChainRead(_Response):
    """The outcome of walking a hash chain."""

    ok: bool
    entries: int
    head: str
    broken_at: int | None
    problem: str | None


class AuditVerifyRead(_Response):
    """The audit chain (and the ledger, when asked)."""

    audit: ChainRead
    ledger: ChainRead | None = None


# -- sessions -----------------------------------------------------------------


class SessionCreate(_Request):
    """A person's name and password (JSON or an HTML form)."""

    # No control characters: PostgreSQL refuses NUL in text, and no name has one.
    username: str = Field(min_length=1, max_length=120, pattern=r"^[^\x00-\x1f\x7f]+$")
    password: str = Field(min_length=1, max_length=1000)


class PrincipalRead(_Response):
    """Who is calling."""

    name: str
    kind: str
    role: str
    provider: str | None
    service_kind: str | None
    scopes: list[str]


class SessionRead(_Response):
    """The caller, and the CSRF token to send as ``X-CSRF-Token`` with cookie sessions."""

    principal: PrincipalRead
    csrf_token: str | None
