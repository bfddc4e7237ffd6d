"""The cluster topology on one machine: six service processes and the gateway on real Kafka and
PostgreSQL (and Triton), all on 127.0.0.1. ``annocloud stack up`` and the cluster-mode tests use it.

A :class:`ClusterStack` owns one PostgreSQL database (one schema per service, migrated with
Alembic), one Kafka namespace (a prefix on every topic and consumer group, so stacks can share a
broker), a data directory for blobs and API keys, and six ``annocloud run <name>`` subprocesses
with a log file each. The infrastructure servers are started (or reused when already running)
through ``scripts/infra/*.sh``; :class:`PostgresServer`, :class:`KafkaBroker` and
:class:`TritonServer` wrap those scripts and can be shared by several stacks::

    with ClusterStack(tmp / "stack", triton=False) as stack:
        stack.api_keys.create_key("acme", "user:admin", ["admin"])
        httpx.get(stack.base_url + "/v1/projects", ...)
        stack.kill_service("qa")                     # SIGKILL
        stack.start_service("qa", {"ANNOCLOUD_FAULTS": "consumer.before_db_commit@qa=300"})
        stack.wait_idle()                            # outboxes empty, consumer lag 0
"""

from annocloud_server.devstack.infra import (
    DEFAULT_INFRA_DIR,
    REPO_ROOT,
    InfraServer,
    KafkaBroker,
    PostgresServer,
    StackError,
    TritonServer,
    free_port,
    free_ports,
    tail,
)
from annocloud_server.devstack.procs import (
    GATEWAY,
    PROCESSES,
    SERVICES,
    detached_pids,
    health_status,
    http_ok,
    read_state,
    stop_detached,
)
from annocloud_server.devstack.stack import CONSUMER_TOPICS, DEFAULT_STACK_DIR, ClusterStack

__all__ = [
    "CONSUMER_TOPICS",
    "DEFAULT_INFRA_DIR",
    "DEFAULT_STACK_DIR",
    "GATEWAY",
    "PROCESSES",
    "REPO_ROOT",
    "SERVICES",
    "ClusterStack",
    "InfraServer",
    "KafkaBroker",
    "PostgresServer",
    "StackError",
    "TritonServer",
    "detached_pids",
    "free_port",
    "free_ports",
    "health_status",
    "http_ok",
    "read_state",
    "stop_detached",
    "tail",
]
