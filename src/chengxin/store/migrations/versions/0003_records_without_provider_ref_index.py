"""records without the (provider, ref) index

The ledger's unique ``(provider, ref)`` already guards the idempotency key,
and every record's ``id`` is its ledger entry's ``seq``: a record is found by
its key through the ledger (``ingest._targets``), so the second index on
``records`` only cost every insert its upkeep.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 17:12:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    op.drop_index("ix_records_provider_ref", table_name="records")


def downgrade() -> None:
    """Revert this migration."""
    op.create_index("ix_records_provider_ref", "records", ["provider", "ref"], unique=True)
