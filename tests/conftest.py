"""Fixtures every test layer shares: principals, a started runtime of real services on port 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from annocloud.common.v1 import common_pb2
from annocloud_server.common.auth import ADMIN, ANNOTATOR, MANAGER, REVIEWER, Authenticator, make_principal
from annocloud_server.common.inprocess_bus import InProcessEventBus
from annocloud_server.runtime import ComponentFactory, Runtime, start_runtime

TEST_SECRET = b"test-secret-0123456789abcdef"


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator(TEST_SECRET)


class Caller:
    """Signed call metadata for a principal: ``stub.Method(req, metadata=caller.md)``."""

    def __init__(self, authenticator: Authenticator, org: str, subject: str, roles: Sequence[int]):
        self.principal = make_principal(org, subject, roles)
        self.md = authenticator.metadata_for(self.principal)


@pytest.fixture
def caller(authenticator: Authenticator) -> Callable[..., Caller]:
    """caller(org="acme", subject="user:alice", roles=(ADMIN,))"""

    def make(org: str = "acme", subject: str = "user:admin", roles: Sequence[int] = (ADMIN,)) -> Caller:
        return Caller(authenticator, org, subject, roles)

    return make


@pytest.fixture
def start_services(tmp_path: Path, authenticator: Authenticator) -> Iterator[Callable[..., Runtime]]:
    """start_services([create_component, ...], service_addresses={...}, triton_url="") -> Runtime on
    port 0, durable in-process bus."""
    runtimes: list[Runtime] = []

    def start(
        factories: Sequence[ComponentFactory],
        data_dir: Path | None = None,
        service_addresses: dict[str, str] | None = None,
        triton_url: str = "",
    ) -> Runtime:
        directory = data_dir or tmp_path / f"rt{len(runtimes)}"
        directory.mkdir(parents=True, exist_ok=True)
        bus = InProcessEventBus(str(directory / "events.db"))
        runtime = start_runtime(
            factories,
            data_dir=directory,
            bus=bus,
            authenticator=authenticator,
            service_addresses=service_addresses,
            triton_url=triton_url,
        )
        runtimes.append(runtime)
        return runtime

    yield start
    for runtime in runtimes:
        runtime.stop()


@pytest.fixture
def channel_to() -> Iterator[Callable[[Runtime], grpc.Channel]]:
    channels: list[grpc.Channel] = []

    def make(runtime: Runtime) -> grpc.Channel:
        channel = grpc.insecure_channel(runtime.address)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        channel.close()


ROLES = {"admin": ADMIN, "manager": MANAGER, "reviewer": REVIEWER, "annotator": ANNOTATOR}
__all__ = ["ROLES", "TEST_SECRET", "Caller", "common_pb2"]
