"""The stack's processes seen from outside: health checks, and the pidfiles of a detached stack
(``annocloud stack down`` / ``status`` run in another Python process than ``stack up``)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from annocloud_server.common.server import make_channel
from annocloud_server.process import SERVICE_NAMES

SERVICES = SERVICE_NAMES
GATEWAY = "gateway"
PROCESSES = (*SERVICES, GATEWAY)


def check_name(name: str, allowed: tuple[str, ...]) -> str:
    if name not in allowed:
        raise ValueError(f"unknown process {name!r}: one of {', '.join(allowed)}")
    return name


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaping it when it is our child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _is_our_process(pid: int, name: str) -> bool:
    """The pid runs ``annocloud_server.cli run <name>`` (not a recycled pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return b"annocloud_server.cli" in argv and argv[-3:-1] == [b"run", name.encode()]


def health_status(address: str, timeout: float = 1.0) -> str:
    """The gRPC health status (``SERVING``…) of the server at ``address``, or ``UNREACHABLE``."""
    with make_channel(address) as channel:
        try:
            status = (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), timeout=timeout)
                .status
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def read_state(stack_dir: Path) -> dict[str, Any] | None:
    """The ``stack.json`` of a stack started in ``stack_dir``, or None."""
    path = Path(stack_dir) / "stack.json"
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def detached_pids(stack_dir: Path) -> dict[str, int]:
    """Process name -> pid, from the pidfiles, for the processes that still run."""
    found: dict[str, int] = {}
    for name in PROCESSES:
        path = Path(stack_dir) / "pids" / f"{name}.pid"
        try:
            pid = int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            continue
        if _pid_alive(pid) and _is_our_process(pid, name):
            found[name] = pid
    return found


def stop_detached(stack_dir: Path, timeout: float = 30.0) -> dict[str, str]:
    """SIGTERM to the processes of the pidfiles, SIGKILL after ``timeout``; name -> what happened."""
    pids = detached_pids(stack_dir)
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    outcome: dict[str, str] = {}
    for name, pid in pids.items():
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            outcome[name] = f"pid {pid} killed (no exit after SIGTERM in {timeout:.0f}s)"
        else:
            outcome[name] = f"pid {pid} stopped"
    for name in PROCESSES:
        (Path(stack_dir) / "pids" / f"{name}.pid").unlink(missing_ok=True)
    return outcome
