"""TaskService: authorize, parse, call the store in one transaction, map back to protos."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from google.protobuf import duration_pb2

from annocloud_server.common.auth import LABELERS, MANAGERS, READERS, Authenticator
from annocloud_server.common.db import Database
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import decode_token, encode_token, page_size, parse_name
from annocloud_server.tasks import convert, domain, store


def _project_id(name: str) -> str:
    (project_id,) = parse_name(name, "projects/{}")
    return project_id


def _cursor(token: str, key: str) -> int | None:
    value: Any = decode_token(token).get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
    return value


def _token(key: str, value: int | None) -> str:
    return encode_token({key: value}) if value is not None else ""


def _duration(message: Any, field_name: str) -> timedelta:
    if not message.HasField(field_name):
        return domain.lease_duration(None)
    duration: duration_pb2.Duration = getattr(message, field_name)
    return domain.lease_duration(duration.ToTimedelta().total_seconds())


class TaskServicer(tasks_pb2_grpc.TaskServiceServicer):
    def __init__(self, db: Database, writer: EventWriter, authenticator: Authenticator):
        self._db = db
        self._writer = writer
        self._auth = authenticator

    def CreateProject(
        self, request: tasks_pb2.CreateProjectRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.CreateProjectResponse:
        principal = self._auth.require(context, MANAGERS)
        domain.validate_request_id(request.request_id)
        spec = domain.validate_project(
            display_name=request.project.display_name,
            redundancy=request.project.redundancy,
            review_policy=int(request.project.review_policy),
            min_agreement=request.project.min_agreement,
            datasets=list(request.project.datasets),
        )
        schema = convert.schema_from_proto(request.schema)
        domain.validate_schema(schema)
        with self._db.transaction() as session:
            row = store.create_project(
                session,
                self._writer,
                organization_id=principal.organization_id,
                spec=spec,
                schema=schema,
                request_id=request.request_id,
            )
            return tasks_pb2.CreateProjectResponse(project=store.project_message(session, row))

    def GetProject(
        self, request: tasks_pb2.GetProjectRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetProjectResponse:
        principal = self._auth.require(context, READERS)
        project_id = _project_id(request.name)
        with self._db.read() as session:
            row = store.get_project(session, organization_id=principal.organization_id, project_id=project_id)
            return tasks_pb2.GetProjectResponse(project=store.project_message(session, row))

    def ListProjects(
        self, request: tasks_pb2.ListProjectsRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ListProjectsResponse:
        principal = self._auth.require(context, READERS)
        limit = page_size(request.page_size)
        before = _cursor(request.page_token, "s")
        org = principal.organization_id
        with self._db.read() as session:
            rows, next_seq = store.list_projects(session, organization_id=org, limit=limit, before_seq=before)
            ids = [r.project_id for r in rows]
            datasets = store.project_dataset_ids(session, project_ids=ids)
            counts = store.task_counts(session, organization_id=org, project_ids=ids, now=store.utcnow())
            projects = [
                convert.project_to_proto(r, datasets[r.project_id], counts[r.project_id]) for r in rows
            ]
        return tasks_pb2.ListProjectsResponse(projects=projects, next_page_token=_token("s", next_seq))

    def AddProjectDataset(
        self, request: tasks_pb2.AddProjectDatasetRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.AddProjectDatasetResponse:
        principal = self._auth.require(context, MANAGERS)
        project_id = _project_id(request.project)
        dataset_id = domain.dataset_id_of(request.dataset)
        with self._db.transaction() as session:
            row = store.add_project_dataset(
                session,
                self._writer,
                organization_id=principal.organization_id,
                project_id=project_id,
                dataset_id=dataset_id,
            )
            return tasks_pb2.AddProjectDatasetResponse(project=store.project_message(session, row))

    def CreateLabelSchema(
        self, request: tasks_pb2.CreateLabelSchemaRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.CreateLabelSchemaResponse:
        principal = self._auth.require(context, MANAGERS)
        project_id = _project_id(request.parent)
        spec = convert.schema_from_proto(request.schema)
        domain.validate_schema(spec)
        with self._db.transaction() as session:
            row = store.create_label_schema(
                session,
                self._writer,
                organization_id=principal.organization_id,
                project_id=project_id,
                spec=spec,
            )
            return tasks_pb2.CreateLabelSchemaResponse(schema=convert.schema_to_proto(row))

    def GetLabelSchema(
        self, request: tasks_pb2.GetLabelSchemaRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetLabelSchemaResponse:
        principal = self._auth.require(context, READERS)
        project_id, version_token = parse_name(request.name, "projects/{}/schemas/{}")
        version = domain.schema_version_of(version_token)
        with self._db.read() as session:
            row = store.get_label_schema(
                session, organization_id=principal.organization_id, project_id=project_id, version=version
            )
            return tasks_pb2.GetLabelSchemaResponse(schema=convert.schema_to_proto(row))

    def ListLabelSchemas(
        self, request: tasks_pb2.ListLabelSchemasRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ListLabelSchemasResponse:
        principal = self._auth.require(context, READERS)
        project_id = _project_id(request.parent)
        limit = page_size(request.page_size)
        before = _cursor(request.page_token, "v")
        with self._db.read() as session:
            rows, next_version = store.list_label_schemas(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                limit=limit,
                before_version=before,
            )
            schemas = [convert.schema_to_proto(r) for r in rows]
        return tasks_pb2.ListLabelSchemasResponse(schemas=schemas, next_page_token=_token("v", next_version))

    def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetTaskResponse:
        principal = self._auth.require(context, READERS)
        project_id, task_id = parse_name(request.name, "projects/{}/tasks/{}")
        with self._db.read() as session:
            row = store.get_task(
                session, organization_id=principal.organization_id, project_id=project_id, task_id=task_id
            )
            return tasks_pb2.GetTaskResponse(task=convert.task_to_proto(row))

    def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        principal = self._auth.require(context, READERS)
        project_id = _project_id(request.parent)
        if int(request.state) not in set(domain.TaskState):
            raise InvalidArgument(f"state: unknown value {request.state}", reason="BAD_STATE")
        limit = page_size(request.page_size)
        after = _cursor(request.page_token, "s")
        now = store.utcnow()
        with self._db.read() as session:
            rows, next_seq = store.list_tasks(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                state=int(request.state),
                limit=limit,
                after_seq=after,
                now=now,
            )
            tasks = [convert.task_to_proto(r, now) for r in rows]
        return tasks_pb2.ListTasksResponse(tasks=tasks, next_page_token=_token("s", next_seq))

    def LeaseNextTask(
        self, request: tasks_pb2.LeaseNextTaskRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.LeaseNextTaskResponse:
        principal = self._auth.require(context, LABELERS)
        project_id = _project_id(request.parent)
        duration = _duration(request, "lease_duration")
        now = store.utcnow()
        with self._db.transaction() as session:
            row = store.lease_next_task(
                session,
                self._writer,
                organization_id=principal.organization_id,
                project_id=project_id,
                worker=principal.subject,
                duration=duration,
                now=now,
            )
            return tasks_pb2.LeaseNextTaskResponse(task=convert.task_to_proto(row, now))

    def HeartbeatLease(
        self, request: tasks_pb2.HeartbeatLeaseRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.HeartbeatLeaseResponse:
        principal = self._auth.require(context, LABELERS)
        project_id, task_id = parse_name(request.name, "projects/{}/tasks/{}")
        duration = _duration(request, "lease_duration")
        now = store.utcnow()
        with self._db.transaction() as session:
            row = store.heartbeat_lease(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                task_id=task_id,
                lease_id=request.lease_id,
                worker=principal.subject,
                duration=duration,
                now=now,
            )
            return tasks_pb2.HeartbeatLeaseResponse(task=convert.task_to_proto(row, now))

    def ReleaseTask(
        self, request: tasks_pb2.ReleaseTaskRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ReleaseTaskResponse:
        principal = self._auth.require(context, LABELERS)
        project_id, task_id = parse_name(request.name, "projects/{}/tasks/{}")
        now = store.utcnow()
        with self._db.transaction() as session:
            row = store.release_task(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                task_id=task_id,
                lease_id=request.lease_id,
                worker=principal.subject,
                now=now,
            )
            return tasks_pb2.ReleaseTaskResponse(task=convert.task_to_proto(row, now))
