"""One cluster for the whole chaos run: five service processes + the gateway on the session's real
PostgreSQL and Kafka broker (``support.infra``), with its own database and Kafka namespace.

The chaos suite restarts that broker and that database, so it runs in its own pytest process
(``make test-chaos``), never beside other suites.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from annocloud_server.devstack import ClusterStack
from support import infra


@pytest.fixture(scope="module")
def chaos_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterStack]:
    stack = infra.cluster_stack(request.config, Path(tmp_path_factory.mktemp("chaos")) / "stack")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
