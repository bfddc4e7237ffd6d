"""A real PostgreSQL for the cluster tests: the process-wide server of ``support.infra``.

One server per pytest process (started on first use by ``scripts/infra/postgres.sh``, stopped when
pytest ends), in a temporary directory, on ``ANNOCLOUD_TEST_PG_PORT`` (default 25432; the next free
port when that one is taken). Each test module takes its own database from
:meth:`PgServer.fresh_database`. When the server cannot start the test FAILS with the script's
output: there is no fallback. The e2e suite's cluster mode shares the same server.

Test files use it as::

    import pg_support

    @pytest.fixture(scope="module")
    def pg(request: pytest.FixtureRequest) -> pg_support.PgServer:
        return pg_support.server(request.config)
"""

from __future__ import annotations

from annocloud_server.common.db import with_schema
from support.infra import PgServer
from support.infra import postgres as server

__all__ = ["PgServer", "server", "service_url"]


def service_url(database_url: str, service: str) -> str:
    return with_schema(database_url, service)
