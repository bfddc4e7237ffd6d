"""Import jobs over real gRPC with the tasks and annotations services: items and predictions appear,
the project is looked up in tasks (NOT_FOUND for another organization's) and its current schema decides
which labels are accepted, hostile uploads are INVALID_ARGUMENT, and a fetch that reaches another
address than vetted is refused."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpcore
import pytest
from annocloud.annotations.v1 import annotations_pb2, annotations_pb2_grpc
from annocloud.ingestion.v1 import ingestion_pb2 as pb
from annocloud.ingestion.v1 import ingestion_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.annotations.component import create_component as annotations_component
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.ingestion import fetch
from annocloud_server.ingestion.component import create_component as ingestion_component
from annocloud_server.tasks.component import create_component as tasks_component
from PIL import Image


def png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (shade, 40, 200 - shade)).save(buffer, "PNG")
    return buffer.getvalue()


def archive(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def coco_zip(category_id: int = 1, category: str = "car") -> bytes:
    labels = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.png", "width": 64, "height": 48},
        ],
        "categories": [{"id": 1, "name": category}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12]},
            {"id": 2, "image_id": 2, "category_id": category_id, "bbox": [1, 1, 5, 5]},
        ],
    }
    return archive({"a.png": png(10), "b.png": png(150), "annotations.json": json.dumps(labels)})


def import_messages(parent: str, project: str, data: bytes) -> Iterator[pb.CreateImportRequest]:
    yield pb.CreateImportRequest(
        header=pb.CreateImportHeader(
            parent=parent, format=pb.IMPORT_FORMAT_COCO, project=project, file_name="c.zip"
        )
    )
    for start in range(0, len(data), 4096):
        yield pb.CreateImportRequest(chunk=data[start : start + 4096])


@pytest.fixture
def env(
    start_services: Callable[..., Any], channel_to: Callable[..., Any], caller: Callable[..., Any]
) -> Any:
    runtime = start_services([tasks_component, ingestion_component, annotations_component])
    channel = channel_to(runtime)

    class Env:
        rt = runtime
        ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel)
        tasks = tasks_pb2_grpc.TaskServiceStub(channel)
        annotations = annotations_pb2_grpc.AnnotationServiceStub(channel)
        md = caller(org="acme", subject="user:mgr").md
        other = caller(org="globex", subject="user:eve").md

        def setup(self, car: int = tasks_pb2.OBJECT_KIND_BOX) -> tuple[str, str]:
            dataset = self.ingestion.CreateDataset(
                pb.CreateDatasetRequest(dataset=pb.Dataset(display_name="cars")), metadata=self.md
            ).dataset.name
            return dataset, self.project(self.md, car)

        def project(self, md: Any, car: int = tasks_pb2.OBJECT_KIND_BOX) -> str:
            schema = tasks_pb2.LabelSchema(objects=[tasks_pb2.ObjectLabel(name="car", kind=car)])
            name: str = self.tasks.CreateProject(
                tasks_pb2.CreateProjectRequest(project=tasks_pb2.Project(display_name="p"), schema=schema),
                metadata=md,
            ).project.name
            return name

        def jobs(self, dataset: str) -> list[pb.ImportJob]:
            return list(
                self.ingestion.ListImports(
                    pb.ListImportsRequest(parent=dataset), metadata=self.md
                ).import_jobs
            )

        def finished(self, name: str) -> pb.ImportJob:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                job = self.ingestion.GetImport(pb.GetImportRequest(name=name), metadata=self.md).import_job
                if job.state in (pb.IMPORT_STATE_SUCCEEDED, pb.IMPORT_STATE_FAILED):
                    return job
                time.sleep(0.05)
            raise AssertionError("import did not finish")

    return Env()


def test_coco_import_round_trip_gives_items_and_predictions(env: Any) -> None:
    """A COCO zip imported over gRPC yields two items and two predictions (model import:coco, version = the
    job id, score 1) listed by the annotations service; another organization cannot see the job."""
    dataset, project = env.setup()
    created = env.ingestion.CreateImport(
        import_messages(dataset, project, coco_zip()), metadata=env.md
    ).import_job
    job = env.finished(created.name)
    assert (job.state, job.item_count, job.prediction_count) == (pb.IMPORT_STATE_SUCCEEDED, 2, 2), job
    items = env.ingestion.ListItems(pb.ListItemsRequest(parent=dataset), metadata=env.md).items
    assert sorted(i.file_name for i in items) == ["a.png", "b.png"]
    env.rt.wait_idle()
    predictions = env.annotations.ListPredictions(
        annotations_pb2.ListPredictionsRequest(parent=project), metadata=env.md
    ).predictions
    job_id = job.name.rsplit("/", 1)[1]
    assert (
        sorted((p.model, p.model_version, p.score) for p in predictions) == [("import:coco", job_id, 1.0)] * 2
    )
    assert {p.item for p in predictions} == {i.name for i in items}
    listed = env.ingestion.ListImports(pb.ListImportsRequest(parent=dataset), metadata=env.md).import_jobs
    assert [j.name for j in listed] == [job.name]
    with pytest.raises(grpc.RpcError) as err:
        env.ingestion.GetImport(pb.GetImportRequest(name=job.name), metadata=env.other)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_row_fails_the_job_with_reasons_and_creates_nothing(env: Any) -> None:
    """An unknown category in the last row: the job is FAILED with the row named, no item, no prediction."""
    dataset, project = env.setup()
    created = env.ingestion.CreateImport(
        import_messages(dataset, project, coco_zip(7)), metadata=env.md
    ).import_job
    job = env.finished(created.name)
    assert (job.state, job.failure_reason, job.error_count) == (pb.IMPORT_STATE_FAILED, "IMPORT_INVALID", 1)
    assert job.errors[0].reason == "UNKNOWN_LABEL"
    assert "annotations[1]" in job.errors[0].where
    assert list(env.ingestion.ListItems(pb.ListItemsRequest(parent=dataset), metadata=env.md).items) == []
    env.rt.wait_idle()
    assert (
        list(
            env.annotations.ListPredictions(
                annotations_pb2.ListPredictionsRequest(parent=project), metadata=env.md
            ).predictions
        )
        == []
    )


def test_zip_slip_upload_is_invalid_argument(env: Any) -> None:
    """An archive with a ../ entry is refused by CreateImport itself with INVALID_ARGUMENT; no job exists."""
    dataset, project = env.setup()
    with pytest.raises(grpc.RpcError) as err:
        env.ingestion.CreateImport(
            import_messages(dataset, project, archive({"../x.png": png(1)})), metadata=env.md
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        list(env.ingestion.ListImports(pb.ListImportsRequest(parent=dataset), metadata=env.md).import_jobs)
        == []
    )


@pytest.mark.parametrize("whose", ["nobody", "another organization"])
def test_project_that_is_not_the_callers_is_not_found_and_creates_no_job(env: Any, whose: str) -> None:
    """CreateImport into a project that does not exist, or that another organization owns, is NOT_FOUND
    from the tasks service's answer; no job is created."""
    dataset, _ = env.setup()
    project = "projects/nope" if whose == "nobody" else env.project(env.other)
    with pytest.raises(grpc.RpcError) as err:
        env.ingestion.CreateImport(import_messages(dataset, project, coco_zip()), metadata=env.md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert env.jobs(dataset) == []


@pytest.mark.parametrize(
    ("car", "category", "reason"),
    [
        (tasks_pb2.OBJECT_KIND_BOX, "truck", "UNKNOWN_LABEL"),
        (tasks_pb2.OBJECT_KIND_POLYGON, "car", "LABEL_KIND_MISMATCH"),
    ],
)
def test_labels_outside_the_project_schema_fail_the_job(
    env: Any, car: int, category: str, reason: str
) -> None:
    """Boxes of a label the project's schema lacks, or of a label that is a polygon there, fail the job
    with that reason for both rows; no item and no prediction is created."""
    dataset, project = env.setup(car)
    created = env.ingestion.CreateImport(
        import_messages(dataset, project, coco_zip(category=category)), metadata=env.md
    ).import_job
    job = env.finished(created.name)
    assert (job.state, job.failure_reason, job.error_count) == (pb.IMPORT_STATE_FAILED, "IMPORT_INVALID", 2)
    assert [e.reason for e in job.errors] == [reason, reason]
    assert list(env.ingestion.ListItems(pb.ListItemsRequest(parent=dataset), metadata=env.md).items) == []
    env.rt.wait_idle()
    predictions = env.annotations.ListPredictions(
        annotations_pb2.ListPredictionsRequest(parent=project), metadata=env.md
    ).predictions
    assert list(predictions) == []


def test_labels_are_checked_against_the_current_schema_version(env: Any) -> None:
    """After the project publishes schema version 2 with a truck box, truck labels import; before, they
    were refused against version 1."""
    dataset, project = env.setup()
    refused = env.ingestion.CreateImport(
        import_messages(dataset, project, coco_zip(category="truck")), metadata=env.md
    ).import_job
    assert env.finished(refused.name).state == pb.IMPORT_STATE_FAILED
    objects = [tasks_pb2.ObjectLabel(name=n, kind=tasks_pb2.OBJECT_KIND_BOX) for n in ("car", "truck")]
    published = env.tasks.CreateLabelSchema(
        tasks_pb2.CreateLabelSchemaRequest(parent=project, schema=tasks_pb2.LabelSchema(objects=objects)),
        metadata=env.md,
    ).schema
    assert published.version == 2
    accepted = env.ingestion.CreateImport(
        import_messages(dataset, project, coco_zip(category="truck")), metadata=env.md
    ).import_job
    job = env.finished(accepted.name)
    assert (job.state, job.prediction_count) == (pb.IMPORT_STATE_SUCCEEDED, 2), job


def test_without_the_tasks_service_create_import_is_unavailable(
    start_services: Callable[..., Any], channel_to: Callable[..., Any], caller: Callable[..., Any]
) -> None:
    """Ingestion running without the tasks service cannot check the project: CreateImport is UNAVAILABLE
    and no job exists."""
    runtime = start_services([ingestion_component])
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel_to(runtime))
    md = caller(org="acme", subject="user:mgr").md
    dataset = stub.CreateDataset(
        pb.CreateDatasetRequest(dataset=pb.Dataset(display_name="cars")), metadata=md
    ).dataset.name
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateImport(import_messages(dataset, "projects/p1", coco_zip()), metadata=md)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the tasks service did not answer" in err.value.details()
    assert list(stub.ListImports(pb.ListImportsRequest(parent=dataset), metadata=md).import_jobs) == []


def test_connection_to_another_address_than_vetted_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name vets as a public address, but the connection lands on 127.0.0.1 (a stubbed
    resolver/transport); the guard checks the connected peer and refuses. Nothing leaves 127.0.0.1."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "6")
            self.end_headers()
            self.wfile.write(b"secret")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(fetch, "_resolve", lambda host, port: [fetch.ipaddress.ip_address("8.8.8.8")])
    real_connect = httpcore.ConnectionPool.handle_request

    def rebound(self: httpcore.ConnectionPool, request: httpcore.Request) -> httpcore.Response:
        url = request.url
        request.url = httpcore.URL(
            scheme=url.scheme, host=b"127.0.0.1", port=server.server_port, target=url.target
        )
        return real_connect(self, request)

    monkeypatch.setattr(httpcore.ConnectionPool, "handle_request", rebound)
    try:
        with pytest.raises(InvalidArgument) as err:
            fetch.fetch("http://rebind.example/x", fetch.FetchPolicy(max_bytes=100), lambda c: b"".join(c))
    finally:
        server.shutdown()
    assert err.value.reason == "URL_REFUSED"
    assert "127.0.0.1" in err.value.message
