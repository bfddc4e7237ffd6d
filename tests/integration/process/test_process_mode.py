"""One process per service on the SQLite event log: every service in its own process + the gateway process.

The cluster mode (``devstack.ClusterStack``: Kafka + PostgreSQL, the e2e suite's ``[cluster]``
tests) covers processes on the real infrastructure; this test is the only one of
``ANNOCLOUD_BUS=log`` with a SQLite file per service, the one-host variant without a broker. It
proves that services cooperate only through their gRPC addresses and that shared log, and that
SIGTERM shuts each one down cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from annocloud_server.common.auth import ADMIN, ANNOTATOR
from annocloud_server.common.service_names import SERVICES
from annocloud_server.demo import render_scene, street_schema
from annocloud_server.devstack import free_port, health_status, http_ok
from annocloud_server.gateway.apikeys import ApiKeyStore


def wait_serving(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while health_status(address) != "SERVING":
        assert time.monotonic() < deadline, f"service at {address} did not become SERVING"
        time.sleep(0.2)


class Topology:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.addresses = {name: f"127.0.0.1:{free_port()}" for name in SERVICES}
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "ANNOCLOUD_DATA_DIR": str(data_dir),
            "ANNOCLOUD_BUS": "log",
            "ANNOCLOUD_EVENT_LOG_PATH": str(data_dir / "events.db"),
            "ANNOCLOUD_PRINCIPAL_SECRET": "process-mode-test-secret-0123456789abcdef",
            "ANNOCLOUD_SERVICE_ADDRESSES": ",".join(f"{k}={v}" for k, v in self.addresses.items()),
            "ANNOCLOUD_HTTP_PORT": str(self.http_port),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        env = dict(self.env)
        if name in self.addresses:
            env["ANNOCLOUD_GRPC_ADDRESS"] = self.addresses[name]
        log = (self.data_dir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "annocloud_server.cli", "run", name],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, name: str) -> str:
        return (self.data_dir / f"{name}.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    topo = Topology(tmp_path)
    for name in SERVICES:
        topo.start(name)
    try:
        for name in SERVICES:
            wait_serving(topo.addresses[name])
        yield topo
    finally:
        for process in topo.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_every_service_process_and_gateway_label_and_export(topology: Topology) -> None:
    """Separate processes per service: upload, label, QA accepts, export; SIGTERM exits each with 0."""
    keys = ApiKeyStore(topology.data_dir / "api_keys.json")
    admin_key = keys.create_key("acme", "user:admin", [ADMIN])
    worker_key = keys.create_key("acme", "user:w1", [ANNOTATOR])
    topology.start("gateway")
    base = f"http://127.0.0.1:{topology.http_port}"
    deadline = time.monotonic() + 60
    while not http_ok(f"{base}/readyz"):
        assert time.monotonic() < deadline, topology.log_tail("gateway")
        time.sleep(0.2)
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)
    worker = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {worker_key}"}, timeout=30)

    dataset = admin.post("/v1/datasets", json={"display_name": "procs"}).json()
    scenes = {}
    for index in range(4):
        scene = render_scene(index, seed=3)
        body = admin.post(
            f"/v1/datasets/{dataset['name'].split('/')[-1]}/items:upload",
            files={"file": (scene.file_name, scene.png, "image/png")},
        ).json()
        scenes[body["item"]["name"]] = scene
    project = admin.post(
        "/v1/projects",
        json={
            "project": {"display_name": "p", "redundancy": 1, "datasets": [dataset["name"]]},
            "schema": street_schema(),
        },
    ).json()
    project_id = project["name"].split("/")[-1]
    while int(admin.get(f"/v1/projects/{project_id}").json()["task_counts"]["queued"]) < 4:
        assert time.monotonic() < deadline + 60, topology.log_tail("tasks")
        time.sleep(0.2)
    for _ in range(4):
        task = worker.post(f"/v1/projects/{project_id}/tasks:leaseNext", json={}).json()
        scene = scenes[task["item"]]
        labels = {
            "classes": [scene.time_of_day],
            "regions": [
                {"label": b.label, "box": {"x": b.x, "y": b.y, "width": b.width, "height": b.height}}
                for b in scene.boxes
            ],
        }
        response = worker.post(
            f"/v1/projects/{project_id}/tasks/{task['name'].split('/')[-1]}:submit",
            json={"lease_id": task["lease"]["lease_id"], "labels": labels},
        )
        assert response.status_code == 200, response.text
    while int(admin.get(f"/v1/projects/{project_id}/quality").json().get("accepted_items", 0)) < 4:
        assert time.monotonic() < deadline + 120, topology.log_tail("qa")
        time.sleep(0.2)
    # The export process receives ItemAccepted through the log a moment later: an export snapshots
    # what it has, so export again until it holds all four.
    while True:
        export = admin.post(f"/v1/projects/{project_id}/exports", json={"format": "JSONL"}).json()
        while (
            state := admin.get(f"/v1/projects/{project_id}/exports/{export['name'].split('/')[-1]}").json()
        )["state"] != "EXPORT_STATE_DONE":
            assert state["state"] != "EXPORT_STATE_FAILED", state
            assert time.monotonic() < deadline + 180, topology.log_tail("export")
            time.sleep(0.2)
        if int(state["item_count"]) == 4:
            break
        assert int(state["item_count"]) < 4, state
        assert time.monotonic() < deadline + 180, topology.log_tail("export")
        time.sleep(0.5)

    for process in topology.processes.values():
        process.send_signal(signal.SIGTERM)
    for name, process in topology.processes.items():
        assert process.wait(30) == 0, f"{name} exited with {process.returncode}: {topology.log_tail(name)}"
