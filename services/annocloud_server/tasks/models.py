"""Tables of the tasks service: projects, schema versions, the item catalog, tasks and leases, and the
workforce (vendors, workers, grants, pay rates, the payouts ledger, gold items and per-project gold
scores)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
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
    quality: Mapped[bytes] = mapped_column(LargeBinary, default=b"", server_default=text("''"))
    """Serialized ``QualitySettings`` (normalized by ``workforce.validate_quality``)."""
    model_assist: Mapped[bytes] = mapped_column(LargeBinary, default=b"", server_default=text("''"))
    """Serialized ``ModelAssistSettings`` (modelassist reads it from ProjectCreated)."""


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
    difficulty_tier: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A gold (honeypot) task: never shown as such to workers."""
    lease_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_worker_org: Mapped[str | None] = mapped_column(String(128), nullable=True)
    completed_by_org: Mapped[str] = mapped_column(String(128), default="", server_default=text("''"))
    completed_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ItemWorker(Base):
    """Items a worker holds or has labeled in a project: never leased to them again."""

    __tablename__ = "item_workers"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item: Mapped[str] = mapped_column(String(256), primary_key=True)
    worker: Mapped[str] = mapped_column(String(256), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))


class ItemDifficulty(Base):
    """Difficulty tier of an item in a project (from disagreement or model uncertainty)."""

    __tablename__ = "item_difficulty"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item: Mapped[str] = mapped_column(String(256), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    tier: Mapped[int] = mapped_column(Integer)
    difficulty: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(256))


class GoldItem(Base):
    """An item of a project whose true labels qa holds; served to workers as ordinary tasks."""

    __tablename__ = "gold_items"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item: Mapped[str] = mapped_column(String(256), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer)


class Vendor(Base):
    """An organization registered as a vendor (``vendors/{organization_id}``)."""

    __tablename__ = "vendors"

    organization_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Worker(Base):
    """A worker of a vendor (or an enterprise's in-house worker), signing in as ``subject``."""

    __tablename__ = "workers"
    __table_args__ = (
        UniqueConstraint("organization_id", "worker_id"),
        UniqueConstraint("organization_id", "subject"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    worker_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(200))
    skills: Mapped[bytes] = mapped_column(LargeBinary)
    """Serialized ``Skills``."""
    level: Mapped[int] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WorkerGold(Base):
    """A worker's gold answers in one project (from qa's WorkerScored events)."""

    __tablename__ = "worker_gold"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker: Mapped[str] = mapped_column(String(256), primary_key=True)
    worker_organization: Mapped[str] = mapped_column(String(128), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    gold_answered: Mapped[int] = mapped_column(Integer)
    gold_correct: Mapped[int] = mapped_column(Integer)


class Grant(Base):
    """A project of ``organization_id`` granted to the vendor ``vendor_id``."""

    __tablename__ = "grants"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    min_level: Mapped[int] = mapped_column(Integer)
    granted_by: Mapped[str] = mapped_column(String(256))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PayRate(Base):
    """Pay per accepted task of (kind, tier) from ``effective_time`` until ``superseded_time``."""

    __tablename__ = "pay_rates"
    __table_args__ = (Index("ix_pay_rates_lookup", "project_id", "task_kind", "difficulty_tier"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rate_id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    task_kind: Mapped[int] = mapped_column(Integer)
    difficulty_tier: Mapped[int] = mapped_column(Integer)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    effective_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    superseded_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LedgerEntry(Base):
    """One immutable line of the payouts ledger. An accrual is unique per (task, round); a reversal
    takes back the accrual of the same round."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("project_id", "task_id", "kind", "round"),
        Index("ix_ledger_vendor", "vendor_id", "seq"),
        Index("ix_ledger_project", "organization_id", "project_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[int] = mapped_column(Integer)
    vendor_id: Mapped[str] = mapped_column(String(128))
    worker: Mapped[str] = mapped_column(String(256))
    task_id: Mapped[str] = mapped_column(String(64))
    """Empty for bonuses (their ``round`` is the entry's own sequence)."""
    round: Mapped[int] = mapped_column(Integer)
    task_kind: Mapped[int] = mapped_column(Integer)
    difficulty_tier: Mapped[int] = mapped_column(Integer)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    rate_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    work_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the work was accepted (accruals), rejected (reversals) or the bonus was given."""
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# LeaseNextTask walks this index in (priority desc, creation) order and stops at the first fit.
Index("ix_tasks_pick", Task.organization_id, Task.project_id, Task.state, Task.priority.desc(), Task.seq)

outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
