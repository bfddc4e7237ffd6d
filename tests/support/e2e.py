"""What the end-to-end tests share: the interface of a running stack in either mode, and orgs with keys.

(Not in ``tests/e2e/conftest.py``: several directories have a ``conftest`` module, and which one
``from conftest import ...`` finds depends on the order pytest loaded them in.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import httpx
from annocloud_server.common.auth import ADMIN, ANNOTATOR, REVIEWER
from annocloud_server.gateway.apikeys import ApiKeyStore


class Stack(Protocol):
    """What an end-to-end test may use, whichever way annocloud runs (EmbeddedStack, ClusterStack)."""

    @property
    def base_url(self) -> str: ...

    @property
    def api_keys(self) -> ApiKeyStore: ...

    @property
    def secret(self) -> bytes: ...

    def channel(self, service: str) -> grpc.Channel: ...

    def wait_idle(self, timeout: float = 60.0) -> None: ...

    def restart(self) -> None: ...


@dataclass
class Org:
    admin: httpx.Client
    annotators: list[httpx.Client]
    reviewer: httpx.Client


def _client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def make_org(stack: Stack, org: str, annotators: int = 3) -> Org:
    """An organization with an admin, ``annotators`` annotators and a reviewer, each a REST client with its key."""
    keys = stack.api_keys
    return Org(
        admin=_client(stack, keys.create_key(org, f"user:{org}-admin", [ADMIN])),
        annotators=[
            _client(stack, keys.create_key(org, f"user:{org}-ann{i}", [ANNOTATOR])) for i in range(annotators)
        ],
        reviewer=_client(stack, keys.create_key(org, f"user:{org}-rev", [REVIEWER])),
    )


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a response that must have ``status`` (the request and body in the failure)."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return response.json()


def last(name: str) -> str:
    """The last segment of a resource name (``projects/p/tasks/t`` -> ``t``)."""
    return name.rsplit("/", 1)[-1]


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    """Polls ``predicate`` until it returns something truthy (returned); fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
