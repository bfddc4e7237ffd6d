"""Cluster mode: one service per process (``annocloud run <service>``), settings from the environment.

Each service listens on its own gRPC address, keeps its state in its own database (PostgreSQL
schema or SQLite file) and talks to the others through the configured event bus; the gateway
reaches services by configured addresses. SIGTERM: health NOT_SERVING, drain calls, finish and
commit the consumer batch in flight, exit. ``ANNOCLOUD_METRICS_ADDRESS`` serves a service's
Prometheus metrics; the gateway serves them at ``/metrics`` on its HTTP port.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from annocloud_server.common import faults
from annocloud_server.common.auth import Authenticator
from annocloud_server.common.db import sqlite_url
from annocloud_server.common.events import EventBus
from annocloud_server.common.metrics import MetricsServer, parse_address
from annocloud_server.common.server import make_channel
from annocloud_server.common.service_names import SERVICES
from annocloud_server.common.telemetry import setup_logging, setup_tracing
from annocloud_server.runtime import ComponentFactory, start_runtime

log = logging.getLogger(__name__)

SERVICE_NAMES = SERVICES


def component_factory(service: str) -> ComponentFactory:
    """The ``create_component`` of a service, imported on demand."""
    if service not in SERVICE_NAMES:
        raise SystemExit(f"unknown service {service!r}; one of: {', '.join(SERVICE_NAMES)}, gateway")
    module = __import__(f"annocloud_server.{service}.component", fromlist=["create_component"])
    factory: ComponentFactory = module.create_component
    return factory


class ProcessSettings(BaseSettings):
    """Settings of one service process (environment, prefix ``ANNOCLOUD_``)."""

    model_config = SettingsConfigDict(env_prefix="ANNOCLOUD_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Blobs (local store) and API keys.")
    grpc_address: str = Field(default="127.0.0.1:50051", description="Where this service listens.")
    http_host: str = Field(default="127.0.0.1", description="Gateway only: HTTP host.")
    http_port: int = Field(default=8080, description="Gateway only: HTTP port.")
    database_url: str = Field(
        default="", description="This service's database; empty = SQLite file <data_dir>/<service>.db."
    )
    bus: Literal["kafka", "log"] = Field(
        default="kafka", description="kafka, or log = the durable SQLite event log shared on one host."
    )
    kafka_bootstrap: str = Field(default="127.0.0.1:19092", description="Kafka bootstrap servers.")
    kafka_namespace: str = Field(
        default="", description="Prefix of every topic and consumer group (stacks sharing a broker)."
    )
    event_log_path: Path = Field(default=Path("./data/events.db"), description="bus=log: the log file.")
    service_addresses: str = Field(
        default="", description="Other services: 'tasks=127.0.0.1:50052,ingestion=127.0.0.1:50051,...'."
    )
    metrics_address: str = Field(
        default="",
        description="Services: host:port of the Prometheus /metrics server (empty = off; gateway: on its port).",
    )
    principal_secret: SecretStr = Field(description="Shared secret signing principals (>= 32 chars).")
    triton_url: str = Field(
        default="",
        description="modelassist: host:port of the Triton gRPC endpoint (empty = model features off).",
    )

    @field_validator("metrics_address")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        if value.strip():
            parse_address(value)
        return value.strip()

    @field_validator("principal_secret")
    @classmethod
    def _real_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if len(raw) < 32 or raw.strip().lower() in {"changeme", "change-me", "secret", "password"}:
            raise ValueError("ANNOCLOUD_PRINCIPAL_SECRET must be a random string of at least 32 characters")
        return value

    def addresses(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in self.service_addresses.split(","))):
            name, sep, address = part.partition("=")
            if not sep or not address:
                raise ValueError(f"ANNOCLOUD_SERVICE_ADDRESSES entry {part!r} is not name=host:port")
            out[name.strip()] = address.strip()
        return out


def make_bus(settings: ProcessSettings) -> EventBus:
    if settings.bus == "log":
        from annocloud_server.common.inprocess_bus import InProcessEventBus

        settings.event_log_path.parent.mkdir(parents=True, exist_ok=True)
        return InProcessEventBus(str(settings.event_log_path))
    from annocloud_server.common.kafka_bus import KafkaEventBus

    bus = KafkaEventBus(settings.kafka_bootstrap, namespace=settings.kafka_namespace)
    bus.ensure_topics()
    return bus


def _wait_for_signal() -> None:
    stopping = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    wait_interruptibly(stopping)


def wait_interruptibly(event: threading.Event, tick: float = 0.25) -> None:
    """Waits for ``event`` in short slices. Python runs signal handlers only in the main thread, and
    only when it executes bytecode; the kernel may deliver SIGTERM to any of our threads (Kafka,
    gRPC), and then an untimed wait in the main thread is never woken: the process ignores SIGTERM
    (seen in the chaos suite as a 30 s stop ending in SIGKILL)."""
    while not event.wait(tick):
        pass


def run_service(
    service: str, settings: ProcessSettings | None = None, *, until: Callable[[], None] = _wait_for_signal
) -> None:
    """Runs one service until SIGTERM/SIGINT (or until ``until`` returns)."""
    settings = settings or ProcessSettings()  # type: ignore[call-arg]
    factory = component_factory(service)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck shutdown waits for.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        faults.configure()  # start_runtime would too; here a bad spec ends the start with one line
    except ValueError as exc:
        raise SystemExit(f"annocloud {service}: {exc}") from None
    setup_logging()
    setup_tracing(f"annocloud-{service}")
    url = settings.database_url or sqlite_url(str(settings.data_dir / f"{service}.db"))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = start_runtime(
        [factory],
        data_dir=settings.data_dir,
        bus=make_bus(settings),
        authenticator=Authenticator(settings.principal_secret.get_secret_value().encode()),
        address=settings.grpc_address,
        database_url_for=lambda _name: url,
        service_addresses=settings.addresses(),
        triton_url=settings.triton_url,
    )
    metrics_server = None
    try:
        if settings.metrics_address:
            metrics_server = MetricsServer(settings.metrics_address, runtime.metrics_registry)
    except BaseException:
        runtime.stop()
        raise
    log.info("%s listening on %s", service, runtime.address)
    print(f"annocloud {service}: gRPC on {runtime.address}", flush=True)
    if metrics_server is not None:
        print(f"annocloud {service}: metrics on {metrics_server.url}", flush=True)
    until()
    log.info("%s: draining and stopping", service)
    runtime.stop()
    if metrics_server is not None:
        metrics_server.stop()


def run_gateway(
    settings: ProcessSettings | None = None, *, until: Callable[[], None] = _wait_for_signal
) -> None:
    """Runs the REST gateway against services at ``ANNOCLOUD_SERVICE_ADDRESSES``."""
    import uvicorn

    from annocloud_server.common.telemetry import instrument_fastapi
    from annocloud_server.gateway.apikeys import ApiKeyStore
    from annocloud_server.gateway.app import create_app
    from annocloud_server.gateway.settings import GatewaySettings

    settings = settings or ProcessSettings()  # type: ignore[call-arg]
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    setup_logging()
    setup_tracing("annocloud-gateway")
    addresses = settings.addresses()
    missing = [name for name in SERVICE_NAMES if name not in addresses]
    if missing:
        raise SystemExit(f"ANNOCLOUD_SERVICE_ADDRESSES lacks: {', '.join(missing)}")
    gateway_settings = GatewaySettings()
    channels = {
        name: make_channel(
            address,
            unary_timeout=gateway_settings.grpc_deadline_seconds,
            stream_timeout=gateway_settings.grpc_stream_deadline_seconds,
            read_attempts=gateway_settings.read_retry_attempts,
        )
        for name, address in addresses.items()
    }
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(
        gateway_settings,
        channel=channels,
        authenticator=Authenticator(settings.principal_secret.get_secret_value().encode()),
        api_keys=ApiKeyStore(settings.data_dir / "api_keys.json"),
    )
    instrument_fastapi(app)
    print(f"annocloud gateway: http://{settings.http_host}:{settings.http_port}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=settings.http_host, port=settings.http_port, log_level="warning", access_log=False
        )
    )
    # uvicorn re-raises SIGTERM after its own shutdown (exit code -15); we own the signals instead
    # and exit 0 after a graceful stop.
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    until()
    server.should_exit = True
    thread.join(30)
    for channel in channels.values():
        channel.close()
