"""The labeling loop through the gRPC APIs directly (signed principals), in both ways to run annocloud."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2, annotations_pb2_grpc
from annocloud.export.v1 import export_pb2, export_pb2_grpc
from annocloud.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from annocloud.qa.v1 import qa_pb2, qa_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.common.auth import ADMIN, ANNOTATOR, Authenticator, make_principal
from annocloud_server.demo import render_scene, street_schema
from google.protobuf import json_format
from support.e2e import Stack

ITEMS = 10


def _upload(png: bytes, parent: str, file_name: str) -> Iterator[ingestion_pb2.UploadItemRequest]:
    yield ingestion_pb2.UploadItemRequest(
        header=ingestion_pb2.UploadItemHeader(parent=parent, file_name=file_name)
    )
    for start in range(0, len(png), 1000):
        yield ingestion_pb2.UploadItemRequest(chunk=png[start : start + 1000])


def test_grpc_loop_two_annotators_to_jsonl_export(stack: Stack) -> None:
    """Upload by stream, label twice per item over gRPC, QA accepts, the JSONL artifact streams back exactly."""
    auth = Authenticator(stack.secret)
    admin = auth.metadata_for(make_principal("initech", "key:pipeline", [ADMIN]))
    workers = [auth.metadata_for(make_principal("initech", f"user:w{i}", [ANNOTATOR])) for i in range(2)]
    ingestion = ingestion_pb2_grpc.IngestionServiceStub(stack.channel("ingestion"))
    tasks = tasks_pb2_grpc.TaskServiceStub(stack.channel("tasks"))
    annotations = annotations_pb2_grpc.AnnotationServiceStub(stack.channel("annotations"))
    qa = qa_pb2_grpc.QaServiceStub(stack.channel("qa"))
    export = export_pb2_grpc.ExportServiceStub(stack.channel("export"))

    dataset = ingestion.CreateDataset(
        ingestion_pb2.CreateDatasetRequest(
            dataset=ingestion_pb2.Dataset(display_name="grpc"), request_id="d"
        ),
        metadata=admin,
    ).dataset
    scenes = {}
    for index in range(ITEMS):
        scene = render_scene(index, seed=99)
        item = ingestion.UploadItem(_upload(scene.png, dataset.name, scene.file_name), metadata=admin).item
        assert (item.width, item.height) == (640, 480)
        scenes[item.name] = scene
    schema = json_format.ParseDict(street_schema(), tasks_pb2.LabelSchema())
    project = tasks.CreateProject(
        tasks_pb2.CreateProjectRequest(
            project=tasks_pb2.Project(display_name="grpc", redundancy=2, datasets=[dataset.name]),
            schema=schema,
        ),
        metadata=admin,
    ).project

    deadline = time.monotonic() + 60
    while (
        tasks.GetProject(
            tasks_pb2.GetProjectRequest(name=project.name), metadata=admin
        ).project.task_counts.queued
        < 2 * ITEMS
    ):
        assert time.monotonic() < deadline, "tasks were not created"
        time.sleep(0.1)
    for worker in workers:
        while True:
            try:
                task = tasks.LeaseNextTask(
                    tasks_pb2.LeaseNextTaskRequest(parent=project.name), metadata=worker
                ).task
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                break
            scene = scenes[task.item]
            labels = annotations_pb2.Labels(
                classes=[scene.time_of_day],
                regions=[
                    annotations_pb2.Region(
                        label=b.label, box=annotations_pb2.Box(x=b.x, y=b.y, width=b.width, height=b.height)
                    )
                    for b in scene.boxes
                ],
            )
            annotations.SubmitAnnotation(
                annotations_pb2.SubmitAnnotationRequest(
                    task=task.name, lease_id=task.lease.lease_id, labels=labels
                ),
                metadata=worker,
            )
    while (
        qa.GetProjectQuality(
            qa_pb2.GetProjectQualityRequest(project=project.name), metadata=admin
        ).accepted_items
        < ITEMS
    ):
        assert time.monotonic() < deadline, "items were not accepted"
        time.sleep(0.1)

    stack.wait_idle()  # exports see what the export service has received (eventual consistency)
    job = export.CreateExport(
        export_pb2.CreateExportRequest(parent=project.name, format=export_pb2.EXPORT_FORMAT_JSONL),
        metadata=admin,
    ).export
    while (
        job := export.GetExport(export_pb2.GetExportRequest(name=job.name), metadata=admin).export
    ).state != export_pb2.EXPORT_STATE_DONE:
        assert job.state != export_pb2.EXPORT_STATE_FAILED, job.error_message
        assert time.monotonic() < deadline, "export did not finish"
        time.sleep(0.1)
    artifact = b"".join(
        c.chunk
        for c in export.ReadExportArtifact(
            export_pb2.ReadExportArtifactRequest(name=job.name), metadata=admin
        )
    )
    rows = [
        json.loads(line) for line in zipfile.ZipFile(io.BytesIO(artifact)).read("items.jsonl").splitlines()
    ]
    assert len(rows) == ITEMS == job.item_count
    for row in rows:
        scene = scenes[row["item"]]
        assert row["classes"] == [scene.time_of_day]
        assert len(row["regions"]) == len(scene.boxes)

    other_org = auth.metadata_for(make_principal("umbrella", "user:x", [ADMIN]))
    with pytest.raises(grpc.RpcError) as denied:
        tasks.GetProject(tasks_pb2.GetProjectRequest(name=project.name), metadata=other_org)
    assert denied.value.code() == grpc.StatusCode.NOT_FOUND
