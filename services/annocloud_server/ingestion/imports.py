"""Running one import job: validate every row first, then write everything in one transaction.

Pass 1 reads the whole source through the formats library (``formats.importers``), checks each
item's media (streamed from the archive into the content-addressed blob store and analysed like an
upload: sniffing, decompression bombs, size) or finds the existing item it labels (by file name),
checks the labels against the project's label schema stored on the job (``schema_check``), and
collects every row error. Nothing is written to the database. Any error fails the job.

Pass 2 streams the source again and, in ONE transaction, creates the items (exact duplicates are
not created: their labels go to the existing item), emits ``ItemIngested`` and one
``LabelsImported`` per labelled item (the annotations service stores it as a prediction), and marks
the job SUCCEEDED. A crash before the commit leaves nothing visible; blobs written by pass 1 are
unreferenced and removed when the job fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.blobstore import CHUNK
from annocloud_server.common.errors import AnnocloudError, InvalidArgument
from annocloud_server.common.paging import new_id
from annocloud_server.formats.importers import (
    SINGLE_FILE_FORMATS,
    ImportFormat,
    import_archive,
    import_file,
    media_names,
)
from annocloud_server.formats.model import ImportedItem, Record, RowError
from annocloud_server.formats.safety import SafeZip
from annocloud_server.ingestion import store
from annocloud_server.ingestion.convert import import_name, item_name, item_to_proto
from annocloud_server.ingestion.domain import validate_file_name
from annocloud_server.ingestion.ingest import Ingestor, Prepared, new_item
from annocloud_server.ingestion.media import analyze, sniff_image_format
from annocloud_server.ingestion.schema_check import schema_errors
from annocloud_server.ingestion.settings import IngestionSettings

MAX_LISTED_ERRORS = 100
ZIP_MAGIC = b"PK\x03\x04"

FORMATS: dict[int, tuple[ImportFormat, str]] = {
    ingestion_pb2.IMPORT_FORMAT_COCO: (ImportFormat.COCO, "coco"),
    ingestion_pb2.IMPORT_FORMAT_PASCAL_VOC: (ImportFormat.PASCAL_VOC, "pascal_voc"),
    ingestion_pb2.IMPORT_FORMAT_YOLO: (ImportFormat.YOLO, "yolo"),
    ingestion_pb2.IMPORT_FORMAT_YOLO_SEGMENTATION: (ImportFormat.YOLO, "yolo_segmentation"),
    ingestion_pb2.IMPORT_FORMAT_CVAT: (ImportFormat.CVAT, "cvat"),
    ingestion_pb2.IMPORT_FORMAT_LABEL_STUDIO: (ImportFormat.LABEL_STUDIO, "label_studio"),
    ingestion_pb2.IMPORT_FORMAT_JSONL: (ImportFormat.JSONL, "jsonl"),
}


def library_format(fmt: int) -> tuple[ImportFormat, str]:
    """The formats-library format and the provenance name of a proto ImportFormat."""
    found = FORMATS.get(fmt)
    if found is None:
        raise InvalidArgument("format must be one of the IMPORT_FORMAT_* values", reason="FORMAT_REQUIRED")
    return found


def open_zip(path: Path, settings: IngestionSettings) -> SafeZip:
    """The upload as a zip under the library's caps (entries from the settings)."""
    return SafeZip(str(path), max_entries=settings.max_import_entries)


def precheck(path: Path, fmt: int, settings: IngestionSettings) -> None:
    """Refuses, before a job exists, what can be refused from the outside of the upload: an empty
    file, a hostile zip directory (zip-slip, symlinks, nested archives, entry/size/ratio caps), and
    a bare label file of a format that needs an archive."""
    library, _ = library_format(fmt)
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise InvalidArgument("the upload is empty", reason="EMPTY_CONTENT")
    if head == ZIP_MAGIC or head.startswith(b"PK"):
        with open_zip(path, settings):
            return
    if library not in SINGLE_FILE_FORMATS:
        raise InvalidArgument(
            f"{library.value} labels are imported from a zip archive, not a single file",
            reason="ARCHIVE_REQUIRED",
        )


@dataclass(frozen=True)
class Job:
    """What running a job needs from its row."""

    seq: int
    id: str
    organization_id: str
    dataset_id: str
    project_id: str
    format: int
    file_name: str
    upload_key: str
    schema: tasks_pb2.LabelSchema | None = None
    """The project's label schema as of CreateImport; None for a job queued before schemas were checked."""

    @property
    def name(self) -> str:
        return import_name(self.dataset_id, self.id)


@dataclass
class Counts:
    items: int = 0
    duplicates: int = 0
    matched: int = 0
    predictions: int = 0


@dataclass
class ErrorList:
    """The first errors and how many there were."""

    errors: list[RowError] = field(default_factory=list)
    count: int = 0

    def add(self, error: RowError) -> None:
        self.count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(error)


class ImportRejected(Exception):
    """Some rows are bad: the job fails with them and nothing is written."""

    def __init__(self, found: ErrorList):
        super().__init__(f"{found.count} rows were refused")
        self.found = found


Target = Prepared | str
"""An item to create, or the id of the existing item the labels belong to."""


class Source:
    """An uploaded archive or label file, readable as a stream of records any number of times."""

    def __init__(
        self,
        path: Path,
        fmt: ImportFormat,
        file_name: str,
        sizes: Callable[[str], tuple[int, int] | None],
        settings: IngestionSettings,
    ):
        self._path = path
        self._settings = settings
        self._fmt = fmt
        self._file_name = file_name
        self._sizes = sizes
        self._stack = contextlib.ExitStack()
        self.archive: SafeZip | None = None
        self.media: dict[str, str] = {}

    def __enter__(self) -> Source:
        with self._path.open("rb") as handle:
            is_zip = handle.read(2) == b"PK"
        if is_zip:
            self.archive = self._stack.enter_context(open_zip(self._path, self._settings))
            self.media = media_names(self.archive)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def records(self) -> Iterator[Record]:
        if self.archive is not None:

            def size_of(name: str) -> tuple[int, int] | None:
                # Media in the archive are measured from their header by the reader itself.
                return None if PurePosixPath(name).name in self.media else self._sizes(name)

            yield from import_archive(self.archive, self._fmt, sizes=size_of)
            return
        with self._path.open("rb") as handle:
            yield from import_file(handle, self._fmt, where=self._file_name)


def _has_labels(record: ImportedItem) -> bool:
    labels = record.labels
    return bool(labels.regions or labels.classes or labels.not_sure)


class ImportRunner:
    """Runs the two passes of one job with the ingestion service's store, blobs and outbox."""

    def __init__(self, ingestor: Ingestor):
        self._ingestor = ingestor
        self._db = ingestor.db
        self._blobs = ingestor.blobs
        self._writer = ingestor.writer
        self._settings = ingestor.settings

    def run(
        self, job: Job, *, heartbeat: Callable[[], None], finish: Callable[[Session, Counts], None]
    ) -> Counts:
        """Validates and writes ``job``; ``finish`` marks it done inside the writing transaction.

        Raises :class:`ImportRejected` (row errors) or an :class:`AnnocloudError` (the source as a
        whole is refused); in both cases nothing was written."""
        library, _ = library_format(job.format)
        path = self._blobs.path(job.upload_key)
        written: list[str] = []
        try:
            with Source(path, library, job.file_name, self._sizes(job), self._settings) as source:
                plan = self._plan(job, source, written, heartbeat)
                return self._ingestor.transact(
                    lambda session: self._write(session, job, source, plan, finish)
                )
        except BaseException:
            self._ingestor.discard_blobs(written)
            raise

    def _sizes(self, job: Job) -> Callable[[str], tuple[int, int] | None]:
        def lookup(name: str) -> tuple[int, int] | None:
            with self._db.read() as session:
                found = store.find_items_by_file_name(
                    session,
                    organization_id=job.organization_id,
                    dataset_id=job.dataset_id,
                    file_name=PurePosixPath(name).name,
                )
            if len(found) == 1 and found[0].width > 0:
                return found[0].width, found[0].height
            return None

        return lookup

    def _plan(
        self, job: Job, source: Source, written: list[str], heartbeat: Callable[[], None]
    ) -> dict[str, Target]:
        found = ErrorList()
        plan: dict[str, Target] = {}
        with self._db.read() as session:
            deidentify = store.get_dataset(
                session, organization_id=job.organization_id, dataset_id=job.dataset_id
            ).deidentify
        for index, record in enumerate(source.records()):
            if index % 200 == 0:
                heartbeat()
            if isinstance(record, RowError):
                found.add(record)
                continue
            where = record.where or record.file_name
            if job.schema is not None:
                for error in schema_errors(record.labels, job.schema, where=where):
                    found.add(error)
            try:
                base, target = self._resolve(job, source, record, written, deidentify)
            except AnnocloudError as exc:
                if exc.reason.startswith("ZIP_"):
                    raise  # a hostile archive is refused as a whole
                found.add(RowError(where, exc.reason, exc.message))
                continue
            if base in plan:
                found.add(RowError(where, "DUPLICATE_FILE_NAME", f"{base!r} appears more than once"))
                continue
            plan[base] = target
        if found.count:
            raise ImportRejected(found)
        if not plan:
            raise InvalidArgument("the source holds no items", reason="IMPORT_EMPTY")
        return plan

    def _resolve(
        self, job: Job, source: Source, record: ImportedItem, written: list[str], deidentify: bool
    ) -> tuple[str, Target]:
        base = validate_file_name(PurePosixPath(record.file_name).name)
        if record.media_type == common_pb2.MEDIA_TYPE_TEXT and record.text:
            return base, self._ingestor.text_item(record.text, "{}", base, f"import:{job.id}")
        entry = source.media.get(base)
        if entry is not None and source.archive is not None:
            if deidentify:
                _refuse_image(source.archive, entry)
            return base, self._media_item(job, source.archive, entry, base, record, written)
        with self._db.read() as session:
            found = store.find_items_by_file_name(
                session, organization_id=job.organization_id, dataset_id=job.dataset_id, file_name=base
            )
            if not found:
                raise InvalidArgument(
                    f"no media named {base!r} in the upload and no item of that name in the dataset",
                    reason="ITEM_NOT_FOUND",
                )
            if len(found) > 1:
                raise InvalidArgument(
                    f"several items of the dataset are named {base!r}", reason="AMBIGUOUS_FILE_NAME"
                )
            item = found[0]
            _check_fits(record, item.media_type, item.width, item.height)
            return base, item.id

    def _media_item(
        self, job: Job, archive: SafeZip, entry: str, base: str, record: ImportedItem, written: list[str]
    ) -> Prepared:
        with archive.open(entry) as stream:
            sha, size = self._blobs.put_stream(
                iter(lambda: stream.read(CHUNK), b""), max_bytes=self._settings.max_upload_bytes
            )
        written.append(sha)
        info = analyze(
            self._blobs.path(self._blobs.content_key(sha)),
            file_name=base,
            size=size,
            max_pixels=self._settings.max_image_pixels,
        )
        _check_fits(record, info.media_type, info.width, info.height)
        return Prepared(
            new=new_item(
                info, item_id=new_id(), file_name=base, sha=sha, size=size, source_uri=f"import:{job.id}"
            ),
            uploaded_name=base,
        )

    def _write(
        self,
        session: Session,
        job: Job,
        source: Source,
        plan: dict[str, Target],
        finish: Callable[[Session, Counts], None],
    ) -> Counts:
        counts = Counts()
        org, dataset = job.organization_id, job.dataset_id
        _, model = library_format(job.format)
        for record in source.records():
            if isinstance(record, RowError):
                raise InvalidArgument("the upload changed while it was imported", reason="IMPORT_INVALID")
            target = plan[PurePosixPath(record.file_name).name]
            if isinstance(target, str):
                item = store.get_item(session, organization_id=org, dataset_id=dataset, item_id=target)
                counts.matched += 1
            else:
                existing = store.find_duplicate(
                    session, organization_id=org, dataset_id=dataset, sha256s=[target.new.content_sha256]
                )
                if existing is not None:
                    item = existing
                    counts.duplicates += 1
                    self._writer.emit(
                        session,
                        tenant_id=org,
                        resource_name=item_name(dataset, item.id),
                        aggregate_version=1,
                        payload=events_pb2.ItemDuplicateDetected(
                            existing_item=item_to_proto(item), file_name=target.uploaded_name
                        ),
                    )
                else:
                    item = store.add_item(session, organization_id=org, dataset_id=dataset, new=target.new)
                    counts.items += 1
                    self._writer.emit(
                        session,
                        tenant_id=org,
                        resource_name=item_name(dataset, item.id),
                        aggregate_version=1,
                        payload=events_pb2.ItemIngested(item=item_to_proto(item)),
                    )
            if _has_labels(record):
                counts.predictions += 1
                self._writer.emit(
                    session,
                    tenant_id=org,
                    resource_name=item_name(dataset, item.id),
                    aggregate_version=1,
                    payload=events_pb2.LabelsImported(
                        item=item_to_proto(item),
                        project=f"projects/{job.project_id}",
                        import_job=job.name,
                        model=f"import:{model}",
                        model_version=job.id,
                        score=1.0,
                        labels=record.labels,
                        source=record.where,
                    ),
                )
        finish(session, counts)
        return counts


def _refuse_image(archive: SafeZip, entry: str) -> None:
    """Import jobs run without a caller to detect faces as, so they bring no images into a
    de-identified dataset (labels for its existing items and text are fine)."""
    with archive.open(entry) as stream:
        head = stream.read(16)
    if sniff_image_format(head) is not None:
        raise InvalidArgument(
            "images cannot be imported into a de-identified dataset; upload them (UploadItem or "
            "ImportManifest), then import their labels",
            reason="DEIDENTIFY_IMPORT_UNSUPPORTED",
        )


def _check_fits(record: ImportedItem, media_type: int, width: int, height: int) -> None:
    """The labels were checked against the size the source declared; the media must agree."""
    if not record.labels.regions:
        return
    if media_type != record.media_type:
        raise InvalidArgument(
            "the labels are for a different media type than the item", reason="GEOMETRY_MISMATCH"
        )
    if record.media_type == common_pb2.MEDIA_TYPE_IMAGE and (record.width, record.height) != (width, height):
        raise InvalidArgument(
            f"the labels are for a {record.width}x{record.height} image, the media is {width}x{height}",
            reason="IMAGE_SIZE_MISMATCH",
        )
