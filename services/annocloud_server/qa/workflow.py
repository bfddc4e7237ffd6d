"""Item state transitions that both event handlers and RPCs drive: aggregate, accept, open a review.

Each function runs inside the caller's transaction and writes its events to the outbox there.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime

from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.events.v1 import events_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import new_id
from annocloud_server.crowd.classes import Posterior
from annocloud_server.crowd.overlap import OverlapPolicy, Step, next_step
from annocloud_server.qa import domain, scoring, stages, store
from annocloud_server.qa.models import (
    ACCEPTED,
    ACTIVE,
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
        confidence=row.confidence,
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
    message.stage = row.stage  # type: ignore[assignment]
    message.reason_code = row.reason_code
    message.escalation_note = row.escalation_note
    message.confidence = row.confidence
    message.rework_round = row.rework_round
    message.create_time.FromDatetime(row.create_time)
    return message


def settings_of(project: ProjectRow) -> tasks_pb2.QualitySettings:
    return tasks_pb2.QualitySettings.FromString(project.quality or b"")


def schema_of(
    session: Session, *, organization_id: str, project_id: str, version: int
) -> tasks_pb2.LabelSchema | None:
    raw = store.get_schema(session, organization_id=organization_id, project_id=project_id, version=version)
    return tasks_pb2.LabelSchema.FromString(raw) if raw is not None else None


_RANDOM = random.SystemRandom()
"""Audit sampling draws from the OS, so workers cannot predict which accepted items are audited."""


def sampled(rate: float) -> bool:
    """True with probability ``rate`` (exactly never at 0 and always at 1)."""
    if rate <= 0:
        return False
    return rate >= 1 or _RANDOM.random() < rate


def credited(votes: Sequence[VoteRow]) -> list[events_pb2.CreditedWork]:
    return [
        events_pb2.CreditedWork(
            task=v.task,
            annotation=v.annotation,
            annotator=v.annotator,
            annotator_organization=v.annotator_organization,
        )
        for v in votes
    ]


def reliabilities(
    session: Session, *, organization_id: str, project_id: str, workers: Sequence[str]
) -> dict[str, float]:
    """Reliability of each worker (the default for workers without evidence)."""
    found = {
        row.worker: scoring.reliability(
            gold_correct=row.gold_correct,
            gold_answered=row.gold_answered,
            agreed=row.agreed,
            accepted_votes=row.accepted_votes,
        )
        for row in store.all_worker_stats(
            session, organization_id=organization_id, project_id=project_id, workers=workers
        )
    }
    return {w: found.get(w, scoring.DEFAULT_RELIABILITY) for w in workers}


def _record_consensus(
    session: Session, *, item: ItemRow, labels: pb.Labels, votes: Sequence[VoteRow]
) -> None:
    """Each credited vote counts toward its worker's agreement with accepted labels."""
    for vote in votes:
        stats = store.worker_stats(
            session,
            organization_id=item.organization_id,
            project_id=item.project_id,
            worker=vote.annotator,
            worker_organization=vote.annotator_organization,
        )
        stats.accepted_votes += 1
        stats.agreed += int(scoring.labels_match(pb.Labels.FromString(vote.labels), labels))


def snapshot(votes: Sequence[VoteRow]) -> bytes:
    """A serialized ``Review`` carrying only the votes (what a review shows of them)."""
    message = qa_pb2.Review(
        votes=[
            qa_pb2.Vote(annotation=v.annotation, annotator=v.annotator, labels=pb.Labels.FromString(v.labels))
            for v in votes
        ]
    )
    return message.SerializeToString(deterministic=True)


def snapshot_votes(session: Session, review: ReviewRow) -> list[VoteRow]:
    """The vote rows of a review's snapshot that are still active."""
    rows = []
    for vote in qa_pb2.Review.FromString(review.votes).votes:
        row = store.find_vote(session, organization_id=review.organization_id, annotation=vote.annotation)
        if row is not None and row.state == ACTIVE:
            rows.append(row)
    return rows


def open_review(
    session: Session,
    events: EventWriter,
    *,
    item: ItemRow,
    votes: bytes,
    proposal: pb.Labels,
    agreement: float,
    confidence: float,
    reason: int,
    stage: int,
    schema_version: int,
    escalation_note: str = "",
) -> ReviewRow:
    """Opens a PENDING review and emits ItemSentToReview; the item is IN_REVIEW unless already accepted
    (an audit leaves it ACCEPTED)."""
    row = store.add_review(
        session,
        row=ReviewRow(
            organization_id=item.organization_id,
            project_id=item.project_id,
            review_id=new_id(),
            item=item.item,
            reason=reason,
            state=qa_pb2.REVIEW_STATE_PENDING,
            proposal=proposal.SerializeToString(deterministic=True),
            agreement=agreement,
            votes=votes,
            schema_version=schema_version,
            create_time=now(),
            decided_by="",
            stage=stage,
            reason_code="",
            escalation_note=escalation_note,
            confidence=confidence,
            rework_round=item.rework_round,
        ),
    )
    if item.status != ACCEPTED:
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


def follow_up(
    session: Session,
    events: EventWriter,
    *,
    review: ReviewRow,
    item: ItemRow,
    stage: int,
    reason: int,
    proposal: pb.Labels | None = None,
    escalation_note: str = "",
) -> ReviewRow:
    """A new review of the same votes and proposal at another stage (next stage, escalation)."""
    return open_review(
        session,
        events,
        item=item,
        votes=review.votes,
        proposal=proposal if proposal is not None else pb.Labels.FromString(review.proposal),
        agreement=review.agreement,
        confidence=review.confidence,
        reason=reason,
        stage=stage,
        schema_version=review.schema_version,
        escalation_note=escalation_note,
    )


def decided(
    session: Session,
    events: EventWriter,
    *,
    review: ReviewRow,
    decision: int,
    decided_by: str,
    annotation: str = "",
) -> None:
    """Emits ReviewDecided for ``review`` as it is after the decision."""
    message = review_to_proto(review)
    events.emit(
        session,
        tenant_id=review.organization_id,
        resource_name=message.name,
        aggregate_version=1,
        payload=events_pb2.ReviewDecided(
            review=message,
            decision=decision,  # type: ignore[arg-type]
            decided_by=decided_by,
            annotation=annotation,
        ),
    )


def accept(
    session: Session,
    events: EventWriter,
    *,
    project: ProjectRow,
    item: ItemRow,
    labels: pb.Labels,
    agreement: float,
    confidence: float,
    votes: Sequence[VoteRow],
    schema_version: int,
    accepted_by: str,
    audit: bool = True,
) -> AcceptedLabelRow:
    """Stores the accepted label, closes the item, emits ItemAccepted with the credited work, counts
    the votes toward their workers' consensus, and samples the item for audit (unless ``audit`` is off)."""
    row = store.add_accepted(
        session,
        row=AcceptedLabelRow(
            organization_id=item.organization_id,
            project_id=item.project_id,
            item_id=item_id_of(item.item),
            item=item.item,
            labels=labels.SerializeToString(deterministic=True),
            agreement=agreement,
            vote_count=len(votes),
            schema_version=schema_version,
            accept_time=now(),
            accepted_by=accepted_by,
            confidence=confidence,
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
            accepted_label=accepted,
            item=events_pb2.ItemContext.FromString(item.context),
            credited=credited(votes),
        ),
    )
    _record_consensus(session, item=item, labels=labels, votes=votes)
    if audit and sampled(settings_of(project).audit_rate):
        open_review(
            session,
            events,
            item=item,
            votes=snapshot(votes),
            proposal=labels,
            agreement=agreement,
            confidence=confidence,
            reason=qa_pb2.REVIEW_REASON_AUDIT,
            stage=stages.AUDIT,
            schema_version=schema_version,
        )
    return row


def overlap_policy(settings: tasks_pb2.QualitySettings) -> OverlapPolicy | None:
    """The project's dynamic overlap (sanitized), or None for a fixed redundancy."""
    if not settings.HasField("dynamic_overlap") or settings.dynamic_overlap.max_labels <= 0:
        return None
    overlap = settings.dynamic_overlap
    low = max(overlap.min_labels, 1)
    threshold = overlap.confidence_threshold if 0 < overlap.confidence_threshold <= 1 else 1.0
    return OverlapPolicy(low, max(overlap.max_labels, low), threshold)


def _score(
    session: Session, *, project: ProjectRow, item: ItemRow, votes: Sequence[VoteRow]
) -> tuple[scoring.Scored, int]:
    labels = [pb.Labels.FromString(v.labels) for v in votes]
    schema_version = max(v.schema_version for v in votes)
    schema = schema_of(
        session, organization_id=item.organization_id, project_id=item.project_id, version=schema_version
    )
    mode = schema.classification_mode if schema is not None else domain.infer_mode(labels)
    workers = [v.annotator for v in votes]
    scored = scoring.score(
        list(zip(workers, labels, strict=True)),
        mode=mode,
        classes=[c.name for c in schema.classes] if schema is not None else [],
        reliabilities=reliabilities(
            session, organization_id=item.organization_id, project_id=item.project_id, workers=workers
        ),
        method=settings_of(project).aggregation,
    )
    return scored, schema_version


def _assess_difficulty(
    session: Session,
    events: EventWriter,
    *,
    project: ProjectRow,
    item: ItemRow,
    votes: int,
    scored: scoring.Scored,
) -> None:
    """Disagreeing votes tell tasks the item is hard (once per item and vote count)."""
    if votes < 2 or votes <= item.difficulty_votes:
        return
    if not scoring.disagrees(scored.result, min_agreement=project.min_agreement):
        return
    item.difficulty_votes = votes
    events.emit(
        session,
        tenant_id=item.organization_id,
        resource_name=f"projects/{item.project_id}",
        aggregate_version=votes,
        payload=events_pb2.ItemDifficultyAssessed(
            project=f"projects/{item.project_id}",
            item=item.item,
            difficulty=max(0.0, min(1.0, 1.0 - scored.result.agreement)),
            source="disagreement",
        ),
    )


def _ask_more(session: Session, events: EventWriter, *, item: ItemRow, votes: int, confidence: float) -> None:
    wanted = votes + 1
    if item.labels_requested >= wanted:
        return
    item.labels_requested = wanted
    events.emit(
        session,
        tenant_id=item.organization_id,
        resource_name=f"projects/{item.project_id}",
        aggregate_version=wanted,
        payload=events_pb2.MoreLabelsRequested(
            project=f"projects/{item.project_id}",
            item=events_pb2.ItemContext.FromString(item.context),
            labels_wanted=wanted,
            confidence=confidence,
        ),
    )


def settle(session: Session, events: EventWriter, *, project: ProjectRow, item: ItemRow) -> None:
    """Aggregates an undecided item after a vote: flag disagreement, then once it has enough votes
    accept it, ask for more labels (dynamic overlap) or open a review."""
    if item.status not in (COLLECTING, REWORK):
        return
    votes = list(
        store.active_votes(
            session, organization_id=item.organization_id, project_id=item.project_id, item=item.item
        )
    )
    settings = settings_of(project)
    overlap = overlap_policy(settings)
    needed = overlap.min_labels if overlap is not None else max(item.redundancy, 1)
    if not votes or (len(votes) < 2 and len(votes) < needed):
        return
    scored, schema_version = _score(session, project=project, item=item, votes=votes)
    _assess_difficulty(session, events, project=project, item=item, votes=len(votes), scored=scored)
    if len(votes) < needed:
        return
    result = scored.result
    configured = stages.configured_stages(settings)

    def review(reason: int, stage: int) -> None:
        open_review(
            session,
            events,
            item=item,
            votes=snapshot(votes),
            proposal=result.labels,
            agreement=result.agreement,
            confidence=scored.confidence,
            reason=reason,
            stage=stage,
            schema_version=schema_version,
        )

    if (
        item.status == REWORK
        and item.rework_stage
        and (configured or item.rework_stage in (stages.EXPERT, stages.AUDIT))
    ):
        review(qa_pb2.REVIEW_REASON_REWORKED, item.rework_stage)
        return
    reason = domain.decide(result, policy=project.review_policy, min_agreement=project.min_agreement)
    if overlap is not None:
        step = next_step(Posterior("", scored.confidence, {}), len(votes), overlap)
        if step == Step.ACCEPT and result.tie:
            step = Step.ASK_MORE if len(votes) < overlap.max_labels else Step.REVIEW
        if step == Step.ASK_MORE:
            _ask_more(session, events, item=item, votes=len(votes), confidence=scored.confidence)
            return
        if step == Step.REVIEW:
            reason = int(qa_pb2.REVIEW_REASON_TIE if result.tie else qa_pb2.REVIEW_REASON_LOW_CONFIDENCE)
    if configured:
        review(reason or qa_pb2.REVIEW_REASON_POLICY, configured[0])
    elif reason == qa_pb2.REVIEW_REASON_UNSPECIFIED:
        accept(
            session,
            events,
            project=project,
            item=item,
            labels=result.labels,
            agreement=result.agreement,
            confidence=scored.confidence,
            votes=votes,
            schema_version=schema_version,
            accepted_by="auto",
        )
    else:
        review(reason, stages.PEER)
