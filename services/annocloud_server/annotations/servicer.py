"""AnnotationService: authorize, parse, validate with common.labels, store, emit, map to proto."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.annotations.v1 import annotations_pb2_grpc
from annocloud.events.v1 import events_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy.exc import IntegrityError

from annocloud_server.annotations import domain, store
from annocloud_server.annotations.models import AnnotationRow, PredictionRow, RevisionRow
from annocloud_server.common.auth import (
    LABELERS,
    MANAGERS,
    READERS,
    VENDOR_ADMIN,
    VENDOR_WORKER,
    Authenticator,
    worker_identity,
)
from annocloud_server.common.db import Database
from annocloud_server.common.errors import Aborted, AlreadyExists, InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.labels import ItemFacts, validate_labels
from annocloud_server.common.paging import decode_token, encode_token, new_id, page_size, parse_name
from annocloud_server.common.tasks_client import TasksClient, forwarded_metadata

SUBMIT = "SubmitAnnotation"
PREDICT = "CreatePrediction"


def _now() -> datetime:
    return datetime.now(UTC)


def annotation_to_proto(row: AnnotationRow) -> pb.Annotation:
    message = pb.Annotation(
        name=f"projects/{row.project_id}/annotations/{row.annotation_id}",
        task=row.task,
        item=row.item,
        schema_version=row.schema_version,
        annotator=row.annotator,
        labels=pb.Labels.FromString(row.labels),
        revision=row.revision,
        etag=row.etag,
        revised_by=row.revised_by,
    )
    message.create_time.FromDatetime(row.create_time)
    message.update_time.FromDatetime(row.update_time)
    return message


def revision_to_proto(row: AnnotationRow, revision: RevisionRow) -> pb.Annotation:
    message = annotation_to_proto(row)
    message.labels.CopyFrom(pb.Labels.FromString(revision.labels))
    message.revision = revision.revision
    message.etag = revision.etag
    message.revised_by = revision.revised_by
    message.update_time.FromDatetime(revision.create_time)
    return message


def prediction_to_proto(row: PredictionRow) -> pb.Prediction:
    message = pb.Prediction(
        name=f"projects/{row.project_id}/predictions/{row.prediction_id}",
        item=row.item,
        model=row.model,
        model_version=row.model_version,
        score=row.score,
        labels=pb.Labels.FromString(row.labels),
    )
    message.create_time.FromDatetime(row.create_time)
    return message


def _item_facts(row: AnnotationRow) -> ItemFacts:
    return ItemFacts(media_type=row.media_type, width=row.width, height=row.height, text=row.text)


class AnnotationServicer(annotations_pb2_grpc.AnnotationServiceServicer):
    def __init__(self, db: Database, authenticator: Authenticator, events: EventWriter, tasks: TasksClient):
        self._db = db
        self._auth = authenticator
        self._events = events
        self._tasks = tasks

    def _replay(self, organization_id: str, method: str, request_id: str) -> str | None:
        if not request_id:
            return None
        domain.check_request_id(request_id)
        with self._db.transaction() as session:
            return store.find_request(
                session, organization_id=organization_id, method=method, request_id=request_id
            )

    def _load(self, organization_id: str, name: str) -> AnnotationRow:
        project_id, annotation_id = parse_name(name, "projects/{}/annotations/{}")
        with self._db.transaction() as session:
            return store.get_annotation(
                session, organization_id=organization_id, project_id=project_id, annotation_id=annotation_id
            )

    def SubmitAnnotation(
        self, request: pb.SubmitAnnotationRequest, context: grpc.ServicerContext
    ) -> pb.SubmitAnnotationResponse:
        principal = self._auth.require(context, LABELERS)
        project_id, _ = parse_name(request.task, "projects/{}/tasks/{}")
        if not request.lease_id:
            raise InvalidArgument("lease_id is required", reason="LEASE_ID_REQUIRED")
        metadata = forwarded_metadata(context)
        # The task's project decides the tenant: a vendor's worker labels in the granting organization.
        task, owner = self._tasks.get_task_and_owner(request.task, metadata)
        org = owner or principal.organization_id
        annotator = worker_identity(principal, org)
        request_key = domain.request_key(principal, org, request.request_id)
        done = self._replay(org, SUBMIT, request_key)
        if done is not None:
            return pb.SubmitAnnotationResponse(annotation=annotation_to_proto(self._load(org, done)))
        with self._db.transaction() as session:
            if store.annotation_for_task(session, organization_id=org, task=request.task) is not None:
                raise AlreadyExists(
                    f"task {request.task} already has an annotation", reason="TASK_ALREADY_SUBMITTED"
                )
        now = _now()
        domain.check_lease(task, lease_id=request.lease_id, worker=annotator, now=now)
        schema = self._tasks.get_schema(
            organization_id=org, project_id=project_id, version=task.schema_version, metadata=metadata
        )
        facts = domain.item_facts(task)
        validate_labels(request.labels, schema, facts)
        row = AnnotationRow(
            organization_id=org,
            project_id=project_id,
            annotation_id=new_id(),
            task=request.task,
            item=task.item,
            schema_version=task.schema_version,
            annotator=annotator,
            labels=request.labels.SerializeToString(deterministic=True),
            revision=1,
            etag=domain.new_etag(),
            revised_by=annotator,
            create_time=now,
            update_time=now,
            media_type=facts.media_type,
            file_name=task.item_file_name,
            width=facts.width,
            height=facts.height,
            text=facts.text,
        )
        try:
            with self._db.transaction() as session:
                store.insert_annotation(session, row=row)
                annotation = annotation_to_proto(row)
                if request_key:
                    store.save_request(
                        session,
                        organization_id=org,
                        method=SUBMIT,
                        request_id=request_key,
                        resource_name=annotation.name,
                    )
                self._events.emit(
                    session,
                    tenant_id=org,
                    resource_name=annotation.name,
                    aggregate_version=1,
                    payload=events_pb2.AnnotationSubmitted(
                        annotation=annotation,
                        redundancy=task.redundancy,
                        item=events_pb2.ItemContext(
                            item=task.item,
                            media_type=task.media_type,
                            file_name=task.item_file_name,
                            width=task.item_width,
                            height=task.item_height,
                            text=task.item_text,
                        ),
                        task_kind=task.kind,
                        rework_of=task.rework_of if task.kind == tasks_pb2.TASK_KIND_REWORK else "",
                        annotator_organization=principal.organization_id,
                        handle_seconds=domain.handle_seconds(task, now),
                        difficulty_tier=task.difficulty_tier,
                    ),
                )
        except IntegrityError:
            # A concurrent submit won the race: the same request (replay it) or another one.
            done = self._replay(org, SUBMIT, request_key)
            if done is not None:
                return pb.SubmitAnnotationResponse(annotation=annotation_to_proto(self._load(org, done)))
            raise AlreadyExists(
                f"task {request.task} already has an annotation", reason="TASK_ALREADY_SUBMITTED"
            ) from None
        return pb.SubmitAnnotationResponse(annotation=annotation)

    def UpdateAnnotation(
        self, request: pb.UpdateAnnotationRequest, context: grpc.ServicerContext
    ) -> pb.UpdateAnnotationResponse:
        principal = self._auth.require(context, LABELERS)
        org = principal.organization_id
        if not request.etag:
            raise InvalidArgument("etag is required", reason="ETAG_REQUIRED")
        current = self._load(org, request.name)
        domain.check_may_revise(subject=principal.subject, roles=principal.roles, annotator=current.annotator)
        if current.etag != request.etag:
            raise Aborted("the annotation changed since you read it; reload it", reason="ETAG_MISMATCH")
        schema = self._tasks.get_schema(
            organization_id=org,
            project_id=current.project_id,
            version=current.schema_version,
            metadata=forwarded_metadata(context),
        )
        validate_labels(request.labels, schema, _item_facts(current))
        with self._db.transaction() as session:
            row = store.get_annotation(
                session,
                organization_id=org,
                project_id=current.project_id,
                annotation_id=current.annotation_id,
            )
            if row.etag != request.etag:
                raise Aborted("the annotation changed since you read it; reload it", reason="ETAG_MISMATCH")
            store.add_revision(
                session,
                row=row,
                labels=request.labels.SerializeToString(deterministic=True),
                etag=domain.new_etag(),
                revised_by=principal.subject,
                now=_now(),
            )
            annotation = annotation_to_proto(row)
            self._events.emit(
                session,
                tenant_id=org,
                resource_name=annotation.name,
                aggregate_version=row.revision,
                payload=events_pb2.AnnotationRevised(annotation=annotation),
            )
        return pb.UpdateAnnotationResponse(annotation=annotation)

    def GetAnnotation(
        self, request: pb.GetAnnotationRequest, context: grpc.ServicerContext
    ) -> pb.GetAnnotationResponse:
        principal = self._auth.require(context, READERS)
        return pb.GetAnnotationResponse(
            annotation=annotation_to_proto(self._load(principal.organization_id, request.name))
        )

    def ListAnnotations(
        self, request: pb.ListAnnotationsRequest, context: grpc.ServicerContext
    ) -> pb.ListAnnotationsResponse:
        principal = self._auth.require(context, (*READERS, VENDOR_WORKER, VENDOR_ADMIN))
        (project_id,) = parse_name(request.parent, "projects/{}")
        project = self._tasks.require_project(request.parent, forwarded_metadata(context))
        # A vendor reaches a granted project's suggestions one item at a time (the one it labels).
        org = project.organization or principal.organization_id
        if request.item:
            parse_name(request.item, "datasets/{}/items/{}")
        elif org != principal.organization_id:
            raise InvalidArgument(
                "item is required to read another organization's suggestions", reason="ITEM_REQUIRED"
            )
        limit = page_size(request.page_size)
        after = _cursor(request.page_token)
        with self._db.transaction() as session:
            rows = store.list_annotations(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                item=request.item,
                after=after,
                limit=limit + 1,
            )
        page = rows[:limit]
        token = encode_token({"after": page[-1].id}) if len(rows) > limit else ""
        return pb.ListAnnotationsResponse(
            annotations=[annotation_to_proto(r) for r in page], next_page_token=token
        )

    def ListAnnotationRevisions(
        self, request: pb.ListAnnotationRevisionsRequest, context: grpc.ServicerContext
    ) -> pb.ListAnnotationRevisionsResponse:
        principal = self._auth.require(context, READERS)
        row = self._load(principal.organization_id, request.name)
        limit = page_size(request.page_size)
        after = _cursor(request.page_token)
        with self._db.transaction() as session:
            revisions = store.list_revisions(session, row=row, after=after, limit=limit + 1)
        page = revisions[:limit]
        token = encode_token({"after": page[-1].revision}) if len(revisions) > limit else ""
        return pb.ListAnnotationRevisionsResponse(
            revisions=[revision_to_proto(row, r) for r in page], next_page_token=token
        )

    def CreatePrediction(
        self, request: pb.CreatePredictionRequest, context: grpc.ServicerContext
    ) -> pb.CreatePredictionResponse:
        principal = self._auth.require(context, MANAGERS)
        org = principal.organization_id
        (project_id,) = parse_name(request.parent, "projects/{}")
        self._tasks.require_project(request.parent, forwarded_metadata(context))
        prediction = request.prediction
        parse_name(prediction.item, "datasets/{}/items/{}")
        domain.check_prediction(prediction)
        done = self._replay(org, PREDICT, request.request_id)
        if done is not None:
            return pb.CreatePredictionResponse(prediction=self._load_prediction(org, done))
        row = PredictionRow(
            organization_id=org,
            project_id=project_id,
            prediction_id=new_id(),
            item=prediction.item,
            model=prediction.model,
            model_version=prediction.model_version,
            score=prediction.score,
            labels=prediction.labels.SerializeToString(deterministic=True),
            create_time=_now(),
        )
        try:
            with self._db.transaction() as session:
                store.insert_prediction(session, row=row)
                stored = prediction_to_proto(row)
                if request.request_id:
                    store.save_request(
                        session,
                        organization_id=org,
                        method=PREDICT,
                        request_id=request.request_id,
                        resource_name=stored.name,
                    )
        except IntegrityError:
            done = self._replay(org, PREDICT, request.request_id)
            if done is None:
                raise
            return pb.CreatePredictionResponse(prediction=self._load_prediction(org, done))
        return pb.CreatePredictionResponse(prediction=stored)

    def _load_prediction(self, organization_id: str, name: str) -> pb.Prediction:
        project_id, prediction_id = parse_name(name, "projects/{}/predictions/{}")
        with self._db.transaction() as session:
            row = store.get_prediction(
                session, organization_id=organization_id, project_id=project_id, prediction_id=prediction_id
            )
            return prediction_to_proto(row)

    def ListPredictions(
        self, request: pb.ListPredictionsRequest, context: grpc.ServicerContext
    ) -> pb.ListPredictionsResponse:
        principal = self._auth.require(context, (*READERS, VENDOR_WORKER, VENDOR_ADMIN))
        (project_id,) = parse_name(request.parent, "projects/{}")
        project = self._tasks.require_project(request.parent, forwarded_metadata(context))
        # A vendor reaches a granted project's suggestions one item at a time (the one it labels).
        org = project.organization or principal.organization_id
        if request.item:
            parse_name(request.item, "datasets/{}/items/{}")
        elif org != principal.organization_id:
            raise InvalidArgument(
                "item is required to read another organization's suggestions", reason="ITEM_REQUIRED"
            )
        limit = page_size(request.page_size)
        after = _cursor(request.page_token)
        with self._db.transaction() as session:
            rows = store.list_predictions(
                session,
                organization_id=org,
                project_id=project_id,
                item=request.item,
                after=after,
                limit=limit + 1,
            )
        page = rows[:limit]
        token = encode_token({"after": page[-1].id}) if len(rows) > limit else ""
        return pb.ListPredictionsResponse(
            predictions=[prediction_to_proto(r) for r in page], next_page_token=token
        )


def _cursor(token: str) -> int:
    after = decode_token(token).get("after", 0)
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
    return after
