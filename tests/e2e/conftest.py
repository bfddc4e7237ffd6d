"""The running annocloud every end-to-end test gets, in both ways to run it.

``stack`` is parametrized: ``embedded`` (every service and the gateway in this process, SQLite, the
in-process bus) and ``cluster`` (five service processes and the gateway process on a real Kafka
broker and a real PostgreSQL; the servers are shared by the session, each test gets its own
database and Kafka namespace). Tests use only the interface both share (``support.e2e.Stack``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from annocloud_server.embedded import start_embedded
from support import infra
from support.e2e import Stack


@pytest.fixture(params=["embedded", "cluster"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    if request.param == "embedded":
        embedded = start_embedded(data_dir=tmp_path / "data")
        yield embedded
        embedded.stop()
        return
    cluster = infra.cluster_stack(request.config, tmp_path / "stack")
    cluster.start()
    try:
        yield cluster
    finally:
        codes = cluster.stop()
        unclean = {name: code for name, code in codes.items() if code != 0}
        assert not unclean, f"processes did not exit 0 on SIGTERM: {unclean}\n" + "\n".join(
            cluster.log_tail(name, 1500) for name in unclean
        )
