"""Items: uploads (streamed to the service in chunks), manifests, text records, reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from annocloud.ingestion.v1 import ingestion_pb2
from fastapi import APIRouter, Body, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from google.protobuf import struct_pb2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUploadFile

from annocloud_server.gateway.deps import ClientsDep, DatasetId, ItemId, PageSize, PageToken, SettingsDep
from annocloud_server.gateway.errors import ApiError, bad_request
from annocloud_server.gateway.protojson import parse, split_body, string_field, to_dict, unwrap
from annocloud_server.gateway.routes.streaming import first_and_rest

router = APIRouter(tags=["items"])

NDJSON_TYPES = (
    "application/x-ndjson",
    "application/jsonl",
    "application/json-lines",
    "application/jsonlines",
)


def _metadata_struct(metadata: str | None) -> struct_pb2.Struct | None:
    if metadata is None or metadata.strip() == "":
        return None
    try:
        value = json.loads(metadata)
    except ValueError as exc:
        raise bad_request("BAD_METADATA", f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise bad_request("BAD_METADATA", "metadata must be a JSON object")
    return parse(value, struct_pb2.Struct, what="metadata")


def _upload_requests(
    header: ingestion_pb2.UploadItemHeader, file: StarletteUploadFile, chunk_bytes: int
) -> Iterator[ingestion_pb2.UploadItemRequest]:
    yield ingestion_pb2.UploadItemRequest(header=header)
    file.file.seek(0)
    while True:
        chunk = file.file.read(chunk_bytes)
        if not chunk:
            return
        yield ingestion_pb2.UploadItemRequest(chunk=chunk)


@router.post("/datasets/{dataset}/items:upload")
def upload_item(
    clients: ClientsDep,
    settings: SettingsDep,
    dataset: DatasetId,
    file: Annotated[UploadFile, File(description="The media file.")],
    metadata: Annotated[str | None, Form(description="A JSON object of free-form metadata.")] = None,
    request_id: Annotated[str, Form(max_length=200, description="Idempotency key.")] = "",
) -> dict[str, Any]:
    """Uploads one file as an item; returns {"item", "duplicate"}."""
    header = ingestion_pb2.UploadItemHeader(
        parent=f"datasets/{dataset}", file_name=file.filename or "", request_id=request_id
    )
    struct = _metadata_struct(metadata)
    if struct is not None:
        header.metadata.CopyFrom(struct)
    requests = _upload_requests(header, file, settings.upload_chunk_bytes)
    return to_dict(clients.upload(clients.ingestion.UploadItem, requests))


_MANIFEST_BODY = {
    "requestBody": {
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "request_id": {"type": "string"},
                    },
                    "required": ["file"],
                }
            },
        },
        "required": True,
    }
}


@router.post("/datasets/{dataset}/items:importManifest", openapi_extra=_MANIFEST_BODY)
async def import_manifest(
    request: Request,
    clients: ClientsDep,
    dataset: DatasetId,
    request_id: Annotated[str, Query(max_length=200, description="Idempotency key (raw body form).")] = "",
) -> dict[str, Any]:
    """Imports a JSONL manifest sent as the raw body (application/x-ndjson) or a multipart ``file``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=5) as form:
            upload = form.get("file")
            if not isinstance(upload, StarletteUploadFile):
                raise bad_request("BAD_REQUEST_BODY", "multipart body needs a 'file' part")
            manifest = await upload.read()
            form_request_id = form.get("request_id")
            if isinstance(form_request_id, str) and form_request_id:
                request_id = form_request_id
    elif content_type in NDJSON_TYPES or content_type == "text/plain":
        manifest = await request.body()
    else:
        raise ApiError(
            415,
            "UNSUPPORTED_CONTENT_TYPE",
            "send the manifest as application/x-ndjson or multipart/form-data",
        )
    message = ingestion_pb2.ImportManifestRequest(
        parent=f"datasets/{dataset}", manifest=manifest, request_id=request_id
    )
    response = await run_in_threadpool(clients.call, clients.ingestion.ImportManifest, message)
    return to_dict(response)


@router.post("/datasets/{dataset}/items:batchCreateText")
def batch_create_text_items(
    clients: ClientsDep,
    dataset: DatasetId,
    body: Annotated[
        dict[str, Any], Body(examples=[{"records": [{"text": "hello", "metadata": {"lang": "en"}}]}])
    ],
) -> dict[str, Any]:
    """Creates text items from records; returns {"items", "duplicate_count"}."""
    fields = split_body(body, {"records", "request_id"})
    request = parse(
        {"records": fields.get("records", []), "request_id": string_field(fields, "request_id")},
        ingestion_pb2.CreateTextItemsRequest,
    )
    request.parent = f"datasets/{dataset}"
    return to_dict(clients.call(clients.ingestion.CreateTextItems, request))


@router.get("/datasets/{dataset}/items")
def list_items(
    clients: ClientsDep, dataset: DatasetId, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    """Lists the items of a dataset in ingestion order."""
    request = ingestion_pb2.ListItemsRequest(
        parent=f"datasets/{dataset}", page_size=page_size, page_token=page_token
    )
    return to_dict(clients.read(clients.ingestion.ListItems, request))


@router.get("/datasets/{dataset}/items/{item}")
def get_item(clients: ClientsDep, dataset: DatasetId, item: ItemId) -> dict[str, Any]:
    """Gets an item."""
    request = ingestion_pb2.GetItemRequest(name=f"datasets/{dataset}/items/{item}")
    return unwrap(clients.read(clients.ingestion.GetItem, request))


@router.get(
    "/datasets/{dataset}/items/{item}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The media bytes."}},
)
def get_item_content(clients: ClientsDep, dataset: DatasetId, item: ItemId) -> StreamingResponse:
    """Streams an item's media bytes with its content type."""
    request = ingestion_pb2.ReadItemContentRequest(name=f"datasets/{dataset}/items/{item}")
    first, rest = first_and_rest(clients.stream(clients.ingestion.ReadItemContent, request))
    media_type = (first.content_type if first is not None else "") or "application/octet-stream"
    return StreamingResponse(rest, media_type=media_type)


@router.get("/datasets/{dataset}/items/{item}/sensitiveRegions")
def list_sensitive_regions(clients: ClientsDep, dataset: DatasetId, item: ItemId) -> dict[str, Any]:
    """The faces and plates blurred in a de-identified item's stored media; returns {"regions"}."""
    request = ingestion_pb2.ListSensitiveRegionsRequest(item=f"datasets/{dataset}/items/{item}")
    return to_dict(clients.read(clients.ingestion.ListSensitiveRegions, request))


@router.put("/datasets/{dataset}/items/{item}/sensitiveRegions")
def update_sensitive_regions(
    clients: ClientsDep,
    dataset: DatasetId,
    item: ItemId,
    body: Annotated[
        dict[str, Any] | None,
        Body(
            examples=[
                {"regions": [{"kind": "SENSITIVE_KIND_FACE", "x": 10, "y": 12, "width": 40, "height": 48}]}
            ]
        ),
    ] = None,
) -> dict[str, Any]:
    """Replaces the regions (the full new set) and blurs the original again; returns {"item", "regions"}."""
    name = f"datasets/{dataset}/items/{item}"
    fields = split_body(body, {"regions"})
    if "regions" not in fields:
        # Another organization's item is 404 whatever the body; only then is a missing set refused
        # (an empty list is explicit: it removes every blur).
        clients.read(clients.ingestion.GetItem, ingestion_pb2.GetItemRequest(name=name))
        raise bad_request("REGIONS_REQUIRED", 'the body must be {"regions": [...]}, the full new set')
    request = parse({"regions": fields["regions"]}, ingestion_pb2.UpdateSensitiveRegionsRequest)
    request.item = name
    return to_dict(clients.call(clients.ingestion.UpdateSensitiveRegions, request))
