"""TaskService started for real on port 0: projects, schemas, catalog events, leases, tenancy."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.common.auth import ADMIN, ANNOTATOR
from annocloud_server.common.events import TOPIC_ANNOTATIONS, TOPIC_INGESTION, TOPIC_QA, OutgoingRecord
from annocloud_server.common.paging import new_id
from annocloud_server.runtime import Runtime
from annocloud_server.tasks.component import create_component
from annocloud_server.tasks.models import Task
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import update

Q = tasks_pb2.TASK_STATE_QUEUED
LEASED = tasks_pb2.TASK_STATE_LEASED
COMPLETED = tasks_pb2.TASK_STATE_COMPLETED


def reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return str(info.reason)


def fails(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


SCHEMA = tasks_pb2.LabelSchema(
    classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
    classes=[tasks_pb2.ClassLabel(name="cat"), tasks_pb2.ClassLabel(name="dog")],
    objects=[tasks_pb2.ObjectLabel(name="box", kind=tasks_pb2.OBJECT_KIND_BOX)],
)


class Env:
    """A started tasks service with stubs and callers of two organizations."""

    def __init__(self, runtime: Runtime, stub: tasks_pb2_grpc.TaskServiceStub, caller: Callable[..., Any]):
        self.runtime = runtime
        self.stub = stub
        self.admin = caller(org="acme", subject="user:admin", roles=(ADMIN,)).md
        self.w = {n: caller(org="acme", subject=f"user:w{n}", roles=(ANNOTATOR,)).md for n in range(1, 5)}
        self.other = caller(org="globex", subject="user:admin", roles=(ADMIN,)).md

    def project(self, *, redundancy: int = 3, datasets: tuple[str, ...] = ("datasets/ds1",)) -> str:
        request = tasks_pb2.CreateProjectRequest(
            project=tasks_pb2.Project(display_name="Cats", redundancy=redundancy, datasets=list(datasets)),
            schema=SCHEMA,
        )
        return str(self.stub.CreateProject(request, metadata=self.admin).project.name)

    def publish(self, topic: str, org: str, resource: str, **payload: Any) -> None:
        envelope = events_pb2.EventEnvelope(
            event_id=new_id(),
            event_type="annocloud.events.v1." + type(next(iter(payload.values()))).__name__,
            tenant_id=org,
            resource_name=resource,
            aggregate_version=1,
            **payload,
        )
        self.runtime.bus.publish([OutgoingRecord(topic, resource, envelope.SerializeToString())])

    def ingest(self, item: str, *, org: str = "acme", dataset: str = "ds1", near_dup: str = "") -> None:
        name = f"datasets/{dataset}/items/{item}"
        message = ingestion_pb2.Item(
            name=name,
            media_type=common_pb2.MEDIA_TYPE_IMAGE,
            file_name=f"{item}.png",
            width=32,
            height=16,
            near_duplicate_of=near_dup,
        )
        self.publish(TOPIC_INGESTION, org, name, item_ingested=events_pb2.ItemIngested(item=message))

    def lease(self, project: str, worker: int) -> tasks_pb2.Task:
        return self.stub.LeaseNextTask(
            tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=self.w[worker]
        ).task

    def tasks(self, project: str, state: int = 0) -> list[tasks_pb2.Task]:
        request = tasks_pb2.ListTasksRequest(parent=project, state=state, page_size=1000)  # type: ignore[arg-type]
        return list(self.stub.ListTasks(request, metadata=self.admin).tasks)


@pytest.fixture
def env(
    start_services: Callable[..., Runtime],
    channel_to: Callable[..., grpc.Channel],
    caller: Callable[..., Any],
) -> Env:
    runtime = start_services([create_component])
    return Env(runtime, tasks_pb2_grpc.TaskServiceStub(channel_to(runtime)), caller)


def test_create_project_is_idempotent_and_listed(env: Env) -> None:
    """CreateProject defaults settings, returns the same project for a repeated request_id, and lists it."""
    request = tasks_pb2.CreateProjectRequest(
        project=tasks_pb2.Project(display_name="Cats"), schema=SCHEMA, request_id="req-1"
    )
    first = env.stub.CreateProject(request, metadata=env.admin).project
    again = env.stub.CreateProject(request, metadata=env.admin).project
    assert first.name == again.name
    assert (first.redundancy, first.schema_version, first.min_agreement) == (1, 1, 0.5)
    assert first.review_policy == tasks_pb2.REVIEW_POLICY_DISAGREEMENT
    second = env.project()
    page = env.stub.ListProjects(tasks_pb2.ListProjectsRequest(page_size=1), metadata=env.admin)
    assert [p.name for p in page.projects] == [second]
    rest = env.stub.ListProjects(
        tasks_pb2.ListProjectsRequest(page_size=1, page_token=page.next_page_token), metadata=env.admin
    )
    assert [p.name for p in rest.projects] == [first.name]
    assert rest.next_page_token == ""
    assert env.stub.ListProjects(tasks_pb2.ListProjectsRequest(), metadata=env.other).projects == []


@pytest.mark.parametrize(
    ("project", "schema", "want"),
    [
        (tasks_pb2.Project(display_name="P"), tasks_pb2.LabelSchema(), "BAD_SCHEMA"),
        (
            tasks_pb2.Project(display_name="P"),
            tasks_pb2.LabelSchema(
                objects=[tasks_pb2.ObjectLabel(name="kp", kind=tasks_pb2.OBJECT_KIND_KEYPOINTS)]
            ),
            "BAD_SCHEMA",
        ),
        (tasks_pb2.Project(display_name=""), SCHEMA, "DISPLAY_NAME_REQUIRED"),
        (tasks_pb2.Project(display_name="P", redundancy=11), SCHEMA, "BAD_REDUNDANCY"),
        (tasks_pb2.Project(display_name="P", min_agreement=-0.1), SCHEMA, "BAD_MIN_AGREEMENT"),
        (tasks_pb2.Project(display_name="P", datasets=["datasets/A B"]), SCHEMA, "BAD_RESOURCE_NAME"),
    ],
)
def test_create_project_rejects_bad_input(
    env: Env, project: tasks_pb2.Project, schema: tasks_pb2.LabelSchema, want: str
) -> None:
    """Bad settings or schemas are INVALID_ARGUMENT with a reason, and nothing is created."""
    error = fails(
        env.stub.CreateProject,
        tasks_pb2.CreateProjectRequest(project=project, schema=schema),
        metadata=env.admin,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(error) == want
    assert env.stub.ListProjects(tasks_pb2.ListProjectsRequest(), metadata=env.admin).projects == []


def test_bad_schema_message_names_the_field(env: Env) -> None:
    """A duplicate label name is reported with the path of the offending field."""
    schema = tasks_pb2.LabelSchema(
        classification_mode=tasks_pb2.CLASSIFICATION_MODE_MULTI,
        classes=[tasks_pb2.ClassLabel(name="cat")],
        objects=[tasks_pb2.ObjectLabel(name="cat", kind=tasks_pb2.OBJECT_KIND_BOX)],
    )
    request = tasks_pb2.CreateProjectRequest(project=tasks_pb2.Project(display_name="P"), schema=schema)
    error = fails(env.stub.CreateProject, request, metadata=env.admin)
    assert "schema.objects[0].name" in (error.details() or "")


def test_annotator_cannot_manage_projects(env: Env) -> None:
    """CreateProject needs a manager role."""
    request = tasks_pb2.CreateProjectRequest(project=tasks_pb2.Project(display_name="P"), schema=SCHEMA)
    assert (
        fails(env.stub.CreateProject, request, metadata=env.w[1]).code() == grpc.StatusCode.PERMISSION_DENIED
    )


def test_schema_versions(env: Env) -> None:
    """New schema versions number up; latest and numbers resolve; list is newest first; bad ones fail."""
    project = env.project()
    created = env.stub.CreateLabelSchema(
        tasks_pb2.CreateLabelSchemaRequest(parent=project, schema=SCHEMA), metadata=env.admin
    ).schema
    assert (created.name, created.version) == (f"{project}/schemas/2", 2)
    latest = env.stub.GetLabelSchema(
        tasks_pb2.GetLabelSchemaRequest(name=f"{project}/schemas/latest"), metadata=env.admin
    )
    assert latest.schema.version == 2
    first = env.stub.GetLabelSchema(
        tasks_pb2.GetLabelSchemaRequest(name=f"{project}/schemas/1"), metadata=env.admin
    )
    assert [c.name for c in first.schema.classes] == ["cat", "dog"]
    page = env.stub.ListLabelSchemas(
        tasks_pb2.ListLabelSchemasRequest(parent=project, page_size=1), metadata=env.admin
    )
    assert [s.version for s in page.schemas] == [2]
    rest = env.stub.ListLabelSchemas(
        tasks_pb2.ListLabelSchemasRequest(parent=project, page_token=page.next_page_token), metadata=env.admin
    )
    assert [s.version for s in rest.schemas] == [1]
    missing = fails(
        env.stub.GetLabelSchema,
        tasks_pb2.GetLabelSchemaRequest(name=f"{project}/schemas/9"),
        metadata=env.admin,
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    bad = fails(
        env.stub.CreateLabelSchema,
        tasks_pb2.CreateLabelSchemaRequest(parent=project, schema=tasks_pb2.LabelSchema()),
        metadata=env.admin,
    )
    assert reason(bad) == "BAD_SCHEMA"
    assert (
        env.stub.GetProject(
            tasks_pb2.GetProjectRequest(name=project), metadata=env.admin
        ).project.schema_version
        == 2
    )


def test_ingested_items_before_and_after_adding_dataset(env: Env) -> None:
    """Items ingested before AddProjectDataset and after it both become tasks; near-duplicates do not."""
    project = env.project(redundancy=2, datasets=())
    env.ingest("early")
    env.ingest("near", near_dup="datasets/ds1/items/early")
    env.runtime.wait_idle()
    assert env.tasks(project) == []
    added = env.stub.AddProjectDataset(
        tasks_pb2.AddProjectDatasetRequest(project=project, dataset="datasets/ds1"), metadata=env.admin
    ).project
    assert list(added.datasets) == ["datasets/ds1"]
    assert added.task_counts.queued == 2
    env.ingest("late")
    env.runtime.wait_idle()
    tasks = env.tasks(project)
    assert sorted(t.item for t in tasks) == ["datasets/ds1/items/early"] * 2 + ["datasets/ds1/items/late"] * 2
    assert {
        (t.item_file_name, t.item_width, t.item_height, t.redundancy)
        for t in tasks
        if t.item.endswith("late")
    } == {("late.png", 32, 16, 2)}


def test_other_org_items_never_become_this_orgs_tasks(env: Env) -> None:
    """A globex ItemIngested for a dataset named like acme's creates no task in acme's project."""
    project = env.project()
    env.ingest("x", org="globex")
    env.runtime.wait_idle()
    assert env.tasks(project) == []
    assert fails(env.lease, project, 1).code() == grpc.StatusCode.NOT_FOUND


def test_redundancy_leasing_heartbeat_release(env: Env) -> None:
    """Three workers get an item's three tasks, a fourth gets NO_TASK_AVAILABLE; heartbeat, release."""
    project = env.project(redundancy=3)
    env.ingest("a")
    env.runtime.wait_idle()
    leased = [env.lease(project, n) for n in (1, 2, 3)]
    assert len({t.name for t in leased}) == 3
    assert all(
        t.state == LEASED and t.lease.worker == f"user:w{n}" for t, n in zip(leased, (1, 2, 3), strict=True)
    )
    error = fails(env.lease, project, 4)
    assert (error.code(), reason(error)) == (grpc.StatusCode.NOT_FOUND, "NO_TASK_AVAILABLE")
    task = leased[0]
    beat = env.stub.HeartbeatLease(
        tasks_pb2.HeartbeatLeaseRequest(
            name=task.name, lease_id=task.lease.lease_id, lease_duration=duration_pb2.Duration(seconds=3600)
        ),
        metadata=env.w[1],
    ).task
    assert beat.lease.expire_time.ToDatetime() > task.lease.expire_time.ToDatetime()
    stolen = fails(
        env.stub.HeartbeatLease,
        tasks_pb2.HeartbeatLeaseRequest(name=task.name, lease_id=task.lease.lease_id),
        metadata=env.w[2],
    )
    assert (stolen.code(), reason(stolen)) == (grpc.StatusCode.ABORTED, "LEASE_NOT_HELD")
    released = env.stub.ReleaseTask(
        tasks_pb2.ReleaseTaskRequest(name=task.name, lease_id=task.lease.lease_id), metadata=env.w[1]
    ).task
    assert released.state == Q
    assert not released.HasField("lease")
    assert env.lease(project, 4).name == task.name
    got = env.stub.GetTask(tasks_pb2.GetTaskRequest(name=task.name), metadata=env.w[4]).task
    assert got.lease.worker == "user:w4"
    counts = env.stub.GetProject(
        tasks_pb2.GetProjectRequest(name=project), metadata=env.admin
    ).project.task_counts
    assert (counts.queued, counts.leased, counts.completed) == (0, 3, 0)


def test_bad_lease_duration(env: Env) -> None:
    """A lease shorter than 10 s is INVALID_ARGUMENT."""
    project = env.project()
    request = tasks_pb2.LeaseNextTaskRequest(parent=project, lease_duration=duration_pb2.Duration(seconds=2))
    error = fails(env.stub.LeaseNextTask, request, metadata=env.w[1])
    assert (error.code(), reason(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_LEASE_DURATION")


def test_expired_lease_goes_to_another_worker(env: Env) -> None:
    """Once a lease runs out the task reads as QUEUED and another worker can lease it."""
    project = env.project(redundancy=1)
    env.ingest("a")
    env.runtime.wait_idle()
    first = env.lease(project, 1)
    assert fails(env.lease, project, 2).code() == grpc.StatusCode.NOT_FOUND
    db = env.runtime.components[0].db
    with db.transaction() as session:
        session.execute(update(Task).values(lease_expire_time=datetime.now(UTC) - timedelta(seconds=1)))
    assert env.tasks(project, Q)[0].name == first.name
    second = env.lease(project, 2)
    assert second.name == first.name
    assert second.lease.worker == "user:w2"
    late = fails(
        env.stub.ReleaseTask,
        tasks_pb2.ReleaseTaskRequest(name=first.name, lease_id=first.lease.lease_id),
        metadata=env.w[1],
    )
    assert reason(late) == "LEASE_NOT_HELD"


def test_submit_completes_and_rework_goes_to_its_worker(env: Env) -> None:
    """AnnotationSubmitted completes the task; ReworkRequested makes a task only its annotator can lease."""
    project = env.project(redundancy=2)
    env.ingest("a")
    env.runtime.wait_idle()
    task = env.lease(project, 1)
    annotation = f"{project}/annotations/an1"
    submitted = events_pb2.AnnotationSubmitted(
        annotation=annotations_pb2.Annotation(
            name=annotation, task=task.name, item=task.item, annotator="user:w1"
        )
    )
    env.publish(TOPIC_ANNOTATIONS, "acme", annotation, annotation_submitted=submitted)
    env.publish(TOPIC_ANNOTATIONS, "globex", annotation, annotation_submitted=submitted)
    env.runtime.wait_idle()
    done = env.stub.GetTask(tasks_pb2.GetTaskRequest(name=task.name), metadata=env.admin).task
    assert (done.state, done.completed_by) == (COMPLETED, "user:w1")
    rework = events_pb2.ReworkRequested(
        annotation=annotation,
        task=task.name,
        annotator="user:w1",
        reason="wrong class",
        item=events_pb2.ItemContext(
            item=task.item, media_type=common_pb2.MEDIA_TYPE_IMAGE, file_name="a.png", width=32, height=16
        ),
    )
    env.publish(TOPIC_QA, "acme", annotation, rework_requested=rework)
    env.runtime.wait_idle()
    assert env.lease(project, 2).kind == tasks_pb2.TASK_KIND_LABEL
    assert fails(env.lease, project, 3).code() == grpc.StatusCode.NOT_FOUND
    mine = env.lease(project, 1)
    assert (mine.kind, mine.assigned_worker, mine.rework_of, mine.priority) == (
        tasks_pb2.TASK_KIND_REWORK,
        "user:w1",
        annotation,
        100,
    )
    assert mine.item_file_name == "a.png"
    assert [t.name for t in env.tasks(project, COMPLETED)] == [task.name]


def test_cross_org_is_not_found_everywhere(env: Env) -> None:
    """Every RPC on another organization's project or task is NOT_FOUND and changes nothing."""
    project = env.project(redundancy=1)
    env.ingest("a")
    env.runtime.wait_idle()
    task = env.lease(project, 1)
    stub, md = env.stub, env.other
    calls: list[tuple[Callable[..., Any], Any]] = [
        (stub.GetProject, tasks_pb2.GetProjectRequest(name=project)),
        (stub.AddProjectDataset, tasks_pb2.AddProjectDatasetRequest(project=project, dataset="datasets/ds2")),
        (stub.CreateLabelSchema, tasks_pb2.CreateLabelSchemaRequest(parent=project, schema=SCHEMA)),
        (stub.GetLabelSchema, tasks_pb2.GetLabelSchemaRequest(name=f"{project}/schemas/latest")),
        (stub.ListLabelSchemas, tasks_pb2.ListLabelSchemasRequest(parent=project)),
        (stub.GetTask, tasks_pb2.GetTaskRequest(name=task.name)),
        (stub.ListTasks, tasks_pb2.ListTasksRequest(parent=project)),
        (stub.LeaseNextTask, tasks_pb2.LeaseNextTaskRequest(parent=project)),
        (stub.HeartbeatLease, tasks_pb2.HeartbeatLeaseRequest(name=task.name, lease_id=task.lease.lease_id)),
        (stub.ReleaseTask, tasks_pb2.ReleaseTaskRequest(name=task.name, lease_id=task.lease.lease_id)),
    ]
    for call, request in calls:
        assert fails(call, request, metadata=md).code() == grpc.StatusCode.NOT_FOUND, call
    after = env.stub.GetProject(tasks_pb2.GetProjectRequest(name=project), metadata=env.admin).project
    assert (list(after.datasets), after.schema_version, after.task_counts.leased) == (["datasets/ds1"], 1, 1)


def test_bad_names_and_tokens(env: Env) -> None:
    """Malformed resource names and page tokens are INVALID_ARGUMENT, never INTERNAL."""
    project = env.project()
    for call, request in (
        (env.stub.GetTask, tasks_pb2.GetTaskRequest(name="projects/x/tasks/../y")),
        (env.stub.GetProject, tasks_pb2.GetProjectRequest(name="")),
        (env.stub.ListTasks, tasks_pb2.ListTasksRequest(parent=project, page_token="%%%")),
        (env.stub.ListTasks, tasks_pb2.ListTasksRequest(parent=project, state=99)),  # type: ignore[arg-type]
        (env.stub.GetLabelSchema, tasks_pb2.GetLabelSchemaRequest(name=f"{project}/schemas/0")),
        (env.stub.ListProjects, tasks_pb2.ListProjectsRequest(page_size=-1)),
    ):
        assert fails(call, request, metadata=env.admin).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_eight_concurrent_workers_never_share_a_task(env: Env, caller: Callable[..., Any]) -> None:
    """Eight workers leasing at once through gRPC each get distinct tasks until the queue is empty."""
    project = env.project(redundancy=1)
    for index in range(32):
        env.ingest(f"i{index}")
    env.runtime.wait_idle()
    got: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        md = caller(org="acme", subject=f"user:c{n}", roles=(ANNOTATOR,)).md
        barrier.wait()
        while True:
            try:
                task = env.stub.LeaseNextTask(
                    tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=md
                ).task
            except grpc.RpcError:
                return
            with lock:
                got.append(task.name)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 32
    assert len(set(got)) == 32
