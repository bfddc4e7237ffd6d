"""Cluster-mode fixtures: a REAL Apache Kafka broker (KRaft, jars from Maven Central) for the session.

``kafka_broker`` runs ``scripts/infra/kafka.sh start`` on test ports in a temporary infra directory
and stops it (by its pidfile) at the end of the session. When the broker cannot start, every test
that needs it FAILS with the script's output (log tail included): nothing is skipped or faked.

Ports: ``ANNOCLOUD_TEST_KAFKA_PORT`` and ``ANNOCLOUD_TEST_KAFKA_CONTROLLER_PORT``; by default two free
ports of 127.0.0.1 are picked, so test sessions running side by side never collide.
``ANNOCLOUD_TEST_KAFKA_BOOTSTRAP`` uses an already running broker instead (its topics must be
creatable; nothing is started or stopped then).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from annocloud_server.common.kafka_bus import KafkaEventBus

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO_ROOT / "scripts" / "infra" / "kafka.sh"


@dataclass(frozen=True)
class KafkaBroker:
    bootstrap: str
    env: dict[str, str]  # the environment that kafka.sh needs to address this broker (status, kill…)
    started_here: bool

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Runs ``scripts/infra/kafka.sh ARGS`` against this broker."""
        return subprocess.run(
            ["bash", str(KAFKA_SH), *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _free_port(avoid: int = 0) -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port != avoid:
            return port


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    external = os.environ.get("ANNOCLOUD_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield KafkaBroker(bootstrap=external, env=dict(os.environ), started_here=False)
        return
    port = os.environ.get("ANNOCLOUD_TEST_KAFKA_PORT") or str(_free_port())
    controller_port = os.environ.get("ANNOCLOUD_TEST_KAFKA_CONTROLLER_PORT") or str(
        _free_port(avoid=int(port))
    )
    infra_dir = tmp_path_factory.mktemp("infra")
    env = {
        **os.environ,
        "ANNOCLOUD_KAFKA_PORT": port,
        "ANNOCLOUD_KAFKA_CONTROLLER_PORT": controller_port,
        "ANNOCLOUD_INFRA_DIR": str(infra_dir),
    }
    broker = KafkaBroker(bootstrap=f"127.0.0.1:{port}", env=env, started_here=True)
    began = time.monotonic()
    try:
        started = broker.script("start")
    except subprocess.TimeoutExpired as exc:
        broker.script("stop")
        pytest.fail(f"scripts/infra/kafka.sh start hung for {exc.timeout}s", pytrace=False)
    if started.returncode != 0:
        broker.script("stop")
        pytest.fail(
            "The real Kafka broker could not start (scripts/infra/kafka.sh start exited "
            f"{started.returncode}):\n{started.stderr}\n{started.stdout}",
            pytrace=False,
        )
    print(f"\nkafka broker up on {broker.bootstrap} in {time.monotonic() - began:.1f}s ({infra_dir})")
    try:
        yield broker
    finally:
        stopped = broker.script("stop")
        if stopped.returncode != 0:
            print(f"kafka.sh stop failed: {stopped.stderr}")


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
