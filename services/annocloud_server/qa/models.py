"""Tables of the qa service. Labels, schemas and item contexts are stored as serialized protos."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Float, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from annocloud_server.common.db import make_base
from annocloud_server.common.events import inbox_table, outbox_table

Base: Any = make_base()

# Item status values.
COLLECTING = "COLLECTING"
IN_REVIEW = "IN_REVIEW"
REWORK = "REWORK"
ACCEPTED = "ACCEPTED"

# Vote states.
ACTIVE = "ACTIVE"
REJECTED = "REJECTED"
REPLACED = "REPLACED"


class ProjectRow(Base):
    """What qa needs of a project: how many votes, when to review, how much agreement."""

    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("organization_id", "project_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    redundancy: Mapped[int] = mapped_column(Integer)
    review_policy: Mapped[int] = mapped_column(Integer)
    min_agreement: Mapped[float] = mapped_column(Float)


class SchemaRow(Base):
    """An immutable label schema version (serialized ``LabelSchema``)."""

    __tablename__ = "schemas"
    __table_args__ = (UniqueConstraint("organization_id", "project_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    schema: Mapped[bytes] = mapped_column(LargeBinary)


class ItemRow(Base):
    """An item being labeled in a project: its status and the context carried from the annotations."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("organization_id", "project_id", "item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(256))
    redundancy: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    context: Mapped[bytes] = mapped_column(LargeBinary)


class VoteRow(Base):
    """One annotation counted (or no longer counted) for an item."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("organization_id", "annotation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    item: Mapped[str] = mapped_column(String(256), index=True)
    annotation: Mapped[str] = mapped_column(String(256))
    task: Mapped[str] = mapped_column(String(256))
    annotator: Mapped[str] = mapped_column(String(256))
    labels: Mapped[bytes] = mapped_column(LargeBinary)
    revision: Mapped[int] = mapped_column(Integer)
    schema_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))


class ReviewRow(Base):
    """An item's aggregated proposal waiting for (or decided by) a reviewer."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("organization_id", "project_id", "review_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    review_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(256))
    reason: Mapped[int] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer, index=True)
    proposal: Mapped[bytes] = mapped_column(LargeBinary)
    agreement: Mapped[float] = mapped_column(Float)
    votes: Mapped[bytes] = mapped_column(LargeBinary)
    """Serialized ``Review`` carrying only the votes aggregated (a snapshot)."""
    schema_version: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str] = mapped_column(String(256))


class AcceptedLabelRow(Base):
    """The label of an item that passed QA; ``id`` gives acceptance order."""

    __tablename__ = "accepted_labels"
    __table_args__ = (UniqueConstraint("organization_id", "project_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(256))
    labels: Mapped[bytes] = mapped_column(LargeBinary)
    agreement: Mapped[float] = mapped_column(Float)
    vote_count: Mapped[int] = mapped_column(Integer)
    schema_version: Mapped[int] = mapped_column(Integer)
    accept_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_by: Mapped[str] = mapped_column(String(256))


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
