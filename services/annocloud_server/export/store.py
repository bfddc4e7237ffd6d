"""Repository functions of the export service; every query is scoped by organization."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from annocloud.export.v1 import export_pb2
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from annocloud_server.common.errors import NotFound
from annocloud_server.common.paging import new_id
from annocloud_server.export.models import AcceptedItem, ExportJob, ExportProject, ExportSchema
from annocloud_server.export.version_store import record_change

PENDING = export_pb2.EXPORT_STATE_PENDING
RUNNING = export_pb2.EXPORT_STATE_RUNNING
DONE = export_pb2.EXPORT_STATE_DONE
FAILED = export_pb2.EXPORT_STATE_FAILED
ADDED = export_pb2.CHANGE_KIND_ADDED
CHANGED = export_pb2.CHANGE_KIND_CHANGED


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- projects and schemas ------------------------------------------------------------------------


def upsert_project(
    session: Session, *, organization_id: str, project_id: str, display_name: str, create_time: datetime
) -> None:
    row = session.get(ExportProject, (organization_id, project_id))
    if row is None:
        session.add(
            ExportProject(
                organization_id=organization_id,
                project_id=project_id,
                display_name=display_name,
                create_time=create_time,
            )
        )
    else:
        row.display_name = display_name


def project_exists(session: Session, *, organization_id: str, project_id: str) -> bool:
    return session.get(ExportProject, (organization_id, project_id)) is not None


def require_project(session: Session, *, organization_id: str, project_id: str) -> None:
    if not project_exists(session, organization_id=organization_id, project_id=project_id):
        raise NotFound(f"project projects/{project_id} not found", reason="PROJECT_NOT_FOUND")


def put_schema(
    session: Session, *, organization_id: str, project_id: str, version: int, schema: bytes
) -> None:
    """Stores a schema version; schema versions are immutable, so a repeat is a no-op."""
    if session.get(ExportSchema, (organization_id, project_id, version)) is None:
        session.add(
            ExportSchema(
                organization_id=organization_id, project_id=project_id, version=version, schema=schema
            )
        )


def latest_schema(session: Session, *, organization_id: str, project_id: str) -> bytes | None:
    """The serialized schema with the highest version, None when no schema was seen."""
    row = session.execute(
        select(ExportSchema.schema)
        .where(ExportSchema.organization_id == organization_id, ExportSchema.project_id == project_id)
        .order_by(ExportSchema.version.desc())
        .limit(1)
    ).first()
    return None if row is None else bytes(row[0])


def schema_at(session: Session, *, organization_id: str, project_id: str, version: int) -> bytes | None:
    """The serialized schema of one version, None when this service never saw it."""
    row = session.get(ExportSchema, (organization_id, project_id, version))
    return None if row is None else bytes(row.schema)


# --- accepted labels -----------------------------------------------------------------------------


def upsert_accepted(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    item: str,
    accept_time: datetime | None,
    accepted_label: bytes,
    item_context: bytes,
) -> bool:
    """Stores or replaces the accepted label of an item and appends the change to the feed;
    False (and no change) when a newer acceptance is stored."""
    row = session.execute(
        select(AcceptedItem).where(
            AcceptedItem.organization_id == organization_id,
            AcceptedItem.project_id == project_id,
            AcceptedItem.item == item,
        )
    ).scalar_one_or_none()
    if row is None:
        session.add(
            AcceptedItem(
                organization_id=organization_id,
                project_id=project_id,
                item=item,
                accept_time=accept_time,
                accepted_label=accepted_label,
                item_context=item_context,
            )
        )
        _record(session, organization_id, project_id, item, ADDED, accepted_label)
        return True
    if (
        row.accept_time is not None
        and accept_time is not None
        and as_utc(accept_time) < as_utc(row.accept_time)
    ):
        return False
    row.accept_time = accept_time
    row.accepted_label = accepted_label
    row.item_context = item_context
    _record(session, organization_id, project_id, item, CHANGED, accepted_label)
    return True


def _record(
    session: Session, organization_id: str, project_id: str, item: str, kind: int, label: bytes
) -> None:
    record_change(
        session,
        organization_id=organization_id,
        project_id=project_id,
        item=item,
        kind=kind,
        accepted_label=label,
        now=utc_now(),
    )


def max_accepted_id(session: Session, *, organization_id: str, project_id: str) -> int:
    value = session.execute(
        select(func.max(AcceptedItem.id)).where(
            AcceptedItem.organization_id == organization_id, AcceptedItem.project_id == project_id
        )
    ).scalar_one()
    return int(value or 0)


def accepted_page(
    session: Session, *, organization_id: str, project_id: str, after_id: int, max_id: int, limit: int
) -> Sequence[tuple[int, str, bytes, bytes]]:
    """(id, item, accepted_label, item_context) rows with after_id < id <= max_id, in id order."""
    rows = session.execute(
        select(AcceptedItem.id, AcceptedItem.item, AcceptedItem.accepted_label, AcceptedItem.item_context)
        .where(
            AcceptedItem.organization_id == organization_id,
            AcceptedItem.project_id == project_id,
            AcceptedItem.id > after_id,
            AcceptedItem.id <= max_id,
        )
        .order_by(AcceptedItem.id)
        .limit(limit)
    ).all()
    return [(int(r[0]), str(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]


# --- export jobs ---------------------------------------------------------------------------------


def find_by_request(session: Session, *, organization_id: str, request_id: str) -> ExportJob | None:
    return session.execute(
        select(ExportJob).where(
            ExportJob.organization_id == organization_id, ExportJob.request_id == request_id
        )
    ).scalar_one_or_none()


def create_export(
    session: Session, *, organization_id: str, project_id: str, export_format: int, request_id: str | None
) -> ExportJob:
    job = ExportJob(
        export_id=new_id(),
        organization_id=organization_id,
        project_id=project_id,
        request_id=request_id,
        format=export_format,
        state=PENDING,
        item_count=0,
        annotation_count=0,
        artifact_size_bytes=0,
        artifact_sha256="",
        artifact_key="",
        error_reason="",
        error_message="",
        create_time=utc_now(),
    )
    session.add(job)
    session.flush()
    return job


def get_export(session: Session, *, organization_id: str, project_id: str, export_id: str) -> ExportJob:
    job = session.execute(
        select(ExportJob).where(
            ExportJob.organization_id == organization_id,
            ExportJob.project_id == project_id,
            ExportJob.export_id == export_id,
        )
    ).scalar_one_or_none()
    if job is None:
        raise NotFound(
            f"export projects/{project_id}/exports/{export_id} not found", reason="EXPORT_NOT_FOUND"
        )
    return job


def list_exports(
    session: Session, *, organization_id: str, project_id: str, before_seq: int | None, limit: int
) -> Sequence[ExportJob]:
    """Newest first; ``before_seq`` is the keyset cursor of the previous page."""
    query = select(ExportJob).where(
        ExportJob.organization_id == organization_id, ExportJob.project_id == project_id
    )
    if before_seq is not None:
        query = query.where(ExportJob.seq < before_seq)
    return session.execute(query.order_by(ExportJob.seq.desc()).limit(limit)).scalars().all()


def claim_next(session: Session, *, owner: str, now: datetime, lease: timedelta) -> ExportJob | None:
    """Takes the oldest PENDING job, or a RUNNING one whose lease ran out (its worker died)."""
    job = session.execute(
        select(ExportJob)
        .where(
            or_(
                ExportJob.state == PENDING,
                and_(
                    ExportJob.state == RUNNING,
                    or_(ExportJob.lease_expire_time.is_(None), ExportJob.lease_expire_time < now),
                ),
            )
        )
        .order_by(ExportJob.seq)
        .limit(1)
        # PostgreSQL: two workers never claim one job (READ COMMITTED would let both update it).
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if job is None:
        return None
    job.state = RUNNING
    job.lease_owner = owner
    job.lease_expire_time = now + lease
    return job


def renew_lease(session: Session, *, seq: int, owner: str, until: datetime) -> bool:
    """Extends the worker's lease; False when another worker took the job."""
    result = session.execute(
        update(ExportJob)
        .where(ExportJob.seq == seq, ExportJob.lease_owner == owner, ExportJob.state == RUNNING)
        .values(lease_expire_time=until)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def owned_job(session: Session, *, seq: int, owner: str) -> ExportJob | None:
    """The job when ``owner`` still holds it RUNNING."""
    return session.execute(
        select(ExportJob).where(
            ExportJob.seq == seq, ExportJob.lease_owner == owner, ExportJob.state == RUNNING
        )
    ).scalar_one_or_none()


def release_job(session: Session, *, seq: int, owner: str) -> None:
    """Puts a job the worker gives up on (shutdown) back to PENDING for the next worker."""
    session.execute(
        update(ExportJob)
        .where(ExportJob.seq == seq, ExportJob.lease_owner == owner, ExportJob.state == RUNNING)
        .values(state=PENDING, lease_owner=None, lease_expire_time=None)
    )
