"""Review decisions: approve (pass to the next stage or accept), reject (rework, or revoke after an
audit), escalate to an expert. Every decision emits ``ReviewDecided``.

Each function runs inside the caller's transaction; the servicer authorizes and parses first.
"""

from __future__ import annotations

from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.qa.v1 import qa_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.errors import FailedPrecondition, InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.labels import ItemFacts, validate_labels
from annocloud_server.qa import stages, store, workflow
from annocloud_server.qa.models import (
    ACCEPTED,
    REJECTED,
    REWORK,
    AcceptedLabelRow,
    ItemRow,
    ProjectRow,
    ReviewRow,
    VoteRow,
)


def load_pending(
    session: Session, *, organization_id: str, project_id: str, review_id: str
) -> tuple[ReviewRow, ItemRow]:
    """A PENDING review and its item (FAILED_PRECONDITION otherwise)."""
    review = store.get_review(
        session, organization_id=organization_id, project_id=project_id, review_id=review_id
    )
    if review.state != qa_pb2.REVIEW_STATE_PENDING:
        state = qa_pb2.ReviewState.Name(review.state)  # type: ignore[arg-type]
        raise FailedPrecondition(
            f"review projects/{project_id}/reviews/{review_id} is {state}, not PENDING",
            reason="REVIEW_NOT_PENDING",
        )
    item = store.get_item(session, organization_id=organization_id, project_id=project_id, item=review.item)
    if item is None:
        raise FailedPrecondition(f"item {review.item} is unknown", reason="ITEM_UNKNOWN")
    return review, item


def authorize(principal: common_pb2.Principal, review: ReviewRow) -> None:
    """The caller may decide the review's stage (and, at PEER, did not annotate the item)."""
    annotators = {v.annotator for v in qa_pb2.Review.FromString(review.votes).votes}
    stages.check_decider(
        roles=list(principal.roles), subject=principal.subject, stage=review.stage, annotators=annotators
    )


def validate_override(session: Session, *, review: ReviewRow, item: ItemRow, labels: pb.Labels) -> None:
    """Override labels must fit the review's schema version and the item."""
    schema = workflow.schema_of(
        session,
        organization_id=review.organization_id,
        project_id=review.project_id,
        version=review.schema_version,
    )
    if schema is None:
        raise FailedPrecondition(
            f"schema version {review.schema_version} is not known to qa yet", reason="SCHEMA_UNKNOWN"
        )
    context = events_pb2.ItemContext.FromString(item.context)
    facts = ItemFacts(
        media_type=context.media_type, width=context.width, height=context.height, text=context.text
    )
    validate_labels(labels, schema, facts)


def approve(
    session: Session,
    events: EventWriter,
    *,
    project: ProjectRow,
    review: ReviewRow,
    item: ItemRow,
    labels: pb.Labels | None,
    decided_by: str,
) -> AcceptedLabelRow | None:
    """PASSED to the next stage (returns None), or APPROVED: the item is accepted (or, audited while
    accepted, stays accepted; returns its accepted label)."""
    if item.status == ACCEPTED:
        if labels is not None:
            raise InvalidArgument(
                "an audit of an accepted item approves it as it is", reason="LABELS_NOT_ALLOWED"
            )
        review.state = qa_pb2.REVIEW_STATE_APPROVED
        review.decided_by = decided_by
        workflow.decided(
            session, events, review=review, decision=qa_pb2.REVIEW_DECISION_APPROVED, decided_by=decided_by
        )
        return store.get_accepted(
            session,
            organization_id=item.organization_id,
            project_id=item.project_id,
            item_id=workflow.item_id_of(item.item),
        )
    if labels is not None:
        validate_override(session, review=review, item=item, labels=labels)
    elif review.reason == qa_pb2.REVIEW_REASON_TIE:
        raise InvalidArgument("a tied review needs the labels to accept", reason="LABELS_REQUIRED")
    proposal = labels if labels is not None else pb.Labels.FromString(review.proposal)
    review.decided_by = decided_by
    following = stages.next_stage(review.stage, stages.configured_stages(workflow.settings_of(project)))
    if following is not None:
        review.state = qa_pb2.REVIEW_STATE_PASSED
        workflow.decided(
            session, events, review=review, decision=qa_pb2.REVIEW_DECISION_PASSED, decided_by=decided_by
        )
        workflow.follow_up(
            session,
            events,
            review=review,
            item=item,
            stage=following,
            reason=qa_pb2.REVIEW_REASON_NEXT_STAGE,
            proposal=proposal,
        )
        return None
    review.state = qa_pb2.REVIEW_STATE_APPROVED
    workflow.decided(
        session, events, review=review, decision=qa_pb2.REVIEW_DECISION_APPROVED, decided_by=decided_by
    )
    return workflow.accept(
        session,
        events,
        project=project,
        item=item,
        labels=proposal,
        agreement=review.agreement,
        confidence=review.confidence,
        votes=workflow.snapshot_votes(session, review),
        schema_version=review.schema_version,
        accepted_by=decided_by,
        audit=review.stage != stages.AUDIT,
    )


def reject(
    session: Session,
    events: EventWriter,
    *,
    review: ReviewRow,
    item: ItemRow,
    vote: VoteRow,
    reason: str,
    reason_code: str,
    decided_by: str,
) -> None:
    """The vote goes back to its annotator; an audit of an accepted item also revokes the acceptance."""
    context = events_pb2.ItemContext.FromString(item.context)
    if item.status == ACCEPTED:
        accepted = store.get_accepted(
            session,
            organization_id=item.organization_id,
            project_id=item.project_id,
            item_id=workflow.item_id_of(item.item),
        )
        name = workflow.accepted_to_proto(accepted).name
        store.delete_accepted(session, row=accepted)
        events.emit(
            session,
            tenant_id=item.organization_id,
            resource_name=name,
            aggregate_version=2,
            payload=events_pb2.AcceptanceRevoked(
                accepted_label=name,
                item=context,
                revoked=workflow.credited([vote]),
                reason_code=reason_code,
                reason=reason,
                decided_by=decided_by,
            ),
        )
    vote.state = REJECTED
    item.status = REWORK
    item.rework_stage = review.stage
    item.rework_round += 1
    review.state = qa_pb2.REVIEW_STATE_REWORK
    review.decided_by = decided_by
    review.reason_code = reason_code
    review.rework_round = item.rework_round
    store.worker_stats(
        session,
        organization_id=item.organization_id,
        project_id=item.project_id,
        worker=vote.annotator,
        worker_organization=vote.annotator_organization,
    ).rejected += 1
    events.emit(
        session,
        tenant_id=item.organization_id,
        resource_name=vote.annotation,
        aggregate_version=vote.revision,
        payload=events_pb2.ReworkRequested(
            annotation=vote.annotation,
            task=vote.task,
            annotator=vote.annotator,
            reason=reason,
            item=context,
            reason_code=reason_code,
        ),
    )
    workflow.decided(
        session,
        events,
        review=review,
        decision=qa_pb2.REVIEW_DECISION_REJECTED,
        decided_by=decided_by,
        annotation=vote.annotation,
    )


def escalate(
    session: Session, events: EventWriter, *, review: ReviewRow, item: ItemRow, note: str, decided_by: str
) -> ReviewRow:
    """The review is ESCALATED; a new PENDING review at stage EXPERT decides instead."""
    if review.stage == stages.EXPERT:
        raise FailedPrecondition("an expert review cannot be escalated further", reason="ALREADY_EXPERT")
    review.state = qa_pb2.REVIEW_STATE_ESCALATED
    review.decided_by = decided_by
    review.escalation_note = note
    workflow.decided(
        session, events, review=review, decision=qa_pb2.REVIEW_DECISION_ESCALATED, decided_by=decided_by
    )
    return workflow.follow_up(
        session,
        events,
        review=review,
        item=item,
        stage=stages.EXPERT,
        reason=qa_pb2.REVIEW_REASON_ESCALATED,
        escalation_note=note,
    )
