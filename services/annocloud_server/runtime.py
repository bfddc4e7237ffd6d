"""Runs components: one gRPC server, an outbox relay per component, a consumer per component.

The embedded default runs every component in one Runtime; a one-service process runs one. Tests
use it to start a real service on port 0 with the in-process bus. Each runtime has its own metrics
registry (``runtime.metrics_registry``: gRPC server, consumers, outbox, dead letters) and installs
the fault-injection plan of ``ANNOCLOUD_FAULTS`` (``common/faults.py``) before anything starts.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from annocloud_server.common import faults
from annocloud_server.common.auth import Authenticator
from annocloud_server.common.blobstore import LocalBlobStore
from annocloud_server.common.component import Component, ComponentContext
from annocloud_server.common.db import sqlite_url
from annocloud_server.common.events import ConsumerRunner, EventBus, OutboxRelay
from annocloud_server.common.metrics import EventMetrics, GrpcMetrics, new_registry
from annocloud_server.common.server import GrpcServer, build_server, make_channel

log = logging.getLogger(__name__)

ComponentFactory = Callable[[ComponentContext], Component]


@dataclass
class Runtime:
    """Started components sharing one server and one bus."""

    components: list[Component]
    server: GrpcServer
    bus: EventBus
    relays: list[OutboxRelay] = field(default_factory=list)
    consumers: list[ConsumerRunner] = field(default_factory=list)
    channels: list[grpc.Channel] = field(default_factory=list)
    metrics_registry: CollectorRegistry = field(default_factory=new_registry)
    readiness: ReadinessWatch | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Blocks until every outbox is published and every consumer caught up (tests, benches)."""
        deadline = time.monotonic() + timeout
        quiet_rounds = 0
        while time.monotonic() < deadline:
            busy = any(r.backlog() for r in self.relays) or any(c.lag() for c in self.consumers)
            quiet_rounds = 0 if busy else quiet_rounds + 1
            if quiet_rounds >= 3:
                return
            for relay in self.relays:
                relay.wake()
            time.sleep(0.05)
        raise TimeoutError("events did not settle in time")

    def stop(self) -> None:
        if self.readiness is not None:
            self.readiness.stop()
        self.server.stop(grace=2.0)
        for consumer in self.consumers:
            consumer.stop()
        for relay in self.relays:
            relay.stop()
        for component in self.components:
            for loop in component.background:
                loop.stop()
        for channel in self.channels:
            channel.close()
        for component in self.components:
            component.db.dispose()
        close = getattr(self.bus, "close", None)
        if close is not None:
            close()


def start_runtime(
    factories: Sequence[ComponentFactory],
    *,
    data_dir: Path,
    bus: EventBus,
    authenticator: Authenticator,
    address: str = "127.0.0.1:0",
    database_url_for: Callable[[str], str] | None = None,
    service_addresses: dict[str, str] | None = None,
    metrics_registry: CollectorRegistry | None = None,
    triton_url: str = "",
) -> Runtime:
    """Creates the components, binds one server for all of them and starts relays and consumers.

    ``service_addresses`` maps service short names to addresses for services that run elsewhere;
    the ones started here are reached through this server's own port. ``metrics_registry`` (a
    fresh one when None) receives the runtime's metrics; pass the gateway's to expose one page.
    Raises ValueError when ``ANNOCLOUD_FAULTS`` is malformed.
    """
    faults.configure()
    registry = metrics_registry if metrics_registry is not None else new_registry()
    data_dir.mkdir(parents=True, exist_ok=True)
    blob_store = LocalBlobStore(data_dir / "blobs")
    relays: list[OutboxRelay] = []
    channels: list[grpc.Channel] = []
    port_holder: dict[str, int] = {}
    remote = dict(service_addresses or {})

    def channel_to(service: str) -> grpc.Channel:
        target = remote.get(service) or f"127.0.0.1:{port_holder['port']}"
        channel = make_channel(target)
        channels.append(channel)
        return channel

    def wake_relay_of(name: str) -> Callable[[], None]:
        def wake() -> None:
            for relay in relays:
                if relay.name == name:
                    relay.wake()

        return wake

    components: list[Component] = []
    for factory in factories:
        probe_name = getattr(factory, "__module__", "component").split(".")[-2]
        url = (
            database_url_for(probe_name)
            if database_url_for
            else sqlite_url(str(data_dir / f"{probe_name}.db"))
        )
        ctx = ComponentContext(
            data_dir=data_dir,
            database_url=url,
            authenticator=authenticator,
            blob_store=blob_store,
            channel_to=channel_to,
            on_outbox_commit=wake_relay_of(probe_name),
            triton_url=triton_url,
        )
        components.append(factory(ctx))

    registrations = [r for c in components for r in c.registrations]
    server = build_server(registrations, address=address, metrics=GrpcMetrics(registry))
    port_holder["port"] = server.port
    consumers: list[ConsumerRunner] = []
    for component in components:
        relays.append(OutboxRelay(component.name, component.db, component.outbox, bus))
        if component.handlers:
            consumers.append(
                ConsumerRunner(
                    component.name, component.db, component.inbox, bus, component.handlers, component.topics
                )
            )
    dead_letter_counts = getattr(bus, "dead_letter_counts", None)
    registry.register(
        EventMetrics(
            consumers=consumers,
            relays=relays,
            dead_letter_counts=dead_letter_counts if callable(dead_letter_counts) else None,
        )
    )
    for relay in relays:
        relay.start()
    for consumer in consumers:
        consumer.start()
    for component in components:
        for loop in component.background:
            loop.start()
    watch = ReadinessWatch(server, components)
    watch.start()
    runtime = Runtime(components, server, bus, relays, consumers, channels, registry)
    runtime.readiness = watch
    return runtime


class ReadinessWatch:
    """Polls each component's ``readiness`` and sets the gRPC health of its services (and of the
    whole server when it hosts only that component) to SERVING or NOT_SERVING."""

    def __init__(self, server: GrpcServer, components: Sequence[Component], *, interval: float = 2.0):
        self._server = server
        self._checks = [(c, [r.full_name for r in c.registrations]) for c in components if c.readiness]
        self._whole = len(components) == 1
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_once(self) -> None:
        for component, names in self._checks:
            try:
                ready = bool(component.readiness and component.readiness())
            except Exception:
                log.exception("readiness check of %s failed", component.name)
                ready = False
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in [*names, *([""] if self._whole else [])]:
                self._server.health.set(name, status)

    def start(self) -> None:
        if not self._checks:
            return
        self.check_once()
        self._thread = threading.Thread(target=self._run, name="readiness-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_once()


def random_secret() -> bytes:
    return secrets.token_bytes(32)
