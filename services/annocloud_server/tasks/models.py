"""Tables of the tasks service: projects, schema versions, the item catalog, tasks and leases."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    DateTime,
    Float,
    Index,
    Integer,
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


class Project(Base):
    __tablename__ = "projects"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128), index=True)
    project_id: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    redundancy: Mapped[int] = mapped_column(Integer)
    review_policy: Mapped[int] = mapped_column(Integer)
    min_agreement: Mapped[float] = mapped_column(Float)
    schema_version: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    """Aggregate version: +1 per project event."""
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProjectDataset(Base):
    __tablename__ = "project_datasets"
    __table_args__ = (Index("ix_project_datasets_org_dataset", "organization_id", "dataset_id"),)

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer)
    """Order the dataset was added in."""


class ProjectRequest(Base):
    """CreateProject idempotency: (organization, request_id) → project."""

    __tablename__ = "project_requests"

    organization_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))


class LabelSchema(Base):
    __tablename__ = "label_schemas"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)
    """The schema content as JSON (``domain.SchemaSpec``)."""
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CatalogItem(Base):
    """What the service knows about ingested items, to create tasks when datasets are added later."""

    __tablename__ = "catalog_items"
    __table_args__ = (UniqueConstraint("organization_id", "dataset_id", "item_id"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    dataset_id: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(1024))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    near_duplicate_of: Mapped[str] = mapped_column(String(256))


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # One label task per (project, item, slot); rework tasks use slot 0 and their annotation.
        UniqueConstraint("project_id", "item", "slot", "rework_of"),
        # Expired leases: the sweeper and LeaseNextTask's reclaim look them up by expiry.
        Index("ix_tasks_expiry", "state", "lease_expire_time"),
        Index("ix_tasks_project_expiry", "project_id", "state", "lease_expire_time"),
        Index("ix_tasks_project_seq", "organization_id", "project_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    """Creation order (the tie-breaker after priority)."""
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(256))
    """``datasets/{dataset}/items/{item}``."""
    slot: Mapped[int] = mapped_column(Integer)
    kind: Mapped[int] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    assigned_worker: Mapped[str] = mapped_column(String(256))
    schema_version: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[int] = mapped_column(Integer)
    item_file_name: Mapped[str] = mapped_column(String(1024))
    item_width: Mapped[int] = mapped_column(Integer)
    item_height: Mapped[int] = mapped_column(Integer)
    item_text: Mapped[str] = mapped_column(Text)
    redundancy: Mapped[int] = mapped_column(Integer)
    rework_of: Mapped[str] = mapped_column(String(256))
    rework_reason: Mapped[str] = mapped_column(Text)
    completed_by: Mapped[str] = mapped_column(String(256))
    lease_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    lease_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    """Aggregate version: +1 per task event."""
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ItemWorker(Base):
    """Items a worker holds or has labeled in a project: never leased to them again."""

    __tablename__ = "item_workers"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item: Mapped[str] = mapped_column(String(256), primary_key=True)
    worker: Mapped[str] = mapped_column(String(256), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))


# LeaseNextTask walks this index in (priority desc, creation) order and stops at the first fit.
Index("ix_tasks_pick", Task.organization_id, Task.project_id, Task.state, Task.priority.desc(), Task.seq)

outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
