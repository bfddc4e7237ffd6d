"""Tables of the export service: projects and schemas seen on events, accepted labels, export jobs."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from annocloud_server.common.db import make_base
from annocloud_server.common.events import inbox_table, outbox_table

if TYPE_CHECKING:  # make_base() builds the class at run time; mypy needs a static base

    class Base(DeclarativeBase): ...

else:
    Base = make_base()


class ExportProject(Base):
    """A project this service heard of (ProjectCreated); exports need one."""

    __tablename__ = "export_projects"

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ExportSchema(Base):
    """One label schema version of a project (serialized ``tasks.v1.LabelSchema``)."""

    __tablename__ = "export_schemas"

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema: Mapped[bytes] = mapped_column(LargeBinary)


class AcceptedItem(Base):
    """The current accepted label of an item; re-acceptance replaces it in place (same ``id``).

    ``id`` is the keyset the export worker pages on, so items come out in first-acceptance order.
    """

    __tablename__ = "accepted_items"
    __table_args__ = (
        UniqueConstraint("organization_id", "project_id", "item"),
        Index("ix_accepted_items_scope_id", "organization_id", "project_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(512))
    accept_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    accepted_label: Mapped[bytes] = mapped_column(LargeBinary)
    """Serialized ``qa.v1.AcceptedLabel``."""
    item_context: Mapped[bytes] = mapped_column(LargeBinary)
    """Serialized ``events.v1.ItemContext``."""


class ExportJob(Base):
    """An export job; ``seq`` orders ListExports (newest first) and the worker queue (oldest first)."""

    __tablename__ = "exports"
    __table_args__ = (
        UniqueConstraint("organization_id", "request_id"),
        Index("ix_exports_scope_seq", "organization_id", "project_id", "seq"),
        Index("ix_exports_state_seq", "state", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[str] = mapped_column(String(32), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    format: Mapped[int] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    annotation_count: Mapped[int] = mapped_column(Integer, default=0)
    artifact_size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    artifact_sha256: Mapped[str] = mapped_column(String(64), default="")
    artifact_key: Mapped[str] = mapped_column(String(512), default="")
    error_reason: Mapped[str] = mapped_column(String(128), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AcceptedChange(Base):
    """The change feed: one row per effective acceptance (append-only); ``seq`` is the cursor."""

    __tablename__ = "accepted_changes"
    __table_args__ = (Index("ix_accepted_changes_scope_seq", "organization_id", "project_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(512))
    kind: Mapped[int] = mapped_column(Integer)
    """``ChangeKind``: ADDED for the first acceptance of the item, CHANGED after."""
    change_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_label: Mapped[bytes] = mapped_column(LargeBinary)


class DatasetVersion(Base):
    """An immutable snapshot of a project's accepted labels; ``seq`` orders ListDatasetVersions."""

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("organization_id", "request_id"),
        Index("ix_dataset_versions_scope_seq", "organization_id", "project_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[str] = mapped_column(String(32), unique=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    display_name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text)
    schema_version: Mapped[int] = mapped_column(Integer)
    label_schema_versions: Mapped[str] = mapped_column(Text)
    """Comma-separated, ascending."""
    change_seq: Mapped[int] = mapped_column(Integer)
    """The last change-feed ``seq`` the snapshot includes."""
    item_count: Mapped[int] = mapped_column(Integer)
    annotation_count: Mapped[int] = mapped_column(Integer)
    train_fraction: Mapped[float] = mapped_column(Float)
    validation_fraction: Mapped[float] = mapped_column(Float)
    test_fraction: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(BigInteger)
    train_count: Mapped[int] = mapped_column(Integer)
    validation_count: Mapped[int] = mapped_column(Integer)
    test_count: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetVersionItem(Base):
    """One item of a dataset version, copied at creation and never written again.

    ``position`` is the item's ``accepted_items.id`` (export order); ``stem_key`` (lower-case
    stem) keeps file names unique within the version; ``split_key`` = sha256(seed:item) orders a
    class for the split.
    """

    __tablename__ = "dataset_version_items"
    __table_args__ = (
        UniqueConstraint("version_seq", "item"),
        UniqueConstraint("version_seq", "stem_key"),
        Index("ix_dataset_version_items_class_key", "version_seq", "primary_class", "split_key"),
    )

    version_seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    item: Mapped[str] = mapped_column(String(512))
    stem_key: Mapped[str] = mapped_column(String(256))
    stem: Mapped[str] = mapped_column(String(256))
    ext: Mapped[str] = mapped_column(String(16))
    primary_class: Mapped[str] = mapped_column(String(256))
    split_key: Mapped[str] = mapped_column(String(64))
    split: Mapped[int] = mapped_column(Integer)
    """``Split`` enum value."""
    labels_sha256: Mapped[str] = mapped_column(String(64))
    accepted_label: Mapped[bytes] = mapped_column(LargeBinary)
    item_context: Mapped[bytes] = mapped_column(LargeBinary)


class ExportOfVersion(Base):
    """Links an export job to the dataset version it exports (a table of its own, so the
    ``exports`` table of an existing data directory needs no new column)."""

    __tablename__ = "export_versions"

    export_seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version_seq: Mapped[int] = mapped_column(Integer)
    version_id: Mapped[str] = mapped_column(String(32))


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
