"""ModelAssistService on port 0 with the in-process bus, without a reachable Triton: work waits
(and backs off) instead of being lost, readiness says NOT_SERVING, projects and accepted labels are
tracked, and the RPCs answer with clear errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2
from annocloud.modelassist.v1 import modelassist_pb2 as mpb
from annocloud.modelassist.v1 import modelassist_pb2_grpc
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.auth import ADMIN, ANNOTATOR
from annocloud_server.common.events import TOPIC_INGESTION, TOPIC_QA, TOPIC_TASKS, OutgoingRecord
from annocloud_server.common.paging import new_id
from annocloud_server.modelassist.component import create_component
from annocloud_server.modelassist.models import PendingItem
from annocloud_server.runtime import Runtime
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

SCHEMA = tasks_pb2.LabelSchema(
    version=1,
    classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
    classes=[tasks_pb2.ClassLabel(name="sports"), tasks_pb2.ClassLabel(name="cooking")],
)
SETTINGS = tasks_pb2.ModelAssistSettings(strategy=tasks_pb2.SAMPLING_STRATEGY_MARGIN, retrain_every=2)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def publish(runtime: Runtime, topic: str, resource: str, **payload: Any) -> None:
    envelope = events_pb2.EventEnvelope(
        event_id=new_id(),
        event_type="annocloud.events.v1." + type(next(iter(payload.values()))).__name__,
        tenant_id="acme",
        resource_name=resource,
        aggregate_version=1,
        **payload,
    )
    runtime.bus.publish([OutgoingRecord(topic, resource, envelope.SerializeToString())])
    runtime.wait_idle()


@pytest.fixture
def runtime(start_services: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("ANNOCLOUD_MODELASSIST_INTERVAL_SECONDS", "0.05")
    monkeypatch.setenv("ANNOCLOUD_MODELASSIST_TRITON_TIMEOUT_SECONDS", "1")
    return start_services([create_component], triton_url=f"127.0.0.1:{closed_port()}")


def project_created(runtime: Runtime) -> None:
    project = tasks_pb2.Project(name="projects/p1", datasets=["datasets/d1"], model_assist=SETTINGS)
    publish(
        runtime,
        TOPIC_TASKS,
        "projects/p1",
        project_created=events_pb2.ProjectCreated(project=project, schema=SCHEMA),
    )


def ingest(runtime: Runtime, item: str, text: str) -> None:
    message = ingestion_pb2.Item(
        name=f"datasets/d1/items/{item}", media_type=common_pb2.MEDIA_TYPE_TEXT, text=text
    )
    publish(runtime, TOPIC_INGESTION, message.name, item_ingested=events_pb2.ItemIngested(item=message))


def test_triton_down_keeps_the_work_queued_with_backoff_and_readiness_off(
    runtime: Runtime, channel_to: Callable[..., grpc.Channel]
) -> None:
    """With Triton unreachable an ingested item stays queued (attempts and error recorded, next try
    later) and the service's health is NOT_SERVING."""
    project_created(runtime)
    ingest(runtime, "i1", "the striker scored twice")
    (component,) = runtime.components
    deadline = time.monotonic() + 20
    row = None
    while time.monotonic() < deadline:
        with component.db.read() as session:
            row = session.execute(select(PendingItem)).scalar_one_or_none()
            if row is not None and row.attempts > 0:
                break
        time.sleep(0.1)
    assert row is not None
    assert row.attempts > 0, row
    assert "127.0.0.1" in row.last_error or "unavailable" in row.last_error.lower()
    assert row.next_attempt_time.timestamp() > time.time()
    health = health_pb2_grpc.HealthStub(channel_to(runtime))
    status = health.Check(
        health_pb2.HealthCheckRequest(service="annocloud.modelassist.v1.ModelAssistService")
    ).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_project_model_tracks_accepted_labels_and_roles(
    runtime: Runtime, channel_to: Callable[..., grpc.Channel], caller: Callable[..., Any]
) -> None:
    """GetProjectModel counts accepted single-class labels toward the next retraining; another
    organization gets NOT_FOUND; an annotator cannot rescore; bad names are INVALID_ARGUMENT."""
    project_created(runtime)
    stub = modelassist_pb2_grpc.ModelAssistServiceStub(channel_to(runtime))
    admin = caller(org="acme", subject="user:admin", roles=(ADMIN,)).md
    label = qa_pb2.AcceptedLabel(name="projects/p1/acceptedLabels/i1", item="datasets/d1/items/i1")
    label.labels.classes.append("sports")
    publish(runtime, TOPIC_QA, label.name, item_accepted=events_pb2.ItemAccepted(accepted_label=label))
    model = stub.GetProjectModel(mpb.GetProjectModelRequest(project="projects/p1"), metadata=admin).model
    assert (model.labels_since_training, model.retrain_every, model.head_version) == (1, 2, 0)
    assert list(model.classes) == ["sports", "cooking"]
    assert model.strategy == "SAMPLING_STRATEGY_MARGIN"
    other = caller(org="globex", subject="user:admin", roles=(ADMIN,)).md
    with pytest.raises(grpc.RpcError) as info:
        stub.GetProjectModel(mpb.GetProjectModelRequest(project="projects/p1"), metadata=other)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    annotator = caller(org="acme", subject="user:ann", roles=(ANNOTATOR,)).md
    with pytest.raises(grpc.RpcError) as info:
        stub.RescoreProject(mpb.RescoreProjectRequest(project="projects/p1"), metadata=annotator)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        stub.GetProjectModel(mpb.GetProjectModelRequest(project="p1"), metadata=admin)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.DetectSensitiveRegions(mpb.DetectSensitiveRegionsRequest(image=b""), metadata=admin)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
