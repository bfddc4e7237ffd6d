"""Tables of the modelassist service: projects' settings and heads, which dataset feeds which
project, the work queue of items to pre-label and embed, embeddings, accepted classes, suggestions
and their survival counters."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import DateTime, Float, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from annocloud_server.common.db import make_base
from annocloud_server.common.events import inbox_table, outbox_table

if TYPE_CHECKING:

    class Base(DeclarativeBase): ...

else:
    Base = make_base()


class AssistProject(Base):
    """A project's model-assist settings (serialized ``ModelAssistSettings``), classes and head."""

    __tablename__ = "projects"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128), index=True)
    settings: Mapped[bytes] = mapped_column(LargeBinary)
    classes: Mapped[str] = mapped_column(Text)
    """JSON list of the latest schema's class names (the head's outputs)."""
    box_labels: Mapped[str] = mapped_column(Text)
    """JSON list of the latest schema's BOX labels (pre-labels must use one)."""
    head_version: Mapped[int] = mapped_column(Integer)
    head: Mapped[bytes] = mapped_column(LargeBinary)
    """``numpy.savez`` of the head (and committee); empty before the first training."""
    trained_on: Mapped[int] = mapped_column(Integer)
    labels_since_training: Mapped[int] = mapped_column(Integer)
    scored_items: Mapped[int] = mapped_column(Integer)
    train_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rescore_due: Mapped[int] = mapped_column(Integer)
    """1 when the worker should retrain and rescore."""


class AssistDataset(Base):
    """Datasets a project labels (from ProjectCreated / ProjectDatasetAdded)."""

    __tablename__ = "project_datasets"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))


class CatalogItem(Base):
    """An ingested item (what modelassist needs to process it later), so a project created or
    given a dataset after its items arrived still gets them pre-labeled and embedded."""

    __tablename__ = "catalog_items"
    __table_args__ = (Index("ix_catalog_org_dataset", "organization_id", "dataset_id", "seq"),)

    item: Mapped[str] = mapped_column(String(256), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    dataset_id: Mapped[str] = mapped_column(String(64))
    context: Mapped[bytes] = mapped_column(LargeBinary)
    """Serialized ``ItemContext``."""
    blob_key: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer)


class PendingItem(Base):
    """An ingested item of a project still to pre-label and embed (the worker's queue)."""

    __tablename__ = "pending_items"
    __table_args__ = (UniqueConstraint("project_id", "item"), Index("ix_pending_due", "next_attempt_time"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(256))
    context: Mapped[bytes] = mapped_column(LargeBinary)
    """Serialized ``ItemContext``."""
    blob_key: Mapped[str] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text)


class Embedding(Base):
    """An item's embedding in a project (float32 bytes)."""

    __tablename__ = "embeddings"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item: Mapped[str] = mapped_column(String(256), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    seq: Mapped[int] = mapped_column(Integer)


class AcceptedClass(Base):
    """The accepted class of an item (training data of the head); absent = unlabeled."""

    __tablename__ = "accepted_classes"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item: Mapped[str] = mapped_column(String(256), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(128))


class Suggestion(Base):
    """What a model suggested for an item (serialized ``Labels``), to compare with human edits."""

    __tablename__ = "suggestions"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item: Mapped[str] = mapped_column(String(256), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    labels: Mapped[bytes] = mapped_column(LargeBinary)


class SuggestionStat(Base):
    """Survival counters of one model version's suggestions for one annotator."""

    __tablename__ = "suggestion_stats"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    annotator: Mapped[str] = mapped_column(String(256), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    annotations: Mapped[int] = mapped_column(Integer)
    suggested_boxes: Mapped[int] = mapped_column(Integer)
    unchanged_boxes: Mapped[int] = mapped_column(Integer)
    adjusted_boxes: Mapped[int] = mapped_column(Integer)
    deleted_boxes: Mapped[int] = mapped_column(Integer)
    added_boxes: Mapped[int] = mapped_column(Integer)
    iou_sum: Mapped[float] = mapped_column(Float)
    kept_boxes: Mapped[int] = mapped_column(Integer)
    class_changes: Mapped[int] = mapped_column(Integer)


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
