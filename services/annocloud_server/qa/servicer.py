"""QaService: reviews, decisions, gold items, accepted labels and quality figures; thin over store,
workflow, decisions and quality."""

from __future__ import annotations

import grpc
from annocloud.annotations.v1 import annotations_pb2 as apb
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.qa.v1 import qa_pb2 as pb
from annocloud.qa.v1 import qa_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.auth import MANAGERS, READERS, VENDOR_ADMIN, Authenticator
from annocloud_server.common.db import Database
from annocloud_server.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from annocloud_server.common.events import EventWriter
from annocloud_server.common.labels import ItemFacts, validate_labels
from annocloud_server.common.paging import decode_token, encode_token, page_size, parse_name
from annocloud_server.qa import decisions, quality, stages, store, workflow
from annocloud_server.qa.models import ACTIVE, GoldItemRow, ItemRow

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
        principal = self._auth.require(context, stages.DECIDERS)
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
        principal = self._auth.require(context, stages.DECIDERS)
        project_id, review_id = parse_name(request.name, "projects/{}/reviews/{}")
        with self._db.transaction() as session:
            row = store.get_review(
                session, organization_id=principal.organization_id, project_id=project_id, review_id=review_id
            )
            return pb.GetReviewResponse(review=workflow.review_to_proto(row))

    def ApproveReview(
        self, request: pb.ApproveReviewRequest, context: grpc.ServicerContext
    ) -> pb.ApproveReviewResponse:
        principal = self._auth.require(context, stages.DECIDERS)
        org = principal.organization_id
        project_id, review_id = parse_name(request.name, "projects/{}/reviews/{}")
        with self._db.transaction() as session:
            review, item = decisions.load_pending(
                session, organization_id=org, project_id=project_id, review_id=review_id
            )
            decisions.authorize(principal, review)
            project = store.get_project(session, organization_id=org, project_id=project_id)
            accepted = decisions.approve(
                session,
                self._events,
                project=project,
                review=review,
                item=item,
                labels=request.labels if request.HasField("labels") else None,
                decided_by=principal.subject,
            )
            if accepted is None:
                return pb.ApproveReviewResponse()
            return pb.ApproveReviewResponse(accepted_label=workflow.accepted_to_proto(accepted))

    def RejectAnnotation(
        self, request: pb.RejectAnnotationRequest, context: grpc.ServicerContext
    ) -> pb.RejectAnnotationResponse:
        principal = self._auth.require(context, stages.DECIDERS)
        org = principal.organization_id
        project_id, review_id = parse_name(request.review, "projects/{}/reviews/{}")
        annotation_project, _ = parse_name(request.annotation, "projects/{}/annotations/{}")
        reason = request.reason.strip()
        if not reason or len(request.reason) > MAX_REASON_CHARS:
            raise InvalidArgument(
                f"reason is required and at most {MAX_REASON_CHARS} characters", reason="BAD_REJECT_REASON"
            )
        with self._db.transaction() as session:
            review, item = decisions.load_pending(
                session, organization_id=org, project_id=project_id, review_id=review_id
            )
            decisions.authorize(principal, review)
            project = store.get_project(session, organization_id=org, project_id=project_id)
            taxonomy = [c.code for c in workflow.settings_of(project).error_taxonomy]
            reason_code = stages.check_reason_code(request.reason_code, taxonomy)
            voted = {v.annotation for v in workflow.review_to_proto(review).votes}
            vote = store.find_vote(session, organization_id=org, annotation=request.annotation)
            if annotation_project != project_id or request.annotation not in voted or vote is None:
                raise InvalidArgument(
                    f"{request.annotation} is not one of the votes of {request.review}", reason="NOT_A_VOTE"
                )
            decisions.reject(
                session,
                self._events,
                review=review,
                item=item,
                vote=vote,
                reason=reason,
                reason_code=reason_code,
                decided_by=principal.subject,
            )
            return pb.RejectAnnotationResponse(review=workflow.review_to_proto(review))

    def EscalateReview(
        self, request: pb.EscalateReviewRequest, context: grpc.ServicerContext
    ) -> pb.EscalateReviewResponse:
        principal = self._auth.require(context, stages.DECIDERS)
        org = principal.organization_id
        project_id, review_id = parse_name(request.name, "projects/{}/reviews/{}")
        note = stages.check_note(request.note)
        with self._db.transaction() as session:
            review, item = decisions.load_pending(
                session, organization_id=org, project_id=project_id, review_id=review_id
            )
            decisions.authorize(principal, review)
            expert = decisions.escalate(
                session, self._events, review=review, item=item, note=note, decided_by=principal.subject
            )
            return pb.EscalateReviewResponse(review=workflow.review_to_proto(expert))

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
            accepted, pending, mean, votes, confidence, per_item = store.quality(
                session, organization_id=principal.organization_id, project_id=project_id
            )
            facts, _, accepted_classes = self._facts(
                session, organization_id=principal.organization_id, project_id=project_id
            )
        fleiss, alpha = quality.project_agreement(facts, accepted_classes)
        return pb.GetProjectQualityResponse(
            project=request.project,
            accepted_items=accepted,
            pending_reviews=pending,
            mean_agreement=mean,
            annotation_count=votes,
            fleiss_kappa=fleiss,
            krippendorff_alpha=alpha,
            mean_confidence=confidence,
            labels_per_item=per_item,
        )

    def CreateGoldItem(
        self, request: pb.CreateGoldItemRequest, context: grpc.ServicerContext
    ) -> pb.CreateGoldItemResponse:
        principal = self._auth.require(context, MANAGERS)
        org = principal.organization_id
        (project_id,) = parse_name(request.parent, "projects/{}")
        _, gold_id = parse_name(request.item, "datasets/{}/items/{}")
        if not request.HasField("labels"):
            raise InvalidArgument("labels are required", reason="LABELS_REQUIRED")
        with self._db.transaction() as session:
            store.get_project(session, organization_id=org, project_id=project_id)
            raw = store.latest_schema(session, organization_id=org, project_id=project_id)
            if raw is None:
                raise FailedPrecondition(
                    f"projects/{project_id} has no label schema known to qa yet", reason="SCHEMA_UNKNOWN"
                )
            item = store.get_item(session, organization_id=org, project_id=project_id, item=request.item)
            validate_labels(
                request.labels, tasks_pb2.LabelSchema.FromString(raw), gold_facts(item, request.labels)
            )
            if store.find_gold_by_id(session, organization_id=org, project_id=project_id, gold_id=gold_id):
                raise AlreadyExists(
                    f"projects/{project_id}/goldItems/{gold_id} already exists", reason="GOLD_ITEM_EXISTS"
                )
            row = store.add_gold(
                session,
                row=GoldItemRow(
                    organization_id=org,
                    project_id=project_id,
                    gold_id=gold_id,
                    item=request.item,
                    labels=request.labels.SerializeToString(deterministic=True),
                    create_time=workflow.now(),
                ),
            )
            gold = gold_to_proto(row)
            self._events.emit(
                session,
                tenant_id=org,
                resource_name=gold.name,
                aggregate_version=1,
                payload=events_pb2.GoldItemAdded(project=request.parent, item=request.item),
            )
        return pb.CreateGoldItemResponse(gold_item=gold)

    def ListGoldItems(
        self, request: pb.ListGoldItemsRequest, context: grpc.ServicerContext
    ) -> pb.ListGoldItemsResponse:
        principal = self._auth.require(context, MANAGERS)
        (project_id,) = parse_name(request.parent, "projects/{}")
        limit = page_size(request.page_size)
        after = _cursor(request.page_token)
        with self._db.transaction() as session:
            store.get_project(session, organization_id=principal.organization_id, project_id=project_id)
            rows = store.list_gold(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                after=after,
                limit=limit + 1,
            )
            page = rows[:limit]
            items = [gold_to_proto(r) for r in page]
        token = encode_token({"after": page[-1].id}) if len(rows) > limit else ""
        return pb.ListGoldItemsResponse(gold_items=items, next_page_token=token)

    def ListWorkerQuality(
        self, request: pb.ListWorkerQualityRequest, context: grpc.ServicerContext
    ) -> pb.ListWorkerQualityResponse:
        principal = self._auth.principal(context)
        (project_id,) = parse_name(request.parent, "projects/{}")
        vendor = parse_name(request.vendor, "vendors/{}")[0] if request.vendor else None
        limit = page_size(request.page_size)
        after = decode_token(request.page_token).get("after_worker", "")
        if not isinstance(after, str):
            raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
        rows: list[pb.WorkerQuality] = []
        with self._db.transaction() as session:
            for org, scope in self._quality_scopes(session, principal, project_id, vendor):
                facts, evidence, accepted = self._facts(session, organization_id=org, project_id=project_id)
                rows.extend(quality.all_worker_quality(facts, evidence, accepted, organization=scope))
        rows = sorted((r for r in rows if r.worker > after), key=lambda r: r.worker)
        page = rows[:limit]
        token = encode_token({"after_worker": page[-1].worker}) if len(rows) > limit else ""
        return pb.ListWorkerQualityResponse(workers=page, next_page_token=token)

    def ListVendorQuality(
        self, request: pb.ListVendorQualityRequest, context: grpc.ServicerContext
    ) -> pb.ListVendorQualityResponse:
        principal = self._auth.principal(context)
        (project_id,) = parse_name(request.parent, "projects/{}")
        vendors: list[pb.VendorQuality] = []
        with self._db.transaction() as session:
            for org, scope in self._quality_scopes(session, principal, project_id, None):
                facts, evidence, accepted = self._facts(session, organization_id=org, project_id=project_id)
                vendors.extend(quality.vendor_quality(facts, evidence, accepted, organization=scope))
        return pb.ListVendorQualityResponse(vendors=vendors)

    def _quality_scopes(
        self, session: Session, principal: common_pb2.Principal, project_id: str, vendor: str | None
    ) -> list[tuple[str, str | None]]:
        """(owning organization, worker organization to keep or None for all) the caller may see.

        The project's own organization (admins, managers, reviewers) sees every worker; a vendor
        admin sees only its own workers, in whichever organization's project; nobody else sees any.
        """
        roles = set(principal.roles)
        if roles & set(stages.QUALITY_VIEWERS):
            store.get_project(session, organization_id=principal.organization_id, project_id=project_id)
            return [(principal.organization_id, vendor)]
        if VENDOR_ADMIN not in roles:
            raise PermissionDenied(
                "worker quality needs an admin, manager, reviewer or vendor admin role",
                reason="ROLE_REQUIRED",
            )
        if vendor is not None and vendor != principal.organization_id:
            raise PermissionDenied("a vendor sees only its own workers", reason="VENDOR_SCOPE")
        scopes: list[tuple[str, str | None]] = []
        for project in store.projects_with_id(session, project_id=project_id):
            facts, evidence, _ = self._facts(
                session, organization_id=project.organization_id, project_id=project_id
            )
            if principal.organization_id in quality.workers_of(facts, evidence).values():
                scopes.append((project.organization_id, principal.organization_id))
        if not scopes:
            raise NotFound(f"project projects/{project_id} not found")
        return scopes

    def _facts(
        self, session: Session, *, organization_id: str, project_id: str
    ) -> tuple[list[quality.VoteFact], dict[str, quality.WorkerEvidence], dict[str, str | None]]:
        votes = store.project_votes(session, organization_id=organization_id, project_id=project_id)
        facts = [
            quality.VoteFact(
                worker=v.annotator,
                organization=v.annotator_organization or organization_id,
                item=v.item,
                label=single_class(v.labels),
                handle_seconds=v.handle_seconds,
                active=v.state == ACTIVE,
            )
            for v in votes
        ]
        evidence = {
            r.worker: quality.WorkerEvidence(
                organization=r.worker_organization or organization_id,
                gold_answered=r.gold_answered,
                gold_correct=r.gold_correct,
                accepted_votes=r.accepted_votes,
                agreed=r.agreed,
                rejected=r.rejected,
            )
            for r in store.all_worker_stats(session, organization_id=organization_id, project_id=project_id)
        }
        accepted = {
            a.item: single_class(a.labels)
            for a in store.all_accepted(session, organization_id=organization_id, project_id=project_id)
        }
        return facts, evidence, accepted


def single_class(labels: bytes) -> str | None:
    """The one class of a serialized Labels, None when it has none, several, or is "not sure"."""
    message = apb.Labels.FromString(labels)
    return message.classes[0] if len(message.classes) == 1 and not message.not_sure else None


def gold_to_proto(row: GoldItemRow) -> pb.GoldItem:
    message = pb.GoldItem(
        name=f"projects/{row.project_id}/goldItems/{row.gold_id}",
        item=row.item,
        labels=apb.Labels.FromString(row.labels),
    )
    message.create_time.FromDatetime(row.create_time)
    return message


MAX_GOLD_TEXT = 1_000_000


def gold_facts(item: ItemRow | None, labels: apb.Labels) -> ItemFacts:
    """The item as validation sees it; without a known context the geometry is not bounded by a size."""
    if item is not None:
        context = events_pb2.ItemContext.FromString(item.context)
        return ItemFacts(
            media_type=context.media_type, width=context.width, height=context.height, text=context.text
        )
    ends = [r.span.end for r in labels.regions if r.WhichOneof("geometry") == "span"]
    if ends:
        return ItemFacts(media_type=common_pb2.MEDIA_TYPE_TEXT, text=" " * min(max(ends), MAX_GOLD_TEXT))
    return ItemFacts(media_type=common_pb2.MEDIA_TYPE_IMAGE, width=2**31, height=2**31)
