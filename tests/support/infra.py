"""Real infrastructure for the tests: one PostgreSQL server and one Kafka broker per pytest process.

Both are started on first use through ``annocloud_server.devstack`` (which runs
``scripts/infra/postgres.sh`` / ``kafka.sh``) in temporary directories on free ports, shared by every
test that asks (e2e in cluster mode, process tests, the cluster suite), and stopped when pytest
ends. When a server cannot start the test FAILS with the script's output and log tail: nothing is
skipped or faked. Each test takes its own database (:meth:`PgServer.fresh_database`) and, for a
whole stack, its own Kafka namespace (:func:`cluster_stack`), so tests never see each other.

Environment:
- ``ANNOCLOUD_TEST_PG_PORT``: first PostgreSQL port tried (default 25432; the next free one is used);
- ``ANNOCLOUD_TEST_KAFKA_PORT`` / ``ANNOCLOUD_TEST_KAFKA_CONTROLLER_PORT``: broker ports (default free);
- ``ANNOCLOUD_TEST_KAFKA_BOOTSTRAP``: use this running broker instead (nothing started or stopped).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from annocloud_server.devstack import ClusterStack, KafkaBroker, PostgresServer, StackError, free_port

PG_PORT_ENV = "ANNOCLOUD_TEST_PG_PORT"
DEFAULT_PG_PORT = 25432

_lock = threading.Lock()
_servers: dict[str, Any] = {}


class PgServer(PostgresServer):
    """The tests' PostgreSQL: ``script`` raises unless told ``check=False``; a database per test."""

    start_seconds: float = 0.0

    def script(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = super().script(*args, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"postgres.sh {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def fresh_database(self, prefix: str = "t") -> str:
        """Creates an empty database and returns its SQLAlchemy URL (no schema)."""
        return self.create_database(prefix=prefix)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _infra_dir() -> Path:
    """The session's infra directory (``pg-<port>/``, ``kafka-<port>/`` inside), made once."""
    if "infra_dir" not in _servers:
        # PostgreSQL runs as the postgres OS user: pytest's 0700 temp dirs are not traversable for it.
        path = Path(tempfile.mkdtemp(prefix="annocloud-infra-"))
        path.chmod(0o755)
        _servers["infra_dir"] = path
    infra_dir: Path = _servers["infra_dir"]
    return infra_dir


def _start_postgres() -> PgServer:
    raw = os.environ.get(PG_PORT_ENV, str(DEFAULT_PG_PORT))
    if not raw.isdigit() or not 1024 <= int(raw) <= 65000:
        pytest.fail(f"{PG_PORT_ENV}={raw!r} is not a TCP port in 1024..65000", pytrace=False)
    first = int(raw)
    candidates = [p for p in range(first, first + 50) if _port_free(p)][:3]
    if not candidates:
        pytest.fail(f"no free TCP port in {first}..{first + 49} on 127.0.0.1 for the test PostgreSQL")
    infra_dir = _infra_dir()
    errors: list[str] = []
    for port in candidates:  # another test session may take a port between the probe and the start
        server = PgServer(port=port, infra_dir=infra_dir)
        began = time.monotonic()
        try:
            server.start()
        except StackError as exc:
            errors.append(f"port {port}: {exc}")
            server.script("stop", check=False)
            continue
        server.start_seconds = time.monotonic() - began
        return server
    pytest.fail(
        "the test PostgreSQL did not start (scripts/infra/postgres.sh start; is it installed? "
        "run `scripts/infra/postgres.sh install`):\n" + "\n".join(errors),
        pytrace=False,
    )


def _start_kafka() -> KafkaBroker:
    external = os.environ.get("ANNOCLOUD_TEST_KAFKA_BOOTSTRAP")
    if external:
        return KafkaBroker(external=external)
    port = int(os.environ.get("ANNOCLOUD_TEST_KAFKA_PORT") or free_port())
    controller = int(os.environ.get("ANNOCLOUD_TEST_KAFKA_CONTROLLER_PORT") or 0)
    while not controller or controller == port:
        controller = free_port()
    broker = KafkaBroker(port=port, controller_port=controller, infra_dir=_infra_dir())
    began = time.monotonic()
    try:
        broker.start()
    except StackError as exc:
        broker.script("stop")
        pytest.fail(f"The real Kafka broker could not start:\n{exc}", pytrace=False)
    print(f"\nkafka broker up on {broker.bootstrap} in {time.monotonic() - began:.1f}s ({broker.infra_dir})")
    return broker


def _stop(kind: str) -> None:
    with _lock:
        server = _servers.pop(kind, None)
    if server is None:
        return
    try:
        server.stop()
    except StackError as exc:
        print(f"stopping the test {kind} failed: {exc}")
    if isinstance(server, PostgresServer):
        shutil.rmtree(server.infra_dir / f"pg-{server.port}", ignore_errors=True)
    elif not server.external:
        shutil.rmtree(server.infra_dir / f"kafka-{server.port}", ignore_errors=True)
    with _lock:
        if "postgres" not in _servers and "kafka" not in _servers and "infra_dir" in _servers:
            shutil.rmtree(_servers.pop("infra_dir"), ignore_errors=True)


def _shared(kind: str, config: pytest.Config | None) -> Any:
    with _lock:
        if kind not in _servers:
            _servers[kind] = _start_postgres() if kind == "postgres" else _start_kafka()
            if config is not None:
                config.add_cleanup(lambda: _stop(kind))
            atexit.register(_stop, kind)
        return _servers[kind]


def postgres(config: pytest.Config | None = None) -> PgServer:
    """The process's test PostgreSQL, started on first use and stopped when pytest ends."""
    server: PgServer = _shared("postgres", config)
    return server


def kafka(config: pytest.Config | None = None) -> KafkaBroker:
    """The process's test Kafka broker, started on first use and stopped when pytest ends."""
    broker: KafkaBroker = _shared("kafka", config)
    return broker


def cluster_stack(config: pytest.Config, stack_dir: Path, **options: Any) -> ClusterStack:
    """A ClusterStack (not started) on the shared servers, with its own database and Kafka
    namespace; Triton is left out unless ``triton=`` says otherwise."""
    options.setdefault("triton", False)
    return ClusterStack(stack_dir, postgres=postgres(config), kafka=kafka(config), **options)
