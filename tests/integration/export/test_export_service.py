"""The export service for real: events through the bus, jobs through gRPC, artifacts unzipped."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.export.v1 import export_pb2, export_pb2_grpc
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.auth import ADMIN, ANNOTATOR, MANAGER
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.events import TOPIC_QA, TOPIC_TASKS, OutgoingRecord
from annocloud_server.export import store
from annocloud_server.export.component import create_component
from annocloud_server.runtime import Runtime
from pycocotools.coco import COCO

SCHEMA = tasks_pb2.LabelSchema(
    name="projects/p1/schemas/1",
    version=1,
    objects=[
        tasks_pb2.ObjectLabel(name="car", kind=tasks_pb2.OBJECT_KIND_BOX),
        tasks_pb2.ObjectLabel(name="road", kind=tasks_pb2.OBJECT_KIND_POLYGON),
    ],
)


def _publish(runtime: Runtime, topic: str, envelope: events_pb2.EventEnvelope) -> None:
    runtime.bus.publish([OutgoingRecord(topic, envelope.resource_name, envelope.SerializeToString())])


def _project_created(org: str, project: str) -> events_pb2.EventEnvelope:
    return events_pb2.EventEnvelope(
        event_id=f"pc-{org}-{project}",
        event_type="annocloud.events.v1.ProjectCreated",
        tenant_id=org,
        resource_name=f"projects/{project}",
        aggregate_version=1,
        project_created=events_pb2.ProjectCreated(
            project=tasks_pb2.Project(name=f"projects/{project}", display_name="Cars", schema_version=1),
            schema=SCHEMA,
        ),
    )


def _item_accepted(
    org: str, project: str, item_id: str, regions: list[ann.Region]
) -> events_pb2.EventEnvelope:
    label = qa_pb2.AcceptedLabel(
        name=f"projects/{project}/acceptedLabels/{item_id}",
        item=f"datasets/d1/items/{item_id}",
        labels=ann.Labels(classes=[], regions=regions),
        agreement=1.0,
        vote_count=2,
        schema_version=1,
        accepted_by="auto",
    )
    label.accept_time.GetCurrentTime()
    return events_pb2.EventEnvelope(
        event_id=f"ia-{org}-{item_id}-{time.monotonic_ns()}",
        event_type="annocloud.events.v1.ItemAccepted",
        tenant_id=org,
        resource_name=label.name,
        aggregate_version=1,
        item_accepted=events_pb2.ItemAccepted(
            accepted_label=label,
            item=events_pb2.ItemContext(
                item=label.item,
                media_type=common_pb2.MEDIA_TYPE_IMAGE,
                file_name=f"{item_id}.jpg",
                width=640,
                height=480,
            ),
        ),
    )


def _car(x: float) -> ann.Region:
    return ann.Region(label="car", box=ann.Box(x=x, y=10, width=20, height=30))


def _wait_done(stub: export_pb2_grpc.ExportServiceStub, name: str, md: object) -> export_pb2.Export:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        export = stub.GetExport(export_pb2.GetExportRequest(name=name), metadata=md).export
        if export.state in (export_pb2.EXPORT_STATE_DONE, export_pb2.EXPORT_STATE_FAILED):
            return export
        time.sleep(0.05)
    raise AssertionError(f"export {name} did not finish")


def _download(stub: export_pb2_grpc.ExportServiceStub, name: str, md: object) -> bytes:
    return b"".join(
        r.chunk for r in stub.ReadExportArtifact(export_pb2.ReadExportArtifactRequest(name=name), metadata=md)
    )


@pytest.fixture
def service(
    start_services: Callable[..., Runtime], channel_to: Callable[[Runtime], grpc.Channel]
) -> tuple[Runtime, export_pb2_grpc.ExportServiceStub]:
    runtime = start_services([create_component])
    _publish(runtime, TOPIC_TASKS, _project_created("acme", "p1"))
    _publish(runtime, TOPIC_QA, _item_accepted("acme", "p1", "i1", [_car(1), _car(2)]))
    _publish(runtime, TOPIC_QA, _item_accepted("acme", "p1", "i2", [_car(3)]))
    runtime.wait_idle()
    return runtime, export_pb2_grpc.ExportServiceStub(channel_to(runtime))


def test_coco_export_end_to_end(service, caller, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Events in, CreateExport, poll to DONE, stream the zip; it unzips to a COCO file pycocotools loads."""
    runtime, stub = service
    md = caller(org="acme", roles=(MANAGER,)).md
    created = stub.CreateExport(
        export_pb2.CreateExportRequest(
            parent="projects/p1", format=export_pb2.EXPORT_FORMAT_COCO, request_id="r1"
        ),
        metadata=md,
    ).export
    assert created.state in (export_pb2.EXPORT_STATE_PENDING, export_pb2.EXPORT_STATE_RUNNING)
    done = _wait_done(stub, created.name, md)
    assert done.state == export_pb2.EXPORT_STATE_DONE
    assert (done.item_count, done.annotation_count) == (2, 3)
    assert done.HasField("end_time")
    data = _download(stub, created.name, md)
    assert len(data) == done.artifact_size_bytes
    assert hashlib.sha256(data).hexdigest() == done.artifact_sha256
    archive = zipfile.ZipFile(io.BytesIO(data))
    (tmp_path / "a.json").write_bytes(archive.read("annotations.json"))
    coco = COCO(str(tmp_path / "a.json"))
    assert (len(coco.getImgIds()), len(coco.getAnnIds()), len(coco.getCatIds())) == (2, 3, 2)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["export"] == created.name
    assert manifest["format"] == "coco"
    runtime.wait_idle()


def test_export_completed_event_is_published(service, caller) -> None:  # type: ignore[no-untyped-def]
    """Finishing a job publishes ExportCompleted with the DONE export on the export topic."""
    runtime, stub = service
    md = caller(org="acme").md
    name = stub.CreateExport(
        export_pb2.CreateExportRequest(parent="projects/p1", format=export_pb2.EXPORT_FORMAT_YOLO),
        metadata=md,
    ).export.name
    _wait_done(stub, name, md)
    runtime.wait_idle()
    sub = runtime.bus.subscribe("probe", ["annocloud.export.v1"])
    records = sub.poll(100, 1.0)
    events = [events_pb2.EventEnvelope.FromString(r.value) for r in records]
    completed = [e for e in events if e.HasField("export_completed")]
    assert [e.export_completed.export.name for e in completed] == [name]
    assert completed[0].export_completed.export.state == export_pb2.EXPORT_STATE_DONE
    assert completed[0].tenant_id == "acme"


def test_create_is_idempotent_on_request_id(service, caller) -> None:  # type: ignore[no-untyped-def]
    """The same request_id returns the same job; reusing it for another format is INVALID_ARGUMENT."""
    _, stub = service
    md = caller(org="acme").md
    request = export_pb2.CreateExportRequest(
        parent="projects/p1", format=export_pb2.EXPORT_FORMAT_JSONL, request_id="same"
    )
    first = stub.CreateExport(request, metadata=md).export
    second = stub.CreateExport(request, metadata=md).export
    assert first.name == second.name
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateExport(
            export_pb2.CreateExportRequest(
                parent="projects/p1", format=export_pb2.EXPORT_FORMAT_COCO, request_id="same"
            ),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = stub.ListExports(export_pb2.ListExportsRequest(parent="projects/p1"), metadata=md).exports
    assert [e.name for e in listed] == [first.name]


def test_list_is_newest_first_and_paginated(service, caller) -> None:  # type: ignore[no-untyped-def]
    """ListExports pages newest first with an opaque token; a tampered token is INVALID_ARGUMENT."""
    _, stub = service
    md = caller(org="acme").md
    names = [
        stub.CreateExport(
            export_pb2.CreateExportRequest(parent="projects/p1", format=export_pb2.EXPORT_FORMAT_JSONL),
            metadata=md,
        ).export.name
        for _ in range(3)
    ]
    page1 = stub.ListExports(export_pb2.ListExportsRequest(parent="projects/p1", page_size=2), metadata=md)
    page2 = stub.ListExports(
        export_pb2.ListExportsRequest(parent="projects/p1", page_size=2, page_token=page1.next_page_token),
        metadata=md,
    )
    assert [e.name for e in page1.exports] + [e.name for e in page2.exports] == names[::-1]
    assert page2.next_page_token == ""
    with pytest.raises(grpc.RpcError) as err:
        stub.ListExports(export_pb2.ListExportsRequest(parent="projects/p1", page_token="!!"), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_other_organization_gets_not_found(service, caller) -> None:  # type: ignore[no-untyped-def]
    """Another org cannot create in, list, get or read this org's project exports: NOT_FOUND each time."""
    _, stub = service
    md = caller(org="acme").md
    name = stub.CreateExport(
        export_pb2.CreateExportRequest(parent="projects/p1", format=export_pb2.EXPORT_FORMAT_JSONL),
        metadata=md,
    ).export.name
    _wait_done(stub, name, md)
    other = caller(org="evil").md
    calls = [
        lambda: stub.CreateExport(
            export_pb2.CreateExportRequest(parent="projects/p1", format=export_pb2.EXPORT_FORMAT_JSONL),
            metadata=other,
        ),
        lambda: stub.GetExport(export_pb2.GetExportRequest(name=name), metadata=other),
        lambda: stub.ListExports(export_pb2.ListExportsRequest(parent="projects/p1"), metadata=other),
        lambda: _download(stub, name, other),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = stub.ListExports(export_pb2.ListExportsRequest(parent="projects/p1"), metadata=md).exports
    assert [e.name for e in listed] == [name]


def test_bad_input_is_rejected(service, caller) -> None:  # type: ignore[no-untyped-def]
    """Missing format, unknown format, bad names and unknown projects get 4xx codes, never INTERNAL."""
    _, stub = service
    md = caller(org="acme").md
    cases = [
        (export_pb2.CreateExportRequest(parent="projects/p1"), grpc.StatusCode.INVALID_ARGUMENT),
        (export_pb2.CreateExportRequest(parent="projects/p1", format=99), grpc.StatusCode.INVALID_ARGUMENT),  # type: ignore[arg-type]
        (export_pb2.CreateExportRequest(parent="p1", format=1), grpc.StatusCode.INVALID_ARGUMENT),  # type: ignore[arg-type]
        (export_pb2.CreateExportRequest(parent="projects/nope", format=1), grpc.StatusCode.NOT_FOUND),  # type: ignore[arg-type]
        (
            export_pb2.CreateExportRequest(parent="projects/p1", format=1, request_id="x" * 200),  # type: ignore[arg-type]
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateExport(request, metadata=md)
        assert err.value.code() == code
    with pytest.raises(grpc.RpcError) as err:
        stub.GetExport(export_pb2.GetExportRequest(name="projects/p1/exports/../x"), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.ListExports(export_pb2.ListExportsRequest(parent="projects/p1"), metadata=md).exports == []


def test_annotator_cannot_create_exports(service, caller) -> None:  # type: ignore[no-untyped-def]
    """CreateExport needs a manager role."""
    _, stub = service
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateExport(
            export_pb2.CreateExportRequest(parent="projects/p1", format=export_pb2.EXPORT_FORMAT_COCO),
            metadata=caller(org="acme", roles=(ANNOTATOR,)).md,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_read_before_done_is_failed_precondition(start_services, channel_to, caller, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Reading the artifact of a job that is not DONE is FAILED_PRECONDITION EXPORT_NOT_READY."""
    data_dir = tmp_path / "svc"
    runtime = start_services([create_component], data_dir=data_dir)
    _publish(runtime, TOPIC_TASKS, _project_created("acme", "p1"))
    runtime.wait_idle()
    runtime.stop()
    db = Database(sqlite_url(str(data_dir / "export.db")))
    with db.transaction() as session:
        job = store.create_export(
            session, organization_id="acme", project_id="p1", export_format=1, request_id=None
        )
        job.state = store.RUNNING
        job.lease_owner = "someone-else"
        job.lease_expire_time = store.utc_now() + timedelta(hours=1)
        name = f"projects/p1/exports/{job.export_id}"
    db.dispose()
    runtime = start_services([create_component], data_dir=data_dir)
    stub = export_pb2_grpc.ExportServiceStub(channel_to(runtime))
    with pytest.raises(grpc.RpcError) as err:
        _download(stub, name, caller(org="acme").md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "EXPORT_NOT_READY" in str(err.value.trailing_metadata())


def test_pending_job_survives_a_restart(start_services, channel_to, caller, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A job left PENDING when the process stopped is run by the worker of the next start."""
    data_dir = tmp_path / "svc"
    runtime = start_services([create_component], data_dir=data_dir)
    _publish(runtime, TOPIC_TASKS, _project_created("acme", "p1"))
    _publish(runtime, TOPIC_QA, _item_accepted("acme", "p1", "i1", [_car(1)]))
    runtime.wait_idle()
    runtime.stop()
    db = Database(sqlite_url(str(data_dir / "export.db")))
    with db.transaction() as session:
        job = store.create_export(
            session, organization_id="acme", project_id="p1", export_format=2, request_id=None
        )
        name = f"projects/p1/exports/{job.export_id}"
    db.dispose()
    runtime = start_services([create_component], data_dir=data_dir)
    stub = export_pb2_grpc.ExportServiceStub(channel_to(runtime))
    md = caller(org="acme").md
    done = _wait_done(stub, name, md)
    assert (done.state, done.item_count, done.annotation_count) == (export_pb2.EXPORT_STATE_DONE, 1, 1)
    archive = zipfile.ZipFile(io.BytesIO(_download(stub, name, md)))
    assert "Annotations/i1.xml" in archive.namelist()


def test_empty_project_export_succeeds(start_services, channel_to, caller, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A project with no accepted items exports DONE with empty but valid files."""
    runtime = start_services([create_component])
    _publish(runtime, TOPIC_TASKS, _project_created("acme", "p1"))
    runtime.wait_idle()
    stub = export_pb2_grpc.ExportServiceStub(channel_to(runtime))
    md = caller(org="acme", roles=(ADMIN,)).md
    name = stub.CreateExport(
        export_pb2.CreateExportRequest(parent="projects/p1", format=export_pb2.EXPORT_FORMAT_COCO),
        metadata=md,
    ).export.name
    done = _wait_done(stub, name, md)
    assert (done.state, done.item_count, done.annotation_count) == (export_pb2.EXPORT_STATE_DONE, 0, 0)
    archive = zipfile.ZipFile(io.BytesIO(_download(stub, name, md)))
    (tmp_path / "a.json").write_bytes(archive.read("annotations.json"))
    coco = COCO(str(tmp_path / "a.json"))
    assert coco.getImgIds() == []
    assert coco.getCatIds() == [1, 2]


@pytest.mark.parametrize(
    ("fmt", "main_file"),
    [
        (export_pb2.EXPORT_FORMAT_CVAT, "annotations.xml"),
        (export_pb2.EXPORT_FORMAT_LABEL_STUDIO, "tasks.json"),
        (export_pb2.EXPORT_FORMAT_CSV, "labels.csv"),
        (export_pb2.EXPORT_FORMAT_YOLO_SEGMENTATION, "obj.names"),
    ],
)
def test_new_formats_export_through_the_service(service, caller, fmt: int, main_file: str) -> None:  # type: ignore[no-untyped-def]
    """CreateExport accepts CVAT, Label Studio, CSV and YOLO segmentation; the artifact imports back."""
    from annocloud_server.formats.importers import ImportFormat, import_archive
    from annocloud_server.formats.model import ImportedItem, RowError
    from annocloud_server.formats.safety import SafeZip

    _, stub = service
    md = caller(org="acme", roles=(MANAGER,)).md
    name = stub.CreateExport(
        export_pb2.CreateExportRequest(parent="projects/p1", format=fmt), metadata=md
    ).export.name  # type: ignore[arg-type]
    done = _wait_done(stub, name, md)
    assert done.state == export_pb2.EXPORT_STATE_DONE
    archive = SafeZip(io.BytesIO(_download(stub, name, md)))
    assert main_file in archive.names()
    assert json.loads(archive.read("manifest.json", max_bytes=1 << 20))["counts"]["items"] == 2
    back = {
        export_pb2.EXPORT_FORMAT_CVAT: ImportFormat.CVAT,
        export_pb2.EXPORT_FORMAT_LABEL_STUDIO: ImportFormat.LABEL_STUDIO,
    }
    if fmt in back:
        records = list(import_archive(archive, back[fmt]))
        assert not [r for r in records if isinstance(r, RowError)]
        boxes = [len(r.labels.regions) for r in records if isinstance(r, ImportedItem)]
        assert boxes == [2, 1]
