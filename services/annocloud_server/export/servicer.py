"""ExportService: thin gRPC edge over the store; the worker does the writing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
from annocloud.export.v1 import export_pb2, export_pb2_grpc
from sqlalchemy.exc import IntegrityError

from annocloud_server.common.auth import MANAGERS, READERS, Authenticator
from annocloud_server.common.blobstore import BlobStore
from annocloud_server.common.db import Database
from annocloud_server.common.errors import FailedPrecondition, InvalidArgument
from annocloud_server.common.paging import decode_token, encode_token, page_size, parse_name
from annocloud_server.export import store
from annocloud_server.export.domain import FORMAT_NAMES
from annocloud_server.export.mapping import export_to_proto

ARTIFACT_CHUNK = 256 * 1024
MAX_REQUEST_ID_CHARS = 128


def rechunk(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Chunks of exactly ``size`` bytes (the last one may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer.extend(chunk)
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class ExportServicer(export_pb2_grpc.ExportServiceServicer):
    def __init__(
        self, *, db: Database, authenticator: Authenticator, blob_store: BlobStore, wake: Callable[[], None]
    ):
        self._db = db
        self._auth = authenticator
        self._blob_store = blob_store
        self._wake = wake

    def CreateExport(
        self, request: export_pb2.CreateExportRequest, context: grpc.ServicerContext
    ) -> export_pb2.CreateExportResponse:
        principal = self._auth.require(context, MANAGERS)
        org = principal.organization_id
        (project_id,) = parse_name(request.parent, "projects/{}")
        if request.format == export_pb2.EXPORT_FORMAT_UNSPECIFIED:
            raise InvalidArgument("format must be set", reason="FORMAT_REQUIRED")
        if request.format not in FORMAT_NAMES:
            raise InvalidArgument(f"unknown export format {request.format}", reason="UNKNOWN_FORMAT")
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidArgument(
                f"request_id must be at most {MAX_REQUEST_ID_CHARS} characters", reason="BAD_REQUEST_ID"
            )
        request_id = request.request_id or None
        try:
            with self._db.transaction() as session:
                if request_id is not None:
                    existing = store.find_by_request(session, organization_id=org, request_id=request_id)
                    if existing is not None:
                        if (existing.project_id, existing.format) != (project_id, request.format):
                            raise InvalidArgument(
                                "request_id was already used for a different export request",
                                reason="REQUEST_ID_REUSED",
                            )
                        return export_pb2.CreateExportResponse(export=export_to_proto(existing))
                store.require_project(session, organization_id=org, project_id=project_id)
                job = store.create_export(
                    session,
                    organization_id=org,
                    project_id=project_id,
                    export_format=request.format,
                    request_id=request_id,
                )
                created = export_to_proto(job)
        except IntegrityError:
            # A concurrent create with the same request_id won; answer with its job.
            with self._db.transaction() as session:
                existing = store.find_by_request(session, organization_id=org, request_id=request_id or "")
                if existing is None:
                    raise
                return export_pb2.CreateExportResponse(export=export_to_proto(existing))
        self._wake()
        return export_pb2.CreateExportResponse(export=created)

    def GetExport(
        self, request: export_pb2.GetExportRequest, context: grpc.ServicerContext
    ) -> export_pb2.GetExportResponse:
        principal = self._auth.require(context, READERS)
        project_id, export_id = parse_name(request.name, "projects/{}/exports/{}")
        with self._db.transaction() as session:
            job = store.get_export(
                session, organization_id=principal.organization_id, project_id=project_id, export_id=export_id
            )
            return export_pb2.GetExportResponse(export=export_to_proto(job))

    def ListExports(
        self, request: export_pb2.ListExportsRequest, context: grpc.ServicerContext
    ) -> export_pb2.ListExportsResponse:
        principal = self._auth.require(context, READERS)
        (project_id,) = parse_name(request.parent, "projects/{}")
        limit = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        before = cursor.get("seq")
        if cursor and (
            not isinstance(before, int) or isinstance(before, bool) or cursor.get("p") != project_id
        ):
            raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
        with self._db.transaction() as session:
            store.require_project(session, organization_id=principal.organization_id, project_id=project_id)
            rows = store.list_exports(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                before_seq=before,
                limit=limit + 1,
            )
            page = [export_to_proto(row) for row in rows[:limit]]
            token = encode_token({"p": project_id, "seq": rows[limit - 1].seq}) if len(rows) > limit else ""
        return export_pb2.ListExportsResponse(exports=page, next_page_token=token)

    def ReadExportArtifact(
        self, request: export_pb2.ReadExportArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[export_pb2.ReadExportArtifactResponse]:
        principal = self._auth.require(context, MANAGERS)
        project_id, export_id = parse_name(request.name, "projects/{}/exports/{}")
        with self._db.transaction() as session:
            job = store.get_export(
                session, organization_id=principal.organization_id, project_id=project_id, export_id=export_id
            )
            state, key = job.state, job.artifact_key
        if state != store.DONE:
            raise FailedPrecondition(
                f"export {request.name} is {export_pb2.ExportState.Name(state)}, not DONE",  # type: ignore[arg-type]
                reason="EXPORT_NOT_READY",
            )
        for chunk in rechunk(self._blob_store.open(key), ARTIFACT_CHUNK):
            yield export_pb2.ReadExportArtifactResponse(chunk=chunk)
