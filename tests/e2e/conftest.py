"""A running embedded annocloud (every service + the REST gateway) and API keys for two organizations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from annocloud_server.common.auth import ADMIN, ANNOTATOR, REVIEWER
from annocloud_server.embedded import EmbeddedStack, start_embedded


@dataclass
class Org:
    admin: httpx.Client
    annotators: list[httpx.Client]
    reviewer: httpx.Client


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    running = start_embedded(data_dir=tmp_path / "data")
    yield running
    running.stop()


def _client(stack: EmbeddedStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def make_org(stack: EmbeddedStack, org: str, annotators: int = 3) -> Org:
    keys = stack.api_keys
    return Org(
        admin=_client(stack, keys.create_key(org, f"user:{org}-admin", [ADMIN])),
        annotators=[
            _client(stack, keys.create_key(org, f"user:{org}-ann{i}", [ANNOTATOR])) for i in range(annotators)
        ],
        reviewer=_client(stack, keys.create_key(org, f"user:{org}-rev", [REVIEWER])),
    )
