"""Dataset versions, their items, exports of versions and the change feed of acceptances.

Only new tables (an existing ``exports`` / ``accepted_items`` needs no change, so embedded SQLite
data directories keep working with ``create_all``). The change feed is seeded with one ADDED
change per item already accepted, in first-acceptance order, so a feed read from the start sees
every accepted item.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANGE_KIND_ADDED = 1


def upgrade() -> None:
    op.create_table(
        "accepted_changes",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("item", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("change_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_label", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_accepted_changes")),
    )
    op.create_index(
        "ix_accepted_changes_scope_seq",
        "accepted_changes",
        ["organization_id", "project_id", "seq"],
        unique=False,
    )
    op.create_table(
        "dataset_versions",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("label_schema_versions", sa.Text(), nullable=False),
        sa.Column("change_seq", sa.Integer(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("annotation_count", sa.Integer(), nullable=False),
        sa.Column("train_fraction", sa.Float(), nullable=False),
        sa.Column("validation_fraction", sa.Float(), nullable=False),
        sa.Column("test_fraction", sa.Float(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("train_count", sa.Integer(), nullable=False),
        sa.Column("validation_count", sa.Integer(), nullable=False),
        sa.Column("test_count", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("version_id", name=op.f("uq_dataset_versions_version_id")),
        sa.UniqueConstraint(
            "organization_id", "request_id", name=op.f("uq_dataset_versions_organization_id_request_id")
        ),
    )
    op.create_index(
        "ix_dataset_versions_scope_seq",
        "dataset_versions",
        ["organization_id", "project_id", "seq"],
        unique=False,
    )
    op.create_table(
        "dataset_version_items",
        sa.Column("version_seq", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item", sa.String(length=512), nullable=False),
        sa.Column("stem_key", sa.String(length=256), nullable=False),
        sa.Column("stem", sa.String(length=256), nullable=False),
        sa.Column("ext", sa.String(length=16), nullable=False),
        sa.Column("primary_class", sa.String(length=256), nullable=False),
        sa.Column("split_key", sa.String(length=64), nullable=False),
        sa.Column("split", sa.Integer(), nullable=False),
        sa.Column("labels_sha256", sa.String(length=64), nullable=False),
        sa.Column("accepted_label", sa.LargeBinary(), nullable=False),
        sa.Column("item_context", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("version_seq", "position", name=op.f("pk_dataset_version_items")),
        sa.UniqueConstraint("version_seq", "item", name=op.f("uq_dataset_version_items_version_seq_item")),
        sa.UniqueConstraint(
            "version_seq", "stem_key", name=op.f("uq_dataset_version_items_version_seq_stem_key")
        ),
    )
    op.create_index(
        "ix_dataset_version_items_class_key",
        "dataset_version_items",
        ["version_seq", "primary_class", "split_key"],
        unique=False,
    )
    op.create_table(
        "export_versions",
        sa.Column("export_seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version_seq", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("export_seq", name=op.f("pk_export_versions")),
    )
    op.execute(
        sa.text(
            "INSERT INTO accepted_changes (organization_id, project_id, item, kind, change_time, accepted_label) "
            "SELECT organization_id, project_id, item, :kind, COALESCE(accept_time, CURRENT_TIMESTAMP), "
            "accepted_label FROM accepted_items ORDER BY id"
        ).bindparams(kind=CHANGE_KIND_ADDED)
    )


def downgrade() -> None:
    op.drop_table("export_versions")
    op.drop_index("ix_dataset_version_items_class_key", table_name="dataset_version_items")
    op.drop_table("dataset_version_items")
    op.drop_index("ix_dataset_versions_scope_seq", table_name="dataset_versions")
    op.drop_table("dataset_versions")
    op.drop_index("ix_accepted_changes_scope_seq", table_name="accepted_changes")
    op.drop_table("accepted_changes")
