"""Store functions of the tasks service on a SQLite temp file: catalog, tasks, leases, rework."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from annocloud.events.v1 import events_pb2
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.errors import Aborted, NotFound
from annocloud_server.common.events import TOPIC_TASKS, EventWriter
from annocloud_server.tasks import store
from annocloud_server.tasks.component import SWEEP_INTERVAL_ENV, LeaseSweeper, sweep_interval_from_env
from annocloud_server.tasks.domain import (
    ClassificationMode,
    ClassSpec,
    ProjectSpec,
    SchemaSpec,
    TaskKind,
    TaskState,
)
from annocloud_server.tasks.models import Base, ItemWorker, Task, outbox
from sqlalchemy import func, select

SCHEMA = SchemaSpec(
    classification_mode=ClassificationMode.SINGLE, classes=[ClassSpec("cat"), ClassSpec("dog")]
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(sqlite_url(str(tmp_path / "tasks.db")))
    database.create_tables(Base.metadata)
    yield database
    database.dispose()


@pytest.fixture
def writer() -> EventWriter:
    return EventWriter(outbox, TOPIC_TASKS)


def make_project(
    db: Database,
    writer: EventWriter,
    *,
    org: str = "acme",
    redundancy: int = 3,
    datasets: tuple[str, ...] = ("ds",),
) -> str:
    spec = ProjectSpec("P", redundancy, 1, 0.5, list(datasets))
    with db.transaction() as session:
        project = store.create_project(
            session, writer, organization_id=org, spec=spec, schema=SCHEMA, request_id=""
        )
        return project.project_id


def ingest(
    db: Database,
    writer: EventWriter,
    item_id: str,
    *,
    org: str = "acme",
    dataset: str = "ds",
    near_dup: str = "",
) -> int:
    with db.transaction() as session:
        return store.record_item(
            session,
            writer,
            organization_id=org,
            dataset_id=dataset,
            item_id=item_id,
            media_type=1,
            file_name=f"{item_id}.png",
            width=64,
            height=48,
            text="",
            near_duplicate_of=near_dup,
        )


def lease(
    db: Database,
    writer: EventWriter,
    project: str,
    worker: str,
    *,
    org: str = "acme",
    now_offset: float = 0.0,
    seconds: float = 600,
) -> Task:
    with db.transaction() as session:
        return store.lease_next_task(
            session,
            writer,
            organization_id=org,
            project_id=project,
            worker=worker,
            duration=timedelta(seconds=seconds),
            now=store.utcnow() + timedelta(seconds=now_offset),
        )


def events(db: Database, kind: str) -> list[events_pb2.EventEnvelope]:
    with db.transaction() as session:
        values = session.execute(select(outbox.c.value).order_by(outbox.c.id)).scalars().all()
    envelopes = [events_pb2.EventEnvelope.FromString(v) for v in values]
    return [e for e in envelopes if e.event_type == f"annocloud.events.v1.{kind}"]


def test_redundancy_three_gives_each_item_to_three_different_workers(
    db: Database, writer: EventWriter
) -> None:
    """With redundancy 3, three workers each get one task of every item; a fourth finds nothing."""
    project = make_project(db, writer)
    for item in ("a", "b"):
        ingest(db, writer, item)
    seen: dict[str, list[str]] = {}
    for worker in ("w1", "w2", "w3"):
        for _ in range(2):
            task = lease(db, writer, project, worker)
            seen.setdefault(worker, []).append(task.item)
    for items in seen.values():
        assert sorted(items) == ["datasets/ds/items/a", "datasets/ds/items/b"]
    with pytest.raises(NotFound) as info:
        lease(db, writer, project, "w4")
    assert info.value.reason == "NO_TASK_AVAILABLE"
    with pytest.raises(NotFound):
        lease(db, writer, project, "w1")


def test_worker_never_gets_same_item_twice(db: Database, writer: EventWriter) -> None:
    """One worker leasing repeatedly gets one slot per item, then NOT_FOUND."""
    project = make_project(db, writer)
    ingest(db, writer, "a")
    first = lease(db, writer, project, "w1")
    assert first.slot == 1
    with pytest.raises(NotFound):
        lease(db, writer, project, "w1")


def test_priority_then_creation_order(db: Database, writer: EventWriter) -> None:
    """Higher priority goes first, then creation order."""
    project = make_project(db, writer, redundancy=1)
    for item in ("a", "b", "c"):
        ingest(db, writer, item)
    with db.transaction() as session:
        task_c = session.execute(select(Task).where(Task.item == "datasets/ds/items/c")).scalar_one()
        task_c.priority = 5
    order = [lease(db, writer, project, f"w{i}").item for i in range(3)]
    assert order == ["datasets/ds/items/c", "datasets/ds/items/a", "datasets/ds/items/b"]


def test_expired_lease_is_reclaimed_by_another_worker(db: Database, writer: EventWriter) -> None:
    """A lapsed lease is leased again by another worker, with TaskExpired naming the previous holder."""
    project = make_project(db, writer, redundancy=1)
    ingest(db, writer, "a")
    first = lease(db, writer, project, "w1", seconds=10)
    with pytest.raises(NotFound):
        lease(db, writer, project, "w2")
    second = lease(db, writer, project, "w2", now_offset=11)
    assert second.task_id == first.task_id
    assert second.lease_worker == "w2"
    assert second.lease_id != first.lease_id
    expired = events(db, "TaskExpired")
    assert [e.task_expired.worker for e in expired] == ["w1"]
    leased = events(db, "TaskLeased")
    assert [e.aggregate_version for e in leased] == [2, 4]
    assert expired[0].aggregate_version == 3


def test_sweeper_returns_lapsed_leases(db: Database, writer: EventWriter) -> None:
    """expire_leases puts lapsed leases back in the queue and lets the holder lease the item again."""
    project = make_project(db, writer, redundancy=1)
    ingest(db, writer, "a")
    first = lease(db, writer, project, "w1", seconds=10)
    with db.transaction() as session:
        assert store.expire_leases(session, writer, now=store.utcnow()) == 0
        assert store.expire_leases(session, writer, now=store.utcnow() + timedelta(seconds=11)) == 1
        task = session.execute(select(Task).where(Task.task_id == first.task_id)).scalar_one()
        assert task.state == TaskState.QUEUED
        assert task.lease_id is None
    assert lease(db, writer, project, "w1").task_id == first.task_id
    assert len(events(db, "TaskExpired")) == 1


def test_heartbeat_extends_and_checks_holder(db: Database, writer: EventWriter) -> None:
    """Heartbeat moves the expiry for the holder; a wrong lease id or worker is LEASE_NOT_HELD."""
    project = make_project(db, writer, redundancy=1)
    ingest(db, writer, "a")
    task = lease(db, writer, project, "w1", seconds=10)
    ids = {"organization_id": "acme", "project_id": project, "task_id": task.task_id}
    with db.transaction() as session:
        later = store.utcnow() + timedelta(seconds=5)
        row = store.heartbeat_lease(
            session,
            **ids,
            lease_id=task.lease_id or "",
            worker="w1",
            duration=timedelta(minutes=30),
            now=later,
        )
        assert row.lease_expire_time is not None
    with pytest.raises(NotFound):
        lease(db, writer, project, "w2", now_offset=60)
    for lease_id, worker in (("nope", "w1"), (task.lease_id or "", "w2")):
        with db.transaction() as session, pytest.raises(Aborted) as info:
            store.heartbeat_lease(
                session,
                **ids,
                lease_id=lease_id,
                worker=worker,
                duration=timedelta(minutes=1),
                now=store.utcnow(),
            )
        assert info.value.reason == "LEASE_NOT_HELD"


def test_release_requeues_and_allows_same_worker_again(db: Database, writer: EventWriter) -> None:
    """Release puts the task back and the worker may lease that item again."""
    project = make_project(db, writer, redundancy=1)
    ingest(db, writer, "a")
    task = lease(db, writer, project, "w1")
    with db.transaction() as session:
        row = store.release_task(
            session,
            organization_id="acme",
            project_id=project,
            task_id=task.task_id,
            lease_id=task.lease_id or "",
            worker="w1",
            now=store.utcnow(),
        )
        assert row.state == TaskState.QUEUED
        assert session.execute(select(func.count()).select_from(ItemWorker)).scalar_one() == 0
    assert lease(db, writer, project, "w1").task_id == task.task_id
    with db.transaction() as session, pytest.raises(Aborted):
        store.release_task(
            session,
            organization_id="acme",
            project_id=project,
            task_id=task.task_id,
            lease_id=task.lease_id or "",
            worker="w1",
            now=store.utcnow(),
        )


def _complete(db: Database, writer: EventWriter, project: str, task: Task, annotator: str) -> Task | None:
    with db.transaction() as session:
        return store.complete_task(
            session,
            writer,
            organization_id="acme",
            project_id=project,
            task_id=task.task_id,
            annotator=annotator,
            annotation=f"projects/{project}/annotations/an-{task.task_id[:8]}",
        )


def test_complete_is_idempotent(db: Database, writer: EventWriter) -> None:
    """Completing twice emits one TaskCompleted and keeps the first annotator."""
    project = make_project(db, writer, redundancy=1)
    ingest(db, writer, "a")
    task = lease(db, writer, project, "w1")
    first = _complete(db, writer, project, task, "w1")
    assert first is not None
    assert first.state == TaskState.COMPLETED
    assert first.completed_by == "w1"
    _complete(db, writer, project, task, "w9")
    completed = events(db, "TaskCompleted")
    assert len(completed) == 1
    assert completed[0].task_completed.task.completed_by == "w1"


def test_rework_task_only_for_its_worker_and_first(db: Database, writer: EventWriter) -> None:
    """A rework task (priority 100) goes only to its annotator, before label tasks, despite the exclusion."""
    project = make_project(db, writer, redundancy=2)
    ingest(db, writer, "a")
    ingest(db, writer, "b")
    task = lease(db, writer, project, "w1")
    _complete(db, writer, project, task, "w1")
    with db.transaction() as session:
        rework = store.create_rework_task(
            session,
            writer,
            organization_id="acme",
            project_id=project,
            task_id=task.task_id,
            annotation=f"projects/{project}/annotations/an1",
            annotator="w1",
            reason="wrong class",
            facts=None,
        )
        again = store.create_rework_task(
            session,
            writer,
            organization_id="acme",
            project_id=project,
            task_id=task.task_id,
            annotation=f"projects/{project}/annotations/an1",
            annotator="w1",
            reason="wrong class",
            facts=None,
        )
        assert rework is not None
        assert again is not None
        assert again.task_id == rework.task_id
        assert rework.item_file_name == "a.png"
        assert rework.item_width == 64
    other = lease(db, writer, project, "w2")
    assert other.kind == TaskKind.LABEL
    mine = lease(db, writer, project, "w1")
    assert mine.task_id == rework.task_id
    assert mine.priority == 100
    assert mine.rework_reason == "wrong class"
    assert lease(db, writer, project, "w1").item == "datasets/ds/items/b"


def test_items_before_and_after_adding_the_dataset_get_tasks(db: Database, writer: EventWriter) -> None:
    """Items ingested before AddProjectDataset and after it both get tasks, once each."""
    project = make_project(db, writer, redundancy=2, datasets=())
    assert ingest(db, writer, "early") == 0
    with db.transaction() as session:
        store.add_project_dataset(
            session, writer, organization_id="acme", project_id=project, dataset_id="ds"
        )
        store.add_project_dataset(
            session, writer, organization_id="acme", project_id=project, dataset_id="ds"
        )
    assert ingest(db, writer, "late") == 2
    assert ingest(db, writer, "late") == 0
    assert ingest(db, writer, "dup", near_dup="datasets/ds/items/late") == 0
    created = events(db, "TaskCreated")
    assert sorted(e.task_created.task.item for e in created) == [
        "datasets/ds/items/early",
        "datasets/ds/items/early",
        "datasets/ds/items/late",
        "datasets/ds/items/late",
    ]
    assert len(events(db, "ProjectDatasetAdded")) == 1
    assert created[0].task_created.task.item_file_name == "early.png"


def test_other_org_item_with_same_dataset_name_creates_no_tasks(db: Database, writer: EventWriter) -> None:
    """An ItemIngested of another organization never creates tasks in this organization's project."""
    project = make_project(db, writer)
    assert ingest(db, writer, "x", org="globex") == 0
    with pytest.raises(NotFound):
        lease(db, writer, project, "w1")
    with pytest.raises(NotFound):
        lease(db, writer, project, "w1", org="globex")


def test_new_schema_applies_to_new_tasks_only(db: Database, writer: EventWriter) -> None:
    """Tasks created after a schema is published carry the new version; older ones keep theirs."""
    project = make_project(db, writer, redundancy=1)
    ingest(db, writer, "a")
    with db.transaction() as session:
        row = store.create_label_schema(
            session, writer, organization_id="acme", project_id=project, spec=SCHEMA
        )
        assert row.version == 2
    ingest(db, writer, "b")
    with db.transaction() as session:
        versions = dict(session.execute(select(Task.item, Task.schema_version)).tuples().all())
    assert versions == {"datasets/ds/items/a": 1, "datasets/ds/items/b": 2}


def test_concurrent_leases_never_share_a_task(db: Database, writer: EventWriter) -> None:
    """Eight threads leasing at once never receive the same task."""
    project = make_project(db, writer, redundancy=1)
    for index in range(40):
        ingest(db, writer, f"i{index}")
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def work(worker: str) -> None:
        start.wait()
        for _ in range(5):
            task = lease(db, writer, project, worker)
            with lock:
                got.append(task.task_id)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 40
    assert len(set(got)) == 40


def test_counts_treat_lapsed_leases_as_queued(db: Database, writer: EventWriter) -> None:
    """Task counts: queued includes lapsed leases, leased only live ones, completed the submitted."""
    project = make_project(db, writer, redundancy=1)
    for item in ("a", "b", "c"):
        ingest(db, writer, item)
    lease(db, writer, project, "w1")
    done = lease(db, writer, project, "w2")
    _complete(db, writer, project, done, "w2")
    with db.transaction() as session:
        now = store.utcnow()
        assert store.task_counts(session, organization_id="acme", project_ids=[project], now=now)[
            project
        ] == (1, 1, 1)
        later = now + timedelta(hours=1)
        assert store.task_counts(session, organization_id="acme", project_ids=[project], now=later)[
            project
        ] == (2, 0, 1)
        assert store.task_counts(session, organization_id="globex", project_ids=[project], now=now)[
            project
        ] == (0, 0, 0)


def test_background_sweeper_loop_expires_leases(db: Database, writer: EventWriter) -> None:
    """The LeaseSweeper thread returns a lapsed lease to the queue on its own, then stops cleanly."""
    project = make_project(db, writer, redundancy=1)
    ingest(db, writer, "a")
    task = lease(db, writer, project, "w1")
    with db.transaction() as session:
        row = session.execute(select(Task).where(Task.task_id == task.task_id)).scalar_one()
        row.lease_expire_time = store.utcnow() - timedelta(seconds=1)
    sweeper = LeaseSweeper(db, writer, interval=0.05)
    sweeper.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not events(db, "TaskExpired"):
            time.sleep(0.02)
    finally:
        sweeper.stop()
    expired = events(db, "TaskExpired")
    assert [e.task_expired.worker for e in expired] == ["w1"]
    assert expired[0].task_expired.task.state == int(TaskState.QUEUED)


def test_sweep_interval_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep interval comes from the environment, with 5 s for missing or bad values."""
    monkeypatch.setenv(SWEEP_INTERVAL_ENV, "0.5")
    assert sweep_interval_from_env() == 0.5
    monkeypatch.setenv(SWEEP_INTERVAL_ENV, "soon")
    assert sweep_interval_from_env() == 5.0
    monkeypatch.delenv(SWEEP_INTERVAL_ENV)
    assert sweep_interval_from_env() == 5.0
