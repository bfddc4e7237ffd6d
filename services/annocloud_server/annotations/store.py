"""Repository functions of the annotations service; every query is scoped by organization."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from annocloud_server.annotations.models import AnnotationRow, PredictionRow, RequestRow, RevisionRow
from annocloud_server.common.errors import NotFound


def find_request(session: Session, *, organization_id: str, method: str, request_id: str) -> str | None:
    row = session.scalars(
        select(RequestRow).where(
            RequestRow.organization_id == organization_id,
            RequestRow.method == method,
            RequestRow.request_id == request_id,
        )
    ).first()
    return row.resource_name if row else None


def save_request(
    session: Session, *, organization_id: str, method: str, request_id: str, resource_name: str
) -> None:
    session.add(
        RequestRow(
            organization_id=organization_id, method=method, request_id=request_id, resource_name=resource_name
        )
    )


def annotation_for_task(session: Session, *, organization_id: str, task: str) -> AnnotationRow | None:
    return session.scalars(
        select(AnnotationRow).where(
            AnnotationRow.organization_id == organization_id, AnnotationRow.task == task
        )
    ).first()


def get_annotation(
    session: Session, *, organization_id: str, project_id: str, annotation_id: str
) -> AnnotationRow:
    row = session.scalars(
        select(AnnotationRow).where(
            AnnotationRow.organization_id == organization_id,
            AnnotationRow.project_id == project_id,
            AnnotationRow.annotation_id == annotation_id,
        )
    ).first()
    if row is None:
        raise NotFound(f"annotation projects/{project_id}/annotations/{annotation_id} not found")
    return row


def insert_annotation(session: Session, *, row: AnnotationRow) -> AnnotationRow:
    """Stores a new annotation and its revision 1."""
    session.add(row)
    session.flush()
    session.add(
        RevisionRow(
            organization_id=row.organization_id,
            annotation_pk=row.id,
            revision=row.revision,
            labels=row.labels,
            etag=row.etag,
            revised_by=row.revised_by,
            create_time=row.update_time,
        )
    )
    return row


def add_revision(
    session: Session, *, row: AnnotationRow, labels: bytes, etag: str, revised_by: str, now: datetime
) -> AnnotationRow:
    """Writes the next immutable revision and moves the annotation to it."""
    row.revision += 1
    row.labels = labels
    row.etag = etag
    row.revised_by = revised_by
    row.update_time = now
    session.add(
        RevisionRow(
            organization_id=row.organization_id,
            annotation_pk=row.id,
            revision=row.revision,
            labels=labels,
            etag=etag,
            revised_by=revised_by,
            create_time=now,
        )
    )
    return row


def list_annotations(
    session: Session, *, organization_id: str, project_id: str, item: str, after: int, limit: int
) -> Sequence[AnnotationRow]:
    query = select(AnnotationRow).where(
        AnnotationRow.organization_id == organization_id,
        AnnotationRow.project_id == project_id,
        AnnotationRow.id > after,
    )
    if item:
        query = query.where(AnnotationRow.item == item)
    return session.scalars(query.order_by(AnnotationRow.id).limit(limit)).all()


def list_revisions(session: Session, *, row: AnnotationRow, after: int, limit: int) -> Sequence[RevisionRow]:
    return session.scalars(
        select(RevisionRow)
        .where(
            RevisionRow.organization_id == row.organization_id,
            RevisionRow.annotation_pk == row.id,
            RevisionRow.revision > after,
        )
        .order_by(RevisionRow.revision)
        .limit(limit)
    ).all()


def insert_prediction(session: Session, *, row: PredictionRow) -> PredictionRow:
    session.add(row)
    session.flush()
    return row


def get_prediction(
    session: Session, *, organization_id: str, project_id: str, prediction_id: str
) -> PredictionRow:
    row = session.scalars(
        select(PredictionRow).where(
            PredictionRow.organization_id == organization_id,
            PredictionRow.project_id == project_id,
            PredictionRow.prediction_id == prediction_id,
        )
    ).first()
    if row is None:
        raise NotFound(f"prediction projects/{project_id}/predictions/{prediction_id} not found")
    return row


def list_predictions(
    session: Session, *, organization_id: str, project_id: str, item: str, after: int, limit: int
) -> Sequence[PredictionRow]:
    query = select(PredictionRow).where(
        PredictionRow.organization_id == organization_id,
        PredictionRow.project_id == project_id,
        PredictionRow.id > after,
    )
    if item:
        query = query.where(PredictionRow.item == item)
    return session.scalars(query.order_by(PredictionRow.id).limit(limit)).all()
