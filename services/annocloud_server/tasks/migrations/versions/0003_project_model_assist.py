"""Projects keep their model-assist settings (serialized ModelAssistSettings; '' = none), issue #6.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:53:53.167628
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "projects", sa.Column("model_assist", sa.LargeBinary(), server_default=sa.text("''"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("projects", "model_assist")
