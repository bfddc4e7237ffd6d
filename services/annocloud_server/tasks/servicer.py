"""TaskService: authorize, parse, call the store in one transaction, map back to protos."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from annocloud.common.v1 import common_pb2
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud.tasks.v1 import workforce_pb2 as wpb
from google.protobuf import duration_pb2

from annocloud_server.common.auth import LABELERS, MANAGERS, READERS, Authenticator, worker_identity
from annocloud_server.common.db import Database
from annocloud_server.common.errors import FailedPrecondition, InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import decode_token, encode_token, page_size, parse_name
from annocloud_server.tasks import convert, domain, store, workforce
from annocloud_server.tasks import workforce_store as wf

# Vendors reach a project through a grant; their admins and workers read what they need to work.
PROJECT_READERS = (*READERS, *wf.VENDOR_ROLES)
WORKERS = LABELERS
_WORKER_ONLY_ROLES = {common_pb2.ROLE_ANNOTATOR, common_pb2.ROLE_VENDOR_WORKER}


def _is_worker_only(principal: common_pb2.Principal) -> bool:
    """An annotator or vendor worker with no wider role: sees only their own tasks."""
    return set(principal.roles) <= _WORKER_ONLY_ROLES


def _task_visible(principal: common_pb2.Principal, access: wf.Access, row: Any, now: Any) -> bool:
    """Workers see the tasks they hold, held or must redo; a vendor sees its own workers' tasks."""
    if _is_worker_only(principal):
        me = worker_identity(principal, access.owner)
        expire = convert.as_utc(row.lease_expire_time) if row.lease_expire_time else None
        live = domain.effective_state(row.state, expire, now) == domain.TaskState.LEASED
        return bool((live and row.lease_worker == me) or row.completed_by == me or row.assigned_worker == me)
    if access.vendor is not None:
        return access.vendor in (row.lease_worker_org, row.completed_by_org) or str(
            row.assigned_worker
        ).endswith(f"@{access.vendor}")
    return True


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
        quality = workforce.validate_quality(convert.quality_from_proto(request.project.quality))
        assist = request.project.model_assist
        domain.validate_model_assist(
            prelabel=[domain.PrelabelSpec(p.model, p.label, p.min_score) for p in assist.prelabel],
            strategy=int(assist.strategy),
            retrain_every=assist.retrain_every,
            cold_start=int(assist.cold_start),
            embedding_model=assist.embedding_model,
            schema=schema,
        )
        with self._db.transaction() as session:
            row = store.create_project(
                session,
                self._writer,
                organization_id=principal.organization_id,
                spec=spec,
                schema=schema,
                request_id=request.request_id,
                quality=quality,
                model_assist=assist,
            )
            return tasks_pb2.CreateProjectResponse(project=store.project_message(session, row))

    def GetProject(
        self, request: tasks_pb2.GetProjectRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetProjectResponse:
        principal = self._auth.require(context, PROJECT_READERS)
        project_id = _project_id(request.name)
        with self._db.read() as session:
            access = self._access(session, principal, project_id)
            return tasks_pb2.GetProjectResponse(project=store.project_message(session, access.project))

    def ListProjects(
        self, request: tasks_pb2.ListProjectsRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ListProjectsResponse:
        principal = self._auth.require(context, PROJECT_READERS)
        limit = page_size(request.page_size)
        before = _cursor(request.page_token, "s")
        org = principal.organization_id
        in_org = bool(set(principal.roles) & set(READERS))
        with self._db.read() as session:
            if in_org:
                rows, next_seq = store.list_projects(
                    session, organization_id=org, limit=limit, before_seq=before
                )
            else:
                rows, next_seq = wf.granted_projects(session, vendor_id=org, limit=limit, before_seq=before)
            ids = [r.project_id for r in rows]
            datasets = store.project_dataset_ids(session, project_ids=ids)
            now = store.utcnow()
            counts: dict[str, tuple[int, int, int]] = {}
            for owner in sorted({r.organization_id for r in rows}):
                owned = [r.project_id for r in rows if r.organization_id == owner]
                counts.update(store.task_counts(session, organization_id=owner, project_ids=owned, now=now))
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
        principal = self._auth.require(context, PROJECT_READERS)
        project_id, version_token = parse_name(request.name, "projects/{}/schemas/{}")
        version = domain.schema_version_of(version_token)
        with self._db.read() as session:
            access = self._access(session, principal, project_id)
            row = store.get_label_schema(
                session, organization_id=access.owner, project_id=project_id, version=version
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
        principal = self._auth.require(context, PROJECT_READERS)
        project_id, task_id = parse_name(request.name, "projects/{}/tasks/{}")
        now = store.utcnow()
        with self._db.read() as session:
            access = self._access(session, principal, project_id)
            row = store.get_task(
                session, organization_id=access.owner, project_id=project_id, task_id=task_id
            )
            if not _task_visible(principal, access, row, now):
                raise store.task_not_found(project_id, task_id)
            return tasks_pb2.GetTaskResponse(
                task=convert.task_to_proto(row, now), project_organization=access.owner
            )

    def _access(self, session: Any, principal: common_pb2.Principal, project_id: str) -> wf.Access:
        return wf.project_access(
            session,
            organization_id=principal.organization_id,
            roles=list(principal.roles),
            project_id=project_id,
        )

    def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        principal = self._auth.require(context, PROJECT_READERS)
        project_id = _project_id(request.parent)
        if int(request.state) not in set(domain.TaskState):
            raise InvalidArgument(f"state: unknown value {request.state}", reason="BAD_STATE")
        limit = page_size(request.page_size)
        after = _cursor(request.page_token, "s")
        now = store.utcnow()
        with self._db.read() as session:
            access = self._access(session, principal, project_id)
            rows, next_seq = store.list_tasks(
                session,
                organization_id=access.owner,
                project_id=project_id,
                state=int(request.state),
                limit=limit,
                after_seq=after,
                now=now,
                worker=worker_identity(principal, access.owner) if _is_worker_only(principal) else None,
                worker_org=access.vendor if not _is_worker_only(principal) else None,
            )
            tasks = [convert.task_to_proto(r, now) for r in rows]
        return tasks_pb2.ListTasksResponse(tasks=tasks, next_page_token=_token("s", next_seq))

    def LeaseNextTask(
        self, request: tasks_pb2.LeaseNextTaskRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.LeaseNextTaskResponse:
        principal = self._auth.require(context, WORKERS)
        project_id = _project_id(request.parent)
        duration = _duration(request, "lease_duration")
        now = store.utcnow()
        with self._db.transaction() as session:
            access = self._access(session, principal, project_id)
            quality = wf.quality_of(access.project)
            eligibility = self._eligibility(session, principal, access, quality)
            row = store.lease_next_task(
                session,
                self._writer,
                organization_id=access.owner,
                project_id=project_id,
                worker=worker_identity(principal, access.owner),
                duration=duration,
                now=now,
                worker_org=principal.organization_id,
                eligibility=eligibility,
                gold_rate=quality.gold_rate,
            )
            return tasks_pb2.LeaseNextTaskResponse(task=convert.task_to_proto(row, now))

    def _eligibility(
        self,
        session: Any,
        principal: common_pb2.Principal,
        access: wf.Access,
        quality: tasks_pb2.QualitySettings,
    ) -> workforce.Eligibility:
        """What the caller may lease: from their worker record, the grant and their gold record."""
        worker = wf.worker_by_subject(
            session, organization_id=principal.organization_id, subject=principal.subject
        )
        if worker is None and access.vendor is not None:
            raise FailedPrecondition(
                f"you are not a registered worker of vendors/{access.vendor}; ask your vendor admin to add you",
                reason="WORKER_NOT_REGISTERED",
            )
        gold = wf.worker_gold(
            session,
            project_id=access.project.project_id,
            worker=worker_identity(principal, access.owner),
            worker_org=principal.organization_id,
        )
        kinds: list[int] = []
        if worker is not None:  # only a worker record limits object kinds (LeaseNextTask is hot)
            schema = store.get_label_schema(
                session, organization_id=access.owner, project_id=access.project.project_id, version=None
            )
            kinds = [o.kind for o in convert.schema_from_json(schema.body).objects]
        return workforce.check_eligibility(
            level=worker.level if worker is not None else workforce.UNREGISTERED_IN_HOUSE_LEVEL,
            state_suspended=worker is not None and worker.state == wpb.WORKER_STATE_SUSPENDED,
            skills=convert.skills_of(worker) if worker is not None else None,
            grant_min_level=access.grant.min_level if access.grant is not None else 1,
            schema_object_kinds=kinds,
            language=quality.language,
            qualification_gold_tasks=quality.qualification_gold_tasks,
            min_worker_accuracy=quality.min_worker_accuracy,
            gold_answered=gold.gold_answered if gold is not None else 0,
            gold_correct=gold.gold_correct if gold is not None else 0,
        )

    def HeartbeatLease(
        self, request: tasks_pb2.HeartbeatLeaseRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.HeartbeatLeaseResponse:
        principal = self._auth.require(context, WORKERS)
        project_id, task_id = parse_name(request.name, "projects/{}/tasks/{}")
        duration = _duration(request, "lease_duration")
        now = store.utcnow()
        with self._db.transaction() as session:
            access = self._access(session, principal, project_id)
            row = store.heartbeat_lease(
                session,
                organization_id=access.owner,
                project_id=project_id,
                task_id=task_id,
                lease_id=request.lease_id,
                worker=worker_identity(principal, access.owner),
                duration=duration,
                now=now,
            )
            return tasks_pb2.HeartbeatLeaseResponse(task=convert.task_to_proto(row, now))

    def ReleaseTask(
        self, request: tasks_pb2.ReleaseTaskRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ReleaseTaskResponse:
        principal = self._auth.require(context, WORKERS)
        project_id, task_id = parse_name(request.name, "projects/{}/tasks/{}")
        now = store.utcnow()
        with self._db.transaction() as session:
            access = self._access(session, principal, project_id)
            row = store.release_task(
                session,
                organization_id=access.owner,
                project_id=project_id,
                task_id=task_id,
                lease_id=request.lease_id,
                worker=worker_identity(principal, access.owner),
                now=now,
            )
            return tasks_pb2.ReleaseTaskResponse(task=convert.task_to_proto(row, now))
