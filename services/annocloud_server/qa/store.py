"""Repository functions of the qa service; every query is scoped by organization."""

from __future__ import annotations

from collections.abc import Sequence

from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annocloud_server.common.errors import NotFound
from annocloud_server.qa.models import (
    ACTIVE,
    COLLECTING,
    GOLD,
    AcceptedLabelRow,
    GoldItemRow,
    ItemRow,
    ProjectRow,
    ReviewRow,
    SchemaRow,
    VoteRow,
    WorkerStatsRow,
)

DEFAULT_MIN_AGREEMENT = 0.0


def find_project(session: Session, *, organization_id: str, project_id: str) -> ProjectRow | None:
    return session.scalars(
        select(ProjectRow).where(
            ProjectRow.organization_id == organization_id, ProjectRow.project_id == project_id
        )
    ).first()


def get_project(session: Session, *, organization_id: str, project_id: str) -> ProjectRow:
    row = find_project(session, organization_id=organization_id, project_id=project_id)
    if row is None:
        raise NotFound(f"project projects/{project_id} not found")
    return row


def upsert_project(
    session: Session,
    *,
    organization_id: str,
    project_id: str,
    redundancy: int,
    review_policy: int,
    min_agreement: float,
    quality: bytes = b"",
) -> ProjectRow:
    row = find_project(session, organization_id=organization_id, project_id=project_id)
    if row is None:
        row = ProjectRow(organization_id=organization_id, project_id=project_id)
        session.add(row)
    row.redundancy = max(redundancy, 1)
    row.review_policy = review_policy
    row.min_agreement = min_agreement
    row.quality = quality
    session.flush()
    return row


def projects_with_id(session: Session, *, project_id: str) -> Sequence[ProjectRow]:
    """Every organization's project with this id (ids are globally unique; for vendor callers)."""
    return session.scalars(select(ProjectRow).where(ProjectRow.project_id == project_id)).all()


def ensure_project(session: Session, *, organization_id: str, project_id: str, redundancy: int) -> ProjectRow:
    """The project, created with defaults when its ProjectCreated event has not arrived yet."""
    row = find_project(session, organization_id=organization_id, project_id=project_id)
    if row is not None:
        return row
    return upsert_project(
        session,
        organization_id=organization_id,
        project_id=project_id,
        redundancy=redundancy,
        review_policy=tasks_pb2.REVIEW_POLICY_DISAGREEMENT,
        min_agreement=DEFAULT_MIN_AGREEMENT,
    )


def put_schema(
    session: Session, *, organization_id: str, project_id: str, version: int, schema: bytes
) -> None:
    """Stores a schema version once (versions are immutable)."""
    if get_schema(session, organization_id=organization_id, project_id=project_id, version=version) is None:
        session.add(
            SchemaRow(organization_id=organization_id, project_id=project_id, version=version, schema=schema)
        )
        session.flush()


def get_schema(session: Session, *, organization_id: str, project_id: str, version: int) -> bytes | None:
    row = session.scalars(
        select(SchemaRow).where(
            SchemaRow.organization_id == organization_id,
            SchemaRow.project_id == project_id,
            SchemaRow.version == version,
        )
    ).first()
    return row.schema if row else None


def latest_schema(session: Session, *, organization_id: str, project_id: str) -> bytes | None:
    row = session.scalars(
        select(SchemaRow)
        .where(SchemaRow.organization_id == organization_id, SchemaRow.project_id == project_id)
        .order_by(SchemaRow.version.desc())
    ).first()
    return row.schema if row else None


def ensure_item(
    session: Session, *, organization_id: str, project_id: str, item: str, redundancy: int, context: bytes
) -> ItemRow:
    row = get_item(session, organization_id=organization_id, project_id=project_id, item=item)
    if row is None:
        row = ItemRow(
            organization_id=organization_id,
            project_id=project_id,
            item=item,
            redundancy=max(redundancy, 1),
            status=COLLECTING,
            context=context,
        )
        session.add(row)
        session.flush()
    return row


def get_item(session: Session, *, organization_id: str, project_id: str, item: str) -> ItemRow | None:
    return session.scalars(
        select(ItemRow).where(
            ItemRow.organization_id == organization_id, ItemRow.project_id == project_id, ItemRow.item == item
        )
    ).first()


def find_vote(session: Session, *, organization_id: str, annotation: str) -> VoteRow | None:
    return session.scalars(
        select(VoteRow).where(VoteRow.organization_id == organization_id, VoteRow.annotation == annotation)
    ).first()


def add_vote(session: Session, *, row: VoteRow) -> VoteRow:
    session.add(row)
    session.flush()
    return row


def active_votes(session: Session, *, organization_id: str, project_id: str, item: str) -> Sequence[VoteRow]:
    return session.scalars(
        select(VoteRow)
        .where(
            VoteRow.organization_id == organization_id,
            VoteRow.project_id == project_id,
            VoteRow.item == item,
            VoteRow.state == ACTIVE,
        )
        .order_by(VoteRow.id)
    ).all()


def project_votes(session: Session, *, organization_id: str, project_id: str) -> Sequence[VoteRow]:
    """Every vote counted in the project (gold answers excluded), in arrival order."""
    return session.scalars(
        select(VoteRow)
        .where(
            VoteRow.organization_id == organization_id,
            VoteRow.project_id == project_id,
            VoteRow.state != GOLD,
        )
        .order_by(VoteRow.id)
    ).all()


def add_review(session: Session, *, row: ReviewRow) -> ReviewRow:
    session.add(row)
    session.flush()
    return row


def get_review(session: Session, *, organization_id: str, project_id: str, review_id: str) -> ReviewRow:
    row = session.scalars(
        select(ReviewRow).where(
            ReviewRow.organization_id == organization_id,
            ReviewRow.project_id == project_id,
            ReviewRow.review_id == review_id,
        )
    ).first()
    if row is None:
        raise NotFound(f"review projects/{project_id}/reviews/{review_id} not found")
    return row


def list_reviews(
    session: Session, *, organization_id: str, project_id: str, state: int, after: int, limit: int
) -> Sequence[ReviewRow]:
    return session.scalars(
        select(ReviewRow)
        .where(
            ReviewRow.organization_id == organization_id,
            ReviewRow.project_id == project_id,
            ReviewRow.state == state,
            ReviewRow.id > after,
        )
        .order_by(ReviewRow.id)
        .limit(limit)
    ).all()


def add_accepted(session: Session, *, row: AcceptedLabelRow) -> AcceptedLabelRow:
    session.add(row)
    session.flush()
    return row


def get_accepted(
    session: Session, *, organization_id: str, project_id: str, item_id: str
) -> AcceptedLabelRow:
    row = session.scalars(
        select(AcceptedLabelRow).where(
            AcceptedLabelRow.organization_id == organization_id,
            AcceptedLabelRow.project_id == project_id,
            AcceptedLabelRow.item_id == item_id,
        )
    ).first()
    if row is None:
        raise NotFound(f"accepted label projects/{project_id}/acceptedLabels/{item_id} not found")
    return row


def list_accepted(
    session: Session, *, organization_id: str, project_id: str, after: int, limit: int
) -> Sequence[AcceptedLabelRow]:
    return session.scalars(
        select(AcceptedLabelRow)
        .where(
            AcceptedLabelRow.organization_id == organization_id,
            AcceptedLabelRow.project_id == project_id,
            AcceptedLabelRow.id > after,
        )
        .order_by(AcceptedLabelRow.id)
        .limit(limit)
    ).all()


def all_accepted(session: Session, *, organization_id: str, project_id: str) -> Sequence[AcceptedLabelRow]:
    return session.scalars(
        select(AcceptedLabelRow).where(
            AcceptedLabelRow.organization_id == organization_id, AcceptedLabelRow.project_id == project_id
        )
    ).all()


def delete_accepted(session: Session, *, row: AcceptedLabelRow) -> None:
    session.delete(row)
    session.flush()


def find_gold(session: Session, *, organization_id: str, project_id: str, item: str) -> GoldItemRow | None:
    return session.scalars(
        select(GoldItemRow).where(
            GoldItemRow.organization_id == organization_id,
            GoldItemRow.project_id == project_id,
            GoldItemRow.item == item,
        )
    ).first()


def find_gold_by_id(
    session: Session, *, organization_id: str, project_id: str, gold_id: str
) -> GoldItemRow | None:
    return session.scalars(
        select(GoldItemRow).where(
            GoldItemRow.organization_id == organization_id,
            GoldItemRow.project_id == project_id,
            GoldItemRow.gold_id == gold_id,
        )
    ).first()


def add_gold(session: Session, *, row: GoldItemRow) -> GoldItemRow:
    session.add(row)
    session.flush()
    return row


def list_gold(
    session: Session, *, organization_id: str, project_id: str, after: int, limit: int
) -> Sequence[GoldItemRow]:
    return session.scalars(
        select(GoldItemRow)
        .where(
            GoldItemRow.organization_id == organization_id,
            GoldItemRow.project_id == project_id,
            GoldItemRow.id > after,
        )
        .order_by(GoldItemRow.id)
        .limit(limit)
    ).all()


def worker_stats(
    session: Session, *, organization_id: str, project_id: str, worker: str, worker_organization: str
) -> WorkerStatsRow:
    """The worker's evidence row in the project, created empty on first use."""
    row = session.scalars(
        select(WorkerStatsRow).where(
            WorkerStatsRow.organization_id == organization_id,
            WorkerStatsRow.project_id == project_id,
            WorkerStatsRow.worker == worker,
        )
    ).first()
    if row is None:
        row = WorkerStatsRow(
            organization_id=organization_id,
            project_id=project_id,
            worker=worker,
            worker_organization=worker_organization,
            gold_answered=0,
            gold_correct=0,
            accepted_votes=0,
            agreed=0,
            rejected=0,
        )
        session.add(row)
        session.flush()
    return row


def all_worker_stats(
    session: Session, *, organization_id: str, project_id: str, workers: Sequence[str] | None = None
) -> Sequence[WorkerStatsRow]:
    query = select(WorkerStatsRow).where(
        WorkerStatsRow.organization_id == organization_id, WorkerStatsRow.project_id == project_id
    )
    if workers is not None:
        query = query.where(WorkerStatsRow.worker.in_(list(workers)))
    return session.scalars(query.order_by(WorkerStatsRow.worker)).all()


def quality(
    session: Session, *, organization_id: str, project_id: str
) -> tuple[int, int, float, int, float, float]:
    """(accepted items, pending reviews, mean agreement of accepted items, annotations counted,
    mean confidence of accepted items, mean votes per accepted item)."""
    accepted, mean, confidence, per_item = session.execute(
        select(
            func.count(AcceptedLabelRow.id),
            func.avg(AcceptedLabelRow.agreement),
            func.avg(AcceptedLabelRow.confidence),
            func.avg(AcceptedLabelRow.vote_count),
        ).where(
            AcceptedLabelRow.organization_id == organization_id, AcceptedLabelRow.project_id == project_id
        )
    ).one()
    pending = session.execute(
        select(func.count(ReviewRow.id)).where(
            ReviewRow.organization_id == organization_id,
            ReviewRow.project_id == project_id,
            ReviewRow.state == qa_pb2.REVIEW_STATE_PENDING,
        )
    ).scalar_one()
    votes = session.execute(
        select(func.count(VoteRow.id)).where(
            VoteRow.organization_id == organization_id,
            VoteRow.project_id == project_id,
            VoteRow.state != GOLD,
        )
    ).scalar_one()
    return (
        int(accepted),
        int(pending),
        float(mean or 0.0),
        int(votes),
        float(confidence or 0.0),
        float(per_item or 0.0),
    )
