"""The dataset-version RPCs of ExportService (a mixin of ExportServicer): thin edges over version_store."""

from __future__ import annotations

import grpc
from annocloud.annotations.v1 import annotations_pb2
from annocloud.events.v1 import events_pb2
from annocloud.export.v1 import export_pb2
from annocloud.qa.v1 import qa_pb2
from sqlalchemy.exc import IntegrityError

from annocloud_server.common.auth import MANAGERS, READERS, Authenticator
from annocloud_server.common.db import Database
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import decode_token, encode_token, new_id, page_size, parse_name
from annocloud_server.export import store, version_store
from annocloud_server.export.mapping import change_token, version_to_proto
from annocloud_server.export.versions import split_fractions

MAX_REQUEST_ID_CHARS = 128
MAX_TEXT_CHARS = 2000
_VERSION = "projects/{}/datasetVersions/{}"


def _bad_token() -> InvalidArgument:
    return InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")


def _int_field(cursor: dict[str, object], key: str) -> int:
    value = cursor.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad_token()
    return value


def _str_field(cursor: dict[str, object], key: str) -> str:
    value = cursor.get(key)
    if not isinstance(value, str):
        raise _bad_token()
    return value


def _labels(raw: bytes | None) -> annotations_pb2.Labels | None:
    return None if raw is None else qa_pb2.AcceptedLabel.FromString(raw).labels


class DatasetVersionMethods:
    """CreateDatasetVersion, Get/List, ListDatasetVersionItems, DiffDatasetVersions, ListChanges."""

    _db: Database
    _auth: Authenticator
    _events: EventWriter

    def CreateDatasetVersion(
        self, request: export_pb2.CreateDatasetVersionRequest, context: grpc.ServicerContext
    ) -> export_pb2.CreateDatasetVersionResponse:
        principal = self._auth.require(context, MANAGERS)
        org = principal.organization_id
        (project_id,) = parse_name(request.parent, "projects/{}")
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidArgument(
                f"request_id must be at most {MAX_REQUEST_ID_CHARS} characters", reason="BAD_REQUEST_ID"
            )
        meta = request.dataset_version
        if len(meta.display_name) > 256 or len(meta.description) > MAX_TEXT_CHARS:
            raise InvalidArgument("display_name or description is too long", reason="TEXT_TOO_LONG")
        spec = request.split
        fractions = split_fractions(
            spec.train_fraction, spec.validation_fraction, spec.test_fraction, spec.seed
        )
        request_id = request.request_id or None
        try:
            with self._db.transaction() as session:
                if request_id is not None:
                    existing = version_store.find_by_request(
                        session, organization_id=org, request_id=request_id
                    )
                    if existing is not None:
                        if existing.project_id != project_id:
                            raise InvalidArgument(
                                "request_id was already used for another project", reason="REQUEST_ID_REUSED"
                            )
                        return export_pb2.CreateDatasetVersionResponse(
                            dataset_version=version_to_proto(existing)
                        )
                store.require_project(session, organization_id=org, project_id=project_id)
                version = version_store.create_version(
                    session,
                    organization_id=org,
                    project_id=project_id,
                    version_id=new_id(),
                    request_id=request_id,
                    display_name=meta.display_name,
                    description=meta.description,
                    fractions=fractions,
                    now=store.utc_now(),
                )
                session.flush()
                created = version_to_proto(version)
                # In the version's own transaction (outbox): the event exists exactly when the version does.
                self._events.emit(
                    session,
                    tenant_id=org,
                    resource_name=created.name,
                    aggregate_version=1,
                    payload=events_pb2.DatasetVersionCreated(dataset_version=created),
                )
                return export_pb2.CreateDatasetVersionResponse(dataset_version=created)
        except IntegrityError:
            with self._db.transaction() as session:
                again = version_store.find_by_request(
                    session, organization_id=org, request_id=request_id or ""
                )
                if again is None:
                    raise
                return export_pb2.CreateDatasetVersionResponse(dataset_version=version_to_proto(again))

    def GetDatasetVersion(
        self, request: export_pb2.GetDatasetVersionRequest, context: grpc.ServicerContext
    ) -> export_pb2.GetDatasetVersionResponse:
        principal = self._auth.require(context, READERS)
        project_id, version_id = parse_name(request.name, _VERSION)
        with self._db.read() as session:
            row = version_store.get_version(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                version_id=version_id,
            )
            return export_pb2.GetDatasetVersionResponse(dataset_version=version_to_proto(row))

    def ListDatasetVersions(
        self, request: export_pb2.ListDatasetVersionsRequest, context: grpc.ServicerContext
    ) -> export_pb2.ListDatasetVersionsResponse:
        principal = self._auth.require(context, READERS)
        (project_id,) = parse_name(request.parent, "projects/{}")
        limit = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        before = None
        if cursor:
            if cursor.get("p") != project_id:
                raise _bad_token()
            before = _int_field(cursor, "seq")
        with self._db.read() as session:
            store.require_project(session, organization_id=principal.organization_id, project_id=project_id)
            rows = version_store.list_versions(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                before_seq=before,
                limit=limit + 1,
            )
            page = [version_to_proto(row) for row in rows[:limit]]
            token = encode_token({"p": project_id, "seq": rows[limit - 1].seq}) if len(rows) > limit else ""
        return export_pb2.ListDatasetVersionsResponse(dataset_versions=page, next_page_token=token)

    def ListDatasetVersionItems(
        self, request: export_pb2.ListDatasetVersionItemsRequest, context: grpc.ServicerContext
    ) -> export_pb2.ListDatasetVersionItemsResponse:
        principal = self._auth.require(context, READERS)
        project_id, version_id = parse_name(request.parent, _VERSION)
        if request.split not in export_pb2.Split.values():
            raise InvalidArgument(f"unknown split {request.split}", reason="UNKNOWN_SPLIT")
        limit = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = ""
        if cursor:
            if cursor.get("v") != version_id or cursor.get("s") != request.split:
                raise _bad_token()
            after = _str_field(cursor, "i")
        with self._db.read() as session:
            version = version_store.get_version(
                session,
                organization_id=principal.organization_id,
                project_id=project_id,
                version_id=version_id,
            )
            rows = version_store.version_items_by_name(
                session, version_seq=version.seq, after_item=after, split=request.split, limit=limit + 1
            )
            items = [
                export_pb2.DatasetVersionItem(
                    item=row.item,
                    split=row.split,  # type: ignore[arg-type]
                    primary_class=row.primary_class,
                    file_name=row.stem + row.ext,
                    accepted_label=qa_pb2.AcceptedLabel.FromString(row.accepted_label),
                )
                for row in rows[:limit]
            ]
        token = (
            encode_token({"v": version_id, "s": request.split, "i": rows[limit - 1].item})
            if len(rows) > limit
            else ""
        )
        return export_pb2.ListDatasetVersionItemsResponse(items=items, next_page_token=token)

    def DiffDatasetVersions(
        self, request: export_pb2.DiffDatasetVersionsRequest, context: grpc.ServicerContext
    ) -> export_pb2.DiffDatasetVersionsResponse:
        principal = self._auth.require(context, READERS)
        org = principal.organization_id
        project_id, version_id = parse_name(request.dataset_version, _VERSION)
        base_project, base_id = parse_name(request.base_version, _VERSION)
        if base_project != project_id:
            raise InvalidArgument(
                "both versions must belong to one project", reason="VERSION_PROJECT_MISMATCH"
            )
        limit = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = ""
        if cursor:
            if (cursor.get("v"), cursor.get("b")) != (version_id, base_id):
                raise _bad_token()
            after = _str_field(cursor, "i")
        with self._db.read() as session:
            new = version_store.get_version(
                session, organization_id=org, project_id=project_id, version_id=version_id
            )
            old = version_store.get_version(
                session, organization_id=org, project_id=project_id, version_id=base_id
            )
            rows = version_store.diff_page(
                session, version_seq=new.seq, base_seq=old.seq, after_item=after, limit=limit + 1
            )
        entries = []
        for row in rows[:limit]:
            entry = export_pb2.DatasetVersionDiffEntry(item=row.item, kind=row.kind)  # type: ignore[arg-type]
            before, after_labels = _labels(row.before), _labels(row.after)
            if before is not None:
                entry.before.CopyFrom(before)
            if after_labels is not None:
                entry.after.CopyFrom(after_labels)
            entries.append(entry)
        token = (
            encode_token({"v": version_id, "b": base_id, "i": rows[limit - 1].item})
            if len(rows) > limit
            else ""
        )
        return export_pb2.DiffDatasetVersionsResponse(entries=entries, next_page_token=token)

    def ListChanges(
        self, request: export_pb2.ListChangesRequest, context: grpc.ServicerContext
    ) -> export_pb2.ListChangesResponse:
        principal = self._auth.require(context, READERS)
        org = principal.organization_id
        (project_id,) = parse_name(request.parent, "projects/{}")
        limit = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        with self._db.read() as session:
            store.require_project(session, organization_id=org, project_id=project_id)
            if cursor:
                if cursor.get("p") != project_id:
                    raise _bad_token()
                after = _int_field(cursor, "c")
            elif request.since_version:
                version_project, version_id = parse_name(request.since_version, _VERSION)
                if version_project != project_id:
                    raise InvalidArgument(
                        "since_version belongs to another project", reason="VERSION_PROJECT_MISMATCH"
                    )
                after = version_store.get_version(
                    session, organization_id=org, project_id=project_id, version_id=version_id
                ).change_seq
            else:
                after = 0
            rows = version_store.changes_page(
                session, organization_id=org, project_id=project_id, after_seq=after, limit=limit + 1
            )
            changes = []
            for row in rows[:limit]:
                change = export_pb2.Change(
                    item=row.item,
                    kind=row.kind,  # type: ignore[arg-type]
                    accepted_label=qa_pb2.AcceptedLabel.FromString(row.accepted_label),
                )
                change.change_time.FromDatetime(store.as_utc(row.change_time))
                changes.append(change)
        last = rows[:limit][-1].seq if rows else after
        more = len(rows) > limit
        return export_pb2.ListChangesResponse(
            changes=changes,
            next_page_token=change_token(project_id, last) if more else "",
            resume_token=change_token(project_id, last),
        )
