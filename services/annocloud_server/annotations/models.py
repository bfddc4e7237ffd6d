"""Tables of the annotations service. Labels are stored as serialized ``Labels`` protos."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Float, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from annocloud_server.common.db import make_base
from annocloud_server.common.events import inbox_table, outbox_table

Base: Any = make_base()


class AnnotationRow(Base):
    """The latest revision of one annotation (one per task) with the item context it was checked on."""

    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("organization_id", "task"),
        UniqueConstraint("organization_id", "project_id", "annotation_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    annotation_id: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(256))
    item: Mapped[str] = mapped_column(String(256), index=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    annotator: Mapped[str] = mapped_column(String(256))
    labels: Mapped[bytes] = mapped_column(LargeBinary)
    revision: Mapped[int] = mapped_column(Integer)
    etag: Mapped[str] = mapped_column(String(64))
    revised_by: Mapped[str] = mapped_column(String(256))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    media_type: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(1024))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class RevisionRow(Base):
    """One immutable revision of an annotation."""

    __tablename__ = "annotation_revisions"
    __table_args__ = (UniqueConstraint("annotation_pk", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    annotation_pk: Mapped[int] = mapped_column(Integer, index=True)
    revision: Mapped[int] = mapped_column(Integer)
    labels: Mapped[bytes] = mapped_column(LargeBinary)
    etag: Mapped[str] = mapped_column(String(64))
    revised_by: Mapped[str] = mapped_column(String(256))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PredictionRow(Base):
    """A model's proposal for an item, kept apart from human labels."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("organization_id", "project_id", "prediction_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    prediction_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(256), index=True)
    model: Mapped[str] = mapped_column(String(256))
    model_version: Mapped[str] = mapped_column(String(256))
    score: Mapped[float] = mapped_column(Float)
    labels: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RequestRow(Base):
    """Idempotency keys: (organization, method, request_id) -> the resource created."""

    __tablename__ = "requests"
    __table_args__ = (UniqueConstraint("organization_id", "method", "request_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(128))
    resource_name: Mapped[str] = mapped_column(String(256))


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
