"""The infrastructure of the cluster topology on 127.0.0.1, run by ``scripts/infra/*.sh``.

:class:`PostgresServer`, :class:`KafkaBroker` and :class:`TritonServer` bind a script to an infra
directory and ports. ``start`` reuses a server that already runs (and remembers in
``started_here`` whether it started it); several stacks (test sessions) can share one server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path
from typing import ClassVar

import psycopg

from annocloud_server.common.db import check_schema_name

REPO_ROOT = Path(os.environ.get("ANNOCLOUD_REPO_ROOT") or Path(__file__).resolve().parents[3])
SCRIPTS = REPO_ROOT / "scripts" / "infra"
DEFAULT_INFRA_DIR = REPO_ROOT / ".cache" / "infra"


class StackError(RuntimeError):
    """A process or an infrastructure server could not start or stop; the message has log tails."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 free at the time of the call."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports of 127.0.0.1, free at the time of the call (all held at once
    while probing, so none is handed out twice)."""
    probes: list[socket.socket] = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [int(p.getsockname()[1]) for p in probes]
    finally:
        for probe in probes:
            probe.close()


def tail(path: Path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - chars))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _failed(what: str, done: subprocess.CompletedProcess[str]) -> StackError:
    return StackError(f"{what} exited {done.returncode}:\n{done.stderr.strip()}\n{done.stdout.strip()}")


class InfraServer:
    """A server run by ``scripts/infra/<SCRIPT>`` (idempotent start/stop/status, state in ``infra_dir``)."""

    SCRIPT: ClassVar[str]

    def __init__(self, infra_dir: Path):
        self.infra_dir = Path(infra_dir)
        self.started_here = False
        """True when :meth:`start` found it stopped and started it."""

    @property
    def env(self) -> dict[str, str]:
        """The variables that address this server (added to the current environment)."""
        return {"ANNOCLOUD_INFRA_DIR": str(self.infra_dir)}

    @property
    def available(self) -> bool:
        return (SCRIPTS / self.SCRIPT).exists()

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Runs the script with ``args`` (``status``, ``restart``, ``kill``…) against this server."""
        return self._call(args, timeout)

    def _call(self, args: tuple[str, ...], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        if not self.available:
            raise StackError(f"{SCRIPTS / self.SCRIPT} is missing")
        try:
            return subprocess.run(  # noqa: S603 (our own script)
                ["bash", str(SCRIPTS / self.SCRIPT), *args],  # noqa: S607
                env={**os.environ, **self.env},
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"{self.SCRIPT} {' '.join(args)} hung for {exc.timeout:.0f}s") from exc

    def is_running(self) -> bool:
        return self._call(("status",)).returncode == 0

    def start(self) -> None:
        """Starts the server unless it runs already; StackError (with the script's output) on failure."""
        was_running = self.is_running()
        done = self._call(("start",))
        if done.returncode != 0:
            raise _failed(f"scripts/infra/{self.SCRIPT} start", done)
        self.started_here = self.started_here or not was_running

    def stop(self) -> None:
        done = self._call(("stop",))
        if done.returncode != 0:
            raise _failed(f"scripts/infra/{self.SCRIPT} stop", done)
        self.started_here = False

    def restart(self) -> None:
        """Stop, then start (what the chaos suite does to a running server)."""
        done = self._call(("restart",))
        if done.returncode != 0:
            raise _failed(f"scripts/infra/{self.SCRIPT} restart", done)


class PostgresServer(InfraServer):
    """PostgreSQL from ``postgres.sh`` (state in ``<infra_dir>/pg-<port>``; role and database ``annocloud``)."""

    SCRIPT = "postgres.sh"

    def __init__(self, *, port: int = 15432, infra_dir: Path = DEFAULT_INFRA_DIR):
        super().__init__(infra_dir)
        self.port = port

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "ANNOCLOUD_PG_PORT": str(self.port)}

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``annocloud`` database (no schema)."""
        return self.database_url("annocloud")

    def database_url(self, database: str) -> str:
        return f"postgresql+psycopg://annocloud@127.0.0.1:{self.port}/{database}"

    def libpq(self, database: str = "annocloud") -> str:
        return f"host=127.0.0.1 port={self.port} user=annocloud dbname={database}"

    def create_database(self, name: str | None = None, *, prefix: str = "annocloud") -> str:
        """Creates the database (a unique ``<prefix>_<hex>`` without a name) unless it exists; its URL."""
        name = check_schema_name(name or f"{prefix}_{uuid.uuid4().hex[:10]}")
        with psycopg.connect(self.libpq(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def log_tail(self, chars: int = 4000) -> str:
        return tail(self.infra_dir / f"pg-{self.port}" / "postgres.log", chars)


class KafkaBroker(InfraServer):
    """A single-node KRaft broker from ``kafka.sh`` (state in ``<infra_dir>/kafka-<port>``).

    ``external="host:port"``: a broker someone else runs; :meth:`start` only checks that it
    answers and :meth:`stop` does nothing.
    """

    SCRIPT = "kafka.sh"

    def __init__(
        self,
        *,
        port: int = 19092,
        controller_port: int = 19093,
        infra_dir: Path = DEFAULT_INFRA_DIR,
        external: str | None = None,
    ):
        super().__init__(infra_dir)
        self.port = port
        self.controller_port = controller_port
        self.external = external

    @property
    def bootstrap(self) -> str:
        return self.external or f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **super().env,
            "ANNOCLOUD_KAFKA_PORT": str(self.port),
            "ANNOCLOUD_KAFKA_CONTROLLER_PORT": str(self.controller_port),
        }

    def is_running(self) -> bool:
        return _metadata_ok(self.external) if self.external else super().is_running()

    def start(self) -> None:
        if not self.external:
            super().start()
        elif not _metadata_ok(self.external):
            raise StackError(f"the Kafka broker at {self.external} does not answer")

    def stop(self) -> None:
        if not self.external:
            super().stop()

    def restart(self) -> None:
        if self.external:
            raise StackError(f"the broker at {self.external} is not ours to restart")
        super().restart()

    def log_tail(self, chars: int = 4000) -> str:
        return tail(self.infra_dir / f"kafka-{self.port}" / "logs" / "server.log", chars)


def _metadata_ok(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient  # type: ignore[import-untyped]

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            admin.list_topics()
        finally:
            admin.close()
    except Exception:  # any client error means "does not answer"
        return False
    return True


class TritonServer(InfraServer):
    """NVIDIA Triton from ``triton.sh``; the stack hands its address to modelassist."""

    SCRIPT = "triton.sh"

    def __init__(
        self,
        *,
        grpc_port: int = 18001,
        http_port: int = 18000,
        metrics_port: int = 18002,
        infra_dir: Path = DEFAULT_INFRA_DIR,
        model_repository: Path | None = None,
    ):
        super().__init__(infra_dir)
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.model_repository = model_repository
        """None: the script's default, gpu-inference/model_repository."""

    @property
    def env(self) -> dict[str, str]:
        return {
            **super().env,
            "ANNOCLOUD_TRITON_GRPC_PORT": str(self.grpc_port),
            "ANNOCLOUD_TRITON_HTTP_PORT": str(self.http_port),
            "ANNOCLOUD_TRITON_METRICS_PORT": str(self.metrics_port),
            **(
                {"ANNOCLOUD_TRITON_MODEL_REPOSITORY": str(self.model_repository)}
                if self.model_repository
                else {}
            ),
        }

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"
