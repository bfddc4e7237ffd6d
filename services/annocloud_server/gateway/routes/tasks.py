"""Tasks and leases; submitting a leased task's labels goes to the annotation service."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.annotations.v1 import annotations_pb2
from annocloud.tasks.v1 import tasks_pb2
from fastapi import APIRouter, Body, Query
from google.protobuf import duration_pb2

from annocloud_server.gateway.deps import ClientsDep, PageSize, PageToken, ProjectId, TaskId
from annocloud_server.gateway.errors import bad_request
from annocloud_server.gateway.protojson import enum_value, parse, split_body, string_field, to_dict, unwrap

router = APIRouter(tags=["tasks"])

StateQuery = Annotated[
    str | None, Query(description="QUEUED, LEASED, COMPLETED or CANCELLED (or the full enum name).")
]
OptionalBody = Annotated[dict[str, Any] | None, Body()]


def _lease_duration(fields: dict[str, Any]) -> duration_pb2.Duration | None:
    seconds = fields.get("lease_seconds")
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 < seconds <= 86_400:
        raise bad_request("BAD_REQUEST_BODY", "lease_seconds must be a positive integer number of seconds")
    return duration_pb2.Duration(seconds=seconds)


@router.get("/projects/{project}/tasks")
def list_tasks(
    clients: ClientsDep,
    project: ProjectId,
    state: StateQuery = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Lists the tasks of a project, optionally in one state."""
    request = tasks_pb2.ListTasksRequest(
        parent=f"projects/{project}",
        state=enum_value(tasks_pb2.TaskState, state, prefix="TASK_STATE_", field="state"),  # type: ignore[arg-type]
        page_size=page_size,
        page_token=page_token,
    )
    return to_dict(clients.read(clients.tasks.ListTasks, request))


@router.get("/projects/{project}/tasks/{task}")
def get_task(clients: ClientsDep, project: ProjectId, task: TaskId) -> dict[str, Any]:
    """Gets a task."""
    request = tasks_pb2.GetTaskRequest(name=f"projects/{project}/tasks/{task}")
    return to_dict(clients.read(clients.tasks.GetTask, request).task)


@router.post("/projects/{project}/tasks:leaseNext")
def lease_next_task(clients: ClientsDep, project: ProjectId, body: OptionalBody = None) -> dict[str, Any]:
    """Leases the next task for the caller (404 when nothing is available)."""
    fields = split_body(body, {"lease_seconds"})
    request = tasks_pb2.LeaseNextTaskRequest(parent=f"projects/{project}")
    duration = _lease_duration(fields)
    if duration is not None:
        request.lease_duration.CopyFrom(duration)
    return unwrap(clients.call(clients.tasks.LeaseNextTask, request))


@router.post("/projects/{project}/tasks/{task}:heartbeat")
def heartbeat_lease(
    clients: ClientsDep,
    project: ProjectId,
    task: TaskId,
    body: Annotated[dict[str, Any], Body(examples=[{"lease_id": "...", "lease_seconds": 600}])],
) -> dict[str, Any]:
    """Extends the caller's lease."""
    fields = split_body(body, {"lease_id", "lease_seconds"})
    request = tasks_pb2.HeartbeatLeaseRequest(
        name=f"projects/{project}/tasks/{task}", lease_id=string_field(fields, "lease_id")
    )
    duration = _lease_duration(fields)
    if duration is not None:
        request.lease_duration.CopyFrom(duration)
    return unwrap(clients.call(clients.tasks.HeartbeatLease, request))


@router.post("/projects/{project}/tasks/{task}:release")
def release_task(
    clients: ClientsDep,
    project: ProjectId,
    task: TaskId,
    body: Annotated[dict[str, Any], Body(examples=[{"lease_id": "..."}])],
) -> dict[str, Any]:
    """Gives a leased task back to the queue."""
    fields = split_body(body, {"lease_id"})
    request = tasks_pb2.ReleaseTaskRequest(
        name=f"projects/{project}/tasks/{task}", lease_id=string_field(fields, "lease_id")
    )
    return unwrap(clients.call(clients.tasks.ReleaseTask, request))


@router.post("/projects/{project}/tasks/{task}:submit")
def submit_task(
    clients: ClientsDep,
    project: ProjectId,
    task: TaskId,
    body: Annotated[
        dict[str, Any],
        Body(examples=[{"lease_id": "...", "labels": {"classes": ["cat"]}, "request_id": "r-1"}]),
    ],
) -> dict[str, Any]:
    """Submits the labels of a leased task; returns the stored annotation."""
    request = parse(
        split_body(body, {"lease_id", "labels", "request_id"}), annotations_pb2.SubmitAnnotationRequest
    )
    request.task = f"projects/{project}/tasks/{task}"
    return unwrap(clients.call(clients.annotations.SubmitAnnotation, request))
