"""``ClusterStack``: six service processes and the gateway process on real PostgreSQL and Kafka."""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import httpx
import psycopg
from sqlalchemy.engine import make_url

from annocloud_server.common.db import check_schema_name, with_schema
from annocloud_server.common.events import (
    TOPIC_ANNOTATIONS,
    TOPIC_INGESTION,
    TOPIC_MODELASSIST,
    TOPIC_QA,
    TOPIC_TASKS,
)
from annocloud_server.common.kafka_bus import EVENT_TOPICS
from annocloud_server.common.server import make_channel
from annocloud_server.devstack.infra import (
    DEFAULT_INFRA_DIR,
    REPO_ROOT,
    KafkaBroker,
    PostgresServer,
    StackError,
    TritonServer,
    free_port,
    tail,
)
from annocloud_server.devstack.procs import (
    GATEWAY,
    PROCESSES,
    SERVICES,
    check_name,
    health_status,
    http_ok,
)
from annocloud_server.gateway.apikeys import ApiKeyStore

log = logging.getLogger(__name__)

DEFAULT_STACK_DIR = REPO_ROOT / ".cache" / "stack"
# Consumer group (= service name) -> the topics it reads; tests/integration/process checks this
# against the components, so it cannot drift from the code.
CONSUMER_TOPICS: dict[str, tuple[str, ...]] = {
    "tasks": (TOPIC_INGESTION, TOPIC_ANNOTATIONS, TOPIC_QA, TOPIC_MODELASSIST),
    "annotations": (TOPIC_INGESTION, TOPIC_MODELASSIST),
    "qa": (TOPIC_TASKS, TOPIC_ANNOTATIONS),
    "export": (TOPIC_TASKS, TOPIC_QA),
    "modelassist": (TOPIC_TASKS, TOPIC_INGESTION, TOPIC_QA, TOPIC_ANNOTATIONS),
}

_MIGRATIONS = threading.Lock()  # Alembic's command context is process-global


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes] | None = None
    launches: int = 0


def _load_secret(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_hex(32).encode())
        path.chmod(0o600)
    return path.read_bytes().strip()


class ClusterStack:
    """Five service processes + the gateway process on real PostgreSQL and Kafka (see the module doc).

    Construction only decides names and ports; :meth:`start` brings everything up. Ports left at 0
    are picked free once, at construction, and kept across restarts (other processes hold channels
    to them). The environment of every process is built from scratch (inherited ``ANNOCLOUD_*``
    variables are dropped) from these settings, ``env`` (every process), ``service_env[name]`` and
    the ``extra_env`` of one launch, in that order.

    Args:
        stack_dir: logs (``logs/<name>.log``), pidfiles (``pids/<name>.pid``), the principal secret,
            ``stack.json`` (what runs where) and the shared data directory ``data/``. Default: a
            new temporary directory, deleted by :meth:`stop` when every process exited 0.
        postgres / kafka: servers to use (shared by several stacks); default: the scripts' defaults
            under ``infra_dir`` (ports 15432 and 19092/19093).
        triton: True starts ``scripts/infra/triton.sh`` when the script exists; a TritonServer uses
            that one; False leaves Triton out.
        database: the stack's PostgreSQL database (created when missing); default unique per stack.
        kafka_namespace: prefix of the stack's topics and consumer groups; default unique per
            stack; ``""`` uses the plain names.
        http_port / grpc_ports / metrics_ports: 0 (or missing) = a free port (the last two by service).
        detach: the processes outlive this Python process (``annocloud stack up``); otherwise the
            ones still running are killed when it exits.
    """

    def __init__(
        self,
        stack_dir: Path | None = None,
        *,
        postgres: PostgresServer | None = None,
        kafka: KafkaBroker | None = None,
        triton: bool | TritonServer = True,
        infra_dir: Path = DEFAULT_INFRA_DIR,
        database: str | None = None,
        kafka_namespace: str | None = None,
        http_port: int = 0,
        grpc_ports: Mapping[str, int] | None = None,
        metrics_ports: Mapping[str, int] | None = None,
        env: Mapping[str, str] | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        detach: bool = False,
    ):
        token = uuid.uuid4().hex[:10]
        self._own_dir = stack_dir is None
        self.stack_dir = Path(stack_dir or tempfile.mkdtemp(prefix="annocloud-stack-")).resolve()
        self.data_dir = self.stack_dir / "data"
        self.log_dir = self.stack_dir / "logs"
        self.pid_dir = self.stack_dir / "pids"
        self.postgres = postgres or PostgresServer(infra_dir=infra_dir)
        self.kafka = kafka or KafkaBroker(infra_dir=infra_dir)
        if isinstance(triton, TritonServer):
            self.triton: TritonServer | None = triton
        else:
            self.triton = TritonServer(infra_dir=infra_dir) if triton else None
        self.database = check_schema_name(database or f"annocloud_{token}")
        self.kafka_namespace = f"stack-{token}" if kafka_namespace is None else kafka_namespace
        grpc_ports = dict(grpc_ports or {})
        metrics_ports = dict(metrics_ports or {})
        unknown = (set(grpc_ports) | set(metrics_ports)) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown process name(s): {', '.join(sorted(unknown))}")
        self.addresses = {s: f"127.0.0.1:{grpc_ports.get(s) or free_port()}" for s in SERVICES}
        self.metrics_addresses = {s: f"127.0.0.1:{metrics_ports.get(s) or free_port()}" for s in SERVICES}
        """Where each service serves ``/metrics`` (the gateway serves it on its HTTP port)."""
        self.http_port = http_port or free_port()
        self._env = dict(env or {})
        self._service_env = {name: dict(values) for name, values in (service_env or {}).items()}
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.detach = detach
        self._processes = {name: _Process(name) for name in PROCESSES}
        self._lock = threading.RLock()
        self._channels: dict[str, grpc.Channel] = {}
        self._kafka_lock = threading.Lock()
        self._kafka_clients: tuple[Any, Any] | None = None
        self._started = False
        self.secret = _load_secret(self.stack_dir / "principal.secret")
        """The principal-signing secret every process shares (``ANNOCLOUD_PRINCIPAL_SECRET``)."""
        self.api_keys = ApiKeyStore(self.data_dir / "api_keys.json")
        """The gateway's key file; the gateway re-reads it when it changes."""

    # --- names and addresses --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of the stack's database (no schema)."""
        return self.postgres.database_url(self.database)

    def schema_url(self, service: str) -> str:
        """The service's ``ANNOCLOUD_DATABASE_URL`` (``?schema=<service>``)."""
        return with_schema(self.database_url, check_name(service, SERVICES))

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap

    def kafka_topic(self, topic: str) -> str:
        """The broker-side name of one of this stack's topics (``annocloud.qa.v1`` -> ``<ns>.annocloud.qa.v1``)."""
        return f"{self.kafka_namespace}.{topic}" if self.kafka_namespace else topic

    def kafka_group(self, service: str) -> str:
        """The broker-side name of a service's consumer group."""
        return self.kafka_topic(check_name(service, SERVICES))

    def restart_kafka(self) -> None:
        """``kafka.sh restart`` (the services keep running and must ride it out)."""
        self.kafka.restart()

    def restart_postgres(self) -> None:
        """``postgres.sh restart`` (the services keep running and must ride it out)."""
        self.postgres.restart()

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{check_name(name, PROCESSES)}.log"

    def describe(self) -> dict[str, Any]:
        """What runs where (written to ``stack.json``; ``annocloud stack status`` reads it)."""
        return {
            "base_url": self.base_url,
            "grpc": dict(self.addresses),
            "metrics": dict(self.metrics_addresses),
            "database_url": self.database_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            "kafka_namespace": self.kafka_namespace,
            "triton": self.triton.grpc_address if self.triton and self.triton.available else None,
            "data_dir": str(self.data_dir),
            "log_dir": str(self.log_dir),
        }

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> ClusterStack:
        self.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Infrastructure up (reused when running), database migrated, topics created, six
        processes started at once; returns when every service is SERVING and ``/readyz`` is 200."""
        if self._started:
            raise StackError("this stack is already started")
        for directory in (self.data_dir, self.log_dir, self.pid_dir):
            directory.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        if not self.detach:
            atexit.register(self._kill_leftovers)
        try:
            self._start_infra()
            log.info("infrastructure ready in %.1fs", time.monotonic() - began)
            self._started = True
            for name in PROCESSES:
                self._launch(name, None)
            self._wait_all(PROCESSES)
        except BaseException:
            self.stop()
            raise
        self._write_state()
        log.info("stack up in %.1fs: %s", time.monotonic() - began, self.base_url)

    def _start_infra(self) -> None:
        def database() -> None:
            self.postgres.start()
            self.postgres.create_database(self.database)
            from annocloud_server.common import migrations

            with _MIGRATIONS:
                migrations.upgrade_all(self.database_url)

        def broker() -> None:
            from annocloud_server.common.kafka_bus import KafkaEventBus

            self.kafka.start()
            bus = KafkaEventBus(
                self.kafka.bootstrap, client_id="annocloud-devstack", namespace=self.kafka_namespace
            )
            try:
                bus.ensure_topics()
            finally:
                bus.close()

        jobs: list[Callable[[], None]] = [database, broker]
        if self.triton is not None:
            if self.triton.available:
                jobs.append(self.triton.start)
            else:
                log.warning("scripts/infra/triton.sh is missing: the stack runs without Triton")
        with ThreadPoolExecutor(len(jobs), thread_name_prefix="infra") as pool:
            futures = [pool.submit(job) for job in jobs]
        errors = [str(exc) for f in futures if (exc := f.exception()) is not None]
        if errors:
            raise StackError("the infrastructure did not start:\n" + "\n\n".join(errors))

    def stop(self, *, infra: bool = False) -> dict[str, int]:
        """SIGTERM to every process at once, SIGKILL to those still running after ``stop_timeout``.

        Returns the exit code of each process that was running. ``infra=True`` also stops the
        infrastructure servers that this stack started (never ones it found running).
        """
        codes: dict[str, int] = {}
        with self._lock:
            active = self._started or any(self.is_running(name) for name in PROCESSES)
            if active:  # stop() is idempotent
                self._started = False  # a supervisor thread's start_service() now fails, no orphan
                codes = self._terminate(PROCESSES)
                for name in PROCESSES:
                    (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)
            self._close_clients()
        atexit.unregister(self._kill_leftovers)
        if active and self._own_dir:
            if all(p.popen is not None and p.popen.returncode == 0 for p in self._processes.values()):
                shutil.rmtree(self.stack_dir, ignore_errors=True)
            else:
                log.warning("kept %s for its logs: exit codes %s", self.stack_dir, codes)
        if infra:
            for server in (self.triton, self.kafka, self.postgres):
                if server is not None and server.started_here:
                    server.stop()
        return codes

    def _terminate(self, names: tuple[str, ...]) -> dict[str, int]:
        """SIGTERM to those of them that run, all at once; their exit codes (SIGKILL after ``stop_timeout``)."""
        running = [p for name in names if (p := self._processes[name]).popen and p.popen.poll() is None]
        for process in running:
            assert process.popen is not None
            process.popen.send_signal(signal.SIGTERM)  # a no-op if it exited since
        return {p.name: self._reap(p, self.stop_timeout) for p in running}

    def _reap(self, process: _Process, timeout: float) -> int:
        assert process.popen is not None
        try:
            return process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s did not stop in %.0fs: thread dump to its log, then SIGKILL", process.name, timeout
            )
            process.popen.send_signal(
                signal.SIGUSR1
            )  # faulthandler: every thread's stack, for the post-mortem
            time.sleep(0.5)
            process.popen.kill()
            return process.popen.wait(30)

    def _kill_leftovers(self) -> None:
        for process in self._processes.values():
            if process.popen is not None and process.popen.poll() is None:
                process.popen.kill()

    def _close_clients(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        with self._kafka_lock:
            self._close_kafka_clients()

    # --- one process ------------------------------------------------------------------------------

    def _process_env(self, name: str, extra_env: Mapping[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOCLOUD_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "ANNOCLOUD_PRINCIPAL_SECRET": self.secret.decode(),
                "ANNOCLOUD_DATA_DIR": str(self.data_dir),
                "ANNOCLOUD_BUS": "kafka",
                "ANNOCLOUD_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                "ANNOCLOUD_KAFKA_NAMESPACE": self.kafka_namespace,
                "ANNOCLOUD_SERVICE_ADDRESSES": ",".join(f"{s}={a}" for s, a in self.addresses.items()),
            }
        )
        if name == GATEWAY:
            env.update({"ANNOCLOUD_HTTP_HOST": "127.0.0.1", "ANNOCLOUD_HTTP_PORT": str(self.http_port)})
        else:
            env.update(
                {
                    "ANNOCLOUD_GRPC_ADDRESS": self.addresses[name],
                    "ANNOCLOUD_DATABASE_URL": self.schema_url(name),
                    "ANNOCLOUD_METRICS_ADDRESS": self.metrics_addresses[name],
                }
            )
            if name == "modelassist" and self.triton is not None and self.triton.available:
                env["ANNOCLOUD_TRITON_URL"] = self.triton.grpc_address
        env.update(self._env)
        env.update(self._service_env.get(name, {}))
        env.update(extra_env or {})
        return env

    def _launch(self, name: str, extra_env: Mapping[str, str] | None) -> None:
        with self._lock:
            if not self._started:
                raise StackError(f"cannot start {name}: the stack is not started (or was stopped)")
            process = self._processes[check_name(name, PROCESSES)]
            if process.popen is not None and process.popen.poll() is None:
                raise StackError(f"{name} is already running (pid {process.popen.pid})")
            process.launches += 1
            with self.log_path(name).open("ab") as out:
                extras = " ".join(f"{k}={v}" for k, v in sorted((extra_env or {}).items()))
                stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
                out.write(f"=== annocloud devstack: launch {process.launches} at {stamp} {extras}\n".encode())
                out.flush()
                process.popen = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                    [sys.executable, "-m", "annocloud_server.cli", "run", name],
                    env=self._process_env(name, extra_env),
                    cwd=self.stack_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # signals reach it only from us, never a terminal's ^C
                )
            (self.pid_dir / f"{name}.pid").write_text(f"{process.popen.pid}\n")

    def start_service(
        self, name: str, extra_env: Mapping[str, str] | None = None, *, wait: bool = True
    ) -> None:
        """Starts one process (a service or ``gateway``) with ``extra_env`` for this launch only;
        waits until it serves unless ``wait=False``."""
        self._launch(name, extra_env)
        if wait:
            self.wait_serving(name)

    def stop_service(self, name: str, timeout: float | None = None) -> int:
        """SIGTERM, wait (SIGKILL after ``timeout``, default ``stop_timeout``); the exit code."""
        process = self._running(name)
        assert process.popen is not None
        process.popen.send_signal(signal.SIGTERM)
        return self._reap(process, self.stop_timeout if timeout is None else timeout)

    def kill_service(self, name: str) -> int:
        """SIGKILL (a crash: nothing is drained or committed); the exit code (-9)."""
        process = self._running(name)
        assert process.popen is not None
        process.popen.kill()
        return process.popen.wait(30)

    def restart_service(self, name: str, extra_env: Mapping[str, str] | None = None) -> int:
        """stop_service then start_service; the exit code of the stop."""
        code = self.stop_service(name)
        self.start_service(name, extra_env)
        return code

    def restart(self) -> None:
        """Every process at once: SIGTERM, then start again; raises unless each exited 0 (a clean drain)."""
        codes = self._terminate(PROCESSES)
        unclean = {name: code for name, code in codes.items() if code != 0}
        if unclean:
            raise StackError(
                "processes did not exit 0 on SIGTERM: "
                + ", ".join(f"{name}={code}\n{self.log_tail(name)}" for name, code in unclean.items())
            )
        for name in PROCESSES:
            self._launch(name, None)
        self._wait_all(PROCESSES)

    def _running(self, name: str) -> _Process:
        process = self._processes[check_name(name, PROCESSES)]
        if process.popen is None or process.popen.poll() is not None:
            raise StackError(f"{name} is not running")
        return process

    def is_running(self, name: str) -> bool:
        popen = self._processes[check_name(name, PROCESSES)].popen
        return popen is not None and popen.poll() is None

    def returncode(self, name: str) -> int | None:
        """The exit code of the last launch; None while it runs (or before it was ever started)."""
        popen = self._processes[check_name(name, PROCESSES)].popen
        return None if popen is None else popen.poll()

    def pid(self, name: str) -> int | None:
        popen = self._processes[check_name(name, PROCESSES)].popen
        return None if popen is None else popen.pid

    def log_tail(self, name: str, chars: int = 4000) -> str:
        return tail(self.log_path(name), chars)

    def serving(self, name: str) -> bool:
        """A service answers SERVING to gRPC health; the gateway answers ``/healthz``."""
        if check_name(name, PROCESSES) == GATEWAY:
            return http_ok(f"{self.base_url}/healthz")
        return health_status(self.addresses[name]) == "SERVING"

    def wait_serving(self, name: str, timeout: float | None = None) -> None:
        """Waits until :meth:`serving`; raises StackError with the log tail if it exits or times out."""
        self._wait_all((name,), timeout=timeout, ready=False)

    def _wait_all(self, names: tuple[str, ...], *, timeout: float | None = None, ready: bool = True) -> None:
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        pending = list(names)
        while pending:
            for name in list(pending):
                code = self.returncode(name)
                if code is not None:
                    raise StackError(f"{name} exited with {code} while starting:\n{self.log_tail(name)}")
                if self.serving(name):
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}:\n{self.log_tail(n, 2000)}" for n in pending)
                raise StackError(f"not serving in time: {', '.join(pending)}\n{tails}")
            if pending:
                time.sleep(0.1)
        if ready and GATEWAY in names:
            while not http_ok(f"{self.base_url}/readyz"):
                if time.monotonic() > deadline:
                    raise StackError(f"{self.base_url}/readyz is not 200:\n{self.log_tail(GATEWAY)}")
                time.sleep(0.1)

    # --- clients --------------------------------------------------------------------------------

    def channel(self, name: str) -> grpc.Channel:
        """A channel to a service with the services' own options (deadlines, read retries, reconnect
        within 2 s); kept open until :meth:`stop`."""
        with self._lock:
            if name not in self._channels:
                self._channels[name] = make_channel(self.addresses[check_name(name, SERVICES)])
            return self._channels[name]

    def metrics_text(self, name: str) -> str:
        """The Prometheus text of a process (a service's ``ANNOCLOUD_METRICS_ADDRESS``, the gateway's port)."""
        if check_name(name, PROCESSES) == GATEWAY:
            url = f"{self.base_url}/metrics"
        else:
            url = f"http://{self.metrics_addresses[name]}/metrics"
        response = httpx.get(url, timeout=5)
        response.raise_for_status()
        return response.text

    # --- settling -------------------------------------------------------------------------------

    def outbox_backlog(self) -> dict[str, int]:
        """Unpublished outbox rows per service, read from PostgreSQL."""
        conninfo = (
            make_url(self.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            return {
                service: int(
                    conn.execute(
                        f'SELECT count(*) FROM "{service}".outbox WHERE published_time IS NULL'
                    ).fetchone()[0]  # type: ignore[index]
                )
                for service in SERVICES
            }

    def consumer_lag(self) -> dict[str, int]:
        """Per consumer group: records on its topics past its committed offsets, read from the broker."""
        with self._kafka_lock:
            if self._kafka_clients is None:
                self._kafka_clients = _offset_clients(self.kafka_bootstrap)
            admin, consumer = self._kafka_clients
            try:
                groups = {self.kafka_group(g): g for g in CONSUMER_TOPICS}
                committed = admin.list_group_offsets(dict.fromkeys(groups))
                partitions = _partitions(consumer, sorted(self.kafka_topic(t) for t in EVENT_TOPICS))
                end = consumer.end_offsets(partitions)
                first = consumer.beginning_offsets(partitions)
            except Exception:
                self._close_kafka_clients()  # a restarted broker: fresh clients next time
                raise
        lag: dict[str, int] = {}
        for physical_group, group in groups.items():
            offsets = committed.get(physical_group) or {}
            wanted = {self.kafka_topic(t) for t in CONSUMER_TOPICS[group]}
            total = 0
            for tp in (tp for tp in partitions if tp.topic in wanted):
                mark = offsets.get(tp)
                base = int(mark.offset) if mark is not None and int(mark.offset) >= 0 else int(first[tp])
                total += max(0, int(end[tp]) - base)
            lag[group] = total
        return lag

    def _close_kafka_clients(self) -> None:
        clients, self._kafka_clients = self._kafka_clients, None
        for client in clients or ():
            client.close()

    def wait_idle(self, timeout: float = 180.0, *, quiet_checks: int = 3, interval: float = 0.1) -> None:
        """Returns once every outbox is published and every consumer group has zero lag, for
        ``quiet_checks`` checks in a row; TimeoutError (with the last numbers) otherwise."""
        deadline = time.monotonic() + timeout
        quiet = 0
        state: str = "never checked"
        while True:
            try:
                backlog = self.outbox_backlog()
                lag = self.consumer_lag()
                busy = any(backlog.values()) or any(lag.values())
                state = f"outbox backlog {backlog}, consumer lag {lag}"
            except Exception as exc:  # a restarting broker or database is "not idle yet"
                busy, state = True, f"check failed: {exc!r}"
            quiet = 0 if busy else quiet + 1
            if quiet >= quiet_checks:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"events did not settle in {timeout:.0f}s: {state}")
            time.sleep(interval)

    def _write_state(self) -> None:
        path = self.stack_dir / "stack.json"
        path.write_text(json.dumps(self.describe(), indent=2) + "\n")


def _offset_clients(bootstrap: str) -> tuple[Any, Any]:
    from kafka import KafkaAdminClient, KafkaConsumer  # type: ignore[import-untyped]

    return (
        KafkaAdminClient(bootstrap_servers=bootstrap, client_id="annocloud-devstack"),
        KafkaConsumer(bootstrap_servers=bootstrap, client_id="annocloud-devstack", group_id=None),
    )


def _partitions(consumer: Any, topics: list[str]) -> list[Any]:
    from kafka import TopicPartition  # type: ignore[import-untyped]

    return [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
