"""What the end-to-end tests share: the interface of a running stack in either mode, and orgs with keys.

(Not in ``tests/e2e/conftest.py``: several directories have a ``conftest`` module, and which one
``from conftest import ...`` finds depends on the order pytest loaded them in.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
