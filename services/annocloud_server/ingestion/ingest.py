"""Ingestion workflows: blob first, validate, then one transaction with the outbox events.

Media is written to the content-addressed blob store before the database transaction (the bytes
must be hashed and sniffed anyway); if validation then fails, the blob is removed unless some item
already references that sha256, so a refused upload leaves nothing behind. Validation is a pure
function of the bytes, so a concurrent upload of the same bytes reaches the same verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annocloud_server.common.blobstore import CHUNK, BlobStore
from annocloud_server.common.db import Database
from annocloud_server.common.errors import AnnocloudError
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import new_id
from annocloud_server.ingestion import store
from annocloud_server.ingestion.convert import item_name, item_to_proto
from annocloud_server.ingestion.domain import ManifestRow, file_name_from_url, row_error, validate_text
from annocloud_server.ingestion.fetch import FetchPolicy, fetch, parse_url
from annocloud_server.ingestion.media import TEXT_CONTENT_TYPE, analyze
from annocloud_server.ingestion.models import Dataset, Item
from annocloud_server.ingestion.settings import IngestionSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Prepared:
    """A validated item waiting for the transaction."""

    new: store.NewItem
    uploaded_name: str


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
        self, *, organization_id: str, display_name: str, description: str, request_id: str
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
    ) -> tuple[Item, bool]:
        """Stores an uploaded file as an item; (existing item, True) for an exact duplicate."""
        with self._db.read() as session:
            store.get_dataset(session, organization_id=organization_id, dataset_id=dataset_id)
            replay = self._replayed(session, organization_id, "UploadItem", request_id)
        if replay is not None:
            return replay[0][0], bool(replay[1])
        sha, size = self._blobs.put_stream(chunks, max_bytes=self._settings.max_upload_bytes)
        item_id = new_id()
        try:
            info = analyze(
                self._blobs.path(self._blobs.content_key(sha)),
                file_name=file_name,
                size=size,
                max_pixels=self._settings.max_image_pixels,
            )
        except AnnocloudError:
            self.discard_blobs([sha])
            raise
        prepared = Prepared(
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
                metadata_json=metadata_json,
                source_uri="upload",
            ),
            uploaded_name=file_name,
        )
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
        self, *, organization_id: str, dataset_id: str, rows: Sequence[ManifestRow], request_id: str
    ) -> Outcome:
        """Fetches and validates every row first, then creates all items in one transaction."""
        with self._db.transaction() as session:
            store.get_dataset(session, organization_id=organization_id, dataset_id=dataset_id)
            replay = self._replayed(session, organization_id, "ImportManifest", request_id)
        if replay is not None:
            return Outcome(items=replay[0], duplicate_count=replay[1])
        written: list[str] = []
        try:
            prepared = [self._manifest_item(row, written) for row in rows]
            return self._create_items(
                organization_id=organization_id,
                dataset_id=dataset_id,
                method="ImportManifest",
                request_id=request_id,
                prepared=prepared,
            )
        except BaseException:
            self.discard_blobs(written)
            raise

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

    def _manifest_item(self, row: ManifestRow, written: list[str]) -> Prepared:
        try:
            if row.text is not None:
                return self.text_item(row.text, row.metadata_json, row.file_name, "manifest")
            assert row.url is not None
            policy = FetchPolicy(
                max_bytes=self._settings.max_upload_bytes,
                allowed_private_hosts=self._settings.allowed_private_hosts,
            )
            fetched, (sha, size) = fetch(row.url, policy, self._put)
            written.append(sha)
            item_id = new_id()
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
                existing = store.find_item_by_sha(
                    session,
                    organization_id=organization_id,
                    dataset_id=dataset_id,
                    sha256=entry.new.content_sha256,
                )
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
