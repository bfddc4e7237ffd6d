"""What a service hands to whoever runs it (the embedded server or a one-service process).

Each service package has ``create_component(ctx) -> Component``: its gRPC registrations, its
database (with outbox and inbox tables), the event handlers it consumes, and background loops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
from sqlalchemy import Table

from annocloud_server.common.auth import Authenticator
from annocloud_server.common.blobstore import BlobStore
from annocloud_server.common.db import Database
from annocloud_server.common.events import Handler
from annocloud_server.common.server import ServiceRegistration


class Background(Protocol):
    """A loop a service runs beside its RPCs (lease expiry, export jobs)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class ComponentContext:
    """Everything a service needs from its environment."""

    data_dir: Path
    database_url: str
    authenticator: Authenticator
    blob_store: BlobStore
    channel_to: Callable[[str], grpc.Channel]
    """A channel to another service by short name ("tasks", ...)."""
    on_outbox_commit: Callable[[], None] = lambda: None
    """Called after a transaction that wrote outbox rows commits (wakes the relay)."""
    triton_url: str = ""
    """gRPC address (host:port) of the Triton server; empty = none (model features off)."""


@dataclass
class Component:
    """A running service's parts."""

    name: str
    db: Database
    outbox: Table
    inbox: Table
    registrations: list[ServiceRegistration]
    topics: list[str] = field(default_factory=list)
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    background: list[Background] = field(default_factory=list)
    readiness: Callable[[], bool] | None = None
    """Whether the service can do its work right now (e.g. its Triton server is ready); polled,
    and reported as the gRPC health of its services. None: ready while running."""
