"""Calls to the tasks service on behalf of the caller (annotations and ingestion use it), and the
cache of immutable schema versions."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc

from annocloud_server.common.errors import (
    AnnocloudError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from annocloud_server.common.paging import parse_name

Metadata = tuple[tuple[str, str | bytes], ...]
TIMEOUT_SECONDS = 5.0
PRINCIPAL_PREFIX = "x-annocloud-principal-"


def forwarded_metadata(context: grpc.ServicerContext) -> Metadata:
    """The caller's signed principal, to call another service as the caller."""
    return tuple((k, v) for k, v in context.invocation_metadata() if k.startswith(PRINCIPAL_PREFIX))


def _translate(error: grpc.RpcError, what: str) -> AnnocloudError:
    code = error.code() if hasattr(error, "code") else None
    detail = error.details() if hasattr(error, "details") else ""
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what} not found", reason="NOT_FOUND")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(detail or f"not allowed to read {what}", reason="ROLE_REQUIRED")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(detail or f"bad request for {what}", reason="BAD_RESOURCE_NAME")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(detail or f"{what} is not usable", reason="FAILED_PRECONDITION")
    return Unavailable(f"the tasks service did not answer for {what}", reason="TASKS_UNAVAILABLE")


class TasksClient:
    """GetTask and GetLabelSchema through the tasks service; schema versions are cached forever."""

    def __init__(self, connect: Callable[[], grpc.Channel]):
        # The channel is opened on first use: in the embedded runtime the tasks service shares a
        # server whose port is only known after every component was created.
        self._connect = connect
        self._stub_instance: tasks_pb2_grpc.TaskServiceStub | None = None
        self._schemas: dict[tuple[str, str, int], tasks_pb2.LabelSchema] = {}
        self._lock = threading.Lock()

    @property
    def _stub(self) -> tasks_pb2_grpc.TaskServiceStub:
        with self._lock:
            if self._stub_instance is None:
                self._stub_instance = tasks_pb2_grpc.TaskServiceStub(self._connect())
            return self._stub_instance

    def get_task_and_owner(self, name: str, metadata: Metadata) -> tuple[tasks_pb2.Task, str]:
        """The task as the caller may see it, and the organization that owns its project."""
        try:
            response = self._stub.GetTask(
                tasks_pb2.GetTaskRequest(name=name), metadata=metadata, timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as error:
            raise _translate(error, f"task {name}") from None
        return response.task, response.project_organization

    def require_project(self, name: str, metadata: Metadata) -> tasks_pb2.Project:
        """The project; NOT_FOUND unless the caller's organization has it (tasks owns projects)."""
        try:
            response = self._stub.GetProject(
                tasks_pb2.GetProjectRequest(name=name), metadata=metadata, timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as error:
            raise _translate(error, f"project {name}") from None
        return response.project

    def current_schema(
        self, project: str, *, organization_id: str, metadata: Metadata
    ) -> tasks_pb2.LabelSchema:
        """The current label schema of ``project`` (``projects/{project}``); NOT_FOUND for a project
        the caller's organization does not have, UNAVAILABLE when tasks does not answer in time."""
        (project_id,) = parse_name(project, "projects/{}")
        found = self.require_project(project, metadata)
        return self.get_schema(
            organization_id=organization_id,
            project_id=project_id,
            version=found.schema_version,
            metadata=metadata,
        )

    def get_schema(
        self, *, organization_id: str, project_id: str, version: int, metadata: Metadata
    ) -> tasks_pb2.LabelSchema:
        key = (organization_id, project_id, version)
        with self._lock:
            cached = self._schemas.get(key)
        if cached is not None:
            return cached
        name = f"projects/{project_id}/schemas/{version}"
        try:
            response = self._stub.GetLabelSchema(
                tasks_pb2.GetLabelSchemaRequest(name=name), metadata=metadata, timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as error:
            raise _translate(error, f"schema {name}") from None
        with self._lock:
            self._schemas[key] = response.schema
        return response.schema
