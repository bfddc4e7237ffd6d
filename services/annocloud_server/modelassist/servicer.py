"""ModelAssistService: a project's model, rescoring on demand, suggestion survival, and the face and
plate detection that de-identification at ingest calls."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
from annocloud.common.v1 import common_pb2
from annocloud.modelassist.v1 import modelassist_pb2 as mpb
from annocloud.modelassist.v1 import modelassist_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.auth import MANAGERS, READERS, REVIEWERS, Authenticator
from annocloud_server.common.db import Database
from annocloud_server.common.errors import FailedPrecondition, InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import parse_name
from annocloud_server.common.triton import TritonClient
from annocloud_server.modelassist import store, worker
from annocloud_server.modelassist.models import AssistProject, SuggestionStat

SENSITIVE_MODELS = (
    ("face_detector", common_pb2.SENSITIVE_KIND_FACE),
    ("plate_detector", common_pb2.SENSITIVE_KIND_PLATE),
)
MAX_IMAGE_BYTES = worker.MAX_MEDIA_BYTES


def model_to_proto(session: Session, project: AssistProject) -> mpb.ProjectModel:
    settings = store.settings_of(project)
    message = mpb.ProjectModel(
        project=f"projects/{project.project_id}",
        strategy=tasks_pb2.SamplingStrategy.Name(settings.strategy or tasks_pb2.SAMPLING_STRATEGY_NONE),
        head_version=project.head_version,
        trained_on=project.trained_on,
        classes=[str(c) for c in json.loads(project.classes or "[]")],
        labels_since_training=project.labels_since_training,
        retrain_every=store.retrain_every(project),
        embedded_items=store.embedded_count(session, project_id=project.project_id),
        scored_items=project.scored_items,
        embedding_model=settings.embedding_model,
        prelabel_models=[p.model for p in settings.prelabel],
    )
    if project.train_time is not None:
        message.train_time.FromDatetime(project.train_time)
    return message


def stat_to_proto(row: SuggestionStat) -> mpb.SuggestionStats:
    return mpb.SuggestionStats(
        model=row.model,
        model_version=row.model_version,
        annotator=row.annotator,
        annotations=row.annotations,
        suggested_boxes=row.suggested_boxes,
        unchanged_boxes=row.unchanged_boxes,
        adjusted_boxes=row.adjusted_boxes,
        deleted_boxes=row.deleted_boxes,
        added_boxes=row.added_boxes,
        mean_iou=row.iou_sum / row.kept_boxes if row.kept_boxes else 0.0,
        unchanged_fraction=row.unchanged_boxes / row.suggested_boxes if row.suggested_boxes else 0.0,
        class_change_rate=row.class_changes / row.annotations if row.annotations else 0.0,
    )


class ModelAssistServicer(modelassist_pb2_grpc.ModelAssistServiceServicer):
    def __init__(
        self,
        db: Database,
        writer: EventWriter,
        authenticator: Authenticator,
        triton: Callable[[], TritonClient] | None,
    ):
        self._db = db
        self._writer = writer
        self._auth = authenticator
        self._triton = triton

    def GetProjectModel(
        self, request: mpb.GetProjectModelRequest, context: grpc.ServicerContext
    ) -> mpb.GetProjectModelResponse:
        principal = self._auth.require(context, READERS)
        (project_id,) = parse_name(request.project, "projects/{}")
        with self._db.read() as session:
            project = store.get_project(
                session, organization_id=principal.organization_id, project_id=project_id
            )
            return mpb.GetProjectModelResponse(model=model_to_proto(session, project))

    def RescoreProject(
        self, request: mpb.RescoreProjectRequest, context: grpc.ServicerContext
    ) -> mpb.RescoreProjectResponse:
        principal = self._auth.require(context, MANAGERS)
        (project_id,) = parse_name(request.project, "projects/{}")
        with self._db.transaction() as session:
            project = store.get_project(
                session, organization_id=principal.organization_id, project_id=project_id
            )
            worker.rescore_project(session, self._writer, project)
            return mpb.RescoreProjectResponse(model=model_to_proto(session, project))

    def ListSuggestionStats(
        self, request: mpb.ListSuggestionStatsRequest, context: grpc.ServicerContext
    ) -> mpb.ListSuggestionStatsResponse:
        principal = self._auth.require(context, REVIEWERS)
        (project_id,) = parse_name(request.project, "projects/{}")
        with self._db.read() as session:
            store.get_project(session, organization_id=principal.organization_id, project_id=project_id)
            rows = store.list_stats(session, organization_id=principal.organization_id, project_id=project_id)
            return mpb.ListSuggestionStatsResponse(stats=[stat_to_proto(r) for r in rows])

    def DetectSensitiveRegions(
        self, request: mpb.DetectSensitiveRegionsRequest, context: grpc.ServicerContext
    ) -> mpb.DetectSensitiveRegionsResponse:
        self._auth.require(context, MANAGERS)
        if not request.image:
            raise InvalidArgument("image is required", reason="IMAGE_REQUIRED")
        if len(request.image) > MAX_IMAGE_BYTES:
            raise InvalidArgument(f"image is larger than {MAX_IMAGE_BYTES} bytes", reason="IMAGE_TOO_LARGE")
        if self._triton is None:
            raise FailedPrecondition(
                "de-identification needs a Triton server; none is configured (ANNOCLOUD_TRITON_URL)",
                reason="TRITON_NOT_CONFIGURED",
            )
        client = self._triton()
        regions = []
        for model, kind in SENSITIVE_MODELS:
            found = client.detect(model, request.image)
            version = client.model_version(model) or "1"
            regions += [
                common_pb2.SensitiveRegion(
                    kind=kind,
                    x=b.x,
                    y=b.y,
                    width=b.width,
                    height=b.height,
                    score=b.score,
                    source=f"model:{model}/{version}",
                )
                for b in found.boxes
            ]
        return mpb.DetectSensitiveRegionsResponse(regions=regions)
