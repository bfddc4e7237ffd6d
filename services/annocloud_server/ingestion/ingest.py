"""Ingestion workflows: blob first, validate, then one transaction with the outbox events.

Media is written to the content-addressed blob store before the database transaction (the bytes
must be hashed and sniffed anyway); if validation then fails, the blob is removed unless some item
already references that sha256, so a refused upload leaves nothing behind. Validation is a pure
function of the bytes, so a concurrent upload of the same bytes reaches the same verdict.

Images of a de-identified dataset go elsewhere first: the uploaded bytes are written under the
private key ``originals/<item id>`` (never content-addressed, so no read path can reach them),
faces and plates are detected (``detect``, the modelassist service) and blurred, and only the
blurred bytes become the item's content blob. Any failure removes both, so nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annocloud_server.common.blobstore import CHUNK, BlobStore
from annocloud_server.common.db import Database
from annocloud_server.common.errors import Aborted, AnnocloudError, FailedPrecondition, InvalidArgument
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import new_id
from annocloud_server.ingestion import deid, store
from annocloud_server.ingestion.convert import item_name, item_to_proto
from annocloud_server.ingestion.deid import Region
from annocloud_server.ingestion.domain import ManifestRow, file_name_from_url, row_error, validate_text
from annocloud_server.ingestion.fetch import FetchPolicy, fetch, parse_url
from annocloud_server.ingestion.media import TEXT_CONTENT_TYPE, MediaInfo, analyze
from annocloud_server.ingestion.models import Dataset, Item
from annocloud_server.ingestion.settings import IngestionSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
Detect = Callable[[bytes], list[Region]]
"""Finds the sensitive regions of an encoded image (as the caller; raises AnnocloudError)."""


def original_key(item_id: str) -> str:
    """The private blob of a de-identified image's uploaded bytes (only re-blurring reads it)."""
    return f"originals/{item_id}"


def capped(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise InvalidArgument(
                f"content is larger than the limit of {limit} bytes", reason="CONTENT_TOO_LARGE"
            )
        yield chunk


@dataclass
class Prepared:
    """A validated item waiting for the transaction."""

    new: store.NewItem
    uploaded_name: str
    staged_key: str | None = None
    """A blob under a chosen key (a de-identified original) to remove unless the item is created."""
    staged_sha: str | None = None
    """A content blob written for this item alone (the blur) to remove unless the item is created."""
    duplicate_only: bool = False
    """Known to duplicate an existing item; never created (it holds no blurred media)."""


def new_item(
    info: MediaInfo,
    *,
    item_id: str,
    file_name: str,
    sha: str,
    size: int,
    source_uri: str,
    metadata_json: str = "{}",
) -> store.NewItem:
    """The row of stored bytes as ``analyze`` saw them (every ingest path builds items here)."""
    return store.NewItem(
        item_id=item_id,
        media_type=info.media_type,
        file_name=file_name,
        content_sha256=sha,
        content_type=info.content_type,
        size_bytes=size,
        width=info.width,
        height=info.height,
        text=info.text if info.media_type == common_pb2.MEDIA_TYPE_TEXT else None,
        perceptual_hash=info.perceptual_hash,
        metadata_json=metadata_json,
        source_uri=source_uri,
    )


@dataclass
class Outcome:
    """Items created (in input order) and how many inputs were exact duplicates."""

    items: list[Item]
    duplicate_count: int
    duplicate_of: Item | None = None


class Ingestor:
    """Creates datasets and items for one service instance."""

    def __init__(self, db: Database, blobs: BlobStore, writer: EventWriter, settings: IngestionSettings):
        self._db = db
        self._blobs = blobs
        self._writer = writer
        self._settings = settings

    @property
    def db(self) -> Database:
        return self._db

    @property
    def blobs(self) -> BlobStore:
        return self._blobs

    @property
    def writer(self) -> EventWriter:
        return self._writer

    @property
    def settings(self) -> IngestionSettings:
        return self._settings

    # -- datasets ---------------------------------------------------------------------------

    def create_dataset(
        self,
        *,
        organization_id: str,
        display_name: str,
        description: str,
        request_id: str,
        deidentify: bool = False,
    ) -> Dataset:
        def work(session: Session) -> Dataset:
            if request_id:
                earlier = store.find_request(
                    session, organization_id=organization_id, method="CreateDataset", request_id=request_id
                )
                if earlier is not None:
                    return store.get_dataset(session, organization_id=organization_id, dataset_id=earlier)
            dataset = store.create_dataset(
                session,
                organization_id=organization_id,
                dataset_id=new_id(),
                display_name=display_name,
                description=description,
                deidentify=deidentify,
            )
            if request_id:
                store.save_request(
                    session,
                    organization_id=organization_id,
                    method="CreateDataset",
                    request_id=request_id,
                    result_json=dataset.id,
                )
            return dataset

        return self.transact(work)

    # -- items --------------------------------------------------------------------------------

    def upload(
        self,
        *,
        organization_id: str,
        dataset_id: str,
        file_name: str,
        metadata_json: str,
        request_id: str,
        chunks: Iterable[bytes],
        detect: Detect | None = None,
    ) -> tuple[Item, bool]:
        """Stores an uploaded file as an item; (existing item, True) for an exact duplicate."""
        with self._db.read() as session:
            dataset = store.get_dataset(session, organization_id=organization_id, dataset_id=dataset_id)
            replay = self._replayed(session, organization_id, "UploadItem", request_id)
        if replay is not None:
            return replay[0][0], bool(replay[1])
        if dataset.deidentify:
            return self._upload_deidentified(
                organization_id=organization_id,
                dataset_id=dataset_id,
                file_name=file_name,
                metadata_json=metadata_json,
                request_id=request_id,
                chunks=chunks,
                detect=detect,
            )
        sha, size = self._blobs.put_stream(chunks, max_bytes=self._settings.max_upload_bytes)
        try:
            new = self._template(
                new_id(), self._blobs.content_key(sha), sha, size, file_name, metadata_json, "upload"
            )
        except AnnocloudError:
            self.discard_blobs([sha])
            raise
        prepared = Prepared(new=new, uploaded_name=file_name)
        outcome = self._create_items(
            organization_id=organization_id,
            dataset_id=dataset_id,
            method="UploadItem",
            request_id=request_id,
            prepared=[prepared],
        )
        if outcome.duplicate_of is not None:
            return outcome.duplicate_of, True
        return outcome.items[0], False

    def create_text_items(
        self, *, organization_id: str, dataset_id: str, records: Sequence[tuple[str, str]], request_id: str
    ) -> Outcome:
        """Text records ``(text, metadata_json)``, already validated, as items; all or nothing."""
        with self._db.transaction() as session:
            store.get_dataset(session, organization_id=organization_id, dataset_id=dataset_id)
        prepared = [self.text_item(text, meta, None, "records") for text, meta in records]
        return self._create_items(
            organization_id=organization_id,
            dataset_id=dataset_id,
            method="CreateTextItems",
            request_id=request_id,
            prepared=prepared,
        )

    def import_manifest(
        self,
        *,
        organization_id: str,
        dataset_id: str,
        rows: Sequence[ManifestRow],
        request_id: str,
        detect: Detect | None = None,
    ) -> Outcome:
        """Fetches and validates every row first, then creates all items in one transaction."""
        with self._db.transaction() as session:
            dataset = store.get_dataset(session, organization_id=organization_id, dataset_id=dataset_id)
            replay = self._replayed(session, organization_id, "ImportManifest", request_id)
        if replay is not None:
            return Outcome(items=replay[0], duplicate_count=replay[1])
        written: list[str] = []
        originals: list[str] = []
        prepared: list[Prepared] = []
        target = (organization_id, dataset_id) if dataset.deidentify else None
        try:
            for row in rows:
                prepared.append(self._manifest_item(row, written, originals, target, detect))
            outcome = self._create_items(
                organization_id=organization_id,
                dataset_id=dataset_id,
                method="ImportManifest",
                request_id=request_id,
                prepared=prepared,
            )
        except BaseException:
            self._forget(prepared, created=set(), keys=originals)
            self.discard_blobs(written)
            raise
        self._forget(prepared, created={item.id for item in outcome.items})
        return outcome

    def update_regions(
        self, *, organization_id: str, dataset_id: str, item_id: str, regions: Sequence[Region], subject: str
    ) -> tuple[Item, list[Region]]:
        """Blurs the item's original again with ``regions`` (the full new set, a person's edit):
        the new blur becomes the item's media and the previous blur is removed unless another item
        has the same bytes."""
        with self._db.read() as session:
            dataset = store.get_dataset(session, organization_id=organization_id, dataset_id=dataset_id)
            item = store.get_item(
                session, organization_id=organization_id, dataset_id=dataset_id, item_id=item_id
            )
        if not dataset.deidentify:
            raise FailedPrecondition(
                f"dataset datasets/{dataset_id} does not de-identify its images", reason="NOT_DEIDENTIFIED"
            )
        if item.original_sha256 is None:
            raise FailedPrecondition(
                "only the images of a de-identified dataset have sensitive regions", reason="NOT_DEIDENTIFIED"
            )
        checked = deid.validate_regions(regions, item.width, item.height, subject=subject)
        blurred = deid.blur(b"".join(self._blobs.open(original_key(item.id))), checked)
        sha, size = self._blobs.put_stream([blurred], max_bytes=len(blurred))
        try:
            with self._db.transaction() as session:
                row = store.get_item(
                    session,
                    organization_id=organization_id,
                    dataset_id=dataset_id,
                    item_id=item_id,
                    for_update=True,
                )
                previous = row.content_sha256
                store.replace_media(session, item=row, content_sha256=sha, size_bytes=size, regions=checked)
        except IntegrityError as exc:
            self.discard_blobs([sha])
            raise Aborted(
                "the new blur is byte for byte the media of another item of the dataset",
                reason="MEDIA_CONFLICT",
            ) from exc
        except BaseException:
            self.discard_blobs([sha])
            raise
        if previous != sha:
            self.discard_blobs([previous])
        return row, checked

    def read_content(
        self, *, organization_id: str, dataset_id: str, item_id: str
    ) -> tuple[str, Iterator[bytes]]:
        with self._db.transaction() as session:
            item = store.get_item(
                session, organization_id=organization_id, dataset_id=dataset_id, item_id=item_id
            )
        if item.text is not None:
            data = item.text.encode("utf-8")
            return item.content_type, (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
        return item.content_type, self._blobs.open(self._blobs.content_key(item.content_sha256))

    # -- internals ----------------------------------------------------------------------------

    def _upload_deidentified(
        self,
        *,
        organization_id: str,
        dataset_id: str,
        file_name: str,
        metadata_json: str,
        request_id: str,
        chunks: Iterable[bytes],
        detect: Detect | None,
    ) -> tuple[Item, bool]:
        item_id = new_id()
        key = original_key(item_id)
        sha, size = self._blobs.put_named(key, capped(chunks, self._settings.max_upload_bytes))
        prepared: list[Prepared] = []
        try:
            template = self._template(item_id, key, sha, size, file_name, metadata_json, "upload")
            prepared.append(self._deidentified(organization_id, dataset_id, template, key, detect))
            outcome = self._create_items(
                organization_id=organization_id,
                dataset_id=dataset_id,
                method="UploadItem",
                request_id=request_id,
                prepared=prepared,
            )
        except BaseException:
            self._forget(prepared, created=set(), keys=[key])
            raise
        self._forget(prepared, created={item.id for item in outcome.items})
        if outcome.duplicate_of is not None:
            return outcome.duplicate_of, True
        return outcome.items[0], False

    def _template(
        self, item_id: str, key: str, sha: str, size: int, file_name: str, metadata_json: str, source_uri: str
    ) -> store.NewItem:
        """The item of uploaded bytes stored under ``key``, as analysed (INVALID_ARGUMENT if refused)."""
        info = analyze(
            self._blobs.path(key), file_name=file_name, size=size, max_pixels=self._settings.max_image_pixels
        )
        return new_item(
            info,
            item_id=item_id,
            file_name=file_name,
            sha=sha,
            size=size,
            metadata_json=metadata_json,
            source_uri=source_uri,
        )

    def _deidentified(
        self, organization_id: str, dataset_id: str, template: store.NewItem, key: str, detect: Detect | None
    ) -> Prepared:
        """The item of a de-identified dataset whose uploaded bytes are at ``key``: text as it is;
        an image blurred where ``detect`` finds faces and plates (the pHash stays the original's, so
        near-duplicates are found on what was uploaded and a re-blur does not change it)."""
        name = template.file_name
        if template.media_type != common_pb2.MEDIA_TYPE_IMAGE:
            sha, _ = self._blobs.put_stream(self._blobs.open(key), max_bytes=template.size_bytes)
            self._blobs.delete(key)
            return Prepared(new=replace(template, content_sha256=sha), uploaded_name=name, staged_sha=sha)
        original = replace(template, original_sha256=template.content_sha256)
        with self._db.read() as session:
            earlier = store.find_duplicate(
                session,
                organization_id=organization_id,
                dataset_id=dataset_id,
                sha256s=[template.content_sha256],
            )
        if earlier is not None:  # no detection for an exact duplicate
            return Prepared(new=original, uploaded_name=name, staged_key=key, duplicate_only=True)
        if detect is None:
            raise FailedPrecondition(
                "no face and plate detector is configured", reason="DEIDENTIFY_UNAVAILABLE"
            )
        data = self._blobs.path(key).read_bytes()
        deid.check_blurrable(data)
        regions = deid.clip_detections(detect(data), template.width, template.height)
        blurred = deid.blur(data, regions)
        sha, size = self._blobs.put_stream([blurred], max_bytes=len(blurred))
        return Prepared(
            new=replace(original, content_sha256=sha, size_bytes=size, regions=regions),
            uploaded_name=name,
            staged_key=key,
            staged_sha=sha,
        )

    def _forget(self, prepared: Sequence[Prepared], *, created: set[str], keys: Iterable[str] = ()) -> None:
        """Removes what was staged for items that were not created (duplicates, or all on failure)."""
        dropped = [p for p in prepared if p.new.item_id not in created]
        for key in {*keys, *(p.staged_key for p in dropped if p.staged_key)}:
            try:
                self._blobs.delete(key)
            except OSError:
                log.warning("could not remove staged blob %s", key)
        self.discard_blobs(p.staged_sha for p in dropped if p.staged_sha)

    def text_item(self, text: str, metadata_json: str, file_name: str | None, source: str) -> Prepared:
        data = validate_text(text)
        item_id = new_id()
        name = file_name or f"{item_id}.txt"
        return Prepared(
            new=store.NewItem(
                item_id=item_id,
                media_type=common_pb2.MEDIA_TYPE_TEXT,
                file_name=name,
                content_sha256=hashlib.sha256(data).hexdigest(),
                content_type=TEXT_CONTENT_TYPE,
                size_bytes=len(data),
                text=text,
                metadata_json=metadata_json,
                source_uri=source,
            ),
            uploaded_name=name,
        )

    def _manifest_item(
        self,
        row: ManifestRow,
        written: list[str],
        originals: list[str],
        deidentify_in: tuple[str, str] | None,
        detect: Detect | None,
    ) -> Prepared:
        """One row as an item; ``deidentify_in`` is (organization, dataset) of a de-identified dataset."""
        try:
            if row.text is not None:
                return self.text_item(row.text, row.metadata_json, row.file_name, "manifest")
            assert row.url is not None
            policy = FetchPolicy(
                max_bytes=self._settings.max_upload_bytes,
                allowed_private_hosts=self._settings.allowed_private_hosts,
            )
            item_id = new_id()
            if deidentify_in is not None:
                key = original_key(item_id)

                def put_original(chunks: Iterable[bytes]) -> tuple[str, int]:
                    stored = self._blobs.put_named(key, capped(chunks, self._settings.max_upload_bytes))
                    originals.append(key)
                    return stored

                fetched, (sha, size) = fetch(row.url, policy, put_original)
                file_name = row.file_name or file_name_from_url(
                    parse_url(fetched.final_url).path, f"item-{item_id}"
                )
                template = self._template(item_id, key, sha, size, file_name, row.metadata_json, row.url)
                return self._deidentified(*deidentify_in, template, key, detect)
            fetched, (sha, size) = fetch(row.url, policy, self._put)
            written.append(sha)
            file_name = row.file_name or file_name_from_url(
                parse_url(fetched.final_url).path, f"item-{item_id}"
            )
            info = analyze(
                self._blobs.path(self._blobs.content_key(sha)),
                file_name=file_name,
                size=size,
                max_pixels=self._settings.max_image_pixels,
            )
        except AnnocloudError as exc:
            if exc.metadata.get("row"):
                raise
            if not isinstance(exc, InvalidArgument):  # modelassist down stays UNAVAILABLE
                raise type(exc)(
                    f"row {row.row}: {exc.message}", reason=exc.reason, metadata={"row": str(row.row)}
                ) from exc
            raise row_error(row.row, exc.message, exc.reason) from exc
        return Prepared(
            new=store.NewItem(
                item_id=item_id,
                media_type=info.media_type,
                file_name=file_name,
                content_sha256=sha,
                content_type=info.content_type,
                size_bytes=size,
                width=info.width,
                height=info.height,
                text=info.text if info.media_type == common_pb2.MEDIA_TYPE_TEXT else None,
                perceptual_hash=info.perceptual_hash,
                metadata_json=row.metadata_json,
                source_uri=row.url,
            ),
            uploaded_name=file_name,
        )

    def _put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        return self._blobs.put_stream(chunks, max_bytes=self._settings.max_upload_bytes)

    def _replayed(
        self, session: Session, organization_id: str, method: str, request_id: str
    ) -> tuple[list[Item], int] | None:
        """The items and duplicate count an earlier call with this request_id returned, or None."""
        if not request_id:
            return None
        earlier = store.find_request(
            session, organization_id=organization_id, method=method, request_id=request_id
        )
        if earlier is None:
            return None
        result = json.loads(earlier)
        items = store.get_items(session, organization_id=organization_id, item_ids=result["items"])
        return items, int(result["duplicate_count"])

    def _create_items(
        self,
        *,
        organization_id: str,
        dataset_id: str,
        method: str,
        request_id: str,
        prepared: Sequence[Prepared],
    ) -> Outcome:
        def work(session: Session) -> Outcome:
            store.get_dataset(session, organization_id=organization_id, dataset_id=dataset_id)
            replay = self._replayed(session, organization_id, method, request_id)
            if replay is not None:
                items, duplicates = replay
                single_duplicate = items[0] if method == "UploadItem" and duplicates and items else None
                return Outcome(items=items, duplicate_count=duplicates, duplicate_of=single_duplicate)
            created: list[Item] = []
            duplicates = 0
            duplicate_of: Item | None = None
            for entry in prepared:
                existing = store.find_duplicate(
                    session,
                    organization_id=organization_id,
                    dataset_id=dataset_id,
                    sha256s=[entry.new.content_sha256, entry.new.original_sha256 or entry.new.content_sha256],
                )
                if existing is None and entry.duplicate_only:
                    raise Aborted("the item this upload duplicated is gone; retry", reason="DUPLICATE_GONE")
                if existing is not None:
                    duplicates += 1
                    duplicate_of = existing
                    self._writer.emit(
                        session,
                        tenant_id=organization_id,
                        resource_name=item_name(dataset_id, existing.id),
                        aggregate_version=1,
                        payload=events_pb2.ItemDuplicateDetected(
                            existing_item=item_to_proto(existing), file_name=entry.uploaded_name
                        ),
                    )
                    continue
                item = store.add_item(
                    session, organization_id=organization_id, dataset_id=dataset_id, new=entry.new
                )
                created.append(item)
                self._writer.emit(
                    session,
                    tenant_id=organization_id,
                    resource_name=item_name(dataset_id, item.id),
                    aggregate_version=1,
                    payload=events_pb2.ItemIngested(item=item_to_proto(item)),
                )
            if request_id:
                # An upload replays the item it returned: the new one, or the one it duplicated.
                returned = created or (
                    [duplicate_of] if duplicate_of is not None and method == "UploadItem" else []
                )
                store.save_request(
                    session,
                    organization_id=organization_id,
                    method=method,
                    request_id=request_id,
                    result_json=json.dumps(
                        {"items": [i.id for i in returned], "duplicate_count": duplicates}
                    ),
                )
            return Outcome(items=created, duplicate_count=duplicates, duplicate_of=duplicate_of)

        return self.transact(work)

    def transact(self, work: Callable[[Session], T]) -> T:
        """Runs ``work`` in a transaction, once more after a unique-constraint race (the retry sees
        the winner's row: the duplicate item or the earlier request_id)."""
        for attempt in (1, 2):
            try:
                with self._db.transaction() as session:
                    return work(session)
            except IntegrityError:
                if attempt == 2:
                    raise
                log.info("unique constraint race; retrying once")
        raise AssertionError("unreachable")

    def discard_blobs(self, shas: Iterable[str]) -> None:
        """Removes content blobs no item references (after a refused upload or manifest)."""
        pending = sorted(set(shas))
        if not pending:
            return
        with self._db.transaction() as session:
            orphans = [sha for sha in pending if not store.sha_referenced(session, sha256=sha)]
        for sha in orphans:
            try:
                self._blobs.delete(self._blobs.content_key(sha))
            except OSError:
                log.warning("could not remove refused blob %s", sha)
