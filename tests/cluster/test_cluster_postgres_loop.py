"""The labeling loop over gRPC with all five services on a real PostgreSQL (one schema each), and
the same loop on the embedded SQLite default: the outcomes must be identical."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pg_support
import psycopg
import pytest
from annocloud.annotations.v1 import annotations_pb2, annotations_pb2_grpc
from annocloud.export.v1 import export_pb2, export_pb2_grpc
from annocloud.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from annocloud.qa.v1 import qa_pb2, qa_pb2_grpc
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.common import migrations
from annocloud_server.common.auth import ADMIN, ANNOTATOR, Authenticator, make_principal
from annocloud_server.common.inprocess_bus import InProcessEventBus
from annocloud_server.demo import render_scene, street_schema
from annocloud_server.embedded import ALL_COMPONENTS
from annocloud_server.runtime import Runtime, start_runtime
from google.protobuf import json_format

ITEMS = 4
VARYING = {"item", "accept_time"}  # generated ids and clock readings differ between any two runs
SECRET = b"cluster-postgres-loop-secret-0123456789"


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> pg_support.PgServer:
    return pg_support.server(request.config)


def _upload(png: bytes, parent: str, file_name: str) -> Iterator[ingestion_pb2.UploadItemRequest]:
    yield ingestion_pb2.UploadItemRequest(
        header=ingestion_pb2.UploadItemHeader(parent=parent, file_name=file_name)
    )
    for start in range(0, len(png), 4000):
        yield ingestion_pb2.UploadItemRequest(chunk=png[start : start + 4000])


def _wait(condition: Callable[[], bool], what: str, deadline: float) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in time"
        time.sleep(0.05)


def run_loop(runtime: Runtime, auth: Authenticator) -> dict[str, Any]:
    """Dataset → upload → project (redundancy 2) → two workers lease and submit → QA accepts →
    JSONL export. Returns the outcome without generated ids (items are named by file name)."""
    admin = auth.metadata_for(make_principal("initech", "key:pipeline", [ADMIN]))
    workers = [auth.metadata_for(make_principal("initech", f"user:w{i}", [ANNOTATOR])) for i in range(2)]
    channel = grpc.insecure_channel(runtime.address)
    try:
        ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel)
        tasks = tasks_pb2_grpc.TaskServiceStub(channel)
        annotations = annotations_pb2_grpc.AnnotationServiceStub(channel)
        qa = qa_pb2_grpc.QaServiceStub(channel)
        export = export_pb2_grpc.ExportServiceStub(channel)
        deadline = time.monotonic() + 90

        dataset = ingestion.CreateDataset(
            ingestion_pb2.CreateDatasetRequest(
                dataset=ingestion_pb2.Dataset(display_name="pg"), request_id="d"
            ),
            metadata=admin,
        ).dataset
        scenes = {}
        for index in range(ITEMS):
            scene = render_scene(index, seed=7)
            item = ingestion.UploadItem(
                _upload(scene.png, dataset.name, scene.file_name), metadata=admin
            ).item
            scenes[item.name] = scene
        project = tasks.CreateProject(
            tasks_pb2.CreateProjectRequest(
                project=tasks_pb2.Project(display_name="pg", redundancy=2, datasets=[dataset.name]),
                schema=json_format.ParseDict(street_schema(), tasks_pb2.LabelSchema()),
            ),
            metadata=admin,
        ).project

        def counts() -> tasks_pb2.TaskCounts:
            return tasks.GetProject(
                tasks_pb2.GetProjectRequest(name=project.name), metadata=admin
            ).project.task_counts

        _wait(lambda: counts().queued == 2 * ITEMS, "task creation", deadline)
        submitted = 0
        for worker in workers:
            while True:
                try:
                    task = tasks.LeaseNextTask(
                        tasks_pb2.LeaseNextTaskRequest(parent=project.name), metadata=worker
                    ).task
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    break
                scene = scenes[task.item]
                labels = annotations_pb2.Labels(
                    classes=[scene.time_of_day],
                    regions=[
                        annotations_pb2.Region(
                            label=b.label,
                            box=annotations_pb2.Box(x=b.x, y=b.y, width=b.width, height=b.height),
                        )
                        for b in scene.boxes
                    ],
                )
                annotations.SubmitAnnotation(
                    annotations_pb2.SubmitAnnotationRequest(
                        task=task.name, lease_id=task.lease.lease_id, labels=labels
                    ),
                    metadata=worker,
                )
                submitted += 1

        def quality() -> qa_pb2.GetProjectQualityResponse:
            return qa.GetProjectQuality(qa_pb2.GetProjectQualityRequest(project=project.name), metadata=admin)

        _wait(lambda: quality().accepted_items == ITEMS, "QA acceptance", deadline)
        runtime.wait_idle()
        job = export.CreateExport(
            export_pb2.CreateExportRequest(parent=project.name, format=export_pb2.EXPORT_FORMAT_JSONL),
            metadata=admin,
        ).export

        def finished() -> bool:
            nonlocal job
            job = export.GetExport(export_pb2.GetExportRequest(name=job.name), metadata=admin).export
            assert job.state != export_pb2.EXPORT_STATE_FAILED, job.error_message
            return job.state == export_pb2.EXPORT_STATE_DONE

        _wait(finished, "the export", deadline)
        artifact = b"".join(
            c.chunk
            for c in export.ReadExportArtifact(
                export_pb2.ReadExportArtifactRequest(name=job.name), metadata=admin
            )
        )
        rows = [
            json.loads(line)
            for line in zipfile.ZipFile(io.BytesIO(artifact)).read("items.jsonl").splitlines()
        ]
        for row in rows:
            scene = scenes[row["item"]]
            assert row["classes"] == [scene.time_of_day]
            assert len(row["regions"]) == len(scene.boxes)
        other = auth.metadata_for(make_principal("umbrella", "user:x", [ADMIN]))
        with pytest.raises(grpc.RpcError) as denied:
            tasks.GetProject(tasks_pb2.GetProjectRequest(name=project.name), metadata=other)
        assert denied.value.code() == grpc.StatusCode.NOT_FOUND
        final = quality()
        final_counts = counts()
        return {
            "submitted": submitted,
            "task_counts": (final_counts.queued, final_counts.leased, final_counts.completed),
            "accepted_items": final.accepted_items,
            "pending_reviews": final.pending_reviews,
            "mean_agreement": round(final.mean_agreement, 6),
            "annotation_count": final.annotation_count,
            "export": (job.item_count, job.annotation_count),
            "rows": sorted(
                (
                    scenes[r["item"]].file_name,
                    json.dumps({k: v for k, v in r.items() if k not in VARYING}, sort_keys=True),
                )
                for r in rows
            ),
        }
    finally:
        channel.close()


def _start(data_dir: Path, database_url_for: Callable[[str], str] | None) -> tuple[Runtime, Authenticator]:
    auth = Authenticator(SECRET)
    data_dir.mkdir(parents=True)
    runtime = start_runtime(
        ALL_COMPONENTS,
        data_dir=data_dir,
        bus=InProcessEventBus(str(data_dir / "events.db")),
        authenticator=auth,
        database_url_for=database_url_for,
    )
    return runtime, auth


def _row_counts(pg: pg_support.PgServer, db_url: str) -> dict[str, int]:
    database = db_url.rsplit("/", 1)[1]
    wanted = {
        "ingestion.items": "SELECT count(*) FROM ingestion.items",
        "tasks.tasks": "SELECT count(*) FROM tasks.tasks",
        "annotations.annotations": "SELECT count(*) FROM annotations.annotations",
        "qa.accepted_labels": "SELECT count(*) FROM qa.accepted_labels",
        "export.accepted_items": "SELECT count(*) FROM export.accepted_items",
        "export.exports": "SELECT count(*) FROM export.exports",
        "unpublished outbox rows": " + ".join(
            f"(SELECT count(*) FROM {s}.outbox WHERE published_time IS NULL)" for s in migrations.SERVICES
        ).join(("SELECT ", "")),
        "inbox rows": " + ".join(f"(SELECT count(*) FROM {s}.inbox)" for s in migrations.SERVICES).join(
            ("SELECT ", "")
        ),
        "tables in public": "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    }
    with psycopg.connect(pg.libpq(database)) as conn:
        return {name: int(conn.execute(sql).fetchone()[0]) for name, sql in wanted.items()}  # type: ignore[index]


def test_labeling_loop_on_postgresql_matches_sqlite(pg: pg_support.PgServer, tmp_path: Path) -> None:
    db_url = pg.fresh_database("loop")
    migrations.upgrade_all(db_url)
    runtime, auth = _start(tmp_path / "pg", lambda service: pg_support.service_url(db_url, service))
    try:
        assert all(c.db.is_postgresql and c.db.schema == c.name for c in runtime.components)
        on_postgres = run_loop(runtime, auth)
        runtime.wait_idle()
    finally:
        runtime.stop()
    assert sorted(p.name for p in (tmp_path / "pg").glob("*.db")) == ["events.db"]  # no service on SQLite
    stored = _row_counts(pg, db_url)
    assert stored == {
        "ingestion.items": ITEMS,
        "tasks.tasks": 2 * ITEMS,
        "annotations.annotations": 2 * ITEMS,
        "qa.accepted_labels": ITEMS,
        "export.accepted_items": ITEMS,
        "export.exports": 1,
        "unpublished outbox rows": 0,
        "inbox rows": stored["inbox rows"],
        "tables in public": 0,
    }
    assert stored["inbox rows"] > 4 * ITEMS

    runtime, auth = _start(tmp_path / "sqlite", None)
    try:
        assert not any(c.db.is_postgresql for c in runtime.components)
        on_sqlite = run_loop(runtime, auth)
    finally:
        runtime.stop()

    assert on_postgres["accepted_items"] == ITEMS
    assert on_postgres["task_counts"] == (0, 0, 2 * ITEMS)
    assert on_postgres["export"][0] == ITEMS  # (items, annotations = regions) in the artifact
    assert on_postgres == on_sqlite
