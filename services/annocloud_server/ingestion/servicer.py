"""IngestionService: authorize, parse, delegate to the ingestor and the store, map to protos."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from annocloud.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc

from annocloud_server.common.auth import MANAGERS, READERS, Authenticator
from annocloud_server.common.db import Database
from annocloud_server.common.errors import InvalidArgument
from annocloud_server.common.paging import decode_token, encode_token, page_size, parse_name
from annocloud_server.common.tasks_client import TasksClient, forwarded_metadata
from annocloud_server.ingestion import domain, store
from annocloud_server.ingestion.convert import (
    dataset_to_proto,
    import_job_to_proto,
    item_to_proto,
    parse_dataset_name,
    parse_import_name,
    parse_item_name,
    region_from_proto,
    region_to_proto,
    struct_to_dict,
)
from annocloud_server.ingestion.deid import Region
from annocloud_server.ingestion.detector import SensitiveRegionDetector
from annocloud_server.ingestion.import_jobs import ImportJobs
from annocloud_server.ingestion.imports import library_format
from annocloud_server.ingestion.ingest import Detect, Ingestor


def _cursor(token: str, key: str, scope: str = "") -> int | None:
    cursor = decode_token(token)
    if not cursor:
        return None
    value = cursor.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or cursor.get("scope", "") != scope:
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN")
    return value


class IngestionServicer(ingestion_pb2_grpc.IngestionServiceServicer):
    def __init__(
        self,
        authenticator: Authenticator,
        db: Database,
        ingestor: Ingestor,
        imports: ImportJobs,
        tasks: TasksClient,
        detector: SensitiveRegionDetector,
    ):
        self._auth = authenticator
        self._db = db
        self._ingestor = ingestor
        self._imports = imports
        self._tasks = tasks
        self._detector = detector

    def _detect_as_caller(self, context: grpc.ServicerContext) -> Detect:
        metadata = forwarded_metadata(context)

        def detect(image: bytes) -> list[Region]:
            return self._detector.detect(image, metadata=metadata)

        return detect

    def CreateDataset(
        self, request: ingestion_pb2.CreateDatasetRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.CreateDatasetResponse:
        principal = self._auth.require(context, MANAGERS)
        dataset = self._ingestor.create_dataset(
            organization_id=principal.organization_id,
            display_name=domain.validate_display_name(request.dataset.display_name),
            description=domain.validate_description(request.dataset.description),
            request_id=domain.validate_request_id(request.request_id),
            deidentify=request.dataset.deidentify,
        )
        return ingestion_pb2.CreateDatasetResponse(dataset=dataset_to_proto(dataset))

    def GetDataset(
        self, request: ingestion_pb2.GetDatasetRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.GetDatasetResponse:
        principal = self._auth.require(context, READERS)
        dataset_id = parse_dataset_name(request.name)
        with self._db.transaction() as session:
            dataset = store.get_dataset(
                session, organization_id=principal.organization_id, dataset_id=dataset_id
            )
            return ingestion_pb2.GetDatasetResponse(dataset=dataset_to_proto(dataset))

    def ListDatasets(
        self, request: ingestion_pb2.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.ListDatasetsResponse:
        principal = self._auth.require(context, READERS)
        size = page_size(request.page_size)
        before = _cursor(request.page_token, "before")
        with self._db.transaction() as session:
            rows = store.list_datasets(
                session, organization_id=principal.organization_id, limit=size + 1, before_seq=before
            )
        token = encode_token({"before": rows[size - 1].seq}) if len(rows) > size else ""
        return ingestion_pb2.ListDatasetsResponse(
            datasets=[dataset_to_proto(d) for d in rows[:size]], next_page_token=token
        )

    def UploadItem(
        self, request_iterator: Iterator[ingestion_pb2.UploadItemRequest], context: grpc.ServicerContext
    ) -> ingestion_pb2.UploadItemResponse:
        principal = self._auth.require(context, MANAGERS)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument(
                "the first message of an upload must be the header", reason="HEADER_REQUIRED"
            )
        header = first.header
        dataset_id = parse_dataset_name(header.parent)
        file_name = domain.validate_file_name(header.file_name)
        metadata = domain.metadata_json(struct_to_dict(header.metadata))
        request_id = domain.validate_request_id(header.request_id)

        def chunks() -> Iterator[bytes]:
            for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument(
                        "only the first message may carry a header", reason="HEADER_REPEATED"
                    )
                yield message.chunk

        item, duplicate = self._ingestor.upload(
            organization_id=principal.organization_id,
            dataset_id=dataset_id,
            file_name=file_name,
            metadata_json=metadata,
            request_id=request_id,
            chunks=chunks(),
            detect=self._detect_as_caller(context),
        )
        return ingestion_pb2.UploadItemResponse(item=item_to_proto(item), duplicate=duplicate)

    def ImportManifest(
        self, request: ingestion_pb2.ImportManifestRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.ImportManifestResponse:
        principal = self._auth.require(context, MANAGERS)
        dataset_id = parse_dataset_name(request.parent)
        request_id = domain.validate_request_id(request.request_id)
        rows = domain.parse_manifest(request.manifest)
        outcome = self._ingestor.import_manifest(
            organization_id=principal.organization_id,
            dataset_id=dataset_id,
            rows=rows,
            request_id=request_id,
            detect=self._detect_as_caller(context),
        )
        return ingestion_pb2.ImportManifestResponse(
            items=[item_to_proto(i) for i in outcome.items], duplicate_count=outcome.duplicate_count
        )

    def CreateTextItems(
        self, request: ingestion_pb2.CreateTextItemsRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.CreateTextItemsResponse:
        principal = self._auth.require(context, MANAGERS)
        dataset_id = parse_dataset_name(request.parent)
        request_id = domain.validate_request_id(request.request_id)
        if not request.records:
            raise InvalidArgument("records must not be empty", reason="RECORDS_EMPTY")
        if len(request.records) > domain.MAX_TEXT_RECORDS:
            raise InvalidArgument(
                f"at most {domain.MAX_TEXT_RECORDS} records per call", reason="TOO_MANY_RECORDS"
            )
        records: list[tuple[str, str]] = []
        for index, record in enumerate(request.records):
            what = f"records[{index}]"
            domain.validate_text(record.text, what=f"{what}.text")
            meta = domain.metadata_json(
                struct_to_dict(record.metadata, what=f"{what}.metadata"), what=f"{what}.metadata"
            )
            records.append((record.text, meta))
        outcome = self._ingestor.create_text_items(
            organization_id=principal.organization_id,
            dataset_id=dataset_id,
            records=records,
            request_id=request_id,
        )
        return ingestion_pb2.CreateTextItemsResponse(
            items=[item_to_proto(i) for i in outcome.items], duplicate_count=outcome.duplicate_count
        )

    def GetItem(
        self, request: ingestion_pb2.GetItemRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.GetItemResponse:
        principal = self._auth.require(context, READERS)
        dataset_id, item_id = parse_item_name(request.name)
        with self._db.transaction() as session:
            item = store.get_item(
                session, organization_id=principal.organization_id, dataset_id=dataset_id, item_id=item_id
            )
            return ingestion_pb2.GetItemResponse(item=item_to_proto(item))

    def ListItems(
        self, request: ingestion_pb2.ListItemsRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.ListItemsResponse:
        principal = self._auth.require(context, READERS)
        dataset_id = parse_dataset_name(request.parent)
        size = page_size(request.page_size)
        after = _cursor(request.page_token, "after", scope=dataset_id)
        with self._db.transaction() as session:
            store.get_dataset(session, organization_id=principal.organization_id, dataset_id=dataset_id)
            rows = store.list_items(
                session,
                organization_id=principal.organization_id,
                dataset_id=dataset_id,
                limit=size + 1,
                after_seq=after,
            )
            items = [item_to_proto(i) for i in rows[:size]]
        token = encode_token({"after": rows[size - 1].seq, "scope": dataset_id}) if len(rows) > size else ""
        return ingestion_pb2.ListItemsResponse(items=items, next_page_token=token)

    def ReadItemContent(
        self, request: ingestion_pb2.ReadItemContentRequest, context: grpc.ServicerContext
    ) -> Iterator[ingestion_pb2.ReadItemContentResponse]:
        principal = self._auth.require(context, READERS)
        dataset_id, item_id = parse_item_name(request.name)
        content_type, chunks = self._ingestor.read_content(
            organization_id=principal.organization_id, dataset_id=dataset_id, item_id=item_id
        )
        first = True
        for chunk in chunks:
            yield ingestion_pb2.ReadItemContentResponse(
                content_type=content_type if first else "", chunk=chunk
            )
            first = False

    def CreateImport(
        self, request_iterator: Iterator[ingestion_pb2.CreateImportRequest], context: grpc.ServicerContext
    ) -> ingestion_pb2.CreateImportResponse:
        principal = self._auth.require(context, MANAGERS)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument(
                "the first message of an import must be the header", reason="HEADER_REQUIRED"
            )
        header = first.header
        dataset_id = parse_dataset_name(header.parent)
        library_format(header.format)
        if not header.project:
            raise InvalidArgument(
                "project is required: imported labels become its predictions", reason="PROJECT_REQUIRED"
            )
        (project_id,) = parse_name(header.project, "projects/{}")
        file_name = domain.validate_file_name(header.file_name or "upload")
        request_id = domain.validate_request_id(header.request_id)
        schema = self._tasks.current_schema(
            header.project, organization_id=principal.organization_id, metadata=forwarded_metadata(context)
        )

        def chunks() -> Iterator[bytes]:
            for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument(
                        "only the first message may carry a header", reason="HEADER_REPEATED"
                    )
                yield message.chunk

        job = self._imports.create(
            organization_id=principal.organization_id,
            dataset_id=dataset_id,
            project_id=project_id,
            schema=schema,
            fmt=header.format,
            file_name=file_name,
            request_id=request_id,
            chunks=chunks(),
        )
        return ingestion_pb2.CreateImportResponse(import_job=import_job_to_proto(job))

    def GetImport(
        self, request: ingestion_pb2.GetImportRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.GetImportResponse:
        principal = self._auth.require(context, READERS)
        dataset_id, import_id = parse_import_name(request.name)
        with self._db.read() as session:
            job = store.get_import_job(
                session, organization_id=principal.organization_id, dataset_id=dataset_id, import_id=import_id
            )
            return ingestion_pb2.GetImportResponse(import_job=import_job_to_proto(job))

    def ListImports(
        self, request: ingestion_pb2.ListImportsRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.ListImportsResponse:
        principal = self._auth.require(context, READERS)
        dataset_id = parse_dataset_name(request.parent)
        size = page_size(request.page_size)
        before = _cursor(request.page_token, "before", scope=dataset_id)
        with self._db.read() as session:
            store.get_dataset(session, organization_id=principal.organization_id, dataset_id=dataset_id)
            rows = store.list_import_jobs(
                session,
                organization_id=principal.organization_id,
                dataset_id=dataset_id,
                limit=size + 1,
                before_seq=before,
            )
            jobs = [import_job_to_proto(j) for j in rows[:size]]
        token = encode_token({"before": rows[size - 1].seq, "scope": dataset_id}) if len(rows) > size else ""
        return ingestion_pb2.ListImportsResponse(import_jobs=jobs, next_page_token=token)

    def ListSensitiveRegions(
        self, request: ingestion_pb2.ListSensitiveRegionsRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.ListSensitiveRegionsResponse:
        principal = self._auth.require(context, READERS)
        dataset_id, item_id = parse_item_name(request.item)
        with self._db.read() as session:
            store.get_item(
                session, organization_id=principal.organization_id, dataset_id=dataset_id, item_id=item_id
            )
            regions = store.list_regions(session, organization_id=principal.organization_id, item_id=item_id)
        return ingestion_pb2.ListSensitiveRegionsResponse(regions=[region_to_proto(r) for r in regions])

    def UpdateSensitiveRegions(
        self, request: ingestion_pb2.UpdateSensitiveRegionsRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.UpdateSensitiveRegionsResponse:
        principal = self._auth.require(context, MANAGERS)
        dataset_id, item_id = parse_item_name(request.item)
        item, regions = self._ingestor.update_regions(
            organization_id=principal.organization_id,
            dataset_id=dataset_id,
            item_id=item_id,
            regions=[region_from_proto(r) for r in request.regions],
            subject=principal.subject,
        )
        return ingestion_pb2.UpdateSensitiveRegionsResponse(
            item=item_to_proto(item), regions=[region_to_proto(r) for r in regions]
        )
