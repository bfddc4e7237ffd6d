"""``devstack.ClusterStack`` and ``annocloud stack|migrate``: the tools the e2e and chaos suites stand on.

Runs on the session's real PostgreSQL and Kafka broker (``support.infra``). Proves that one
process can be killed, stopped and started again (with extra environment for that launch only),
that ``wait_idle`` really waits for consumer lag, that the stack's view of the consumer groups
matches the components, and that the CLI brings a detached stack up and down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from annocloud_server.cli import main
from annocloud_server.common import migrations
from annocloud_server.common.auth import ADMIN, Authenticator
from annocloud_server.common.blobstore import LocalBlobStore
from annocloud_server.common.component import ComponentContext
from annocloud_server.common.db import sqlite_url
from annocloud_server.demo import render_scene
from annocloud_server.devstack import CONSUMER_TOPICS, PROCESSES, SERVICES, ClusterStack, detached_pids
from annocloud_server.process import component_factory
from support import infra


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterStack]:
    stack = infra.cluster_stack(request.config, tmp_path_factory.mktemp("stack"))
    stack.start()
    yield stack
    stack.stop()


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


def _serving_lines(status: str) -> int:
    return sum(1 for line in status.splitlines() if line.endswith(" serving") and "NOT" not in line)


def _admin(stack: ClusterStack) -> httpx.Client:
    key = stack.api_keys.create_key("acme", "user:admin", [ADMIN])
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_every_process_gets_its_address_database_schema_and_namespace(cluster: ClusterStack) -> None:
    """Each process's environment names its own address, schema, metrics port and the stack's namespace."""
    for name in PROCESSES:
        pid = cluster.pid(name)
        assert pid is not None
        env = _environ(pid)
        assert env["ANNOCLOUD_KAFKA_NAMESPACE"] == cluster.kafka_namespace != ""
        assert env["ANNOCLOUD_PRINCIPAL_SECRET"].encode() == cluster.secret
        if name != "gateway":
            assert env["ANNOCLOUD_METRICS_ADDRESS"] == cluster.metrics_addresses[name]
            assert env["ANNOCLOUD_GRPC_ADDRESS"] == cluster.addresses[name]
            assert env["ANNOCLOUD_DATABASE_URL"] == cluster.schema_url(name)
            assert env["ANNOCLOUD_DATABASE_URL"].endswith(f"?schema={name}")
    assert "annocloud_grpc_server_requests_total" in cluster.metrics_text("tasks")
    assert "# TYPE" in cluster.metrics_text("gateway")


def test_a_service_restarts_with_extra_env_for_one_launch_and_survives_a_kill(cluster: ClusterStack) -> None:
    """SIGTERM -> 0, a launch with extra env (seen in the process), SIGKILL -> -9, a next launch without it."""
    first_pid = cluster.pid("qa")
    assert cluster.restart_service("qa", {"ANNOCLOUD_TEST_MARK": "armed"}) == 0
    armed_pid = cluster.pid("qa")
    assert armed_pid is not None
    assert armed_pid != first_pid
    assert _environ(armed_pid)["ANNOCLOUD_TEST_MARK"] == "armed"
    assert cluster.kill_service("qa") == -9
    assert not cluster.is_running("qa")
    assert cluster.returncode("qa") == -9
    cluster.start_service("qa")
    plain_pid = cluster.pid("qa")
    assert plain_pid is not None
    assert "ANNOCLOUD_TEST_MARK" not in _environ(plain_pid)
    assert cluster.serving("qa")
    assert "devstack: launch 2 at" in cluster.log_path("qa").read_text()
    assert "ANNOCLOUD_TEST_MARK=armed" in cluster.log_path("qa").read_text()
    assert "devstack: launch 3 at" in cluster.log_path("qa").read_text()


def test_wait_idle_waits_for_a_stopped_consumer(cluster: ClusterStack) -> None:
    """Items ingested while tasks is down show up as its consumer lag; wait_idle times out, then passes."""
    admin = _admin(cluster)
    dataset = admin.post("/v1/datasets", json={"dataset": {"display_name": "lag"}}).json()
    cluster.wait_idle()
    assert cluster.stop_service("tasks") == 0
    for index in range(3):
        scene = render_scene(index, seed=11)
        response = admin.post(
            f"/v1/datasets/{dataset['name'].rsplit('/', 1)[-1]}/items:upload",
            files={"file": (scene.file_name, scene.png, "image/png")},
        )
        assert response.status_code == 200, response.text
    with pytest.raises(TimeoutError, match="consumer lag"):
        cluster.wait_idle(timeout=3)
    assert cluster.consumer_lag()["tasks"] >= 3
    cluster.start_service("tasks")
    cluster.wait_idle()
    assert cluster.consumer_lag() == dict.fromkeys(CONSUMER_TOPICS, 0)
    assert cluster.outbox_backlog() == dict.fromkeys(SERVICES, 0)


def test_the_consumer_groups_match_the_components(tmp_path: Path) -> None:
    """CONSUMER_TOPICS (what wait_idle checks) is exactly which services consume which topics."""
    found = {}
    unused = grpc.insecure_channel("127.0.0.1:9")  # never called: building a component opens no socket
    for service in SERVICES:
        ctx = ComponentContext(
            data_dir=tmp_path,
            database_url=sqlite_url(str(tmp_path / f"{service}.db")),
            authenticator=Authenticator(b"x" * 32),
            blob_store=LocalBlobStore(tmp_path / "blobs"),
            channel_to=lambda _name: unused,
        )
        component = component_factory(service)(ctx)
        if component.handlers:
            found[component.name] = tuple(component.topics)
        component.db.dispose()
    unused.close()
    assert found == CONSUMER_TOPICS


def test_migrate_command_brings_every_schema_to_head(request: pytest.FixtureRequest) -> None:
    """`annocloud migrate all` and `migrate <service>` reach the code's heads; a schema in an `all` URL is refused."""
    pg = infra.postgres(request.config)
    url = pg.fresh_database("cli")
    assert main(["migrate", "tasks", "--database-url", url]) == 0
    assert migrations.current("tasks", url) == ",".join(migrations.heads("tasks"))
    assert migrations.current("qa", url) is None
    assert main(["migrate", "all", "--database-url", url]) == 0
    for service in SERVICES:
        assert migrations.current(service, url) == ",".join(migrations.heads(service))
    assert main(["migrate", "all", "--database-url", url + "?schema=tasks"]) == 1


def test_stack_up_status_down_by_pidfiles(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """`annocloud stack up` leaves six processes serving (demo keys work), `status` says so, `down` stops them."""
    pg, kafka = infra.postgres(request.config), infra.kafka(request.config)
    stack_dir = tmp_path / "stack"
    token = uuid.uuid4().hex[:8]
    cli = [sys.executable, "-m", "annocloud_server.cli", "stack"]
    where = ["--stack-dir", str(stack_dir)]
    up = subprocess.run(
        [
            *cli,
            "up",
            *where,
            *("--infra-dir", str(pg.infra_dir), "--pg-port", str(pg.port)),
            *("--kafka-port", str(kafka.port), "--kafka-controller-port", str(kafka.controller_port)),
            *("--port", "0", "--grpc-base-port", "0", "--metrics-base-port", "0"),
            *("--database", f"cli_{token}", "--namespace", f"cli-{token}", "--no-triton"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("ANNOCLOUD_")},
        check=False,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "REST API + docs" in up.stdout
        state = json.loads((stack_dir / "stack.json").read_text())
        keys = json.loads((stack_dir / "data" / "demo_keys.json").read_text())
        assert keys["user:admin"] in up.stdout
        projects = httpx.get(
            f"{state['base_url']}/v1/projects", headers={"Authorization": f"Bearer {keys['user:admin']}"}
        )
        assert projects.status_code == 200
        assert len(projects.json()["projects"]) == 2
        assert set(detached_pids(stack_dir)) == set(PROCESSES)
        status = subprocess.run([*cli, "status", *where], capture_output=True, text=True, check=False)
        assert status.returncode == 0, status.stdout
        assert _serving_lines(status.stdout) == len(PROCESSES), status.stdout
    finally:
        down = subprocess.run(
            [*cli, "down", *where], capture_output=True, text=True, timeout=120, check=False
        )
    assert down.returncode == 0, down.stderr
    assert down.stdout.count(" stopped") == len(PROCESSES), down.stdout
    assert detached_pids(stack_dir) == {}
    after = subprocess.run([*cli, "status", *where], capture_output=True, text=True, check=False)
    assert after.returncode == 3
    with psycopg.connect(pg.libpq(f"cli_{token}")) as conn:
        schemas = {row[0] for row in conn.execute("SELECT schema_name FROM information_schema.schemata")}
    assert set(SERVICES) <= schemas
