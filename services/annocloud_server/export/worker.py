"""The background loop that runs export jobs: claim, stream the zip into the blob store, finish.

One job at a time per process. A job is held with a lease renewed on every page read, so a job
whose worker died is taken over once the lease runs out; a worker that is stopped mid-job puts the
job back to PENDING so the next start resumes it at once.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, cast

from annocloud.events.v1 import events_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy.orm import Session

from annocloud_server.common.blobstore import BlobStore
from annocloud_server.common.db import Database
from annocloud_server.common.errors import AnnocloudError
from annocloud_server.common.events import EventWriter
from annocloud_server.common.paging import new_id
from annocloud_server.export import store, version_store
from annocloud_server.export.domain import FORMAT_NAMES, ExportItem, export_item, schema_view
from annocloud_server.export.formats import write_artifact
from annocloud_server.export.mapping import export_name, export_to_proto, manifest_key, version_name
from annocloud_server.export.models import ExportJob
from annocloud_server.export.sink import ArtifactInfo, ExportResult, dumps
from annocloud_server.export.versions import SPLIT_NAMES

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20


class _Released(Exception):
    """The worker is stopping; the job goes back to PENDING."""


class _LeaseLost(Exception):
    """Another worker took the job over; this one walks away without writing."""


@dataclass(frozen=True)
class _Job:
    seq: int
    export_id: str
    organization_id: str
    project_id: str
    format: int
    create_time: datetime
    version_seq: int = 0
    version_id: str = ""

    @property
    def name(self) -> str:
        return export_name(self.project_id, self.export_id)

    @property
    def artifact_key(self) -> str:
        return f"exports/{self.organization_id}/{self.project_id}/{self.export_id}.zip"


def _sidecar_chunks(
    job: _Job, sha256: str, size: int, result: ExportResult, entries: IO[bytes]
) -> Iterator[bytes]:
    """The sidecar manifest: the whole artifact's checksum and size, then every file's."""
    head = {
        "format": FORMAT_NAMES[job.format],
        "export": job.name,
        "artifact": {"file_name": f"{job.export_id}.zip", "sha256": sha256, "size": size},
        "counts": {"items": result.item_count, "annotations": result.annotation_count},
    }
    if job.version_id:
        head["dataset_version"] = version_name(job.project_id, job.version_id)
    text = dumps(head)
    yield (text[:-1] + ',"files":{').encode()
    entries.seek(0)
    while chunk := entries.read(_READ_CHUNK):
        yield chunk
    yield b"}}\n"


class ExportWorker:
    """Runs PENDING export jobs (and RUNNING ones whose worker died) in a daemon thread."""

    def __init__(
        self,
        *,
        db: Database,
        events: EventWriter,
        blob_store: BlobStore,
        tmp_dir: Path,
        page_size: int = 500,
        poll_interval: float = 2.0,
        lease: timedelta = timedelta(seconds=60),
    ):
        self._db = db
        self._events = events
        self._blob_store = blob_store
        self._tmp_dir = tmp_dir
        self._page_size = page_size
        self._poll_interval = poll_interval
        self._lease = lease
        self._owner = new_id()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="export-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30.0)
            self._thread = None

    def wake(self) -> None:
        """Called after CreateExport commits, so a new job starts without waiting for the poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("export worker step failed")
                busy = False
                self._stop.wait(1.0)
            if not busy:
                self._wake.wait(self._poll_interval)
                self._wake.clear()

    def run_once(self) -> bool:
        """Runs one job to its end; False when there was none."""
        with self._db.transaction() as session:
            row = store.claim_next(session, owner=self._owner, now=store.utc_now(), lease=self._lease)
            if row is None:
                return False
            link = version_store.versions_of_exports(session, [row.seq]).get(row.seq, (0, ""))
            job = _Job(
                row.seq,
                row.export_id,
                row.organization_id,
                row.project_id,
                row.format,
                row.create_time,
                *link,
            )
        try:
            self._execute(job)
        except _Released:
            with self._db.transaction() as session:
                store.release_job(session, seq=job.seq, owner=self._owner)
        except _LeaseLost:
            log.warning("export %s was taken over by another worker", job.name)
        except Exception as exc:
            log.exception("export %s failed", job.name)
            self._fail(job, exc)
        return True

    def _items(self, job: _Job, max_id: int) -> Iterator[ExportItem]:
        """Accepted labels of the project in id order, one short transaction per page."""
        after_id = 0
        while True:
            if self._stop.is_set():
                raise _Released()
            with self._db.transaction() as session:
                if not store.renew_lease(
                    session, seq=job.seq, owner=self._owner, until=store.utc_now() + self._lease
                ):
                    raise _LeaseLost()
                rows = store.accepted_page(
                    session,
                    organization_id=job.organization_id,
                    project_id=job.project_id,
                    after_id=after_id,
                    max_id=max_id,
                    limit=self._page_size,
                )
            for row_id, item, raw_label, raw_context in rows:
                after_id = row_id
                yield export_item(
                    item,
                    qa_pb2.AcceptedLabel.FromString(raw_label),
                    events_pb2.ItemContext.FromString(raw_context),
                )
            if len(rows) < self._page_size:
                return

    def _version_items(self, job: _Job) -> Iterator[ExportItem]:
        """The items of the exported dataset version, with their stored file names and splits."""
        after = 0
        while True:
            if self._stop.is_set():
                raise _Released()
            with self._db.transaction() as session:
                if not store.renew_lease(
                    session, seq=job.seq, owner=self._owner, until=store.utc_now() + self._lease
                ):
                    raise _LeaseLost()
                rows = version_store.version_items_page(
                    session, version_seq=job.version_seq, after_position=after, limit=self._page_size
                )
            for row in rows:
                after = row.position
                base = export_item(
                    row.item,
                    qa_pb2.AcceptedLabel.FromString(row.accepted_label),
                    events_pb2.ItemContext.FromString(row.item_context),
                )
                yield replace(base, split=SPLIT_NAMES.get(row.split, ""), stem=row.stem, ext=row.ext)
            if len(rows) < self._page_size:
                return

    def _execute(self, job: _Job) -> None:
        items: Iterator[ExportItem]
        with self._db.transaction() as session:
            if job.version_id:
                version = version_store.get_version(
                    session,
                    organization_id=job.organization_id,
                    project_id=job.project_id,
                    version_id=job.version_id,
                )
                raw_schema = store.schema_at(
                    session,
                    organization_id=job.organization_id,
                    project_id=job.project_id,
                    version=version.schema_version,
                )
                items = self._version_items(job)
            else:
                raw_schema = store.latest_schema(
                    session, organization_id=job.organization_id, project_id=job.project_id
                )
                max_id = store.max_accepted_id(
                    session, organization_id=job.organization_id, project_id=job.project_id
                )
                items = self._items(job, max_id)
        schema = schema_view(tasks_pb2.LabelSchema.FromString(raw_schema) if raw_schema is not None else None)
        created = store.as_utc(job.create_time)
        info = ArtifactInfo(
            format=job.format,
            project=f"projects/{job.project_id}",
            export=job.name,
            created_time=created.isoformat().replace("+00:00", "Z"),
            date_time=(
                max(created.year, 1980),
                created.month,
                created.day,
                created.hour,
                created.minute,
                created.second,
            ),
            dataset_version=version_name(job.project_id, job.version_id) if job.version_id else "",
        )
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        with (
            self._blob_store.open_writer(job.artifact_key) as blob,
            tempfile.TemporaryFile(dir=self._tmp_dir) as entries,
        ):
            # The zip streams into the blob store chunk by chunk; it is visible only once committed.
            result = write_artifact(
                cast(IO[bytes], blob),
                items,
                info=info,
                schema=schema,
                tmp_dir=str(self._tmp_dir),
                entries_out=entries,
            )
            sha256, size = blob.commit()
            self._blob_store.put_named(
                manifest_key(job.artifact_key), _sidecar_chunks(job, sha256, size, result, entries)
            )
        with self._db.transaction() as session:
            row = store.owned_job(session, seq=job.seq, owner=self._owner)
            if row is None:
                raise _LeaseLost()
            row.state = store.DONE
            row.item_count = result.item_count
            row.annotation_count = result.annotation_count
            row.artifact_size_bytes = size
            row.artifact_sha256 = sha256
            row.artifact_key = job.artifact_key
            row.end_time = store.utc_now()
            row.lease_owner = None
            row.lease_expire_time = None
            self._emit_completed(session, job, row)

    def _fail(self, job: _Job, exc: Exception) -> None:
        if isinstance(exc, AnnocloudError):
            reason, message = exc.reason, exc.message
        else:
            reason, message = (
                "EXPORT_FAILED",
                f"the export could not be written ({type(exc).__name__}: {exc})",
            )
        try:
            with self._db.transaction() as session:
                row = store.owned_job(session, seq=job.seq, owner=self._owner)
                if row is None:
                    return
                row.state = store.FAILED
                row.error_reason = reason[:128]
                row.error_message = message[:2000]
                row.end_time = store.utc_now()
                row.lease_owner = None
                row.lease_expire_time = None
                self._emit_completed(session, job, row)
        except Exception:
            log.exception("could not mark export %s failed; it will be retried after its lease", job.name)

    def _emit_completed(self, session: Session, job: _Job, row: ExportJob) -> None:
        session.flush()
        self._events.emit(
            session,
            tenant_id=job.organization_id,
            resource_name=job.name,
            aggregate_version=1,
            payload=events_pb2.ExportCompleted(export=export_to_proto(row, job.version_id)),
        )
