"""AnnotationService over gRPC against a fake TaskService: submit, revise, read, predictions."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2 as pb
from annocloud.annotations.v1 import annotations_pb2_grpc
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.annotations.component import create_component
from annocloud_server.common.auth import ADMIN, ANNOTATOR, REVIEWER, Authenticator
from annocloud_server.common.errors import NotFound
from annocloud_server.common.events import TOPIC_ANNOTATIONS
from annocloud_server.common.inprocess_bus import InProcessEventBus
from annocloud_server.common.server import GrpcServer, ServiceRegistration, build_server
from annocloud_server.runtime import Runtime, start_runtime

SCHEMA = tasks_pb2.LabelSchema(
    name="projects/p1/schemas/1",
    version=1,
    classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
    classes=[tasks_pb2.ClassLabel(name="cat"), tasks_pb2.ClassLabel(name="dog")],
    objects=[tasks_pb2.ObjectLabel(name="car", kind=tasks_pb2.OBJECT_KIND_BOX)],
)


class FakeTaskService(tasks_pb2_grpc.TaskServiceServicer):
    """Fake TaskService: tasks and schemas per organization, checked against the forwarded principal."""

    def __init__(self, authenticator: Authenticator):
        self.auth = authenticator
        self.tasks: dict[tuple[str, str], tasks_pb2.Task] = {}
        self.schemas: dict[tuple[str, str], tasks_pb2.LabelSchema] = {}
        self.schema_calls = 0

    def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetTaskResponse:
        org = self.auth.principal(context).organization_id
        task = self.tasks.get((org, request.name))
        if task is None:
            raise NotFound("task not found")
        return tasks_pb2.GetTaskResponse(task=task)

    def GetProject(
        self, request: tasks_pb2.GetProjectRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetProjectResponse:
        org = self.auth.principal(context).organization_id
        if not any(o == org and name.startswith(request.name + "/") for o, name in self.tasks):
            raise NotFound("project not found")
        return tasks_pb2.GetProjectResponse(project=tasks_pb2.Project(name=request.name))

    def GetLabelSchema(
        self, request: tasks_pb2.GetLabelSchemaRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetLabelSchemaResponse:
        self.schema_calls += 1
        org = self.auth.principal(context).organization_id
        schema = self.schemas.get((org, request.name))
        if schema is None:
            raise NotFound("schema not found")
        return tasks_pb2.GetLabelSchemaResponse(schema=schema)

    def add_task(
        self,
        org: str,
        task_id: str,
        worker: str,
        *,
        kind: int = tasks_pb2.TASK_KIND_LABEL,
        rework_of: str = "",
        expire_in: float = 600,
    ) -> tasks_pb2.Task:
        task = tasks_pb2.Task(
            name=f"projects/p1/tasks/{task_id}",
            item=f"datasets/d1/items/i-{task_id}",
            schema_version=1,
            state=tasks_pb2.TASK_STATE_LEASED,
            kind=kind,  # type: ignore[arg-type]
            lease=tasks_pb2.Lease(lease_id=f"lease-{task_id}", worker=worker),
            media_type=common_pb2.MEDIA_TYPE_IMAGE,
            item_file_name=f"{task_id}.png",
            item_width=640,
            item_height=480,
            redundancy=3,
            rework_of=rework_of,
        )
        task.lease.expire_time.FromDatetime(datetime.now(UTC) + timedelta(seconds=expire_in))
        self.tasks[(org, task.name)] = task
        self.schemas[(org, "projects/p1/schemas/1")] = SCHEMA
        return task


class Env:
    def __init__(
        self, runtime: Runtime, fake: FakeTaskService, stub: annotations_pb2_grpc.AnnotationServiceStub
    ):
        self.runtime = runtime
        self.fake = fake
        self.stub = stub

    def events(self) -> list[events_pb2.EventEnvelope]:
        self.runtime.wait_idle()
        records = self.runtime.bus.subscribe("test-reader", [TOPIC_ANNOTATIONS]).poll(1000, 0)
        return [events_pb2.EventEnvelope.FromString(r.value) for r in records]


@pytest.fixture
def env(tmp_path: Path, authenticator: Authenticator) -> Iterator[Env]:
    fake = FakeTaskService(authenticator)
    tasks_server: GrpcServer = build_server(
        [
            ServiceRegistration(
                "annocloud.tasks.v1.TaskService",
                lambda s: tasks_pb2_grpc.add_TaskServiceServicer_to_server(fake, s),
            )
        ]
    )
    runtime = start_runtime(
        [create_component],
        data_dir=tmp_path,
        bus=InProcessEventBus(str(tmp_path / "events.db")),
        authenticator=authenticator,
        service_addresses={"tasks": f"127.0.0.1:{tasks_server.port}"},
    )
    channel = grpc.insecure_channel(runtime.address)
    yield Env(runtime, fake, annotations_pb2_grpc.AnnotationServiceStub(channel))
    channel.close()
    runtime.stop()
    tasks_server.stop(0)


def labels(cls: str = "cat", *boxes: tuple[float, float, float, float]) -> pb.Labels:
    return pb.Labels(
        classes=[cls],
        regions=[pb.Region(label="car", box=pb.Box(x=x, y=y, width=w, height=h)) for x, y, w, h in boxes],
    )


def code_and_reason(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason = ""
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason
    return error.code(), reason


def submit(env: Env, md: tuple, task_id: str, lab: pb.Labels, request_id: str = "") -> pb.Annotation:  # type: ignore[type-arg]
    response = env.stub.SubmitAnnotation(
        pb.SubmitAnnotationRequest(
            task=f"projects/p1/tasks/{task_id}",
            lease_id=f"lease-{task_id}",
            labels=lab,
            request_id=request_id,
        ),
        metadata=md,
    )
    return response.annotation


def test_submit_stores_revision_and_emits_event(env: Env, caller: Callable[..., object]) -> None:
    """A valid submit on a held lease stores revision 1 and emits AnnotationSubmitted with item context."""
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    env.fake.add_task("acme", "t1", "user:alice")
    annotation = submit(env, alice.md, "t1", labels("cat", (10, 10, 50, 50)))  # type: ignore[attr-defined]
    assert annotation.revision == 1
    assert annotation.annotator == "user:alice"
    assert annotation.item == "datasets/d1/items/i-t1"
    submitted = [e for e in env.events() if e.HasField("annotation_submitted")]
    assert len(submitted) == 1
    event = submitted[0].annotation_submitted
    assert event.annotation.name == annotation.name
    assert event.redundancy == 3
    assert (event.item.width, event.item.height, event.item.file_name) == (640, 480, "t1.png")
    assert submitted[0].tenant_id == "acme"


def test_second_submit_and_idempotent_replay(env: Env, caller: Callable[..., object]) -> None:
    """The same request_id returns the first result; another submit on the task is TASK_ALREADY_SUBMITTED."""
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    env.fake.add_task("acme", "t2", "user:alice")
    first = submit(env, alice.md, "t2", labels(), request_id="r-1")  # type: ignore[attr-defined]
    again = submit(env, alice.md, "t2", labels(), request_id="r-1")  # type: ignore[attr-defined]
    assert again.name == first.name
    with pytest.raises(grpc.RpcError) as info:
        submit(env, alice.md, "t2", labels(), request_id="r-2")  # type: ignore[attr-defined]
    assert code_and_reason(info.value) == (grpc.StatusCode.ALREADY_EXISTS, "TASK_ALREADY_SUBMITTED")
    assert len([e for e in env.events() if e.HasField("annotation_submitted")]) == 1


def test_lease_must_be_held(env: Env, caller: Callable[..., object]) -> None:
    """Another worker, a wrong lease id or an expired lease get LEASE_NOT_HELD."""
    bob = caller(org="acme", subject="user:bob", roles=(ANNOTATOR,))
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    env.fake.add_task("acme", "t3", "user:alice")
    env.fake.add_task("acme", "t4", "user:alice", expire_in=-5)
    for md, task_id, lease in (
        (bob.md, "t3", "lease-t3"),
        (alice.md, "t3", "other"),
        (alice.md, "t4", "lease-t4"),
    ):  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as info:
            env.stub.SubmitAnnotation(
                pb.SubmitAnnotationRequest(
                    task=f"projects/p1/tasks/{task_id}", lease_id=lease, labels=labels()
                ),
                metadata=md,
            )
        assert code_and_reason(info.value) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_NOT_HELD")


def test_bad_labels_refused_and_nothing_stored(env: Env, caller: Callable[..., object]) -> None:
    """Out-of-image, NaN and unknown-label submissions are INVALID_ARGUMENT and store nothing."""
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    env.fake.add_task("acme", "t5", "user:alice")
    cases = [
        (
            labels("cat", (600, 0, 100, 10)),
            "GEOMETRY_OUT_OF_IMAGE",
            "regions[0].box: x+width 700 exceeds image width 640",
        ),
        (labels("cat", (math.nan, 0, 1, 1)), "BAD_GEOMETRY", None),
        (labels("horse"), "UNKNOWN_LABEL", None),
    ]
    for lab, reason, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            submit(env, alice.md, "t5", lab)  # type: ignore[attr-defined]
        assert code_and_reason(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
        if message:
            assert info.value.details() == message
    listed = env.stub.ListAnnotations(pb.ListAnnotationsRequest(parent="projects/p1"), metadata=alice.md)  # type: ignore[attr-defined]
    assert len(listed.annotations) == 0
    assert env.fake.schema_calls == 1  # the schema version is cached


def test_update_etag_revisions_and_permissions(env: Env, caller: Callable[..., object]) -> None:
    """Edits need the current etag, add revisions (oldest first) and are for the annotator or a reviewer."""
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    bob = caller(org="acme", subject="user:bob", roles=(ANNOTATOR,))
    rita = caller(org="acme", subject="user:rita", roles=(REVIEWER,))
    env.fake.add_task("acme", "t6", "user:alice")
    first = submit(env, alice.md, "t6", labels("cat"))  # type: ignore[attr-defined]
    second = env.stub.UpdateAnnotation(
        pb.UpdateAnnotationRequest(name=first.name, labels=labels("dog"), etag=first.etag),
        metadata=alice.md,  # type: ignore[attr-defined]
    ).annotation
    assert second.revision == 2
    assert second.etag != first.etag
    with pytest.raises(grpc.RpcError) as info:
        env.stub.UpdateAnnotation(
            pb.UpdateAnnotationRequest(name=first.name, labels=labels("cat"), etag=first.etag),
            metadata=alice.md,
        )  # type: ignore[attr-defined]
    assert code_and_reason(info.value) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    with pytest.raises(grpc.RpcError) as info:
        env.stub.UpdateAnnotation(
            pb.UpdateAnnotationRequest(name=first.name, labels=labels("cat"), etag=second.etag),
            metadata=bob.md,
        )  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        env.stub.UpdateAnnotation(
            pb.UpdateAnnotationRequest(name=first.name, labels=labels("cat", (0, 0, 0, 1)), etag=second.etag),
            metadata=rita.md,
        )  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    third = env.stub.UpdateAnnotation(
        pb.UpdateAnnotationRequest(name=first.name, labels=labels("cat"), etag=second.etag),
        metadata=rita.md,  # type: ignore[attr-defined]
    ).annotation
    assert third.revision == 3
    assert third.revised_by == "user:rita"
    page1 = env.stub.ListAnnotationRevisions(
        pb.ListAnnotationRevisionsRequest(name=first.name, page_size=2), metadata=alice.md
    )  # type: ignore[attr-defined]
    page2 = env.stub.ListAnnotationRevisions(
        pb.ListAnnotationRevisionsRequest(name=first.name, page_size=2, page_token=page1.next_page_token),
        metadata=alice.md,  # type: ignore[attr-defined]
    )
    assert [r.revision for r in page1.revisions] + [r.revision for r in page2.revisions] == [1, 2, 3]
    assert [r.labels.classes[0] for r in page1.revisions] == ["cat", "dog"]
    assert page2.next_page_token == ""
    revised = [e.annotation_revised for e in env.events() if e.HasField("annotation_revised")]
    assert [r.annotation.revision for r in revised] == [2, 3]


def test_other_org_gets_not_found(env: Env, caller: Callable[..., object]) -> None:
    """Another organization cannot read, list, edit, or submit on this organization's resources."""
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    mallory = caller(org="evil", subject="user:alice", roles=(ADMIN,))
    env.fake.add_task("acme", "t7", "user:alice")
    annotation = submit(env, alice.md, "t7", labels())  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as info:
        env.stub.GetAnnotation(pb.GetAnnotationRequest(name=annotation.name), metadata=mallory.md)  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        env.stub.UpdateAnnotation(
            pb.UpdateAnnotationRequest(name=annotation.name, labels=labels("dog"), etag=annotation.etag),
            metadata=mallory.md,
        )  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        env.stub.ListAnnotations(pb.ListAnnotationsRequest(parent="projects/p1"), metadata=mallory.md)  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        env.stub.ListPredictions(pb.ListPredictionsRequest(parent="projects/p1"), metadata=mallory.md)  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        env.stub.SubmitAnnotation(
            pb.SubmitAnnotationRequest(task="projects/p1/tasks/t8", lease_id="x", labels=labels()),
            metadata=mallory.md,
        )  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    got = env.stub.GetAnnotation(pb.GetAnnotationRequest(name=annotation.name), metadata=alice.md).annotation  # type: ignore[attr-defined]
    assert got.revision == 1


def test_rework_submission_carries_rework_of(env: Env, caller: Callable[..., object]) -> None:
    """A rework task's submission emits task_kind REWORK and the annotation it replaces."""
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    env.fake.add_task(
        "acme", "t9", "user:alice", kind=tasks_pb2.TASK_KIND_REWORK, rework_of="projects/p1/annotations/old"
    )
    submit(env, alice.md, "t9", labels())  # type: ignore[attr-defined]
    event = next(e.annotation_submitted for e in env.events() if e.HasField("annotation_submitted"))
    assert event.task_kind == tasks_pb2.TASK_KIND_REWORK
    assert event.rework_of == "projects/p1/annotations/old"


def test_list_annotations_filter_and_paging(env: Env, caller: Callable[..., object]) -> None:
    """ListAnnotations pages with opaque tokens, filters by item, and rejects a forged token."""
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    for i in range(3):
        env.fake.add_task("acme", f"l{i}", "user:alice")
        submit(env, alice.md, f"l{i}", labels())  # type: ignore[attr-defined]
    page1 = env.stub.ListAnnotations(
        pb.ListAnnotationsRequest(parent="projects/p1", page_size=2), metadata=alice.md
    )  # type: ignore[attr-defined]
    page2 = env.stub.ListAnnotations(
        pb.ListAnnotationsRequest(parent="projects/p1", page_size=2, page_token=page1.next_page_token),
        metadata=alice.md,
    )  # type: ignore[attr-defined]
    assert len(page1.annotations) == 2
    assert len(page2.annotations) == 1
    assert not page2.next_page_token
    only = env.stub.ListAnnotations(
        pb.ListAnnotationsRequest(parent="projects/p1", item="datasets/d1/items/i-l1"), metadata=alice.md
    )  # type: ignore[attr-defined]
    assert [a.task for a in only.annotations] == ["projects/p1/tasks/l1"]
    with pytest.raises(grpc.RpcError) as info:
        env.stub.ListAnnotations(
            pb.ListAnnotationsRequest(parent="projects/p1", page_token="!!bad"), metadata=alice.md
        )  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_predictions_idempotent_validated_and_manager_only(env: Env, caller: Callable[..., object]) -> None:
    """Predictions are idempotent, need a score in [0,1] and finite boxes, and need a manager."""
    admin = caller(org="acme", subject="user:admin", roles=(ADMIN,))
    alice = caller(org="acme", subject="user:alice", roles=(ANNOTATOR,))
    env.fake.add_task("acme", "t-pred", "user:alice")  # makes projects/p1 exist for acme
    prediction = pb.Prediction(
        item="datasets/d1/items/i1",
        model="yolo",
        model_version="8",
        score=0.7,
        labels=labels("cat", (1, 1, 5, 5)),
    )
    request = pb.CreatePredictionRequest(parent="projects/p1", prediction=prediction, request_id="p-1")
    first = env.stub.CreatePrediction(request, metadata=admin.md).prediction  # type: ignore[attr-defined]
    again = env.stub.CreatePrediction(request, metadata=admin.md).prediction  # type: ignore[attr-defined]
    assert first.name == again.name
    assert first.score == pytest.approx(0.7)
    for bad in (
        pb.Prediction(item="datasets/d1/items/i1", model="m", score=1.5),
        pb.Prediction(item="datasets/d1/items/i1", model="m", score=0.5, labels=labels("cat", (1, 1, -1, 5))),
    ):
        with pytest.raises(grpc.RpcError) as info:
            env.stub.CreatePrediction(
                pb.CreatePredictionRequest(parent="projects/p1", prediction=bad), metadata=admin.md
            )  # type: ignore[attr-defined]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        env.stub.CreatePrediction(request, metadata=alice.md)  # type: ignore[attr-defined]
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = env.stub.ListPredictions(
        pb.ListPredictionsRequest(parent="projects/p1", item="datasets/d1/items/i1"), metadata=alice.md
    )  # type: ignore[attr-defined]
    assert [p.name for p in listed.predictions] == [first.name]
