"""Dataset-version RPCs for real: events through the bus, versions, diffs, the feed and exports over gRPC."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.export.v1 import export_pb2 as pb
from annocloud.export.v1 import export_pb2_grpc
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.auth import ANNOTATOR, MANAGER
from annocloud_server.common.events import TOPIC_QA, TOPIC_TASKS, OutgoingRecord
from annocloud_server.export.component import create_component
from annocloud_server.runtime import Runtime

SCHEMA = tasks_pb2.LabelSchema(
    name="projects/p1/schemas/1",
    version=1,
    objects=[tasks_pb2.ObjectLabel(name=n, kind=tasks_pb2.OBJECT_KIND_BOX) for n in ("car", "bus")],
)


def _publish(runtime: Runtime, topic: str, envelope: events_pb2.EventEnvelope) -> None:
    runtime.bus.publish([OutgoingRecord(topic, envelope.resource_name, envelope.SerializeToString())])


def _accept(runtime: Runtime, item_id: str, label: str) -> None:
    accepted = qa_pb2.AcceptedLabel(
        name=f"projects/p1/acceptedLabels/{item_id}",
        item=f"datasets/d1/items/{item_id}",
        labels=ann.Labels(regions=[ann.Region(label=label, box=ann.Box(x=1, y=2, width=3, height=4))]),
        schema_version=1,
    )
    accepted.accept_time.GetCurrentTime()
    envelope = events_pb2.EventEnvelope(
        event_id=f"ia-{item_id}-{time.monotonic_ns()}",
        event_type="annocloud.events.v1.ItemAccepted",
        tenant_id="acme",
        resource_name=accepted.name,
        aggregate_version=1,
        item_accepted=events_pb2.ItemAccepted(
            accepted_label=accepted,
            item=events_pb2.ItemContext(
                item=accepted.item,
                media_type=common_pb2.MEDIA_TYPE_IMAGE,
                file_name=f"{item_id}.jpg",
                width=64,
                height=64,
            ),
        ),
    )
    _publish(runtime, TOPIC_QA, envelope)


@pytest.fixture
def service(
    start_services: Callable[..., Runtime], channel_to: Callable[[Runtime], grpc.Channel]
) -> tuple[Runtime, export_pb2_grpc.ExportServiceStub]:
    runtime = start_services([create_component])
    project = events_pb2.EventEnvelope(
        event_id="pc-acme-p1",
        event_type="annocloud.events.v1.ProjectCreated",
        tenant_id="acme",
        resource_name="projects/p1",
        aggregate_version=1,
        project_created=events_pb2.ProjectCreated(
            project=tasks_pb2.Project(name="projects/p1", display_name="Cars", schema_version=1),
            schema=SCHEMA,
        ),
    )
    _publish(runtime, TOPIC_TASKS, project)
    for i in range(10):
        _accept(runtime, f"i{i}", "car" if i < 6 else "bus")
    runtime.wait_idle()
    return runtime, export_pb2_grpc.ExportServiceStub(channel_to(runtime))


def _create(stub: export_pb2_grpc.ExportServiceStub, md: object, request_id: str = "") -> pb.DatasetVersion:
    request = pb.CreateDatasetVersionRequest(
        parent="projects/p1",
        dataset_version=pb.DatasetVersion(display_name="v"),
        split=pb.SplitSpec(train_fraction=0.5, validation_fraction=0.3, test_fraction=0.2, seed=11),
        request_id=request_id,
    )
    return stub.CreateDatasetVersion(request, metadata=md).dataset_version


def test_versions_diff_items_and_feed_over_grpc(service, caller) -> None:  # type: ignore[no-untyped-def]
    """Create (idempotent), Get, List, items per split, a diff after new acceptances and the feed since v1."""
    runtime, stub = service
    md = caller(org="acme", roles=(MANAGER,)).md
    v1 = _create(stub, md, "r1")
    assert _create(stub, md, "r1").name == v1.name
    assert (v1.item_count, v1.train_count, v1.validation_count, v1.test_count) == (10, 5, 3, 2)
    assert list(v1.label_schema_versions) == [1]
    got = stub.GetDatasetVersion(pb.GetDatasetVersionRequest(name=v1.name), metadata=md).dataset_version
    assert got == v1
    train = stub.ListDatasetVersionItems(
        pb.ListDatasetVersionItemsRequest(parent=v1.name, split=pb.SPLIT_TRAIN, page_size=2), metadata=md
    )
    assert len(train.items) == 2
    assert train.next_page_token
    assert all(i.split == pb.SPLIT_TRAIN for i in train.items)

    _accept(runtime, "i0", "bus")
    _accept(runtime, "i20", "car")
    runtime.wait_idle()
    v2 = _create(stub, md)
    listed = stub.ListDatasetVersions(pb.ListDatasetVersionsRequest(parent="projects/p1"), metadata=md)
    assert [v.name for v in listed.dataset_versions] == [v2.name, v1.name]
    diff = stub.DiffDatasetVersions(
        pb.DiffDatasetVersionsRequest(dataset_version=v2.name, base_version=v1.name), metadata=md
    )
    assert [(e.item, e.kind) for e in diff.entries] == [
        ("datasets/d1/items/i0", pb.CHANGE_KIND_CHANGED),
        ("datasets/d1/items/i20", pb.CHANGE_KIND_ADDED),
    ]
    assert diff.entries[0].before.regions[0].label == "car"
    assert diff.entries[0].after.regions[0].label == "bus"

    feed = stub.ListChanges(pb.ListChangesRequest(parent="projects/p1", since_version=v1.name), metadata=md)
    assert [c.item for c in feed.changes] == ["datasets/d1/items/i0", "datasets/d1/items/i20"]
    assert not feed.next_page_token
    _accept(runtime, "i21", "car")
    runtime.wait_idle()
    later = stub.ListChanges(
        pb.ListChangesRequest(parent="projects/p1", page_token=feed.resume_token), metadata=md
    )
    assert [c.item for c in later.changes] == ["datasets/d1/items/i21"]
    assert later.changes[0].kind == pb.CHANGE_KIND_ADDED


def test_version_export_and_manifest_over_grpc(service, caller) -> None:  # type: ignore[no-untyped-def]
    """CreateExport of a version reports it, and the streamed sidecar manifest checksums the streamed zip."""
    _, stub = service
    md = caller(org="acme", roles=(MANAGER,)).md
    version = _create(stub, md)
    name = stub.CreateExport(
        pb.CreateExportRequest(
            parent="projects/p1", format=pb.EXPORT_FORMAT_PASCAL_VOC, dataset_version=version.name
        ),
        metadata=md,
    ).export.name
    deadline = time.monotonic() + 20
    while True:
        job = stub.GetExport(pb.GetExportRequest(name=name), metadata=md).export
        if job.state in (pb.EXPORT_STATE_DONE, pb.EXPORT_STATE_FAILED) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert job.state == pb.EXPORT_STATE_DONE, job.error_message
    assert job.dataset_version == version.name
    data = b"".join(
        r.chunk for r in stub.ReadExportArtifact(pb.ReadExportArtifactRequest(name=name), metadata=md)
    )
    raw = b"".join(
        r.chunk
        for r in stub.ReadExportArtifact(pb.ReadExportArtifactRequest(name=name, manifest=True), metadata=md)
    )
    sidecar = json.loads(raw)
    assert sidecar["artifact"]["sha256"] == hashlib.sha256(data).hexdigest() == job.artifact_sha256
    assert sidecar["artifact"]["size"] == len(data)
    archive = zipfile.ZipFile(io.BytesIO(data))
    lists = {s: archive.read(f"ImageSets/Main/{s}.txt").decode().split() for s in ("train", "val", "test")}
    assert [len(lists[s]) for s in ("train", "val", "test")] == [5, 3, 2]


def test_version_errors_are_clear(service, caller) -> None:  # type: ignore[no-untyped-def]
    """Bad fractions, a tampered feed token, an unknown version and an annotator's create are refused."""
    _, stub = service
    md = caller(org="acme", roles=(MANAGER,)).md
    bad = pb.CreateDatasetVersionRequest(
        parent="projects/p1", split=pb.SplitSpec(train_fraction=0.9, test_fraction=0.9)
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateDatasetVersion(bad, metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.ListChanges(pb.ListChangesRequest(parent="projects/p1", page_token="bm9wZQ=="), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDatasetVersion(
            pb.GetDatasetVersionRequest(name="projects/p1/datasetVersions/nope"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    other = caller(org="other", roles=(MANAGER,)).md
    version = _create(stub, md)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDatasetVersion(pb.GetDatasetVersionRequest(name=version.name), metadata=other)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        _create(stub, caller(org="acme", roles=(ANNOTATOR,)).md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_dataset_version_created_event_is_published_once(service, caller) -> None:  # type: ignore[no-untyped-def]
    """Creating a version publishes one DatasetVersionCreated keyed by its name; an idempotent replay adds none."""
    runtime, stub = service
    md = caller(org="acme").md
    version = _create(stub, md, request_id="once")
    assert _create(stub, md, request_id="once").name == version.name
    runtime.wait_idle()
    sub = runtime.bus.subscribe("probe", ["annocloud.export.v1"])
    records = sub.poll(100, 1.0)
    events = [events_pb2.EventEnvelope.FromString(r.value) for r in records]
    created = [e for e in events if e.HasField("dataset_version_created")]
    assert [e.resource_name for e in created] == [version.name]
    assert created[0].tenant_id == "acme"
    assert created[0].event_type == "annocloud.events.v1.DatasetVersionCreated"
    assert created[0].dataset_version_created.dataset_version == version
    assert [r.key for r in records if r.value == created[0].SerializeToString()] == [version.name]
