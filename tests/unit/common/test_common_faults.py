"""Fault injection: parsing ANNOCLOUD_FAULTS, counting hits, the points inside the event machinery, SIGKILL."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from annocloud.events.v1 import events_pb2
from annocloud_server.common import faults
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.events import (
    TOPIC_INGESTION,
    ConsumerRunner,
    EventWriter,
    OutboxRelay,
    event_type_of,
    inbox_table,
    outbox_table,
)
from annocloud_server.common.faults import Fault, FaultPlan
from annocloud_server.common.inprocess_bus import InProcessEventBus
from sqlalchemy import MetaData, Table, func, select
from sqlalchemy.orm import Session

INGESTED = event_type_of(events_pb2.ItemIngested)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after the fault point runs (not even ``except Exception``)."""


def fake_kill() -> None:
    raise Killed


@pytest.fixture
def inject() -> Iterator[Callable[[Fault], None]]:
    """inject(Fault(...)) installs a plan whose kill raises Killed; the plan is removed afterwards."""

    def install(fault: Fault) -> None:
        faults.install(FaultPlan([fault], kill=fake_kill, stderr=io.StringIO()))

    yield install
    faults.install(None)


# --- parsing --------------------------------------------------------------------------------------


def test_a_spec_parses_into_points_scopes_and_counts() -> None:
    """Scoped and unscoped entries, with spaces and empty items, give one Fault each."""
    parsed = faults.parse(
        " consumer.before_db_commit@qa=300, relay.after_ack=20,,consumer.after_db_commit@tasks=1 "
    )
    assert parsed == (
        Fault("consumer.before_db_commit", "qa", 300),
        Fault("relay.after_ack", None, 20),
        Fault("consumer.after_db_commit", "tasks", 1),
    )
    assert faults.parse("") == ()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("consumer.before_commit@qa=3", "unknown fault point 'consumer.before_commit'"),
        ("relay.after_ack@annotations", "is not POINT"),
        ("relay.after_ack@=3", "is not POINT"),
        ("=3", "is not POINT"),
        ("relay.after_ack=zero", "positive integer"),
        ("relay.after_ack=0", "positive integer"),
        ("relay.after_ack@qa=1,relay.after_ack@qa=2", "given twice"),
    ],
)
def test_a_malformed_spec_is_refused_with_the_reason(spec: str, message: str) -> None:
    """Unknown points, missing parts, non-positive counts and repeats raise ValueError naming the problem."""
    with pytest.raises(ValueError, match="ANNOCLOUD_FAULTS") as error:
        faults.parse(spec)
    assert message in str(error.value)


def test_configure_installs_from_the_environment_and_refuses_a_bad_spec() -> None:
    """configure() reads ANNOCLOUD_FAULTS; the same spec keeps the counts; unset means no plan; bad raises."""
    try:
        plan = faults.configure({"ANNOCLOUD_FAULTS": "relay.after_ack@x=5"})
        assert plan is not None
        faults.hit("relay.after_ack", "x")
        assert faults.configure({"ANNOCLOUD_FAULTS": "relay.after_ack@x=5"}) is plan
        assert plan.count("relay.after_ack", "x") == 1
        assert faults.configure({}) is None
        with pytest.raises(ValueError, match="unknown fault point"):
            faults.configure({"ANNOCLOUD_FAULTS": "nope=1"})
    finally:
        faults.configure({})


# --- counting -------------------------------------------------------------------------------------


def test_the_nth_hit_of_its_scope_kills_once_after_one_stderr_line() -> None:
    """Hits count per (point, scope); other scopes do not count; the Nth writes one line, then kills."""
    kills: list[int] = []
    stderr = io.StringIO()
    plan = FaultPlan(
        [Fault("consumer.before_db_commit", "qa", 3)], kill=lambda: kills.append(1), stderr=stderr
    )
    for _ in range(5):
        plan.hit("consumer.before_db_commit", "tasks")
    plan.hit("consumer.after_db_commit", "qa")
    plan.hit("consumer.before_db_commit", "qa")
    plan.hit("consumer.before_db_commit", "qa")
    assert kills == []
    plan.hit("consumer.before_db_commit", "qa")
    assert kills == [1]
    assert stderr.getvalue().count("\n") == 1
    assert "consumer.before_db_commit@qa=3 fired" in stderr.getvalue()
    plan.hit("consumer.before_db_commit", "qa")
    assert kills == [1]


def test_an_unscoped_fault_counts_every_scope_together() -> None:
    """relay.after_ack=3 fires at the third hit whichever relays made them."""
    kills: list[str] = []
    plan = FaultPlan(
        [Fault("relay.after_ack", None, 3)], kill=lambda: kills.append("x"), stderr=io.StringIO()
    )
    plan.hit("relay.after_ack", "tasks")
    plan.hit("relay.after_ack", "qa")
    assert kills == []
    plan.hit("relay.after_ack", "export")
    assert kills == ["x"]


def test_hit_without_a_plan_does_nothing() -> None:
    """Unset, a hit is a no-op (the events code calls it on every event)."""
    faults.install(None)
    for _ in range(1000):
        faults.hit("consumer.before_db_commit", "qa")


# --- the points inside the event machinery (in-process bus, SQLite files, no sockets) --------------


class Service:
    def __init__(self, tmp_path: Path, name: str):
        metadata = MetaData()
        self.outbox = outbox_table(metadata)
        self.inbox = inbox_table(metadata)
        self.db = Database(sqlite_url(str(tmp_path / f"{name}.db")))
        self.db.create_tables(metadata)
        self.writer = EventWriter(self.outbox, TOPIC_INGESTION)

    def emit(self, count: int) -> None:
        with self.db.transaction() as session:
            for index in range(count):
                self.writer.emit(
                    session,
                    tenant_id="acme",
                    resource_name=f"datasets/d/items/i{index}",
                    aggregate_version=1,
                    payload=events_pb2.ItemIngested(),
                )

    def count(self, table: Table) -> int:
        with self.db.read() as session:
            return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def consumer_of(service: Service, bus: InProcessEventBus, applied: list[str]) -> ConsumerRunner:
    def handle(_session: Session, envelope: events_pb2.EventEnvelope) -> None:
        applied.append(envelope.event_id)

    return ConsumerRunner("c", service.db, service.inbox, bus, {INGESTED: handle}, [TOPIC_INGESTION])


def published(tmp_path: Path, bus: InProcessEventBus, count: int) -> None:
    producer = Service(tmp_path, "p")
    producer.emit(count)
    assert OutboxRelay("p", producer.db, producer.outbox, bus).publish_pending()


def test_before_db_commit_kills_mid_batch_and_nothing_of_the_batch_commits(
    tmp_path: Path, inject: Callable[[Fault], None]
) -> None:
    """The 3rd applied event of a 5-event batch kills inside the transaction: no inbox row, no position."""
    bus = InProcessEventBus(str(tmp_path / "events.db"))
    published(tmp_path, bus, 5)
    consumer_service, applied = Service(tmp_path, "c"), []
    inject(Fault("consumer.before_db_commit", "c", 3))
    with pytest.raises(Killed):
        consumer_of(consumer_service, bus, applied).consume_batch(timeout=1.0)
    assert len(applied) == 3  # the handlers ran for three events...
    assert consumer_service.count(consumer_service.inbox) == 0  # ...and none of it committed
    assert bus.subscribe("c", [TOPIC_INGESTION]).lag() == 5


def test_after_db_commit_kills_between_the_commit_and_the_offsets(
    tmp_path: Path, inject: Callable[[Fault], None]
) -> None:
    """Killed after the transaction: inbox rows are there, offsets not; a restart applies nothing twice."""
    bus = InProcessEventBus(str(tmp_path / "events.db"))
    published(tmp_path, bus, 4)
    consumer_service, applied = Service(tmp_path, "c"), []
    inject(Fault("consumer.after_db_commit", "c", 1))
    with pytest.raises(Killed):
        consumer_of(consumer_service, bus, applied).consume_batch(timeout=1.0)
    assert consumer_service.count(consumer_service.inbox) == 4
    assert bus.subscribe("c", [TOPIC_INGESTION]).lag() == 4
    restarted = consumer_of(consumer_service, bus, applied)
    assert restarted.consume_batch(timeout=1.0)
    assert (restarted.applied, restarted.duplicates_skipped) == (0, 4)
    assert len(applied) == 4


def test_relay_after_ack_kills_before_the_rows_are_marked(
    tmp_path: Path, inject: Callable[[Fault], None]
) -> None:
    """Killed after the bus acked: the records are on the bus, the outbox rows still unpublished."""
    bus = InProcessEventBus(str(tmp_path / "events.db"))
    producer = Service(tmp_path, "p")
    producer.emit(3)
    relay = OutboxRelay("p", producer.db, producer.outbox, bus)
    inject(Fault("relay.after_ack", "p", 1))
    with pytest.raises(Killed):
        relay.publish_pending()
    assert bus.end_offset([TOPIC_INGESTION]) == 3
    assert relay.backlog() == 3


CONSUMER_PROCESS = """
import sys
from sqlalchemy import MetaData
from annocloud_server.common import faults
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.events import TOPIC_INGESTION, ConsumerRunner, inbox_table
from annocloud_server.common.inprocess_bus import InProcessEventBus

faults.configure()
metadata = MetaData()
inbox = inbox_table(metadata)
db = Database(sqlite_url(sys.argv[1] + "/c.db"))
db.create_tables(metadata)
bus = InProcessEventBus(sys.argv[1] + "/events.db")
handlers = {"annocloud.events.v1.ItemIngested": lambda session, envelope: None}
ConsumerRunner("c", db, inbox, bus, handlers, [TOPIC_INGESTION]).consume_batch(1.0)
print("survived", flush=True)
"""


def test_the_configured_hit_really_sigkills_the_process(tmp_path: Path) -> None:
    """A consumer process with ANNOCLOUD_FAULTS set dies by SIGKILL (-9) mid-batch, after its stderr line."""
    bus = InProcessEventBus(str(tmp_path / "events.db"))
    published(tmp_path, bus, 5)
    bus.close()
    done = subprocess.run(
        [sys.executable, "-c", CONSUMER_PROCESS, str(tmp_path)],
        env={**os.environ, "ANNOCLOUD_FAULTS": "consumer.before_db_commit@c=2"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "survived" not in done.stdout
    assert "annocloud fault injection: consumer.before_db_commit@c=2 fired" in done.stderr
    consumer_service = Service(tmp_path, "c")
    assert consumer_service.count(consumer_service.inbox) == 0
    assert InProcessEventBus(str(tmp_path / "events.db")).subscribe("c", [TOPIC_INGESTION]).lag() == 5
