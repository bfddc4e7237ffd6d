"""Store, event handlers and the export worker on a SQLite temp file (no sockets)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from annocloud.annotations.v1 import annotations_pb2
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.export.v1 import export_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.blobstore import LocalBlobStore
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.errors import NotFound
from annocloud_server.common.events import TOPIC_EXPORT, EventWriter
from annocloud_server.export import handlers, store
from annocloud_server.export.models import Base, ExportJob, outbox
from annocloud_server.export.worker import ExportWorker
from export_samples import box, sample_schema
from sqlalchemy import select


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(sqlite_url(str(tmp_path / "export.db")))
    database.create_tables(Base.metadata)
    yield database
    database.dispose()


def project_created(
    org: str, project: str, schema: tasks_pb2.LabelSchema | None = None
) -> events_pb2.EventEnvelope:
    event = events_pb2.ProjectCreated(project=tasks_pb2.Project(name=f"projects/{project}", display_name="P"))
    if schema is not None:
        event.schema.CopyFrom(schema)
    return events_pb2.EventEnvelope(event_id=f"pc-{org}-{project}", tenant_id=org, project_created=event)


def item_accepted(
    org: str, project: str, item_id: str, regions: list[annotations_pb2.Region], *, seconds: int = 100
) -> events_pb2.EventEnvelope:
    label = qa_pb2.AcceptedLabel(
        name=f"projects/{project}/acceptedLabels/{item_id}",
        item=f"datasets/d1/items/{item_id}",
        labels=annotations_pb2.Labels(regions=regions),
        agreement=1.0,
        vote_count=1,
        schema_version=1,
        accepted_by="auto",
    )
    label.accept_time.seconds = seconds
    context = events_pb2.ItemContext(
        item=label.item,
        media_type=common_pb2.MEDIA_TYPE_IMAGE,
        file_name=f"{item_id}.jpg",
        width=100,
        height=100,
    )
    return events_pb2.EventEnvelope(
        event_id=f"ia-{item_id}-{seconds}",
        tenant_id=org,
        item_accepted=events_pb2.ItemAccepted(accepted_label=label, item=context),
    )


def _jsonl_boxes(db: Database, tmp_path: Path, org: str, project: str) -> list[list[dict]]:  # type: ignore[type-arg]
    worker = ExportWorker(
        db=db,
        events=EventWriter(outbox, TOPIC_EXPORT),
        blob_store=LocalBlobStore(tmp_path / "b"),
        tmp_dir=tmp_path / "t",
    )
    with db.transaction() as session:
        job = store.create_export(
            session,
            organization_id=org,
            project_id=project,
            export_format=export_pb2.EXPORT_FORMAT_JSONL,
            request_id=None,
        )
        export_id = job.export_id
    assert worker.run_once()
    data = b"".join(LocalBlobStore(tmp_path / "b").open(f"exports/{org}/{project}/{export_id}.zip"))
    lines = zipfile.ZipFile(io.BytesIO(data)).read("items.jsonl").decode().splitlines()
    return [json.loads(line)["regions"] for line in lines]


def test_reacceptance_replaces_and_older_acceptance_is_ignored(db: Database, tmp_path: Path) -> None:
    """A later ItemAccepted replaces the item's label; a stale one delivered late changes nothing."""
    with db.transaction() as session:
        handlers.on_project_created(session, project_created("acme", "p1", sample_schema(1)))
        handlers.on_item_accepted(
            session, item_accepted("acme", "p1", "i1", [box("car", 1, 1, 1, 1)], seconds=100)
        )
        handlers.on_item_accepted(
            session, item_accepted("acme", "p1", "i1", [box("car", 2, 2, 2, 2)], seconds=200)
        )
        handlers.on_item_accepted(
            session, item_accepted("acme", "p1", "i1", [box("car", 3, 3, 3, 3)], seconds=150)
        )
    regions = _jsonl_boxes(db, tmp_path, "acme", "p1")
    assert len(regions) == 1
    assert regions[0][0]["geometry"]["x"] == 2.0


def test_accepted_labels_are_scoped_by_organization(db: Database, tmp_path: Path) -> None:
    """Another organization's project with the same id contributes nothing to an export."""
    with db.transaction() as session:
        handlers.on_project_created(session, project_created("acme", "p1"))
        handlers.on_project_created(session, project_created("evil", "p1"))
        handlers.on_item_accepted(session, item_accepted("evil", "p1", "i9", [box("car", 1, 1, 1, 1)]))
        handlers.on_item_accepted(session, item_accepted("acme", "p1", "i1", []))
    assert _jsonl_boxes(db, tmp_path, "acme", "p1") == [[]]


def test_latest_schema_wins_and_repeats_are_harmless(db: Database) -> None:
    """The highest schema version is the export's; re-applying a schema event is a no-op."""
    with db.transaction() as session:
        handlers.on_project_created(session, project_created("acme", "p1", sample_schema(1)))
        published = events_pb2.EventEnvelope(
            tenant_id="acme",
            label_schema_published=events_pb2.LabelSchemaPublished(
                project="projects/p1", schema=sample_schema(3)
            ),
        )
        handlers.on_label_schema_published(session, published)
        handlers.on_label_schema_published(session, published)
        handlers.on_project_created(session, project_created("acme", "p1", sample_schema(1)))
    with db.transaction() as session:
        raw = store.latest_schema(session, organization_id="acme", project_id="p1")
        assert raw is not None
        assert tasks_pb2.LabelSchema.FromString(raw).version == 3
        assert store.latest_schema(session, organization_id="evil", project_id="p1") is None


def test_get_export_of_other_org_is_not_found(db: Database) -> None:
    """An export is invisible outside its organization."""
    with db.transaction() as session:
        job = store.create_export(
            session, organization_id="acme", project_id="p1", export_format=1, request_id="r1"
        )
        export_id = job.export_id
    with db.transaction() as session, pytest.raises(NotFound):
        store.get_export(session, organization_id="evil", project_id="p1", export_id=export_id)


def test_claim_takes_over_only_expired_leases(db: Database) -> None:
    """A RUNNING job is claimable again only after its lease expired."""
    with db.transaction() as session:
        store.create_export(
            session, organization_id="acme", project_id="p1", export_format=1, request_id=None
        )
    now = store.utc_now()
    with db.transaction() as session:
        job = store.claim_next(session, owner="w1", now=now, lease=timedelta(seconds=60))
        assert job is not None
    with db.transaction() as session:
        assert (
            store.claim_next(
                session, owner="w2", now=now + timedelta(seconds=30), lease=timedelta(seconds=60)
            )
            is None
        )
    with db.transaction() as session:
        again = store.claim_next(
            session, owner="w2", now=now + timedelta(seconds=61), lease=timedelta(seconds=60)
        )
        assert again is not None
        assert again.lease_owner == "w2"


class _BrokenBlobStore(LocalBlobStore):
    def put_named(self, key: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        raise OSError("disk full")


def test_worker_marks_failed_and_emits_on_error(db: Database, tmp_path: Path) -> None:
    """A storage error makes the job FAILED with a reason and message, and ExportCompleted is emitted."""
    worker = ExportWorker(
        db=db,
        events=EventWriter(outbox, TOPIC_EXPORT),
        blob_store=_BrokenBlobStore(tmp_path / "b"),
        tmp_dir=tmp_path / "t",
    )
    with db.transaction() as session:
        store.create_export(
            session, organization_id="acme", project_id="p1", export_format=4, request_id=None
        )
    assert worker.run_once() is True
    assert worker.run_once() is False
    with db.transaction() as session:
        job = session.execute(select(ExportJob)).scalar_one()
        assert job.state == store.FAILED
        assert job.error_reason == "EXPORT_FAILED"
        assert "disk full" in job.error_message
        assert job.end_time is not None
        events = [
            events_pb2.EventEnvelope.FromString(v) for v in session.execute(select(outbox.c.value)).scalars()
        ]
    assert [e.export_completed.export.state for e in events] == [export_pb2.EXPORT_STATE_FAILED]
    assert list((tmp_path / "t").iterdir()) == []


def test_worker_pages_through_many_items(db: Database, tmp_path: Path) -> None:
    """With a small page size every accepted item still lands in the artifact exactly once, in order."""
    with db.transaction() as session:
        handlers.on_project_created(session, project_created("acme", "p1", sample_schema(1)))
        for i in range(23):
            handlers.on_item_accepted(session, item_accepted("acme", "p1", f"i{i}", [box("car", i, 0, 1, 1)]))
    worker = ExportWorker(
        db=db,
        events=EventWriter(outbox, TOPIC_EXPORT),
        blob_store=LocalBlobStore(tmp_path / "b"),
        tmp_dir=tmp_path / "t",
        page_size=5,
    )
    with db.transaction() as session:
        store.create_export(
            session, organization_id="acme", project_id="p1", export_format=4, request_id=None
        )
    assert worker.run_once()
    with db.transaction() as session:
        job = session.execute(select(ExportJob)).scalar_one()
        assert (job.state, job.item_count, job.annotation_count) == (store.DONE, 23, 23)
        key = job.artifact_key
    data = b"".join(LocalBlobStore(tmp_path / "b").open(key))
    lines = zipfile.ZipFile(io.BytesIO(data)).read("items.jsonl").decode().splitlines()
    assert [json.loads(x)["regions"][0]["geometry"]["x"] for x in lines] == [float(i) for i in range(23)]
