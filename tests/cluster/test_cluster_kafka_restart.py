"""A REAL broker restart (scripts/infra/kafka.sh restart): records and committed positions survive,
and a bus whose producer was connected before the restart publishes again after it.

Kept in its own module, which sorts after the other Kafka modules, so the restart happens last.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from annocloud_server.common.events import OutgoingRecord, Record
from annocloud_server.common.kafka_bus import KafkaEventBus


def test_committed_positions_and_records_survive_a_broker_restart(
    kafka_broker: Any, kafka_topic: Callable[[], str]
) -> None:
    topic, group = kafka_topic(), f"g-{uuid.uuid4().hex[:8]}"
    bus = KafkaEventBus(kafka_broker.bootstrap, client_id="annocloud-restart-test")
    try:
        bus.publish([OutgoingRecord(topic, f"k{i}", f"v{i}".encode()) for i in range(6)])
        subscription = bus.subscribe(group, [topic])
        seen: list[Record] = []
        deadline = time.monotonic() + 30
        while len(seen) < 6 and time.monotonic() < deadline:
            seen += subscription.poll(100, 0.5)
        assert len(seen) == 6
        subscription.commit(seen)
        subscription.close()

        began = time.monotonic()
        restarted = kafka_broker.script("restart")
        assert restarted.returncode == 0, restarted.stderr
        print(f"broker restarted in {time.monotonic() - began:.1f}s")

        bus.publish([OutgoingRecord(topic, "k9", b"after-restart")])  # its producer reconnects
        again = bus.subscribe(group, [topic])
        records: list[Record] = []
        deadline = time.monotonic() + 30
        while not records and time.monotonic() < deadline:
            records += again.poll(100, 0.5)
        records += again.poll(100, 0.5)
        assert [r.value for r in records] == [b"after-restart"]  # resumed after the committed 6
        again.commit(records)
        assert again.lag() == 0
        again.close()
        assert bus.producers_created == 1
    finally:
        bus.close()
