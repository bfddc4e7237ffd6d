"""A real gRPC server on port 0 hosting small fake servicers, and the gateway in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2, annotations_pb2_grpc
from annocloud.common.v1 import common_pb2
from annocloud.export.v1 import export_pb2, export_pb2_grpc
from annocloud.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from annocloud.qa.v1 import qa_pb2, qa_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.common.auth import Authenticator
from annocloud_server.common.errors import Aborted, InvalidArgument, NotFound, PermissionDenied
from annocloud_server.common.server import ServiceRegistration, build_server
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.app import create_app
from annocloud_server.gateway.settings import GatewaySettings
from fastapi.testclient import TestClient

SECRET = b"gateway-test-secret-0123456789"


@dataclass
class Calls:
    """What the fakes saw: (method, request, verified principal)."""

    log: list[tuple[str, Any, common_pb2.Principal]] = field(default_factory=list)
    upload_chunks: list[int] = field(default_factory=list)

    def last(self, method: str) -> tuple[Any, common_pb2.Principal]:
        for name, request, principal in reversed(self.log):
            if name == method:
                return request, principal
        raise AssertionError(f"{method} was not called")


def _fail_for(name: str) -> None:
    """Ids that make a fake fail with a given error."""
    if name.endswith("/missing"):
        raise NotFound("no such thing", reason="THING_NOT_FOUND")
    if name.endswith("/bad"):
        raise InvalidArgument("bad thing", reason="BAD_THING")
    if name.endswith("/denied"):
        raise PermissionDenied("not yours", reason="ROLE_REQUIRED")
    if name.endswith("/stale"):
        raise Aborted("etag is stale", reason="ETAG_MISMATCH")


class _Fake:
    def __init__(self, auth: Authenticator, calls: Calls):
        self.auth = auth
        self.calls = calls

    def seen(self, method: str, request: Any, context: grpc.ServicerContext) -> common_pb2.Principal:
        principal = self.auth.principal(context)
        self.calls.log.append((method, request, principal))
        return principal


class FakeIngestion(_Fake, ingestion_pb2_grpc.IngestionServiceServicer):
    def CreateDataset(self, request: Any, context: Any) -> Any:
        self.seen("CreateDataset", request, context)
        dataset = ingestion_pb2.Dataset()
        dataset.CopyFrom(request.dataset)
        dataset.name = "datasets/d1"
        dataset.item_count = 3
        return ingestion_pb2.CreateDatasetResponse(dataset=dataset)

    def GetDataset(self, request: Any, context: Any) -> Any:
        self.seen("GetDataset", request, context)
        _fail_for(request.name)
        return ingestion_pb2.GetDatasetResponse(dataset=ingestion_pb2.Dataset(name=request.name))

    def ListDatasets(self, request: Any, context: Any) -> Any:
        self.seen("ListDatasets", request, context)
        if request.page_token == "":
            names = ["datasets/a", "datasets/b"]
            return ingestion_pb2.ListDatasetsResponse(
                datasets=[ingestion_pb2.Dataset(name=n) for n in names], next_page_token="page-2"
            )
        return ingestion_pb2.ListDatasetsResponse(datasets=[ingestion_pb2.Dataset(name="datasets/c")])

    def UploadItem(self, request_iterator: Any, context: Any) -> Any:
        first = next(request_iterator)
        self.seen("UploadItem", first, context)
        size = 0
        for message in request_iterator:
            self.calls.upload_chunks.append(len(message.chunk))
            size += len(message.chunk)
        item = ingestion_pb2.Item(
            name=first.header.parent + "/items/i1", file_name=first.header.file_name, size_bytes=size
        )
        item.metadata.CopyFrom(first.header.metadata)
        return ingestion_pb2.UploadItemResponse(item=item)

    def ImportManifest(self, request: Any, context: Any) -> Any:
        self.seen("ImportManifest", request, context)
        rows = request.manifest.decode().splitlines()
        return ingestion_pb2.ImportManifestResponse(
            items=[ingestion_pb2.Item(name=f"{request.parent}/items/m{i}") for i in range(len(rows))]
        )

    def CreateTextItems(self, request: Any, context: Any) -> Any:
        self.seen("CreateTextItems", request, context)
        return ingestion_pb2.CreateTextItemsResponse(
            items=[
                ingestion_pb2.Item(name=f"{request.parent}/items/t{i}", text=r.text)
                for i, r in enumerate(request.records)
            ]
        )

    def GetItem(self, request: Any, context: Any) -> Any:
        self.seen("GetItem", request, context)
        _fail_for(request.name)
        return ingestion_pb2.GetItemResponse(item=ingestion_pb2.Item(name=request.name))

    def ListItems(self, request: Any, context: Any) -> Any:
        self.seen("ListItems", request, context)
        if request.parent == "datasets/boom":
            raise RuntimeError("secret internals")
        return ingestion_pb2.ListItemsResponse(next_page_token="")

    def ReadItemContent(self, request: Any, context: Any) -> Any:
        self.seen("ReadItemContent", request, context)
        _fail_for(request.name)
        yield ingestion_pb2.ReadItemContentResponse(content_type="image/png", chunk=b"\x89PNG")
        yield ingestion_pb2.ReadItemContentResponse(chunk=b"-rest")


class FakeTasks(_Fake, tasks_pb2_grpc.TaskServiceServicer):
    def CreateProject(self, request: Any, context: Any) -> Any:
        self.seen("CreateProject", request, context)
        project = tasks_pb2.Project()
        project.CopyFrom(request.project)
        project.name = "projects/p1"
        return tasks_pb2.CreateProjectResponse(project=project)

    def GetProject(self, request: Any, context: Any) -> Any:
        self.seen("GetProject", request, context)
        _fail_for(request.name)
        return tasks_pb2.GetProjectResponse(project=tasks_pb2.Project(name=request.name))

    def ListProjects(self, request: Any, context: Any) -> Any:
        self.seen("ListProjects", request, context)
        return tasks_pb2.ListProjectsResponse(projects=[tasks_pb2.Project(name="projects/p1")])

    def AddProjectDataset(self, request: Any, context: Any) -> Any:
        self.seen("AddProjectDataset", request, context)
        return tasks_pb2.AddProjectDatasetResponse(
            project=tasks_pb2.Project(name=request.project, datasets=[request.dataset])
        )

    def CreateLabelSchema(self, request: Any, context: Any) -> Any:
        self.seen("CreateLabelSchema", request, context)
        schema = tasks_pb2.LabelSchema()
        schema.CopyFrom(request.schema)
        schema.name, schema.version = request.parent + "/schemas/2", 2
        return tasks_pb2.CreateLabelSchemaResponse(schema=schema)

    def GetLabelSchema(self, request: Any, context: Any) -> Any:
        self.seen("GetLabelSchema", request, context)
        return tasks_pb2.GetLabelSchemaResponse(schema=tasks_pb2.LabelSchema(name=request.name))

    def ListLabelSchemas(self, request: Any, context: Any) -> Any:
        self.seen("ListLabelSchemas", request, context)
        return tasks_pb2.ListLabelSchemasResponse()

    def GetTask(self, request: Any, context: Any) -> Any:
        self.seen("GetTask", request, context)
        return tasks_pb2.GetTaskResponse(task=tasks_pb2.Task(name=request.name))

    def ListTasks(self, request: Any, context: Any) -> Any:
        self.seen("ListTasks", request, context)
        return tasks_pb2.ListTasksResponse(tasks=[tasks_pb2.Task(name=request.parent + "/tasks/t1")])

    def LeaseNextTask(self, request: Any, context: Any) -> Any:
        self.seen("LeaseNextTask", request, context)
        task = tasks_pb2.Task(name=request.parent + "/tasks/t1", state=tasks_pb2.TASK_STATE_LEASED)
        task.lease.lease_id = "lease-1"
        return tasks_pb2.LeaseNextTaskResponse(task=task)

    def HeartbeatLease(self, request: Any, context: Any) -> Any:
        self.seen("HeartbeatLease", request, context)
        return tasks_pb2.HeartbeatLeaseResponse(task=tasks_pb2.Task(name=request.name))

    def ReleaseTask(self, request: Any, context: Any) -> Any:
        self.seen("ReleaseTask", request, context)
        return tasks_pb2.ReleaseTaskResponse(task=tasks_pb2.Task(name=request.name))


class FakeAnnotations(_Fake, annotations_pb2_grpc.AnnotationServiceServicer):
    def SubmitAnnotation(self, request: Any, context: Any) -> Any:
        principal = self.seen("SubmitAnnotation", request, context)
        annotation = annotations_pb2.Annotation(
            name="projects/p1/annotations/a1", task=request.task, annotator=principal.subject, revision=1
        )
        annotation.labels.CopyFrom(request.labels)
        return annotations_pb2.SubmitAnnotationResponse(annotation=annotation)

    def UpdateAnnotation(self, request: Any, context: Any) -> Any:
        self.seen("UpdateAnnotation", request, context)
        _fail_for("x/" + request.etag)
        return annotations_pb2.UpdateAnnotationResponse(
            annotation=annotations_pb2.Annotation(name=request.name, revision=2)
        )

    def GetAnnotation(self, request: Any, context: Any) -> Any:
        self.seen("GetAnnotation", request, context)
        return annotations_pb2.GetAnnotationResponse(annotation=annotations_pb2.Annotation(name=request.name))

    def ListAnnotations(self, request: Any, context: Any) -> Any:
        self.seen("ListAnnotations", request, context)
        return annotations_pb2.ListAnnotationsResponse()

    def ListAnnotationRevisions(self, request: Any, context: Any) -> Any:
        self.seen("ListAnnotationRevisions", request, context)
        return annotations_pb2.ListAnnotationRevisionsResponse()

    def CreatePrediction(self, request: Any, context: Any) -> Any:
        self.seen("CreatePrediction", request, context)
        prediction = annotations_pb2.Prediction()
        prediction.CopyFrom(request.prediction)
        prediction.name = request.parent + "/predictions/pr1"
        return annotations_pb2.CreatePredictionResponse(prediction=prediction)

    def ListPredictions(self, request: Any, context: Any) -> Any:
        self.seen("ListPredictions", request, context)
        return annotations_pb2.ListPredictionsResponse()


class FakeQa(_Fake, qa_pb2_grpc.QaServiceServicer):
    def ListReviews(self, request: Any, context: Any) -> Any:
        self.seen("ListReviews", request, context)
        return qa_pb2.ListReviewsResponse()

    def GetReview(self, request: Any, context: Any) -> Any:
        self.seen("GetReview", request, context)
        return qa_pb2.GetReviewResponse(review=qa_pb2.Review(name=request.name))

    def ApproveReview(self, request: Any, context: Any) -> Any:
        self.seen("ApproveReview", request, context)
        accepted = qa_pb2.AcceptedLabel(name="projects/p1/acceptedLabels/i1")
        accepted.labels.CopyFrom(request.labels)
        return qa_pb2.ApproveReviewResponse(accepted_label=accepted)

    def RejectAnnotation(self, request: Any, context: Any) -> Any:
        self.seen("RejectAnnotation", request, context)
        return qa_pb2.RejectAnnotationResponse(
            review=qa_pb2.Review(name=request.review, state=qa_pb2.REVIEW_STATE_REWORK)
        )

    def GetAcceptedLabel(self, request: Any, context: Any) -> Any:
        self.seen("GetAcceptedLabel", request, context)
        return qa_pb2.GetAcceptedLabelResponse(accepted_label=qa_pb2.AcceptedLabel(name=request.name))

    def ListAcceptedLabels(self, request: Any, context: Any) -> Any:
        self.seen("ListAcceptedLabels", request, context)
        return qa_pb2.ListAcceptedLabelsResponse()

    def GetProjectQuality(self, request: Any, context: Any) -> Any:
        self.seen("GetProjectQuality", request, context)
        return qa_pb2.GetProjectQualityResponse(project=request.project, accepted_items=7, mean_agreement=0.5)


ARTIFACT = b"PK\x03\x04" + bytes(range(256)) * 40


class FakeExport(_Fake, export_pb2_grpc.ExportServiceServicer):
    def CreateExport(self, request: Any, context: Any) -> Any:
        self.seen("CreateExport", request, context)
        export = export_pb2.Export(
            name=request.parent + "/exports/e1", format=request.format, state=export_pb2.EXPORT_STATE_PENDING
        )
        return export_pb2.CreateExportResponse(export=export)

    def GetExport(self, request: Any, context: Any) -> Any:
        self.seen("GetExport", request, context)
        _fail_for(request.name)
        return export_pb2.GetExportResponse(
            export=export_pb2.Export(name=request.name, state=export_pb2.EXPORT_STATE_DONE, item_count=2)
        )

    def ListExports(self, request: Any, context: Any) -> Any:
        self.seen("ListExports", request, context)
        return export_pb2.ListExportsResponse()

    def ReadExportArtifact(self, request: Any, context: Any) -> Any:
        self.seen("ReadExportArtifact", request, context)
        _fail_for(request.name)
        for start in range(0, len(ARTIFACT), 4096):
            yield export_pb2.ReadExportArtifactResponse(chunk=ARTIFACT[start : start + 4096])


@dataclass
class Gateway:
    client: TestClient
    calls: Calls
    keys: dict[str, str]
    api_keys: ApiKeyStore
    authenticator: Authenticator

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def make_gateway(tmp_path: Path, settings: GatewaySettings | None = None) -> Iterator[Gateway]:
    auth = Authenticator(SECRET)
    calls = Calls()
    servicers = {
        "ingestion": (FakeIngestion(auth, calls), ingestion_pb2_grpc.add_IngestionServiceServicer_to_server),
        "tasks": (FakeTasks(auth, calls), tasks_pb2_grpc.add_TaskServiceServicer_to_server),
        "annotations": (
            FakeAnnotations(auth, calls),
            annotations_pb2_grpc.add_AnnotationServiceServicer_to_server,
        ),
        "qa": (FakeQa(auth, calls), qa_pb2_grpc.add_QaServiceServicer_to_server),
        "export": (FakeExport(auth, calls), export_pb2_grpc.add_ExportServiceServicer_to_server),
    }
    full = {
        "ingestion": "annocloud.ingestion.v1.IngestionService",
        "tasks": "annocloud.tasks.v1.TaskService",
        "annotations": "annocloud.annotations.v1.AnnotationService",
        "qa": "annocloud.qa.v1.QaService",
        "export": "annocloud.export.v1.ExportService",
    }
    registrations = [
        ServiceRegistration(full[k], lambda server, s=s, add=add: add(s, server))
        for k, (s, add) in servicers.items()
    ]
    server = build_server(registrations, max_workers=8)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    store = ApiKeyStore(tmp_path / "api_keys.json")
    keys = {
        "admin": store.create_key("acme", "key:admin", ["admin"]),
        "annotator": store.create_key("acme", "user:ann", ["annotator"]),
        "other": store.create_key("globex", "key:other", ["manager", "reviewer"]),
    }
    app = create_app(settings or GatewaySettings(), channel=channel, authenticator=auth, api_keys=store)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Gateway(client, calls, keys, store, auth)
    finally:
        channel.close()
        server.stop(grace=0)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    yield from make_gateway(tmp_path)


@pytest.fixture
def small_gw(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway with tiny body limits and a small upload chunk size."""
    settings = GatewaySettings(max_upload_bytes=10_000, max_json_bytes=2_000, upload_chunk_bytes=1024)
    yield from make_gateway(tmp_path, settings)
