"""Cluster-mode fixtures: a REAL Apache Kafka broker (KRaft, jars from Maven Central) for the session.

``kafka_broker`` is the process-wide broker of ``support.infra`` (``scripts/infra/kafka.sh start`` on
test ports in a temporary infra directory, stopped by its pidfile when pytest ends; the e2e suite's
cluster mode shares it). When the broker cannot start, every test that needs it FAILS with the
script's output (log tail included): nothing is skipped or faked.

Ports: ``ANNOCLOUD_TEST_KAFKA_PORT`` and ``ANNOCLOUD_TEST_KAFKA_CONTROLLER_PORT``; by default two free
ports of 127.0.0.1 are picked, so test sessions running side by side never collide.
``ANNOCLOUD_TEST_KAFKA_BOOTSTRAP`` uses an already running broker instead (its topics must be
creatable; nothing is started or stopped then).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from annocloud_server.common.kafka_bus import KafkaEventBus
from annocloud_server.devstack import KafkaBroker
from support import infra


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> KafkaBroker:
    """The session's broker: ``bootstrap``, ``script("status" | "restart" | ...)``."""
    return infra.kafka(request.config)


@pytest.fixture(scope="session")
def kafka_admin_bus(kafka_broker: KafkaBroker) -> Iterator[KafkaEventBus]:
    """A bus that created the annocloud topics (and the dead-letter topics) once per session."""
    bus = KafkaEventBus(kafka_broker.bootstrap, client_id="annocloud-tests")
    bus.ensure_topics()
    yield bus
    bus.close()


@pytest.fixture
def kafka_topic(kafka_admin_bus: KafkaEventBus) -> Callable[[], str]:
    """kafka_topic() -> the name of a fresh topic (3 partitions), so tests never see each other's records."""

    def make() -> str:
        topic = f"annocloud.test-{uuid.uuid4().hex[:10]}.v1"
        kafka_admin_bus.ensure_topics([topic])
        return topic

    return make
