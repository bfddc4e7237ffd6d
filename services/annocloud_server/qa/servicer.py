"""QaService: reviews, accepted labels and quality figures; thin over store and workflow."""

from __future__ import annotations

import grpc
from annocloud.events.v1 import events_pb2
from annocloud.qa.v1 import qa_pb2 as pb
from annocloud.qa.v1 import qa_pb2_grpc

from annocloud_server.common.auth import READERS, REVIEWERS, Authenticator
from annocloud_server.common.db import Database
from annocloud_server.common.errors import FailedPrecondition, InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.labels import ItemFacts, validate_labels
from annocloud_server.common.paging import decode_token, encode_token, page_size, parse_name
from annocloud_server.qa import store, workflow
from annocloud_server.qa.models import REJECTED, REWORK

MAX_REASON_CHARS = 1000


def _cursor(token: str) -> int:
    after = decode_token(token).get("after", 0)
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
    return after


class QaServicer(qa_pb2_grpc.QaServiceServicer):
    def __init__(self, db: Database, authenticator: Authenticator, events: EventWriter):
        self._db = db
        self._auth = authenticator
        self._events = events

    def ListReviews(
        self, request: pb.ListReviewsRequest, context: grpc.ServicerContext
    ) -> pb.ListReviewsResponse:
        principal = self._auth.require(context, REVIEWERS)
        (project_id,) = parse_name(request.parent, "projects/{}")
        state = request.state or pb.REVIEW_STATE_PENDING
        if state not in pb.ReviewState.values():
            raise InvalidArgument(f"unknown review state {state}", reason="BAD_STATE")
        limit = page_size(request.page_size)
        after = _cursor(request.page_token)
        with self._db.transaction() as session:
            store.get_project(session, organization_id=principal.organization_id, project_id=project_id)
            rows = store.list_reviews(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                state=state,
                after=after,
                limit=limit + 1,
            )
            page = rows[:limit]
            reviews = [workflow.review_to_proto(r) for r in page]
        token = encode_token({"after": page[-1].id}) if len(rows) > limit else ""
        return pb.ListReviewsResponse(reviews=reviews, next_page_token=token)

    def GetReview(self, request: pb.GetReviewRequest, context: grpc.ServicerContext) -> pb.GetReviewResponse:
        principal = self._auth.require(context, REVIEWERS)
        project_id, review_id = parse_name(request.name, "projects/{}/reviews/{}")
        with self._db.transaction() as session:
            row = store.get_review(
                session, organization_id=principal.organization_id, project_id=project_id, review_id=review_id
            )
            return pb.GetReviewResponse(review=workflow.review_to_proto(row))

    def ApproveReview(
        self, request: pb.ApproveReviewRequest, context: grpc.ServicerContext
    ) -> pb.ApproveReviewResponse:
        principal = self._auth.require(context, REVIEWERS)
        org = principal.organization_id
        project_id, review_id = parse_name(request.name, "projects/{}/reviews/{}")
        with self._db.transaction() as session:
            review = store.get_review(
                session, organization_id=org, project_id=project_id, review_id=review_id
            )
            if review.state != pb.REVIEW_STATE_PENDING:
                raise FailedPrecondition(
                    f"review {request.name} is {pb.ReviewState.Name(review.state)}, not PENDING",  # type: ignore[arg-type]
                    reason="REVIEW_NOT_PENDING",
                )
            item = store.get_item(session, organization_id=org, project_id=project_id, item=review.item)
            if item is None:
                raise FailedPrecondition(f"item {review.item} is unknown", reason="ITEM_UNKNOWN")
            if request.HasField("labels"):
                schema = workflow.schema_of(
                    session, organization_id=org, project_id=project_id, version=review.schema_version
                )
                if schema is None:
                    raise FailedPrecondition(
                        f"schema version {review.schema_version} is not known to qa yet",
                        reason="SCHEMA_UNKNOWN",
                    )
                context_ = events_pb2.ItemContext.FromString(item.context)
                facts = ItemFacts(
                    media_type=context_.media_type,
                    width=context_.width,
                    height=context_.height,
                    text=context_.text,
                )
                validate_labels(request.labels, schema, facts)
                labels = request.labels
            elif review.reason == pb.REVIEW_REASON_TIE:
                raise InvalidArgument("a tied review needs the labels to accept", reason="LABELS_REQUIRED")
            else:
                labels = workflow.review_to_proto(review).proposal
            review.state = pb.REVIEW_STATE_APPROVED
            review.decided_by = principal.subject
            accepted = workflow.accept(
                session,
                self._events,
                item=item,
                labels=labels,
                agreement=review.agreement,
                vote_count=len(workflow.review_to_proto(review).votes),
                schema_version=review.schema_version,
                accepted_by=principal.subject,
            )
            return pb.ApproveReviewResponse(accepted_label=workflow.accepted_to_proto(accepted))

    def RejectAnnotation(
        self, request: pb.RejectAnnotationRequest, context: grpc.ServicerContext
    ) -> pb.RejectAnnotationResponse:
        principal = self._auth.require(context, REVIEWERS)
        org = principal.organization_id
        project_id, review_id = parse_name(request.review, "projects/{}/reviews/{}")
        annotation_project, _ = parse_name(request.annotation, "projects/{}/annotations/{}")
        reason = request.reason.strip()
        if not reason or len(request.reason) > MAX_REASON_CHARS:
            raise InvalidArgument(
                f"reason is required and at most {MAX_REASON_CHARS} characters", reason="BAD_REJECT_REASON"
            )
        with self._db.transaction() as session:
            review = store.get_review(
                session, organization_id=org, project_id=project_id, review_id=review_id
            )
            if review.state != pb.REVIEW_STATE_PENDING:
                raise FailedPrecondition(
                    f"review {request.review} is not PENDING", reason="REVIEW_NOT_PENDING"
                )
            voted = {v.annotation for v in workflow.review_to_proto(review).votes}
            vote = store.find_vote(session, organization_id=org, annotation=request.annotation)
            if annotation_project != project_id or request.annotation not in voted or vote is None:
                raise InvalidArgument(
                    f"{request.annotation} is not one of the votes of {request.review}", reason="NOT_A_VOTE"
                )
            item = store.get_item(session, organization_id=org, project_id=project_id, item=review.item)
            if item is None:
                raise FailedPrecondition(f"item {review.item} is unknown", reason="ITEM_UNKNOWN")
            vote.state = REJECTED
            review.state = pb.REVIEW_STATE_REWORK
            review.decided_by = principal.subject
            item.status = REWORK
            self._events.emit(
                session,
                tenant_id=org,
                resource_name=request.annotation,
                aggregate_version=vote.revision,
                payload=events_pb2.ReworkRequested(
                    annotation=request.annotation,
                    task=vote.task,
                    annotator=vote.annotator,
                    reason=reason,
                    item=events_pb2.ItemContext.FromString(item.context),
                ),
            )
            return pb.RejectAnnotationResponse(review=workflow.review_to_proto(review))

    def GetAcceptedLabel(
        self, request: pb.GetAcceptedLabelRequest, context: grpc.ServicerContext
    ) -> pb.GetAcceptedLabelResponse:
        principal = self._auth.require(context, READERS)
        project_id, item_id = parse_name(request.name, "projects/{}/acceptedLabels/{}")
        with self._db.transaction() as session:
            row = store.get_accepted(
                session, organization_id=principal.organization_id, project_id=project_id, item_id=item_id
            )
            return pb.GetAcceptedLabelResponse(accepted_label=workflow.accepted_to_proto(row))

    def ListAcceptedLabels(
        self, request: pb.ListAcceptedLabelsRequest, context: grpc.ServicerContext
    ) -> pb.ListAcceptedLabelsResponse:
        principal = self._auth.require(context, READERS)
        (project_id,) = parse_name(request.parent, "projects/{}")
        limit = page_size(request.page_size)
        after = _cursor(request.page_token)
        with self._db.transaction() as session:
            store.get_project(session, organization_id=principal.organization_id, project_id=project_id)
            rows = store.list_accepted(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                after=after,
                limit=limit + 1,
            )
            page = rows[:limit]
            labels = [workflow.accepted_to_proto(r) for r in page]
        token = encode_token({"after": page[-1].id}) if len(rows) > limit else ""
        return pb.ListAcceptedLabelsResponse(accepted_labels=labels, next_page_token=token)

    def GetProjectQuality(
        self, request: pb.GetProjectQualityRequest, context: grpc.ServicerContext
    ) -> pb.GetProjectQualityResponse:
        principal = self._auth.require(context, READERS)
        (project_id,) = parse_name(request.project, "projects/{}")
        with self._db.transaction() as session:
            store.get_project(session, organization_id=principal.organization_id, project_id=project_id)
            accepted, pending, mean, votes = store.quality(
                session, organization_id=principal.organization_id, project_id=project_id
            )
        return pb.GetProjectQualityResponse(
            project=request.project,
            accepted_items=accepted,
            pending_reviews=pending,
            mean_agreement=mean,
            annotation_count=votes,
        )
