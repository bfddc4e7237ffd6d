"""A real NVIDIA Triton Inference Server for the cluster tests, started by ``scripts/infra/triton.sh``.

One server per pytest process (started on first use, stopped when pytest ends), serving
``gpu-inference/model_repository`` from the ``tritonserver`` binary of the nvidia-pytriton wheel, in a
temporary infra directory, on three free ports of 127.0.0.1 (``ANNOCLOUD_TEST_TRITON_GRPC_PORT``,
``…_HTTP_PORT``, ``…_METRICS_PORT`` pin them). The first start may run ``triton.sh install`` (a
separate venv in ``.cache/triton``, about 20 s cold). When the server cannot start the test FAILS
with the script's output and the server's log tail: there is no fallback, nothing is skipped.

``ANNOCLOUD_TEST_TRITON_GRPC`` (``host:port``) uses an already running server instead (with
``ANNOCLOUD_TEST_TRITON_HTTP`` for its HTTP endpoint); nothing is started or stopped then.

Test files use it as::

    from support import triton_server as triton_support

    @pytest.fixture(scope="module")
    def triton(request: pytest.FixtureRequest) -> triton_support.TritonServer:
        return triton_support.server(request.config)
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from annocloud_server.devstack import free_ports

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "infra" / "triton.sh"
START_TIMEOUT_S = 900  # a cold `install` included
PORT_ENVS = (
    "ANNOCLOUD_TEST_TRITON_GRPC_PORT",
    "ANNOCLOUD_TEST_TRITON_HTTP_PORT",
    "ANNOCLOUD_TEST_TRITON_METRICS_PORT",
)


@dataclass
class TritonServer:
    grpc_port: int
    http_port: int
    metrics_port: int
    infra_dir: Path | None
    """None for an external server (``ANNOCLOUD_TEST_TRITON_GRPC``): the script is not used then."""
    grpc_host: str = "127.0.0.1"
    start_seconds: float = 0.0
    started_here: bool = True
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the KServe v2 gRPC endpoint (what ``TritonClient`` takes)."""
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.grpc_host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.grpc_host}:{self.metrics_port}/metrics"

    @property
    def log_file(self) -> Path | None:
        return None if self.infra_dir is None else self.infra_dir / f"triton-{self.grpc_port}" / "triton.log"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self._env,
            "ANNOCLOUD_TRITON_GRPC_PORT": str(self.grpc_port),
            "ANNOCLOUD_TRITON_HTTP_PORT": str(self.http_port),
            "ANNOCLOUD_TRITON_METRICS_PORT": str(self.metrics_port),
            **({"ANNOCLOUD_INFRA_DIR": str(self.infra_dir)} if self.infra_dir is not None else {}),
        }

    def script(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``triton.sh`` against this server (e.g. ``status``, ``logs``, ``restart``)."""
        if not self.started_here:
            raise AssertionError("an external Triton (ANNOCLOUD_TEST_TRITON_GRPC) is not driven by triton.sh")
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"triton.sh {' '.join(args)} failed ({done.returncode}):\n{done.stderr}\n{self.log_tail()}"
            )
        return done

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server's log, for assertion messages."""
        log = self.log_file
        if log is None or not log.exists():
            return "(no server log)"
        text = log.read_text(errors="replace").splitlines()[-lines:]
        return f"----- last {len(text)} lines of {log} -----\n" + "\n".join(text)

    def stop(self) -> None:
        if not self.started_here:
            return
        self.script("stop", check=False, timeout=120)
        if self.infra_dir is not None:
            shutil.rmtree(self.infra_dir, ignore_errors=True)


def _ports() -> list[int]:
    raw = [os.environ.get(name, "") for name in PORT_ENVS]
    if not any(raw):
        return free_ports(3)
    if not all(value.isdigit() and 1024 <= int(value) <= 65535 for value in raw):
        pytest.fail(
            f"set all of {', '.join(PORT_ENVS)} to TCP ports in 1024..65535 (got {raw})", pytrace=False
        )
    return [int(value) for value in raw]


def _start() -> TritonServer:
    external = os.environ.get("ANNOCLOUD_TEST_TRITON_GRPC")
    if external:
        host, _, port = external.rpartition(":")
        http = os.environ.get("ANNOCLOUD_TEST_TRITON_HTTP", "")
        http_port = int(http.rpartition(":")[2]) if http else 0
        return TritonServer(
            grpc_port=int(port),
            http_port=http_port,
            metrics_port=0,
            infra_dir=None,
            grpc_host=host or "127.0.0.1",
            started_here=False,
        )
    grpc_port, http_port, metrics_port = _ports()
    infra_dir = Path(tempfile.mkdtemp(prefix="annocloud-triton-"))
    server = TritonServer(
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        infra_dir=infra_dir,
        _env={"ANNOCLOUD_TRITON_START_TIMEOUT": os.environ.get("ANNOCLOUD_TRITON_START_TIMEOUT", "240")},
    )
    began = time.monotonic()
    try:
        done = server.script("start", check=False, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        tail = server.log_tail()
        server.stop()
        pytest.fail(f"scripts/infra/triton.sh start hung for {exc.timeout}s\n{tail}", pytrace=False)
    if done.returncode != 0:
        tail = server.log_tail()
        server.stop()
        pytest.fail(
            f"the real Triton server did not start (scripts/infra/triton.sh start exited {done.returncode}; "
            f"ports {grpc_port}/{http_port}/{metrics_port}):\n{done.stderr.strip()}\n{done.stdout.strip()}\n{tail}",
            pytrace=False,
        )
    address = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if address != server.grpc_url:
        tail = server.log_tail()
        server.stop()
        pytest.fail(
            f"triton.sh start printed {address!r}, expected {server.grpc_url!r}\n{tail}", pytrace=False
        )
    server.start_seconds = time.monotonic() - began
    return server


_lock = threading.Lock()
_server: TritonServer | None = None


def _stop() -> None:
    global _server
    with _lock:
        if _server is not None:
            _server.stop()
            _server = None


def server(config: pytest.Config | None = None) -> TritonServer:
    """The process's test Triton, started on first use and stopped when pytest ends."""
    global _server
    with _lock:
        if _server is None:
            _server = _start()
            if config is not None:
                config.add_cleanup(_stop)
            atexit.register(_stop)
        return _server
