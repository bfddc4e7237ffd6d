"""Dataset versions: immutable snapshots with splits, their items, diffs, and the change feed."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.export.v1 import export_pb2
from fastapi import APIRouter, Body, Path, Query

from annocloud_server.gateway.deps import ClientsDep, PageSize, PageToken, ProjectId
from annocloud_server.gateway.protojson import (
    ID_PATTERN,
    enum_value,
    parse,
    split_body,
    string_field,
    to_dict,
    unwrap,
)

router = APIRouter(tags=["dataset versions"])

VersionId = Annotated[str, Path(pattern=ID_PATTERN, description="Dataset version id.")]


def _version(project: str, version: str) -> str:
    return f"projects/{project}/datasetVersions/{version}"


@router.post("/projects/{project}/datasetVersions")
def create_dataset_version(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "display_name": "v1",
                    "split": {
                        "train_fraction": 0.8,
                        "validation_fraction": 0.1,
                        "test_fraction": 0.1,
                        "seed": 7,
                    },
                    "request_id": "r-1",
                }
            ]
        ),
    ],
) -> dict[str, Any]:
    """Snapshots the accepted labels as an immutable version with a stratified split (synchronous)."""
    fields = split_body(body, {"display_name", "description", "split", "request_id"})
    request = export_pb2.CreateDatasetVersionRequest(
        parent=f"projects/{project}",
        dataset_version=export_pb2.DatasetVersion(
            display_name=string_field(fields, "display_name"), description=string_field(fields, "description")
        ),
        split=parse(fields.get("split") or {}, export_pb2.SplitSpec, what="split"),
        request_id=string_field(fields, "request_id"),
    )
    return unwrap(clients.call(clients.export.CreateDatasetVersion, request))


@router.get("/projects/{project}/datasetVersions")
def list_dataset_versions(
    clients: ClientsDep, project: ProjectId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists a project's dataset versions, newest first."""
    request = export_pb2.ListDatasetVersionsRequest(
        parent=f"projects/{project}", page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.export.ListDatasetVersions, request))


# Before the plain {dataset_version} route: that one would take 'id:diff' as a version id.
@router.get("/projects/{project}/datasetVersions/{dataset_version}:diff")
def diff_dataset_versions(
    clients: ClientsDep,
    project: ProjectId,
    dataset_version: VersionId,
    base: Annotated[str, Query(pattern=ID_PATTERN, description="Id of the older version.")],
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Items added, removed or changed from version ``base`` to this one, in item order."""
    request = export_pb2.DiffDatasetVersionsRequest(
        dataset_version=_version(project, dataset_version),
        base_version=_version(project, base),
        page_size=page_size,
        page_token=page_token,
    )
    return to_dict(clients.read(clients.export.DiffDatasetVersions, request))


@router.get("/projects/{project}/datasetVersions/{dataset_version}")
def get_dataset_version(
    clients: ClientsDep, project: ProjectId, dataset_version: VersionId
) -> dict[str, Any]:
    """Gets a dataset version (counts per split, schema versions, change cursor)."""
    request = export_pb2.GetDatasetVersionRequest(name=_version(project, dataset_version))
    return unwrap(clients.read(clients.export.GetDatasetVersion, request))


@router.get("/projects/{project}/datasetVersions/{dataset_version}/items")
def list_dataset_version_items(
    clients: ClientsDep,
    project: ProjectId,
    dataset_version: VersionId,
    split: Annotated[str, Query(max_length=32, description="train, validation or test (default: all).")] = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Lists the items of a version with their split and file name, in item order."""
    request = export_pb2.ListDatasetVersionItemsRequest(
        parent=_version(project, dataset_version),
        split=enum_value(export_pb2.Split, split, prefix="SPLIT_", field="split"),  # type: ignore[arg-type]
        page_size=page_size,
        page_token=page_token,
    )
    return to_dict(clients.read(clients.export.ListDatasetVersionItems, request))


@router.get("/projects/{project}/changes")
def list_changes(
    clients: ClientsDep,
    project: ProjectId,
    since_version: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, description="Start after this version (id); ignored with page_token."),
    ] = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """The change feed: every acceptance since a version or a cursor, oldest first (keep resume_token)."""
    request = export_pb2.ListChangesRequest(
        parent=f"projects/{project}",
        since_version=_version(project, since_version) if since_version else "",
        page_size=page_size,
        page_token=page_token,
    )
    return to_dict(clients.read(clients.export.ListChanges, request))
