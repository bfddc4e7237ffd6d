"""Item state transitions that both event handlers and RPCs drive: aggregate, accept, open a review.

Each function runs inside the caller's transaction and writes its events to the outbox there.
"""

from __future__ import annotations

from datetime import UTC, datetime

from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.events.v1 import events_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import new_id
from annocloud_server.qa import domain, store
from annocloud_server.qa.models import (
    ACCEPTED,
    COLLECTING,
    IN_REVIEW,
    REWORK,
    AcceptedLabelRow,
    ItemRow,
    ProjectRow,
    ReviewRow,
    VoteRow,
)


def now() -> datetime:
    return datetime.now(UTC)


def item_id_of(item: str) -> str:
    return item.rsplit("/", 1)[-1]


def accepted_to_proto(row: AcceptedLabelRow) -> qa_pb2.AcceptedLabel:
    message = qa_pb2.AcceptedLabel(
        name=f"projects/{row.project_id}/acceptedLabels/{row.item_id}",
        item=row.item,
        labels=pb.Labels.FromString(row.labels),
        agreement=row.agreement,
        vote_count=row.vote_count,
        schema_version=row.schema_version,
        accepted_by=row.accepted_by,
    )
    message.accept_time.FromDatetime(row.accept_time)
    return message


def review_to_proto(row: ReviewRow) -> qa_pb2.Review:
    message = qa_pb2.Review.FromString(row.votes)
    message.name = f"projects/{row.project_id}/reviews/{row.review_id}"
    message.item = row.item
    message.reason = row.reason  # type: ignore[assignment]
    message.state = row.state  # type: ignore[assignment]
    message.proposal.CopyFrom(pb.Labels.FromString(row.proposal))
    message.agreement = row.agreement
    message.decided_by = row.decided_by
    message.create_time.FromDatetime(row.create_time)
    return message


def schema_of(
    session: Session, *, organization_id: str, project_id: str, version: int
) -> tasks_pb2.LabelSchema | None:
    raw = store.get_schema(session, organization_id=organization_id, project_id=project_id, version=version)
    return tasks_pb2.LabelSchema.FromString(raw) if raw is not None else None


def accept(
    session: Session,
    events: EventWriter,
    *,
    item: ItemRow,
    labels: pb.Labels,
    agreement: float,
    vote_count: int,
    schema_version: int,
    accepted_by: str,
) -> AcceptedLabelRow:
    """Stores the accepted label, closes the item and emits ItemAccepted."""
    row = store.add_accepted(
        session,
        row=AcceptedLabelRow(
            organization_id=item.organization_id,
            project_id=item.project_id,
            item_id=item_id_of(item.item),
            item=item.item,
            labels=labels.SerializeToString(deterministic=True),
            agreement=agreement,
            vote_count=vote_count,
            schema_version=schema_version,
            accept_time=now(),
            accepted_by=accepted_by,
        ),
    )
    item.status = ACCEPTED
    accepted = accepted_to_proto(row)
    events.emit(
        session,
        tenant_id=item.organization_id,
        resource_name=accepted.name,
        aggregate_version=1,
        payload=events_pb2.ItemAccepted(
            accepted_label=accepted, item=events_pb2.ItemContext.FromString(item.context)
        ),
    )
    return row


def _votes_snapshot(votes: list[VoteRow]) -> bytes:
    snapshot = qa_pb2.Review(
        votes=[
            qa_pb2.Vote(annotation=v.annotation, annotator=v.annotator, labels=pb.Labels.FromString(v.labels))
            for v in votes
        ]
    )
    return snapshot.SerializeToString(deterministic=True)


def open_review(
    session: Session,
    events: EventWriter,
    *,
    item: ItemRow,
    votes: list[VoteRow],
    result: domain.Aggregate,
    reason: int,
    schema_version: int,
) -> ReviewRow:
    """Opens a PENDING review of the item's proposal and emits ItemSentToReview."""
    row = store.add_review(
        session,
        row=ReviewRow(
            organization_id=item.organization_id,
            project_id=item.project_id,
            review_id=new_id(),
            item=item.item,
            reason=reason,
            state=qa_pb2.REVIEW_STATE_PENDING,
            proposal=result.labels.SerializeToString(deterministic=True),
            agreement=result.agreement,
            votes=_votes_snapshot(votes),
            schema_version=schema_version,
            create_time=now(),
            decided_by="",
        ),
    )
    item.status = IN_REVIEW
    review = review_to_proto(row)
    events.emit(
        session,
        tenant_id=item.organization_id,
        resource_name=review.name,
        aggregate_version=1,
        payload=events_pb2.ItemSentToReview(review=review),
    )
    return row


def settle(session: Session, events: EventWriter, *, project: ProjectRow, item: ItemRow) -> None:
    """Aggregates an undecided item once it has enough active votes: accept it or open a review."""
    if item.status not in (COLLECTING, REWORK):
        return
    votes = list(
        store.active_votes(
            session, organization_id=item.organization_id, project_id=item.project_id, item=item.item
        )
    )
    if len(votes) < max(item.redundancy, 1):
        return
    labels = [pb.Labels.FromString(v.labels) for v in votes]
    schema_version = max(v.schema_version for v in votes)
    schema = schema_of(
        session, organization_id=item.organization_id, project_id=item.project_id, version=schema_version
    )
    mode = schema.classification_mode if schema is not None else domain.infer_mode(labels)
    result = domain.aggregate(labels, mode=mode)
    reason = domain.decide(result, policy=project.review_policy, min_agreement=project.min_agreement)
    if reason == qa_pb2.REVIEW_REASON_UNSPECIFIED:
        accept(
            session,
            events,
            item=item,
            labels=result.labels,
            agreement=result.agreement,
            vote_count=len(votes),
            schema_version=schema_version,
            accepted_by="auto",
        )
    else:
        open_review(
            session,
            events,
            item=item,
            votes=votes,
            result=result,
            reason=reason,
            schema_version=schema_version,
        )
