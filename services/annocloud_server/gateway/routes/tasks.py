"""Tasks and leases; submitting a leased task's labels goes to the annotation service."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from annocloud.annotations.v1 import annotations_pb2
from annocloud.tasks.v1 import tasks_pb2
from fastapi import APIRouter, Body, Query
from google.protobuf import duration_pb2

from annocloud_server.gateway.deps import ClientsDep, PageSize, PageToken, ProjectId, TaskId
from annocloud_server.gateway.errors import bad_request
from annocloud_server.gateway.protojson import enum_value, parse, split_body, string_field, to_dict, unwrap

log = logging.getLogger(__name__)
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
    """Leases the next task for the caller (404 when nothing is available). The response carries
    the item's model suggestions (``suggestions``: predictions with provenance) to start from;
    ``include_suggestions: false`` skips them."""
    fields = split_body(body, {"lease_seconds", "include_suggestions"})
    request = tasks_pb2.LeaseNextTaskRequest(parent=f"projects/{project}")
    duration = _lease_duration(fields)
    if duration is not None:
        request.lease_duration.CopyFrom(duration)
    include = fields.get("include_suggestions", True)
    if not isinstance(include, bool):
        raise bad_request("BAD_REQUEST_BODY", "include_suggestions must be true or false")
    task = clients.call(clients.tasks.LeaseNextTask, request).task
    result = to_dict(task)
    if include:
        result["suggestions"] = _suggestions(clients, f"projects/{project}", task.item)
    return result


def _suggestions(clients: ClientsDep, project: str, item: str) -> list[dict[str, Any]]:
    """The item's predictions; the lease is already taken, so a failure here only means no
    suggestions (logged), never a failed lease."""
    try:
        found = clients.read(
            clients.annotations.ListPredictions,
            annotations_pb2.ListPredictionsRequest(parent=project, item=item, page_size=20),
        )
    except Exception:
        log.warning("suggestions of %s could not be read; leasing without them", item, exc_info=True)
        return []
    return [to_dict(p) for p in found.predictions]


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
