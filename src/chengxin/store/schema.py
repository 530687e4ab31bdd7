"""The tables of the system of record (SQLAlchemy Core; the same on SQLite and PostgreSQL).

``ledger`` is the truth: append-only, hash-chained entries. ``records`` is
the current state of every record the ledger created (a projection: a
retraction or amendment appends to the ledger and flips a status here, it
never edits the ledger). Snapshots, memberships and the outbox are derived
from records by the scorer, in the same transaction as the change that
caused them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BigInteger ids render as INTEGER on SQLite so they alias the rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")

subjects = Table(
    "subjects",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("scheme", String(16), nullable=False),
    Column("value", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200)),
    Column("region", String(6)),
    Column("birth_date", Date),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("scheme", "value", name="uq_subjects_scheme_value"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=False),
    Column("kind", String(24), nullable=False),
    Column("provider", String(64)),
    Column("ref", String(200)),
    Column("subject_id", Id, ForeignKey("subjects.id")),
    Column("payload", Text),  # canonical JSON; NULL once erased after retention
    Column("payload_hash", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True)),
    UniqueConstraint("provider", "ref", name="uq_ledger_provider_ref"),
)

ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Id, nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

records = Table(
    "records",
    metadata,
    Column("id", Id, ForeignKey("ledger.seq"), primary_key=True, autoincrement=False),
    Column("subject_id", Id, ForeignKey("subjects.id"), nullable=False),
    Column("type", String(80), nullable=False),
    Column("domain", String(16), nullable=False),
    Column("occurred_at", Date, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("ref", String(200), nullable=False),
    Column("attributes", Text, nullable=False),
    Column("evidence", String(200)),
    Column("status", String(16), nullable=False),
    Column("supersedes", Id, ForeignKey("records.id")),
    Column("status_seq", Id, ForeignKey("ledger.seq")),  # the entry that set the status
    Index("ix_records_subject", "subject_id"),
    # No index on (provider, ref): the ledger's unique key holds it, and a record's
    # id is its entry's seq, so look-ups by key join through the ledger (migration 0003).
)

policies = Table(
    "policies",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("version", String(40), nullable=False),
    Column("content_hash", String(80), nullable=False, unique=True),
    Column("source", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("name", "version", name="uq_policies_name_version"),
)

activations = Table(
    "activations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("policy_id", Id, ForeignKey("policies.id"), nullable=False),
    Column("activated_at", DateTime(timezone=True), nullable=False),
    Column("effective_from", Date, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("reason", Text, nullable=False),
    Column("ledger_seq", Id, ForeignKey("ledger.seq"), nullable=False),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("subject_id", Id, ForeignKey("subjects.id"), primary_key=True, autoincrement=False),
    Column("policy_hash", String(80), nullable=False),
    Column("score", Integer, nullable=False),
    Column("grade", String(24), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("next_change", Date),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Column("stale", Boolean, nullable=False, default=False),
    Index("ix_snapshots_stale", "stale"),
)

memberships = Table(
    "memberships",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subject_id", Id, ForeignKey("subjects.id"), nullable=False),
    Column("list_code", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("since", Date),
    Column("until", Date),
    Column("policy_hash", String(80), nullable=False),
    Column("entered_at", DateTime(timezone=True), nullable=False),
    Column("left_at", DateTime(timezone=True)),
    Index("ix_memberships_subject", "subject_id"),
    Index("ix_memberships_list", "list_code", "left_at"),
)

consents = Table(
    "consents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subject_id", Id, ForeignKey("subjects.id"), nullable=False),
    Column("measure", String(80), nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_consents_subject_measure", "subject_id", "measure"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("topic", String(40), nullable=False),
    Column("subject_id", Id, ForeignKey("subjects.id")),
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_outbox_pending", "delivered_at", "next_attempt_at"),
)

# -- the service: principals, keys, audit trail, webhooks (migration 0002) ----

principals = Table(
    "principals",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),  # machine | person
    Column("role", String(16), nullable=False),
    Column("provider", String(64)),  # providers: the provider code they write as
    Column("service_kind", String(40)),  # services: airline, bank, ...
    Column("scopes", Text, nullable=False, default="[]"),  # JSON: record types or measures
    Column("subject_id", Id, ForeignKey("subjects.id")),  # subjects: who they are
    Column("password_hash", String(200)),  # people: argon2
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("principal_id", Id, ForeignKey("principals.id"), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(200), nullable=False),  # argon2 of the whole key
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("principal", String(120), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(40), nullable=False),
    Column("purpose", String(120)),
    Column("subject_id", Id, ForeignKey("subjects.id")),
    Column("detail", Text, nullable=False),  # canonical JSON, no personal data
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Index("ix_audit_events_subject", "subject_id"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Id, nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("principal_id", Id, ForeignKey("principals.id"), nullable=False),
    Column("url", String(500), nullable=False),
    Column("secret", String(200), nullable=False),  # whsec_… (Standard Webhooks)
    Column("topics", Text, nullable=False),  # JSON list
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("outbox_id", Id, ForeignKey("outbox.id"), nullable=False),
    Column("subscription_id", Id, ForeignKey("subscriptions.id"), nullable=False),
    Column("message_id", String(64), nullable=False, unique=True),
    Column("status", String(12), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    UniqueConstraint("outbox_id", "subscription_id", name="uq_deliveries_outbox_subscription"),
)

api_requests = Table(
    "api_requests",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("principal_id", Id, ForeignKey("principals.id"), nullable=False),
    Column("key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("principal_id", "key", name="uq_api_requests_principal_key"),
)
