"""KafkaEventBus replaces a wedged producer: retriable failures twice in a row get a new one
(a broker restart left the old one timing out for minutes in the chaos suite)."""

from __future__ import annotations

from typing import Any

import pytest
from annocloud_server.common.events import OutgoingRecord
from annocloud_server.common.kafka_bus import KafkaEventBus, PublishError
from kafka.errors import KafkaTimeoutError


class FakeFuture:
    def __init__(self, error: BaseException | None):
        self._error = error

    def get(self, timeout: float) -> None:
        if self._error is not None:
            raise self._error


class FakeProducer:
    def __init__(self, fail: bool):
        self.fail = fail
        self.closed = False

    def send(self, topic: str, **_: Any) -> FakeFuture:
        return FakeFuture(KafkaTimeoutError("Timeout waiting for future") if self.fail else None)

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        self.closed = True


def test_two_retriable_failures_in_a_row_recreate_the_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    """One timeout keeps the producer (a passing hiccup); a second in a row drops it; the next
    send builds a new one, which delivers."""
    bus = KafkaEventBus("127.0.0.1:9")
    made: list[FakeProducer] = []

    def new_producer() -> FakeProducer:
        bus.producers_created += 1
        made.append(FakeProducer(fail=len(made) == 0))
        return made[-1]

    monkeypatch.setattr(bus, "_new_producer", new_producer)
    record = [OutgoingRecord("annocloud.tasks.v1", "k", b"v")]
    for _ in range(2):
        with pytest.raises(PublishError):
            bus.publish(record)
    assert bus.producers_created == 1
    assert made[0].closed
    bus.publish(record)
    assert bus.producers_created == 2
    assert not made[1].closed


def test_a_success_resets_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures separated by a success never drop the producer."""
    bus = KafkaEventBus("127.0.0.1:9")
    producer = FakeProducer(fail=True)
    monkeypatch.setattr(bus, "_new_producer", lambda: producer)
    record = [OutgoingRecord("annocloud.tasks.v1", "k", b"v")]
    for _ in range(3):
        producer.fail = True
        with pytest.raises(PublishError):
            bus.publish(record)
        producer.fail = False
        bus.publish(record)
    assert not producer.closed
