"""Import jobs, and an index to match imported labels to items by file name.

Written by hand after the models and checked against them on PostgreSQL
(``tests/cluster/test_cluster_postgres_migrations.py``).

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=128), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("upload_key", sa.String(length=512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("duplicate_count", sa.Integer(), nullable=False),
        sa.Column("matched_item_count", sa.Integer(), nullable=False),
        sa.Column("prediction_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("errors_json", sa.Text(), nullable=False),
        sa.Column("failure_reason", sa.String(length=64), nullable=False),
        sa.Column("failure_message", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=False),
        sa.Column("lease_expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_import_jobs")),
        sa.UniqueConstraint("id", name=op.f("uq_import_jobs_id")),
    )
    op.create_index(
        "ix_import_jobs_org_dataset_seq",
        "import_jobs",
        ["organization_id", "dataset_id", "seq"],
        unique=False,
    )
    op.create_index("ix_import_jobs_state_seq", "import_jobs", ["state", "seq"], unique=False)
    op.create_index(
        "ix_items_org_dataset_file_name",
        "items",
        ["organization_id", "dataset_id", "file_name"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_items_org_dataset_file_name", table_name="items")
    op.drop_index("ix_import_jobs_state_seq", table_name="import_jobs")
    op.drop_index("ix_import_jobs_org_dataset_seq", table_name="import_jobs")
    op.drop_table("import_jobs")
