"""The tasks service on a real PostgreSQL: concurrent leases (FOR UPDATE SKIP LOCKED) and tenancy."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pg_support
import pytest
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.ingestion.v1 import ingestion_pb2
from annocloud.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from annocloud_server.common import migrations
from annocloud_server.common.auth import ADMIN, ANNOTATOR, Authenticator, make_principal
from annocloud_server.common.events import TOPIC_INGESTION, OutgoingRecord
from annocloud_server.common.inprocess_bus import InProcessEventBus
from annocloud_server.common.paging import new_id
from annocloud_server.runtime import Runtime, start_runtime
from annocloud_server.tasks.component import create_component
from annocloud_server.tasks.models import Task
from sqlalchemy import func, select, update

SECRET = b"cluster-postgres-secret-0123456789"
WORKERS = 8
ITEMS = 40
REDUNDANCY = 2

SCHEMA = tasks_pb2.LabelSchema(
    classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
    classes=[tasks_pb2.ClassLabel(name="cat"), tasks_pb2.ClassLabel(name="dog")],
)


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> pg_support.PgServer:
    return pg_support.server(request.config)


class Env:
    def __init__(self, runtime: Runtime, auth: Authenticator):
        self.runtime = runtime
        self.auth = auth
        self.channel = grpc.insecure_channel(runtime.address)
        self.stub = tasks_pb2_grpc.TaskServiceStub(self.channel)

    def md(self, org: str, subject: str, role: int = ANNOTATOR) -> Any:
        return self.auth.metadata_for(make_principal(org, subject, [role]))

    def ingest(self, org: str, dataset: str, item: str) -> None:
        name = f"datasets/{dataset}/items/{item}"
        envelope = events_pb2.EventEnvelope(
            event_id=new_id(),
            event_type="annocloud.events.v1.ItemIngested",
            tenant_id=org,
            resource_name=name,
            aggregate_version=1,
            item_ingested=events_pb2.ItemIngested(
                item=ingestion_pb2.Item(
                    name=name,
                    media_type=common_pb2.MEDIA_TYPE_IMAGE,
                    file_name=f"{item}.png",
                    width=8,
                    height=8,
                )
            ),
        )
        self.runtime.bus.publish([OutgoingRecord(TOPIC_INGESTION, name, envelope.SerializeToString())])

    def project(self, org: str, dataset: str, redundancy: int) -> str:
        request = tasks_pb2.CreateProjectRequest(
            project=tasks_pb2.Project(
                display_name="P", redundancy=redundancy, datasets=[f"datasets/{dataset}"]
            ),
            schema=SCHEMA,
        )
        return str(self.stub.CreateProject(request, metadata=self.md(org, "user:admin", ADMIN)).project.name)


@pytest.fixture
def env(pg: pg_support.PgServer, tmp_path: Path) -> Iterator[Env]:
    db_url = pg.fresh_database("lease")
    migrations.upgrade("tasks", db_url)
    auth = Authenticator(SECRET)
    runtime = start_runtime(
        [create_component],
        data_dir=tmp_path / "data",
        bus=InProcessEventBus(str(tmp_path / "events.db")),
        authenticator=auth,
        database_url_for=lambda service: pg_support.service_url(db_url, service),
    )
    running = Env(runtime, auth)
    assert running.runtime.components[0].db.is_postgresql
    yield running
    running.channel.close()
    runtime.stop()


def test_eight_concurrent_workers_never_lease_one_task_twice(env: Env) -> None:
    """8 threads race LeaseNextTask on PostgreSQL: every task leased exactly once, nobody gets both
    slots of one item, the other tenant sees nothing, and every lease left its event in the outbox."""
    project = env.project("acme", "ds1", REDUNDANCY)
    other_project = env.project("globex", "ds9", 1)
    for index in range(ITEMS):
        env.ingest("acme", "ds1", f"i{index}")
    for index in range(3):
        env.ingest("globex", "ds9", f"g{index}")
    env.runtime.wait_idle()
    admin = env.md("acme", "user:admin", ADMIN)
    counts = env.stub.GetProject(
        tasks_pb2.GetProjectRequest(name=project), metadata=admin
    ).project.task_counts
    assert counts.queued == ITEMS * REDUNDANCY

    leased: list[tuple[str, str, str, str]] = []  # (worker, task, item, lease_id)
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(WORKERS)

    def work(n: int) -> None:
        md = env.md("acme", f"user:w{n}")
        barrier.wait()
        while True:
            try:
                task = env.stub.LeaseNextTask(
                    tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=md
                ).task
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    with lock:
                        failures.append(f"w{n}: {error.code()} {error.details()}")
                return
            with lock:
                leased.append((f"w{n}", task.name, task.item, task.lease.lease_id))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    tasks = [t for _, t, _, _ in leased]
    assert len(tasks) == ITEMS * REDUNDANCY
    assert len(set(tasks)) == len(tasks), Counter(tasks).most_common(3)
    assert len({lease for *_, lease in leased}) == len(tasks)
    per_worker_item = Counter((w, item) for w, _, item, _ in leased)
    assert max(per_worker_item.values()) == 1  # both slots of an item never go to one worker
    assert len({w for w, *_ in leased}) > 1  # the workers really raced

    listed = env.stub.ListTasks(
        tasks_pb2.ListTasksRequest(parent=project, state=tasks_pb2.TASK_STATE_LEASED, page_size=1000),
        metadata=admin,
    ).tasks
    assert sorted(t.name for t in listed) == sorted(tasks)
    assert {t.lease.worker for t in listed} == {f"user:{w}" for w, *_ in leased}

    component = env.runtime.components[0]
    with component.db.read() as session:
        leased_rows = session.execute(
            select(func.count())
            .select_from(Task)
            .where(Task.organization_id == "acme", Task.lease_id.is_not(None))
        ).scalar_one()
        lease_events = session.execute(
            select(func.count()).select_from(component.outbox).where(component.outbox.c.key.in_(tasks))
        ).scalar_one()
    assert leased_rows == len(tasks)
    assert lease_events == 2 * len(tasks)  # TaskCreated + TaskLeased per task

    # Tenancy: acme's project does not exist for globex, and globex's queue is untouched.
    globex = env.md("globex", "user:w0")
    for call, request in (
        (env.stub.LeaseNextTask, tasks_pb2.LeaseNextTaskRequest(parent=project)),
        (env.stub.GetProject, tasks_pb2.GetProjectRequest(name=project)),
        (env.stub.GetTask, tasks_pb2.GetTaskRequest(name=tasks[0])),
    ):
        with pytest.raises(grpc.RpcError) as denied:
            call(request, metadata=globex)
        assert denied.value.code() == grpc.StatusCode.NOT_FOUND
    globex_counts = env.stub.GetProject(
        tasks_pb2.GetProjectRequest(name=other_project), metadata=env.md("globex", "user:a", ADMIN)
    ).project.task_counts
    assert globex_counts.queued == 3
    with pytest.raises(grpc.RpcError) as denied:
        env.stub.LeaseNextTask(
            tasks_pb2.LeaseNextTaskRequest(parent=other_project), metadata=env.md("acme", "user:w0")
        )
    assert denied.value.code() == grpc.StatusCode.NOT_FOUND


def test_lapsed_leases_are_reclaimed_once_under_concurrency(env: Env) -> None:
    """Leases that lapsed are taken over by racing workers (TaskExpired + TaskLeased) exactly once."""
    project = env.project("acme", "ds2", 1)
    for index in range(16):
        env.ingest("acme", "ds2", f"j{index}")
    env.runtime.wait_idle()
    first = env.md("acme", "user:first")
    for _ in range(16):
        env.stub.LeaseNextTask(tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=first)
    component = env.runtime.components[0]
    with component.db.transaction() as session:
        session.execute(
            update(Task)
            .where(Task.organization_id == "acme", Task.lease_worker == "user:first")
            .values(lease_expire_time=datetime.now(UTC) - timedelta(minutes=1))
        )
    got: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(WORKERS)

    def work(n: int) -> None:
        md = env.md("acme", f"user:late{n}")
        barrier.wait()
        while True:
            try:
                task = env.stub.LeaseNextTask(
                    tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=md
                ).task
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    with lock:
                        failures.append(f"late{n}: {error.code()} {error.details()}")
                return
            with lock:
                got.append(task.name)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert len(got) == len(set(got)) == 16
    with component.db.read() as session:
        values = session.execute(
            select(component.outbox.c.value).where(component.outbox.c.key.in_(got))
        ).scalars()
        kinds = Counter(events_pb2.EventEnvelope.FromString(v).WhichOneof("payload") for v in values)
    assert kinds["task_expired"] == 16
    assert kinds["task_leased"] == 32


def test_projects_created_while_items_arrive_get_every_task(env: Env) -> None:
    """CreateProject (reads the item catalog) racing the ItemIngested consumer (reads the projects):
    under READ COMMITTED each could miss the other's uncommitted row and leave an item without
    tasks (write skew); the per-dataset lock in the tasks store must prevent it."""
    rounds, per_dataset = 12, 6
    projects: dict[str, str] = {}
    errors: list[BaseException] = []

    def create(dataset: str) -> None:
        try:
            projects[dataset] = env.project("acme", dataset, 1)
        except BaseException as exc:
            errors.append(exc)

    for r in range(rounds):
        dataset = f"race{r}"
        creator = threading.Thread(target=create, args=(dataset,))
        for index in range(per_dataset // 2):
            env.ingest("acme", dataset, f"r{r}-{index}")
        creator.start()
        for index in range(per_dataset // 2, per_dataset):
            env.ingest("acme", dataset, f"r{r}-{index}")
        creator.join(30)
    env.runtime.wait_idle()
    assert errors == []
    admin = env.md("acme", "user:admin", ADMIN)
    queued = {
        dataset: env.stub.GetProject(
            tasks_pb2.GetProjectRequest(name=name), metadata=admin
        ).project.task_counts.queued
        for dataset, name in projects.items()
    }
    assert queued == {f"race{r}": per_dataset for r in range(rounds)}


def test_one_worker_leasing_from_eight_threads_gets_distinct_items(env: Env) -> None:
    """The same worker racing itself (8 sessions) gets each item at most once and no errors: its
    leases take turns instead of colliding on the item_workers row."""
    project = env.project("acme", "ds3", REDUNDANCY)
    for index in range(20):
        env.ingest("acme", "ds3", f"k{index}")
    env.runtime.wait_idle()
    md = env.md("acme", "user:busy")
    items: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(WORKERS)

    def work() -> None:
        barrier.wait()
        while True:
            try:
                task = env.stub.LeaseNextTask(
                    tasks_pb2.LeaseNextTaskRequest(parent=project), metadata=md
                ).task
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    with lock:
                        failures.append(f"{error.code()} {error.details()}")
                return
            with lock:
                items.append(task.item)

    threads = [threading.Thread(target=work) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert len(items) == len(set(items)) == 20
