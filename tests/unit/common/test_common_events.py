"""The outbox/relay/inbox machinery on the durable in-process bus (SQLite files, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from annocloud.events.v1 import events_pb2
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
from annocloud_server.common.inprocess_bus import InProcessEventBus
from sqlalchemy import MetaData, func, select
from sqlalchemy.orm import Session

INGESTED = event_type_of(events_pb2.ItemIngested)


class Service:
    def __init__(self, tmp_path: Path, name: str):
        metadata = MetaData()
        self.outbox = outbox_table(metadata)
        self.inbox = inbox_table(metadata)
        self.db = Database(sqlite_url(str(tmp_path / f"{name}.db")))
        self.db.create_tables(metadata)
        self.writer = EventWriter(self.outbox, TOPIC_INGESTION)

    def emit(self, count: int, start: int = 0) -> None:
        with self.db.transaction() as session:
            for index in range(start, start + count):
                self.writer.emit(
                    session,
                    tenant_id="acme",
                    resource_name=f"datasets/d/items/i{index}",
                    aggregate_version=1,
                    payload=events_pb2.ItemIngested(),
                )


@pytest.fixture
def bus(tmp_path: Path) -> InProcessEventBus:
    return InProcessEventBus(str(tmp_path / "events.db"))


def test_rolled_back_transaction_leaves_no_event(tmp_path: Path, bus: InProcessEventBus) -> None:
    """An event written in a transaction that fails is never published."""
    producer = Service(tmp_path, "p")

    def change_that_fails() -> None:
        with producer.db.transaction() as session:
            producer.writer.emit(
                session,
                tenant_id="acme",
                resource_name="x",
                aggregate_version=1,
                payload=events_pb2.ItemIngested(),
            )
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        change_that_fails()
    relay = OutboxRelay("p", producer.db, producer.outbox, bus)
    assert relay.publish_pending() is False
    assert bus.end_offset([TOPIC_INGESTION]) == 0


def test_republished_events_take_effect_once_and_position_survives_restart(
    tmp_path: Path, bus: InProcessEventBus
) -> None:
    """A relay crash after the ack republishes; the inbox skips the copies; a new consumer resumes."""
    producer, consumer_service = Service(tmp_path, "p"), Service(tmp_path, "c")
    producer.emit(5)
    relay = OutboxRelay("p", producer.db, producer.outbox, bus)
    assert relay.publish_pending() is True
    with producer.db.transaction() as session:  # simulate: the mark was lost with the crash
        session.execute(producer.outbox.update().values(published_time=None))
    assert relay.publish_pending() is True
    assert relay.backlog() == 0
    seen: list[str] = []

    def handler(_session: Session, envelope: events_pb2.EventEnvelope) -> None:
        seen.append(envelope.resource_name)

    first = ConsumerRunner(
        "c", consumer_service.db, consumer_service.inbox, bus, {INGESTED: handler}, [TOPIC_INGESTION]
    )
    while first.consume_batch(timeout=0):
        pass
    assert sorted(seen) == [f"datasets/d/items/i{i}" for i in range(5)]
    assert first.duplicates_skipped == 5
    producer.emit(2, start=5)
    relay.publish_pending()
    second = ConsumerRunner(
        "c", consumer_service.db, consumer_service.inbox, bus, {INGESTED: handler}, [TOPIC_INGESTION]
    )
    while second.consume_batch(timeout=0):
        pass
    assert len(seen) == 7
    assert second.lag() == 0


def test_poison_event_is_dead_lettered_and_the_rest_of_its_batch_applies(
    tmp_path: Path, bus: InProcessEventBus
) -> None:
    """One failing event in a batch: the batch falls back to one-by-one, the others apply, it goes to DLQ."""
    producer, consumer_service = Service(tmp_path, "p"), Service(tmp_path, "c")
    producer.emit(6)
    OutboxRelay("p", producer.db, producer.outbox, bus).publish_pending()

    def handler(session: Session, envelope: events_pb2.EventEnvelope) -> None:
        if envelope.resource_name.endswith("i3"):
            raise ValueError("cannot apply i3")
        session.execute(consumer_service.outbox.select().limit(0))

    runner = ConsumerRunner(
        "c",
        consumer_service.db,
        consumer_service.inbox,
        bus,
        {INGESTED: handler},
        [TOPIC_INGESTION],
        max_attempts=2,
    )
    assert runner.consume_batch(timeout=0) is True
    assert runner.applied == 5
    assert runner.dead_lettered == 1
    letters = bus.dead_letters("c")
    assert len(letters) == 1
    assert "cannot apply i3" in str(letters[0]["error"])
    with consumer_service.db.read() as session:
        assert session.execute(select(func.count()).select_from(consumer_service.inbox)).scalar_one() == 5
    assert bus.redrive("c") == 1
    assert bus.dead_letters("c") == []


def test_a_database_outage_is_waited_out_not_dead_lettered(tmp_path: Path, bus: InProcessEventBus) -> None:
    """Connection errors are retried until the database is back: every event applies, none is dead-lettered."""
    from sqlalchemy.exc import OperationalError

    producer, consumer_service = Service(tmp_path, "p"), Service(tmp_path, "c")
    producer.emit(3)
    OutboxRelay("p", producer.db, producer.outbox, bus).publish_pending()
    failures = {"left": 8}  # more than max_attempts: a poison event would have been dead-lettered

    def handler(session: Session, envelope: events_pb2.EventEnvelope) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("SELECT 1", {}, ConnectionError("the database system is shutting down"))

    runner = ConsumerRunner(
        "c",
        consumer_service.db,
        consumer_service.inbox,
        bus,
        {INGESTED: handler},
        [TOPIC_INGESTION],
        max_attempts=2,
    )
    assert runner.consume_batch(timeout=0) is True
    assert (runner.applied, runner.dead_lettered) == (3, 0)
    assert bus.dead_letters("c") == []


def test_a_batch_that_cannot_be_finished_is_delivered_again(tmp_path: Path, bus: InProcessEventBus) -> None:
    """A batch that raises (the dead-letter store is down) is not committed and the next poll redelivers it."""
    producer, consumer_service = Service(tmp_path, "p"), Service(tmp_path, "c")
    producer.emit(4)
    OutboxRelay("p", producer.db, producer.outbox, bus).publish_pending()
    seen: list[str] = []

    def handler(session: Session, envelope: events_pb2.EventEnvelope) -> None:
        seen.append(envelope.resource_name)
        if envelope.resource_name.endswith("i2"):
            raise ValueError("poison")

    def dead_letter_store_down(*_args: object) -> None:
        raise ConnectionError("dead-letter store unreachable")

    runner = ConsumerRunner(
        "c",
        consumer_service.db,
        consumer_service.inbox,
        bus,
        {INGESTED: handler},
        [TOPIC_INGESTION],
        max_attempts=1,
    )
    real_dead_letter = bus.dead_letter
    bus.dead_letter = dead_letter_store_down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        runner.consume_batch(timeout=0)
    bus.dead_letter = real_dead_letter  # type: ignore[method-assign]
    assert runner.consume_batch(timeout=0) is True  # the same four records again
    assert runner.dead_lettered == 1
    # i0, i1 were applied before i2's dead letter failed: skipped by the inbox now; i3 applies now.
    assert (runner.applied, runner.duplicates_skipped) == (3, 2)
    assert len(bus.dead_letters("c")) == 1
