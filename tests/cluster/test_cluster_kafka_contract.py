"""One contract, two buses: the same test bodies run on the in-process bus and on a REAL Kafka broker.

Publish -> subscribe -> commit -> a new member of the group resumes after the committed offsets;
order per key; outbox relay + consumer apply every event exactly once through a republish (the lost
"mark published") and through a consumer recreated before its commit (duplicate delivery); a poison
event goes to the dead-letter topic and a redrive brings it back once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from annocloud.events.v1 import events_pb2
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.events import (
    ConsumerRunner,
    EventBus,
    EventWriter,
    OutboxRelay,
    OutgoingRecord,
    Record,
    Subscription,
    event_type_of,
    inbox_table,
    outbox_table,
)
from annocloud_server.common.inprocess_bus import InProcessEventBus
from annocloud_server.common.kafka_bus import KafkaEventBus
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.orm import Session

INGESTED = event_type_of(events_pb2.ItemIngested)


@dataclass
class Bus:
    """A bus under test plus what differs between the two: where topics come from."""

    kind: str
    bus: Any  # InProcessEventBus | KafkaEventBus (both: publish/subscribe/dead_letter/dead_letters/redrive)
    new_topic: Callable[[], str]


@pytest.fixture(params=["inprocess", "kafka"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bus]:
    if request.param == "inprocess":
        in_process = InProcessEventBus(str(tmp_path / "events.db"))
        yield Bus("inprocess", in_process, lambda: f"annocloud.test-{uuid.uuid4().hex[:10]}.v1")
        in_process.close()
        return
    broker = request.getfixturevalue("kafka_broker")
    new_topic = request.getfixturevalue("kafka_topic")
    kafka = KafkaEventBus(broker.bootstrap, client_id="annocloud-contract")
    yield Bus("kafka", kafka, new_topic)
    kafka.close()


def group_name() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def poll_until(subscription: Subscription, count: int, timeout: float = 30.0) -> list[Record]:
    """Polls until ``count`` records arrived (fails after ``timeout``), then checks nothing more comes."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records in {timeout}s"
        records += subscription.poll(100, 0.5)
    records += subscription.poll(100, 0.5)
    assert len(records) == count, f"expected {count} records, got {len(records)}"
    return records


# --- publish / subscribe / commit / resume --------------------------------------------------------


def test_a_new_member_resumes_after_the_committed_offsets(bus: Bus) -> None:
    topic, group = bus.new_topic(), group_name()
    bus.bus.publish([OutgoingRecord(topic, f"items/i{i}", f"v{i}".encode()) for i in range(10)])
    first = bus.bus.subscribe(group, [topic])
    records = poll_until(first, 10)
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(10))
    # Commit a prefix (per partition, since records come partition by partition), then "crash".
    processed = records[:6]
    first.commit(processed)
    first.close()
    bus.bus.publish([OutgoingRecord(topic, f"items/i{i}", f"v{i}".encode()) for i in range(10, 12)])

    second = bus.bus.subscribe(group, [topic])
    rest = poll_until(second, 6)
    expected = {f"v{i}".encode() for i in range(12)} - {r.value for r in processed}
    assert {r.value for r in rest} == expected
    assert second.lag() == 6
    second.commit(rest)
    assert second.lag() == 0
    second.close()

    third = bus.bus.subscribe(group, [topic])  # everything committed: nothing comes back
    assert third.poll(100, 1.0) == []
    third.close()
    other = bus.bus.subscribe(group_name(), [topic])  # another group reads everything
    assert len(poll_until(other, 12)) == 12
    other.close()


def test_order_per_key_is_kept_across_partitions(bus: Bus) -> None:
    topic, group = bus.new_topic(), group_name()
    keys = [f"projects/p/tasks/t{k}" for k in range(8)]
    versions = 25
    for start in range(0, versions, 5):  # several publishes, keys interleaved inside each
        bus.bus.publish(
            [
                OutgoingRecord(topic, key, f"{key}#{v}".encode())
                for v in range(start, start + 5)
                for key in keys
            ]
        )
    subscription = bus.bus.subscribe(group, [topic])
    records = poll_until(subscription, len(keys) * versions)
    subscription.close()
    seen: dict[str, list[int]] = {}
    partitions: dict[str, set[int]] = {}
    for record in records:
        key, _, version = record.value.decode().partition("#")
        assert key == record.key
        seen.setdefault(key, []).append(int(version))
        partitions.setdefault(key, set()).add(record.partition)
    for key in keys:
        assert seen[key] == list(range(versions)), f"{key} out of order: {seen[key]}"
        assert len(partitions[key]) == 1, f"{key} spread over partitions {partitions[key]}"
    if bus.kind == "kafka":
        used = set().union(*partitions.values())
        assert len(used) > 1, "all keys landed on one partition: the test proves nothing about partitions"


# --- outbox relay + consumer with an inbox: exactly one effect per event --------------------------


class Service:
    """A service database with an outbox, an inbox and an ``effects`` table (one row per application)."""

    def __init__(self, tmp_path: Path, name: str, topic: str):
        metadata = MetaData()
        self.outbox = outbox_table(metadata)
        self.inbox = inbox_table(metadata)
        self.effects = Table(
            "effects",
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("event_id", String(64), nullable=False),  # NOT unique: doubled effects must show
            Column("resource_name", String(512), nullable=False),
        )
        self.db = Database(sqlite_url(str(tmp_path / f"{name}.db")))
        self.db.create_tables(metadata)
        self.writer = EventWriter(self.outbox, topic)

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

    def effect_counts(self) -> dict[str, int]:
        with self.db.read() as session:
            rows = session.execute(
                select(self.effects.c.resource_name, func.count()).group_by(self.effects.c.resource_name)
            ).all()
        return {str(name): int(count) for name, count in rows}

    def record_effect(self, session: Session, envelope: events_pb2.EventEnvelope) -> None:
        session.execute(
            insert(self.effects).values(event_id=envelope.event_id, resource_name=envelope.resource_name)
        )


def drain(runner: ConsumerRunner, delivered: int, timeout: float = 45.0) -> None:
    """Runs the consumer until it saw ``delivered`` deliveries, then once more to catch extras."""
    deadline = time.monotonic() + timeout
    while runner.applied + runner.duplicates_skipped + runner.dead_lettered < delivered:
        assert time.monotonic() < deadline, (
            f"{runner.group}: {runner.applied} applied + {runner.duplicates_skipped} skipped "
            f"+ {runner.dead_lettered} dead of {delivered} in {timeout}s"
        )
        runner.consume_batch(timeout=0.5)
    runner.consume_batch(timeout=0.5)


class CrashBeforeOffsetCommit:
    """The bus as seen by a consumer that dies after its database commit, before its offset commit."""

    def __init__(self, bus: EventBus):
        self._bus = bus

    def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self._bus.publish(records)

    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription:
        inner = self._bus.subscribe(group, topics)

        class _NoCommit:
            def poll(self, max_records: int, timeout: float) -> list[Record]:
                return inner.poll(max_records, timeout)

            def commit(self, records: Sequence[Record]) -> None:
                return None  # the process died before this

            def lag(self) -> int:
                return inner.lag()

            def close(self) -> None:
                inner.close()

        return _NoCommit()

    def dead_letter(self, group: str, record: Record, error: str) -> None:
        self._bus.dead_letter(group, record, error)


def test_relay_and_consumer_apply_every_event_exactly_once(bus: Bus, tmp_path: Path) -> None:
    topic, group = bus.new_topic(), group_name()
    producer, consumer = Service(tmp_path, "producer", topic), Service(tmp_path, "consumer", topic)
    relay = OutboxRelay("producer", producer.db, producer.outbox, bus.bus)

    # 1. The relay publishes, "crashes" before marking, and publishes the same rows again.
    producer.emit(20)
    assert relay.publish_pending() is True
    with producer.db.transaction() as session:  # the mark was lost with the crash
        session.execute(producer.outbox.update().values(published_time=None))
    assert relay.publish_pending() is True
    assert relay.backlog() == 0
    assert relay.publish_pending() is False

    runner = ConsumerRunner(
        group, consumer.db, consumer.inbox, bus.bus, {INGESTED: consumer.record_effect}, [topic]
    )
    drain(runner, 40)
    assert (runner.applied, runner.duplicates_skipped) == (20, 20)
    assert runner.lag() == 0
    runner.stop()

    # 2. A consumer applies and commits its transaction, then dies before committing offsets.
    producer.emit(5, start=20)
    assert relay.publish_pending() is True
    crashing = ConsumerRunner(
        group,
        consumer.db,
        consumer.inbox,
        CrashBeforeOffsetCommit(bus.bus),
        {INGESTED: consumer.record_effect},
        [topic],
    )
    drain(crashing, 5)
    assert crashing.applied == 5
    crashing.stop()

    # 3. Its replacement gets the 5 again (duplicate delivery): the inbox skips them.
    replacement = ConsumerRunner(
        group, consumer.db, consumer.inbox, bus.bus, {INGESTED: consumer.record_effect}, [topic]
    )
    drain(replacement, 5)
    assert (replacement.applied, replacement.duplicates_skipped) == (0, 5)
    assert replacement.lag() == 0
    replacement.stop()

    effects = consumer.effect_counts()
    assert effects == {f"datasets/d/items/i{i}": 1 for i in range(25)}, "lost or doubled effects"


def test_poison_event_is_dead_lettered_and_redriven_once(bus: Bus, tmp_path: Path) -> None:
    topic, group = bus.new_topic(), group_name()
    producer, consumer = Service(tmp_path, "producer", topic), Service(tmp_path, "consumer", topic)
    producer.emit(6)
    OutboxRelay("producer", producer.db, producer.outbox, bus.bus).publish_pending()
    healed = False

    def handler(session: Session, envelope: events_pb2.EventEnvelope) -> None:
        if envelope.resource_name.endswith("i3") and not healed:
            raise ValueError("cannot apply i3")
        consumer.record_effect(session, envelope)

    runner = ConsumerRunner(
        group, consumer.db, consumer.inbox, bus.bus, {INGESTED: handler}, [topic], max_attempts=2
    )
    drain(runner, 6)
    assert (runner.applied, runner.dead_lettered) == (5, 1)
    assert runner.lag() == 0  # the poison event does not block the partition

    letters = bus.bus.dead_letters(group)
    assert len(letters) == 1
    letter = letters[0]
    assert letter["topic"] == topic
    assert letter["key"] == "datasets/d/items/i3"
    assert "cannot apply i3" in str(letter["error"])
    assert events_pb2.EventEnvelope.FromString(letter["value"]).resource_name == "datasets/d/items/i3"
    assert bus.bus.dead_letters(group_name()) == []  # other groups have none

    healed = True
    assert bus.bus.redrive(group) == 1
    assert bus.bus.dead_letters(group) == []
    assert bus.bus.redrive(group) == 0  # a second redrive repeats nothing
    drain(runner, 7)
    assert (runner.applied, runner.dead_lettered) == (6, 1)
    runner.consume_batch(timeout=1.0)
    assert runner.applied == 6
    runner.stop()
    assert consumer.effect_counts() == {f"datasets/d/items/i{i}": 1 for i in range(6)}
