"""The embedded default: every service and the gateway in one process.

SQLite files and media under one data directory, the durable in-process event bus, one gRPC port
hosting every service, and the REST gateway on another port. ``start_embedded`` returns a running
stack (tests and benches use it); ``serve`` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc
import uvicorn

from annocloud_server.annotations.component import create_component as create_annotations
from annocloud_server.common.auth import ADMIN, ANNOTATOR, MANAGER, REVIEWER, Authenticator
from annocloud_server.common.inprocess_bus import InProcessEventBus
from annocloud_server.common.server import make_channel
from annocloud_server.common.telemetry import instrument_fastapi, setup_logging, setup_tracing
from annocloud_server.devstack.infra import StackError, TritonServer
from annocloud_server.export.component import create_component as create_export
from annocloud_server.gateway.apikeys import ApiKeyStore
from annocloud_server.gateway.app import create_app
from annocloud_server.gateway.settings import GatewaySettings
from annocloud_server.ingestion.component import create_component as create_ingestion
from annocloud_server.modelassist.component import create_component as create_modelassist
from annocloud_server.process import SERVICE_NAMES, wait_interruptibly
from annocloud_server.qa.component import create_component as create_qa
from annocloud_server.runtime import ComponentFactory, Runtime, start_runtime
from annocloud_server.tasks.component import create_component as create_tasks

log = logging.getLogger(__name__)

ALL_COMPONENTS: tuple[ComponentFactory, ...] = (
    create_ingestion,
    create_tasks,
    create_annotations,
    create_qa,
    create_export,
    create_modelassist,
)

SECRET_ENV = "ANNOCLOUD_PRINCIPAL_SECRET"  # noqa: S105 (the variable name, not a secret)


def load_or_create_secret(data_dir: Path) -> bytes:
    """The principal-signing secret: from the environment, else a random one kept in the data dir."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        if len(from_env) < 32 or from_env.lower() in {"changeme", "change-me", "secret"}:
            raise SystemExit(f"{SECRET_ENV} must be a random string of at least 32 characters")
        return from_env.encode()
    path = data_dir / "principal.secret"
    if not path.exists():
        path.write_bytes(secrets.token_hex(32).encode())
        path.chmod(0o600)
    return path.read_bytes().strip()


@dataclass
class EmbeddedStack:
    """A running embedded annocloud.

    Tests drive it through the same small interface as the cluster's ``devstack.ClusterStack``:
    ``base_url``, ``api_keys``, ``secret``, ``channel(service)``, ``wait_idle()``, ``restart()``.
    """

    runtime: Runtime
    http_server: uvicorn.Server
    http_thread: threading.Thread
    api_keys: ApiKeyStore
    data_dir: Path
    secret: bytes
    """The principal-signing secret (callers of the gRPC APIs sign their principals with it)."""
    triton_url: str = ""
    """The Triton server modelassist uses ("" = none: model features off)."""
    local_triton: TritonServer | None = None
    """The tritonserver this stack started (stopped with it)."""

    @property
    def grpc_address(self) -> str:
        return self.runtime.address

    @property
    def base_url(self) -> str:
        sockets = self.http_server.servers[0].sockets
        host, port = sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def channel(self, service: str) -> grpc.Channel:
        """A channel to ``service`` (one port hosts every service here); closed by :meth:`stop`."""
        if service not in SERVICE_NAMES:
            raise ValueError(f"unknown service {service!r}: one of {', '.join(SERVICE_NAMES)}")
        channel = make_channel(self.runtime.address)
        self.runtime.channels.append(channel)
        return channel

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Returns once every outbox is published and every consumer has caught up."""
        self.runtime.wait_idle(timeout)

    def restart(self) -> None:
        """Stops everything (in-flight events stay in outboxes or unconsumed) and starts it again
        on the same data directory and ports."""
        host, port = self.http_server.servers[0].sockets[0].getsockname()[:2]
        grpc_port = self.runtime.server.port
        local, self.local_triton = self.local_triton, None
        self.stop()
        fresh = start_embedded(
            data_dir=self.data_dir, host=host, port=port, grpc_port=grpc_port, triton_url=self.triton_url
        )
        fresh.local_triton = local
        self.runtime, self.http_server, self.http_thread = fresh.runtime, fresh.http_server, fresh.http_thread
        self.api_keys, self.secret = fresh.api_keys, fresh.secret

    def stop(self) -> None:
        self.http_server.should_exit = True
        self.http_thread.join(10)
        self.runtime.stop()
        if self.local_triton is not None:
            self.local_triton.stop()
            self.local_triton = None


def start_local_triton(data_dir: Path) -> TritonServer | None:
    """The tritonserver of the nvidia-pytriton wheel (``scripts/infra/triton.sh``, its own venv,
    ports from ``ANNOCLOUD_TRITON_*_PORT`` or 18001/18000/18002), or None when it cannot start: the
    reason is printed and annocloud runs without model features."""
    server = TritonServer(
        infra_dir=data_dir / "infra",
        grpc_port=int(os.environ.get("ANNOCLOUD_TRITON_GRPC_PORT", "18001")),
        http_port=int(os.environ.get("ANNOCLOUD_TRITON_HTTP_PORT", "18000")),
        metrics_port=int(os.environ.get("ANNOCLOUD_TRITON_METRICS_PORT", "18002")),
    )
    if not server.available:
        print("annocloud: scripts/infra/triton.sh is not here; running without Triton", flush=True)
        return None
    print("annocloud: starting the local Triton server (first start installs its venv)", flush=True)
    try:
        server.start()
    except StackError as error:
        print(
            f"annocloud: Triton could not start; pre-labels, rescoring and de-identification are off:\n{error}",
            flush=True,
        )
        return None
    return server


def start_embedded(
    *,
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    grpc_port: int = 0,
    triton_url: str = "",
) -> EmbeddedStack:
    """Starts every service and the gateway; returns once both accept connections. ``triton_url``
    is the Triton server modelassist calls ("" = none)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    setup_tracing("annocloud")
    secret = load_or_create_secret(data_dir)
    authenticator = Authenticator(secret)
    bus = InProcessEventBus(str(data_dir / "events.db"))
    runtime = start_runtime(
        ALL_COMPONENTS,
        data_dir=data_dir,
        bus=bus,
        authenticator=authenticator,
        address=f"127.0.0.1:{grpc_port}",
        triton_url=triton_url,
    )
    gateway_settings = GatewaySettings()
    channel = make_channel(
        runtime.address,
        unary_timeout=gateway_settings.grpc_deadline_seconds,
        stream_timeout=gateway_settings.grpc_stream_deadline_seconds,
        read_attempts=gateway_settings.read_retry_attempts,
    )
    runtime.channels.append(channel)
    api_keys = ApiKeyStore(data_dir / "api_keys.json")
    app = create_app(gateway_settings, channel=channel, authenticator=authenticator, api_keys=api_keys)
    instrument_fastapi(app)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    http_server = uvicorn.Server(config)
    # uvicorn installs signal handlers only on the main thread; serve() owns SIGINT/SIGTERM.
    thread = threading.Thread(target=http_server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not http_server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            runtime.stop()
            raise RuntimeError(f"the gateway could not start on {host}:{port}")
        time.sleep(0.02)
    return EmbeddedStack(runtime, http_server, thread, api_keys, data_dir, secret, triton_url)


DEMO_USERS = (
    ("user:admin", (ADMIN,)),
    ("user:ann", (ANNOTATOR,)),
    ("user:bob", (ANNOTATOR,)),
    ("user:cat", (ANNOTATOR,)),
    ("user:rev", (REVIEWER,)),
    ("user:pm", (MANAGER,)),
)


def serve(*, data_dir: Path, host: str, port: int, grpc_port: int, demo: bool, triton: str = "auto") -> None:
    """Runs annocloud until interrupted (``annocloud serve``). ``triton``: ``auto`` starts the local
    tritonserver, ``off`` runs without one, anything else is its ``host:port``."""
    setup_logging(os.environ.get("ANNOCLOUD_LOG_LEVEL", "INFO"))
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    local = start_local_triton(Path(data_dir)) if triton == "auto" else None
    triton_url = local.grpc_address if local is not None else ("" if triton in ("auto", "off") else triton)
    try:
        stack = start_embedded(
            data_dir=data_dir, host=host, port=port, grpc_port=grpc_port, triton_url=triton_url
        )
    except BaseException:
        if local is not None:
            local.stop()
        raise
    stack.local_triton = local
    stopping = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    lines = [
        "annocloud is running (embedded default)",
        f"  REST API + docs : {stack.base_url}/docs",
        f"  gRPC (all services): {stack.grpc_address}",
        f"  data directory  : {Path(data_dir).resolve()}",
        f"  Triton          : {triton_url or 'off (no pre-labels, rescoring or de-identification)'}",
    ]
    if demo:
        from annocloud_server.demo_seed import seed_demo

        keys = seed_demo(stack)
        lines.append("  demo API keys (send as 'Authorization: Bearer <key>'):")
        lines += [f"    {subject:<11} {key}" for subject, key in keys.items()]
        lines.append(
            f"  try: curl -H 'Authorization: Bearer {keys['user:admin']}' {stack.base_url}/v1/projects"
        )
    print("\n".join(lines), flush=True)
    wait_interruptibly(stopping)
    print("annocloud: shutting down (draining requests, committing events)", flush=True)
    stack.stop()
