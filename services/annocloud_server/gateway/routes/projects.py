"""Projects and their label schema versions."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.tasks.v1 import tasks_pb2
from fastapi import APIRouter, Body

from annocloud_server.gateway.deps import ClientsDep, PageSize, PageToken, ProjectId, SchemaVersion
from annocloud_server.gateway.errors import bad_request
from annocloud_server.gateway.protojson import parse, resource_ref, split_body, to_dict, unwrap

router = APIRouter(tags=["projects"])

_PROJECT_EXAMPLE = {
    "project": {"display_name": "cats", "redundancy": 2, "review_policy": "REVIEW_POLICY_DISAGREEMENT"},
    "schema": {
        "classification_mode": "CLASSIFICATION_MODE_SINGLE",
        "classes": [{"name": "cat"}, {"name": "dog"}],
    },
    "request_id": "r-1",
}


@router.post("/projects")
def create_project(
    clients: ClientsDep, body: Annotated[dict[str, Any], Body(examples=[_PROJECT_EXAMPLE])]
) -> dict[str, Any]:
    """Creates a project with its first label schema version."""
    request = parse(split_body(body, {"project", "schema", "request_id"}), tasks_pb2.CreateProjectRequest)
    return unwrap(clients.call(clients.tasks.CreateProject, request))


@router.get("/projects")
def list_projects(clients: ClientsDep, page_size: PageSize = 0, page_token: PageToken = "") -> dict[str, Any]:
    """Lists the caller's projects, newest first."""
    request = tasks_pb2.ListProjectsRequest(page_size=page_size, page_token=page_token)
    return to_dict(clients.read(clients.tasks.ListProjects, request))


@router.get("/projects/{project}")
def get_project(clients: ClientsDep, project: ProjectId) -> dict[str, Any]:
    """Gets a project with its task counts."""
    request = tasks_pb2.GetProjectRequest(name=f"projects/{project}")
    return unwrap(clients.read(clients.tasks.GetProject, request))


@router.post("/projects/{project}:addDataset")
def add_project_dataset(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[dict[str, Any], Body(examples=[{"dataset": "datasets/abc"}])],
) -> dict[str, Any]:
    """Adds a dataset to a project: its items become tasks."""
    fields = split_body(body, {"dataset"})
    dataset = fields.get("dataset")
    if not isinstance(dataset, str):
        raise bad_request("BAD_REQUEST_BODY", "dataset is required: 'datasets/{id}'")
    request = tasks_pb2.AddProjectDatasetRequest(
        project=f"projects/{project}", dataset=resource_ref(dataset, "datasets", field="dataset")
    )
    return unwrap(clients.call(clients.tasks.AddProjectDataset, request))


@router.post("/projects/{project}/schemas")
def create_label_schema(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[
        dict[str, Any],
        Body(examples=[{"classification_mode": "CLASSIFICATION_MODE_MULTI", "classes": [{"name": "cat"}]}]),
    ],
) -> dict[str, Any]:
    """Publishes a new label schema version (the body is a LabelSchema, or {"schema": LabelSchema})."""
    fields = body["schema"] if set(body) == {"schema"} else body
    schema = parse(fields, tasks_pb2.LabelSchema)
    request = tasks_pb2.CreateLabelSchemaRequest(parent=f"projects/{project}", schema=schema)
    return unwrap(clients.call(clients.tasks.CreateLabelSchema, request))


@router.get("/projects/{project}/schemas")
def list_label_schemas(
    clients: ClientsDep, project: ProjectId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists a project's schema versions, newest first."""
    request = tasks_pb2.ListLabelSchemasRequest(
        parent=f"projects/{project}", page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.tasks.ListLabelSchemas, request))


@router.get("/projects/{project}/schemas/{version}")
def get_label_schema(clients: ClientsDep, project: ProjectId, version: SchemaVersion) -> dict[str, Any]:
    """Gets one schema version (or ``latest``)."""
    request = tasks_pb2.GetLabelSchemaRequest(name=f"projects/{project}/schemas/{version}")
    return unwrap(clients.read(clients.tasks.GetLabelSchema, request))
