"""Export jobs and their zip artifacts."""

from __future__ import annotations

from typing import Annotated, Any

from annocloud.export.v1 import export_pb2
from fastapi import APIRouter, Body
from fastapi.responses import StreamingResponse

from annocloud_server.gateway.deps import ClientsDep, ExportId, PageSize, PageToken, ProjectId
from annocloud_server.gateway.protojson import (
    enum_value,
    resource_ref,
    split_body,
    string_field,
    to_dict,
    unwrap,
)
from annocloud_server.gateway.routes.streaming import first_and_rest

router = APIRouter(tags=["exports"])


@router.post("/projects/{project}/exports")
def create_export(
    clients: ClientsDep,
    project: ProjectId,
    body: Annotated[
        dict[str, Any], Body(examples=[{"format": "COCO", "request_id": "r-1", "dataset_version": "abc"}])
    ],
) -> dict[str, Any]:
    """Starts an export job (COCO, PASCAL_VOC, YOLO, YOLO_SEGMENTATION, JSONL, CVAT, LABEL_STUDIO, CSV;
    the full enum name works too), of the current accepted labels or of a ``dataset_version`` (id)."""
    fields = split_body(body, {"format", "request_id", "dataset_version"})
    version = string_field(fields, "dataset_version")
    fmt = enum_value(
        export_pb2.ExportFormat, string_field(fields, "format"), prefix="EXPORT_FORMAT_", field="format"
    )
    request = export_pb2.CreateExportRequest(
        parent=f"projects/{project}",
        format=fmt,  # type: ignore[arg-type]
        request_id=string_field(fields, "request_id"),
        dataset_version=(
            resource_ref(version, f"projects/{project}/datasetVersions", field="dataset_version")
            if version
            else ""
        ),
    )
    return unwrap(clients.call(clients.export.CreateExport, request))


@router.get("/projects/{project}/exports")
def list_exports(
    clients: ClientsDep, project: ProjectId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists a project's export jobs, newest first."""
    request = export_pb2.ListExportsRequest(
        parent=f"projects/{project}", page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.export.ListExports, request))


@router.get("/projects/{project}/exports/{export}")
def get_export(clients: ClientsDep, project: ProjectId, export: ExportId) -> dict[str, Any]:
    """Gets an export job; poll until state is EXPORT_STATE_DONE or EXPORT_STATE_FAILED."""
    request = export_pb2.GetExportRequest(name=f"projects/{project}/exports/{export}")
    return unwrap(clients.read(clients.export.GetExport, request))


@router.get(
    "/projects/{project}/exports/{export}/artifact",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The export zip."}},
)
def download_export_artifact(clients: ClientsDep, project: ProjectId, export: ExportId) -> StreamingResponse:
    """Streams the zip of a finished export."""
    request = export_pb2.ReadExportArtifactRequest(name=f"projects/{project}/exports/{export}")
    _, rest = first_and_rest(clients.stream(clients.export.ReadExportArtifact, request))
    headers = {"Content-Disposition": f'attachment; filename="{project}-{export}.zip"'}
    return StreamingResponse(rest, media_type="application/zip", headers=headers)


@router.get(
    "/projects/{project}/exports/{export}/manifest",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}, "description": "The sidecar manifest."}},
)
def download_export_manifest(clients: ClientsDep, project: ProjectId, export: ExportId) -> StreamingResponse:
    """Streams the manifest of a finished export: the zip's sha256 and size, and every file's."""
    request = export_pb2.ReadExportArtifactRequest(name=f"projects/{project}/exports/{export}", manifest=True)
    _, rest = first_and_rest(clients.stream(clients.export.ReadExportArtifact, request))
    return StreamingResponse(rest, media_type="application/json")
