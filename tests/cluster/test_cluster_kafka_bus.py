"""What only the Kafka bus has, on a REAL broker: the script, the producer's settings, topics, trace
headers, failed publishes that the relay must not mark, and producer recreation.

(The broker restart is in test_cluster_kafka_restart.py.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from annocloud.events.v1 import events_pb2
from annocloud_server.common.db import Database, sqlite_url
from annocloud_server.common.events import (
    TOPIC_INGESTION,
    EventWriter,
    OutboxRelay,
    OutgoingRecord,
    outbox_table,
)
from annocloud_server.common.kafka_bus import (
    ALL_TOPICS,
    TOPIC_DEAD_LETTER,
    TOPIC_REDRIVES,
    KafkaEventBus,
    PublishError,
)
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from sqlalchemy import MetaData

# kafka_broker is tests/cluster/conftest.py's KafkaBroker (bootstrap, script(...)).
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def kbus(kafka_broker: Any, kafka_admin_bus: KafkaEventBus) -> Iterator[KafkaEventBus]:
    bus = KafkaEventBus(kafka_broker.bootstrap, client_id="annocloud-kafka-tests", send_timeout=5.0)
    yield bus
    bus.close()


def read_raw(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[object]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))])
    consumer.seek_to_beginning()
    messages: list[object] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=300).values():
            messages.extend(batch)
    consumer.close()
    return messages


def test_the_script_reports_the_broker_up(kafka_broker: Any) -> None:
    status = kafka_broker.script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("up")
    assert kafka_broker.script("bootstrap").stdout.strip() == kafka_broker.bootstrap
    again = kafka_broker.script("start")  # idempotent: the running broker is kept
    assert again.returncode == 0
    assert "already running" in again.stderr


def test_topics_are_created_once_with_their_settings(
    kafka_broker: Any, kafka_admin_bus: KafkaEventBus
) -> None:
    assert kafka_admin_bus.ensure_topics() == []  # the session fixture created them: idempotent
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([*ALL_TOPICS, TOPIC_REDRIVES])}
        for topic in ALL_TOPICS:
            assert len(described[topic]["partitions"]) == 3, topic
        assert TOPIC_DEAD_LETTER in described
        assert len(described[TOPIC_REDRIVES]["partitions"]) == 1
    finally:
        admin.close()


def test_the_producer_is_idempotent_with_acks_all_passed_explicitly(kbus: KafkaEventBus) -> None:
    kbus.publish([OutgoingRecord(TOPIC_INGESTION, "datasets/d/items/x", b"not-an-envelope")])
    producer = kbus._producer
    assert producer.config["enable_idempotence"] is True
    assert producer.config["acks"] == -1
    assert producer.config["max_in_flight_requests_per_connection"] <= 5
    assert producer._transaction_manager.producer_id_and_epoch.producer_id >= 0  # the broker gave it a PID


def test_trace_context_travels_in_kafka_headers(
    kafka_broker: Any, kbus: KafkaEventBus, kafka_topic: Callable[[], str]
) -> None:
    topic = kafka_topic()
    envelope = events_pb2.EventEnvelope(
        event_id="e1", event_type="annocloud.events.v1.ItemIngested", resource_name="datasets/d/items/t"
    )
    envelope.trace_context["traceparent"] = TRACEPARENT
    kbus.publish([OutgoingRecord(topic, envelope.resource_name, envelope.SerializeToString())])
    (message,) = read_raw(kafka_broker.bootstrap, topic, 1)
    headers = dict(message.headers)  # type: ignore[attr-defined]
    assert headers["traceparent"] == TRACEPARENT.encode()
    assert headers["annocloud.event_id"] == b"e1"
    assert message.key == b"datasets/d/items/t"  # type: ignore[attr-defined]


def test_an_unacknowledged_publish_raises_and_the_relay_keeps_its_rows(
    kbus: KafkaEventBus, tmp_path: Path
) -> None:
    metadata = MetaData()
    outbox = outbox_table(metadata)
    db = Database(sqlite_url(str(tmp_path / "p.db")))
    db.create_tables(metadata)
    missing = f"annocloud.missing-{uuid.uuid4().hex[:8]}.v1"  # auto-create is off: never acknowledged
    with db.transaction() as session:
        EventWriter(outbox, missing).emit(
            session,
            tenant_id="acme",
            resource_name="x",
            aggregate_version=1,
            payload=events_pb2.ItemIngested(),
        )
    relay = OutboxRelay("p", db, outbox, kbus)
    began = time.monotonic()
    with pytest.raises(PublishError):
        relay.publish_pending()
    assert time.monotonic() - began < 30
    assert relay.backlog() == 1  # not marked: it will be published again


def test_the_producer_is_recreated_after_a_fatal_error(
    kbus: KafkaEventBus, kafka_topic: Callable[[], str]
) -> None:
    topic = kafka_topic()
    kbus.publish([OutgoingRecord(topic, "k", b"1")])
    assert kbus.producers_created == 1
    kbus._producer.close()  # a producer that can no longer send (IllegalStateError: not retriable)
    with pytest.raises(PublishError):
        kbus.publish([OutgoingRecord(topic, "k", b"2")])
    kbus.publish([OutgoingRecord(topic, "k", b"3")])
    assert kbus.producers_created == 2
