"""ExportService: thin gRPC edge over the store; the worker does the writing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
from annocloud.export.v1 import export_pb2, export_pb2_grpc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annocloud_server.common.auth import MANAGERS, READERS, Authenticator
from annocloud_server.common.blobstore import BlobStore
from annocloud_server.common.db import Database
from annocloud_server.common.errors import FailedPrecondition, InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import decode_token, encode_token, page_size, parse_name
from annocloud_server.export import store, version_store
from annocloud_server.export.domain import FORMAT_NAMES
from annocloud_server.export.mapping import export_to_proto, manifest_key
from annocloud_server.export.models import ExportJob
from annocloud_server.export.version_servicer import DatasetVersionMethods

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


def _version_id(session: Session, job: ExportJob) -> str:
    link = version_store.versions_of_exports(session, [job.seq]).get(job.seq)
    return link[1] if link else ""


class ExportServicer(DatasetVersionMethods, export_pb2_grpc.ExportServiceServicer):
    def __init__(
        self,
        *,
        db: Database,
        authenticator: Authenticator,
        blob_store: BlobStore,
        wake: Callable[[], None],
        events: EventWriter,
    ):
        self._db = db
        self._events = events
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
        version_id = ""
        if request.dataset_version:
            version_project, version_id = parse_name(
                request.dataset_version, "projects/{}/datasetVersions/{}"
            )
            if version_project != project_id:
                raise InvalidArgument(
                    "dataset_version belongs to another project", reason="VERSION_PROJECT_MISMATCH"
                )
        try:
            with self._db.transaction() as session:
                if request_id is not None:
                    existing = store.find_by_request(session, organization_id=org, request_id=request_id)
                    if existing is not None:
                        existing_version = _version_id(session, existing)
                        if (existing.project_id, existing.format, existing_version) != (
                            project_id,
                            request.format,
                            version_id,
                        ):
                            raise InvalidArgument(
                                "request_id was already used for a different export request",
                                reason="REQUEST_ID_REUSED",
                            )
                        return export_pb2.CreateExportResponse(
                            export=export_to_proto(existing, existing_version)
                        )
                store.require_project(session, organization_id=org, project_id=project_id)
                version = (
                    version_store.get_version(
                        session, organization_id=org, project_id=project_id, version_id=version_id
                    )
                    if version_id
                    else None
                )
                job = store.create_export(
                    session,
                    organization_id=org,
                    project_id=project_id,
                    export_format=request.format,
                    request_id=request_id,
                )
                if version is not None:
                    version_store.link_export(session, export_seq=job.seq, version=version)
                created = export_to_proto(job, version_id)
        except IntegrityError:
            # A concurrent create with the same request_id won; answer with its job.
            with self._db.transaction() as session:
                existing = store.find_by_request(session, organization_id=org, request_id=request_id or "")
                if existing is None:
                    raise
                return export_pb2.CreateExportResponse(
                    export=export_to_proto(existing, _version_id(session, existing))
                )
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
            return export_pb2.GetExportResponse(export=export_to_proto(job, _version_id(session, job)))

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
            links = version_store.versions_of_exports(session, [row.seq for row in rows[:limit]])
            page = [export_to_proto(row, links.get(row.seq, (0, ""))[1]) for row in rows[:limit]]
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
        if request.manifest:
            key = manifest_key(key)
        for chunk in rechunk(self._blob_store.open(key), ARTIFACT_CHUNK):
            yield export_pb2.ReadExportArtifactResponse(chunk=chunk)
