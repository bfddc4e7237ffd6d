"""A real PostgreSQL for the cluster tests, started by ``scripts/infra/postgres.sh``.

One server per pytest process (started on first use, stopped when pytest ends), in a temporary
directory, on ``ANNOCLOUD_TEST_PG_PORT`` (default 25432; the next free port when that one is
taken). Each test module takes its own database from :meth:`PgServer.fresh_database`. When the
server cannot start the test FAILS with the script's output: there is no fallback.

Test files use it as::

    import pg_support

    @pytest.fixture(scope="module")
    def pg(request: pytest.FixtureRequest) -> pg_support.PgServer:
        return pg_support.server(request.config)
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from annocloud_server.common.db import with_schema

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "infra" / "postgres.sh"
DEFAULT_PORT = 25432
PORT_ENV = "ANNOCLOUD_TEST_PG_PORT"


@dataclass
class PgServer:
    port: int
    infra_dir: Path
    url: str
    """SQLAlchemy URL of the ``annocloud`` database (no schema)."""
    start_seconds: float

    def _env(self) -> dict[str, str]:
        return {**os.environ, "ANNOCLOUD_INFRA_DIR": str(self.infra_dir), "ANNOCLOUD_PG_PORT": str(self.port)}

    def script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs ``postgres.sh`` against this server (e.g. ``stop``, ``start``, ``status``)."""
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env=self._env(), capture_output=True, text=True, timeout=120
        )
        if check and done.returncode != 0:
            raise AssertionError(f"postgres.sh {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def libpq(self, database: str = "annocloud") -> str:
        return f"host=127.0.0.1 port={self.port} user=annocloud dbname={database}"

    def fresh_database(self, prefix: str = "t") -> str:
        """Creates an empty database and returns its SQLAlchemy URL (no schema)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.libpq(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://annocloud@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.script("stop", check=False)
        shutil.rmtree(self.infra_dir, ignore_errors=True)


def service_url(database_url: str, service: str) -> str:
    return with_schema(database_url, service)


_lock = threading.Lock()
_server: PgServer | None = None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _start() -> PgServer:
    raw = os.environ.get(PORT_ENV, str(DEFAULT_PORT))
    if not raw.isdigit() or not 1024 <= int(raw) <= 65000:
        pytest.fail(f"{PORT_ENV}={raw!r} is not a TCP port in 1024..65000", pytrace=False)
    first = int(raw)
    candidates = [p for p in range(first, first + 50) if _port_free(p)][:3]
    if not candidates:
        pytest.fail(f"no free TCP port in {first}..{first + 49} on 127.0.0.1 for the test PostgreSQL")
    # A directory the postgres OS user can traverse (pytest's tmp dirs are 0700 root).
    infra_dir = Path(tempfile.mkdtemp(prefix="annocloud-pg-"))
    infra_dir.chmod(0o755)
    errors: list[str] = []
    for port in candidates:
        server = PgServer(port=port, infra_dir=infra_dir, url="", start_seconds=0.0)
        began = time.monotonic()
        done = server.script("start", check=False)
        if done.returncode == 0:
            server.url = done.stdout.strip().splitlines()[-1]
            server.start_seconds = time.monotonic() - began
            return server
        errors.append(f"port {port}: exit {done.returncode}\n{done.stderr.strip()}")
        server.script("stop", check=False)
    shutil.rmtree(infra_dir, ignore_errors=True)
    pytest.fail(
        "the test PostgreSQL did not start (scripts/infra/postgres.sh start; is it installed? "
        "run `scripts/infra/postgres.sh install`):\n" + "\n".join(errors),
        pytrace=False,
    )


def _stop() -> None:
    global _server
    with _lock:
        if _server is not None:
            _server.stop()
            _server = None


def server(config: pytest.Config | None = None) -> PgServer:
    """The process's test PostgreSQL, started on first use and stopped when pytest ends."""
    global _server
    with _lock:
        if _server is None:
            _server = _start()
            if config is not None:
                config.add_cleanup(_stop)
            atexit.register(_stop)
        return _server
