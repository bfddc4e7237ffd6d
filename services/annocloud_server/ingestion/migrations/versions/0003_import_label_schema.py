"""Import jobs keep the label schema version (and the schema) their labels are checked against.

Written by hand after the models. Jobs that existed before get version 0 and an empty schema: the
worker checks those against their source only, as before.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults fill the existing rows only; the models set the values on insert.
    op.add_column(
        "import_jobs", sa.Column("schema_version", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "import_jobs",
        sa.Column("label_schema", sa.LargeBinary(), nullable=False, server_default=sa.text("''::bytea")),
    )
    op.alter_column("import_jobs", "schema_version", server_default=None)
    op.alter_column("import_jobs", "label_schema", server_default=None)


def downgrade() -> None:
    op.drop_column("import_jobs", "label_schema")
    op.drop_column("import_jobs", "schema_version")
