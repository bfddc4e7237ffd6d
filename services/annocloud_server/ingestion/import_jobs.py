"""Import jobs: created by ``CreateImport`` (upload stored as a blob, PENDING row), run by a worker.

The worker claims one job at a time with a lease it renews while validating, so a job whose
worker died is taken over once the lease ran out; a worker that is stopped puts its job back to
PENDING. The upload blob is removed when the job ends, either way.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from datetime import timedelta

from annocloud.ingestion.v1 import ingestion_pb2
from annocloud.tasks.v1 import tasks_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annocloud_server.common.errors import AnnocloudError
from annocloud_server.common.paging import new_id
from annocloud_server.ingestion import store
from annocloud_server.ingestion.imports import Counts, ImportRejected, ImportRunner, Job, precheck
from annocloud_server.ingestion.ingest import Ingestor, capped
from annocloud_server.ingestion.models import ImportJobRow

log = logging.getLogger(__name__)

PENDING = ingestion_pb2.IMPORT_STATE_PENDING
RUNNING = ingestion_pb2.IMPORT_STATE_RUNNING
SUCCEEDED = ingestion_pb2.IMPORT_STATE_SUCCEEDED
FAILED = ingestion_pb2.IMPORT_STATE_FAILED
METHOD = "CreateImport"


class _Released(Exception):
    """The worker is stopping; the job goes back to PENDING."""


class _LeaseLost(Exception):
    """Another worker took the job over."""


class ImportJobs:
    """Creates import jobs and runs them in a daemon thread (one job at a time per process)."""

    def __init__(
        self,
        ingestor: Ingestor,
        *,
        lease: timedelta = timedelta(minutes=5),
        poll_interval: float = 2.0,
    ):
        self._ingestor = ingestor
        self._db = ingestor.db
        self._blobs = ingestor.blobs
        self._runner = ImportRunner(ingestor)
        self._lease = lease
        self._poll_interval = poll_interval
        self._owner = new_id()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- creating -----------------------------------------------------------------------------

    def create(
        self,
        *,
        organization_id: str,
        dataset_id: str,
        project_id: str,
        schema: tasks_pb2.LabelSchema,
        fmt: int,
        file_name: str,
        request_id: str,
        chunks: Iterable[bytes],
    ) -> ImportJobRow:
        """Stores the upload, refuses what can be refused at once, and queues a PENDING job whose
        labels will be checked against ``schema`` (the project's current one, read by the caller)."""
        with self._db.read() as session:
            store.get_dataset(session, organization_id=organization_id, dataset_id=dataset_id)
            earlier = self._replayed(session, organization_id, dataset_id, request_id)
        if earlier is not None:
            return earlier
        job_id = new_id()
        key = f"imports/{organization_id}/{job_id}.upload"
        _, size = self._blobs.put_named(key, capped(chunks, self._ingestor.settings.max_import_bytes))
        try:
            precheck(self._blobs.path(key), fmt, self._ingestor.settings)
            row = self._ingestor.transact(
                lambda session: self._insert(
                    session,
                    organization_id,
                    dataset_id,
                    project_id,
                    schema,
                    fmt,
                    file_name,
                    request_id,
                    job_id,
                    key,
                    size,
                )
            )
        except BaseException:
            self._delete_upload(key)
            raise
        if row.id != job_id:  # a concurrent retry with the same request_id won
            self._delete_upload(key)
        self._wake.set()
        return row

    def _replayed(
        self, session: Session, organization_id: str, dataset_id: str, request_id: str
    ) -> ImportJobRow | None:
        if not request_id:
            return None
        earlier = store.find_request(
            session, organization_id=organization_id, method=METHOD, request_id=request_id
        )
        if earlier is None:
            return None
        return store.get_import_job(
            session, organization_id=organization_id, dataset_id=dataset_id, import_id=earlier
        )

    def _insert(
        self,
        session: Session,
        organization_id: str,
        dataset_id: str,
        project_id: str,
        schema: tasks_pb2.LabelSchema,
        fmt: int,
        file_name: str,
        request_id: str,
        job_id: str,
        key: str,
        size: int,
    ) -> ImportJobRow:
        earlier = self._replayed(session, organization_id, dataset_id, request_id)
        if earlier is not None:
            return earlier
        row = store.add_import_job(
            session,
            job=ImportJobRow(
                id=job_id,
                organization_id=organization_id,
                dataset_id=dataset_id,
                project_id=project_id,
                schema_version=schema.version,
                label_schema=schema.SerializeToString(deterministic=True),
                format=fmt,
                state=PENDING,
                file_name=file_name,
                upload_key=key,
                size_bytes=size,
                create_time=store.now(),
            ),
        )
        if request_id:
            store.save_request(
                session,
                organization_id=organization_id,
                method=METHOD,
                request_id=request_id,
                result_json=job_id,
            )
        return row

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="import-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30.0)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("import worker step failed")
                busy = False
                self._stop.wait(1.0)
            if not busy:
                self._wake.wait(self._poll_interval)
                self._wake.clear()

    def run_once(self) -> bool:
        """Runs one job to its end; False when there was none."""
        with self._db.transaction() as session:
            row = store.claim_import_job(
                session,
                owner=self._owner,
                now=store.now(),
                lease=self._lease,
                pending=PENDING,
                running=RUNNING,
            )
            if row is None:
                return False
            job = Job(
                row.seq,
                row.id,
                row.organization_id,
                row.dataset_id,
                row.project_id,
                row.format,
                row.file_name,
                row.upload_key,
                tasks_pb2.LabelSchema.FromString(row.label_schema) if row.schema_version else None,
            )
        try:
            self._runner.run(
                job, heartbeat=lambda: self._heartbeat(job), finish=lambda s, c: self._succeed(s, job, c)
            )
        except _Released:
            self._end(job, state=PENDING)
            return True
        except _LeaseLost:
            log.warning("import %s was taken over by another worker", job.name)
            return True
        except ImportRejected as exc:
            errors = [{"where": e.where, "reason": e.reason, "message": e.message} for e in exc.found.errors]
            self._end(
                job,
                state=FAILED,
                reason="IMPORT_INVALID",
                message=f"{exc.found.count} rows were refused; nothing was imported",
                errors=errors,
                error_count=exc.found.count,
            )
        except AnnocloudError as exc:
            self._end(job, state=FAILED, reason=exc.reason, message=exc.message)
        except IntegrityError:
            log.exception("import %s lost a race twice", job.name)
            self._end(
                job, state=FAILED, reason="IMPORT_CONFLICT", message="concurrent writes; retry the import"
            )
        except Exception:
            log.exception("import %s failed", job.name)
            self._end(job, state=FAILED, reason="INTERNAL", message="the import failed unexpectedly")
        self._delete_upload(job.upload_key)
        return True

    def _heartbeat(self, job: Job) -> None:
        if self._stop.is_set():
            raise _Released()
        with self._db.transaction() as session:
            held = store.hold_import_job(
                session, seq=job.seq, owner=self._owner, until=store.now() + self._lease, running=RUNNING
            )
        if not held:
            raise _LeaseLost()

    def _succeed(self, session: Session, job: Job, counts: Counts) -> None:
        if self._stop.is_set():
            raise _Released()
        row = session.get(ImportJobRow, job.seq)
        if row is None or row.lease_owner != self._owner or row.state != RUNNING:
            raise _LeaseLost()
        row.state = SUCCEEDED
        row.item_count = counts.items
        row.duplicate_count = counts.duplicates
        row.matched_item_count = counts.matched
        row.prediction_count = counts.predictions
        row.end_time = store.now()
        row.lease_owner = ""
        row.lease_expire_time = None
        session.flush()

    def _end(
        self,
        job: Job,
        *,
        state: int,
        reason: str = "",
        message: str = "",
        errors: list[dict[str, str]] | None = None,
        error_count: int = 0,
    ) -> None:
        with self._db.transaction() as session:
            row = session.get(ImportJobRow, job.seq)
            if row is None or row.lease_owner != self._owner:
                return
            row.state = state
            row.lease_owner = ""
            row.lease_expire_time = None
            if state == FAILED:
                row.failure_reason = reason[:64]
                row.failure_message = message
                row.errors_json = json.dumps(errors or [])
                row.error_count = error_count
                row.end_time = store.now()

    def _delete_upload(self, key: str) -> None:
        try:
            self._blobs.delete(key)
        except OSError:
            log.warning("could not remove import upload %s", key)
