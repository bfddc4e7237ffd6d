"""Tables of the ingestion service (every row carries its organization)."""

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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from annocloud_server.common.db import make_base
from annocloud_server.common.events import inbox_table, outbox_table

if TYPE_CHECKING:
    # mypy cannot subclass the class make_base() returns; at type-check time it is this.
    Base = DeclarativeBase
else:
    Base = make_base()

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Sequence64 = BigInteger().with_variant(Integer(), "sqlite")


class Dataset(Base):
    __tablename__ = "datasets"

    seq: Mapped[int] = mapped_column(Sequence64, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(128), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    item_count: Mapped[int] = mapped_column(BigInteger, default=0)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deidentify: Mapped[bool] = mapped_column(Boolean, default=False)
    """Faces and plates are blurred in the stored media of its images (set at creation, never changed)."""


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("organization_id", "dataset_id", "content_sha256"),
        UniqueConstraint("organization_id", "dataset_id", "original_sha256"),
        Index("ix_items_org_dataset_seq", "organization_id", "dataset_id", "seq"),
        Index("ix_items_content_sha256", "content_sha256"),
        Index("ix_items_org_dataset_file_name", "organization_id", "dataset_id", "file_name"),
    )

    seq: Mapped[int] = mapped_column(Sequence64, primary_key=True, autoincrement=True)
    """Ingestion order (keyset pagination of ListItems)."""
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    dataset_id: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    content_sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    perceptual_hash: Mapped[str] = mapped_column(String(16), default="")
    near_duplicate_of: Mapped[str] = mapped_column(String(64), default="")
    near_duplicate_similarity: Mapped[float] = mapped_column(Float, default=0.0)
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    source_uri: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    original_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """De-identified images: sha256 of the uploaded bytes (the exact-duplicate key; the original is
    the private blob ``originals/<id>``); ``content_sha256`` is then the blurred media. NULL otherwise."""
    blurred_regions: Mapped[int] = mapped_column(Integer, default=0)


class SensitiveRegionRow(Base):
    """One region blurred in the stored media of a de-identified image, in the order given."""

    __tablename__ = "sensitive_regions"

    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    width: Mapped[float] = mapped_column(Float)
    height: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(256))


class ItemHashBand(Base):
    """One of the five bands of an image's perceptual hash: candidates for near-duplicates are the
    items whose band equals a probe key (pigeonhole, see ``domain.BAND_WIDTHS``), so the lookup
    never scans the dataset."""

    __tablename__ = "item_hash_bands"
    __table_args__ = (Index("ix_item_hash_bands_lookup", "organization_id", "dataset_id", "band_key"),)

    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    band: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    dataset_id: Mapped[str] = mapped_column(String(64))
    band_key: Mapped[int] = mapped_column(Integer)
    """``band << 16 | value``: one indexed column, so a lookup is a single ``IN`` of 69 probe keys."""
    perceptual_hash: Mapped[str] = mapped_column(String(16))


class IdempotencyKey(Base):
    """A create's request_id and what it produced (JSON), per organization and method."""

    __tablename__ = "idempotency_keys"

    organization_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    result_json: Mapped[str] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ImportJobRow(Base):
    """A long-running import: the upload is a blob (``upload_key``) until the job ends."""

    __tablename__ = "import_jobs"
    __table_args__ = (
        Index("ix_import_jobs_org_dataset_seq", "organization_id", "dataset_id", "seq"),
        Index("ix_import_jobs_state_seq", "state", "seq"),
    )

    seq: Mapped[int] = mapped_column(Sequence64, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(String(128))
    dataset_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    schema_version: Mapped[int] = mapped_column(Integer, default=0)
    """The project's schema version the labels are checked against (0: a job from before the check)."""
    label_schema: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    """That schema (``tasks.v1.LabelSchema``), read at CreateImport: the worker has no caller to ask as."""
    format: Mapped[int] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    upload_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    matched_item_count: Mapped[int] = mapped_column(Integer, default=0)
    prediction_count: Mapped[int] = mapped_column(Integer, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    errors_json: Mapped[str] = mapped_column(Text, default="[]")
    """The first refused rows: ``[{"where", "reason", "message"}, ...]``."""
    failure_reason: Mapped[str] = mapped_column(String(64), default="")
    failure_message: Mapped[str] = mapped_column(Text, default="")
    lease_owner: Mapped[str] = mapped_column(String(64), default="")
    lease_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
