"""Import jobs: upload an archive or label file (streamed to the service in chunks), then poll."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from annocloud.ingestion.v1 import ingestion_pb2
from fastapi import APIRouter, File, Form, Path, UploadFile
from starlette.datastructures import UploadFile as StarletteUploadFile

from annocloud_server.gateway.deps import ClientsDep, DatasetId, PageSize, PageToken, SettingsDep
from annocloud_server.gateway.errors import bad_request
from annocloud_server.gateway.protojson import ID_PATTERN, enum_value, to_dict, unwrap

router = APIRouter(tags=["imports"])

ImportId = Annotated[str, Path(pattern=ID_PATTERN, description="Import job id.")]


def _import_requests(
    header: ingestion_pb2.CreateImportHeader, file: StarletteUploadFile, chunk_bytes: int
) -> Iterator[ingestion_pb2.CreateImportRequest]:
    yield ingestion_pb2.CreateImportRequest(header=header)
    file.file.seek(0)
    while chunk := file.file.read(chunk_bytes):
        yield ingestion_pb2.CreateImportRequest(chunk=chunk)


@router.post("/datasets/{dataset}/imports")
def create_import(
    clients: ClientsDep,
    settings: SettingsDep,
    dataset: DatasetId,
    file: Annotated[UploadFile | None, File(description="A zip (media + labels) or a label file.")] = None,
    format: Annotated[
        str, Form(description="COCO, PASCAL_VOC, YOLO, YOLO_SEGMENTATION, CVAT, LABEL_STUDIO or JSONL.")
    ] = "",
    project: Annotated[
        str, Form(max_length=200, description="projects/{project} receiving the predictions.")
    ] = "",
    request_id: Annotated[str, Form(max_length=200, description="Idempotency key.")] = "",
) -> dict[str, Any]:
    """Starts an import job (multipart: file, format, project); poll GET .../imports/{import}."""
    # The dataset is looked up first, so another organization's id is 404 whatever the body.
    clients.read(clients.ingestion.GetDataset, ingestion_pb2.GetDatasetRequest(name=f"datasets/{dataset}"))
    if file is None:
        raise bad_request("FILE_REQUIRED", "send the archive or label file as the multipart part 'file'")
    header = ingestion_pb2.CreateImportHeader(
        parent=f"datasets/{dataset}",
        format=enum_value(  # type: ignore[arg-type]
            ingestion_pb2.ImportFormat, format, prefix="IMPORT_FORMAT_", field="format"
        ),
        project=project,
        file_name=file.filename or "",
        request_id=request_id,
    )
    requests = _import_requests(header, file, settings.upload_chunk_bytes)
    return unwrap(clients.upload(clients.ingestion.CreateImport, requests))


@router.get("/datasets/{dataset}/imports")
def list_imports(
    clients: ClientsDep, dataset: DatasetId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists a dataset's import jobs, newest first."""
    request = ingestion_pb2.ListImportsRequest(
        parent=f"datasets/{dataset}", page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.ingestion.ListImports, request))


@router.get("/datasets/{dataset}/imports/{import_id}")
def get_import(clients: ClientsDep, dataset: DatasetId, import_id: ImportId) -> dict[str, Any]:
    """Gets an import job with its counts and, when it failed, the refused rows."""
    request = ingestion_pb2.GetImportRequest(name=f"datasets/{dataset}/imports/{import_id}")
    return unwrap(clients.read(clients.ingestion.GetImport, request))
