"""Tables of the qa service. Labels, schemas, settings and item contexts are stored as serialized protos.

Columns added after the first release carry a ``server_default`` so that rows written by older code
(and the migration of existing rows) get a defined value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Float, Integer, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from annocloud_server.common.db import make_base
from annocloud_server.common.events import inbox_table, outbox_table

Base: Any = make_base()

# Item status values.
COLLECTING = "COLLECTING"
IN_REVIEW = "IN_REVIEW"
REWORK = "REWORK"
ACCEPTED = "ACCEPTED"

# Vote states. GOLD: an answer to a gold item, scored and never aggregated.
ACTIVE = "ACTIVE"
REJECTED = "REJECTED"
REPLACED = "REPLACED"
GOLD = "GOLD"


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
    quality: Mapped[bytes] = mapped_column(LargeBinary, default=b"", server_default=text("''"))
    """Serialized ``tasks.v1.QualitySettings`` (empty: defaults)."""


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
    rework_stage: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """ReviewStage that last sent the item to rework (0: none); the re-review happens there."""
    rework_round: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    labels_requested: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Highest labels_wanted of a MoreLabelsRequested emitted for the item."""
    difficulty_votes: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Vote count at which ItemDifficultyAssessed was last emitted."""


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
    annotator_organization: Mapped[str] = mapped_column(String(128), default="", server_default=text("''"))
    handle_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))


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
    stage: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    """ReviewStage (reviews before stages existed were peer reviews)."""
    reason_code: Mapped[str] = mapped_column(String(64), default="", server_default=text("''"))
    escalation_note: Mapped[str] = mapped_column(String(1000), default="", server_default=text("''"))
    confidence: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    rework_round: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


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
    confidence: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))


class GoldItemRow(Base):
    """An item whose true labels a manager gave; answers to it score the worker."""

    __tablename__ = "gold_items"
    __table_args__ = (UniqueConstraint("organization_id", "project_id", "gold_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    gold_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(256), index=True)
    labels: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WorkerStatsRow(Base):
    """Evidence about one worker in one project: gold answers, consensus with accepted labels, rejections."""

    __tablename__ = "worker_stats"
    __table_args__ = (UniqueConstraint("organization_id", "project_id", "worker"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str] = mapped_column(String(256))
    worker_organization: Mapped[str] = mapped_column(String(128))
    gold_answered: Mapped[int] = mapped_column(Integer)
    gold_correct: Mapped[int] = mapped_column(Integer)
    accepted_votes: Mapped[int] = mapped_column(Integer)
    """Votes of the worker on items that were accepted."""
    agreed: Mapped[int] = mapped_column(Integer)
    """Of those, votes that matched the accepted label."""
    rejected: Mapped[int] = mapped_column(Integer)


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
