"""Chaos suite: annotations flow through the real cluster (six service processes, Kafka, PostgreSQL)
while processes are SIGKILLed at the worst moments, the broker and the database restart, and old
offsets are replayed. Every fault must end with lost = 0 and duplicate effects = 0.

Each fault runs its own project of ``ANNOCLOUD_CHAOS_ANNOTATIONS`` (default 1,000) uniquely
identified annotations on one shared stack, so the whole run pushes at least 6,000 through it. The
fault fires about a third of the way into the workload. The table printed at the end is what CI
shows; ``.cache/chaos/report.json`` keeps it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from annocloud_server.devstack import ClusterStack
from audit import HEADER, DuplicateWatcher, FaultReport, audit, wait_until
from kafka import KafkaAdminClient  # type: ignore[import-untyped]
from kafka.admin import OffsetSpec  # type: ignore[import-untyped]
from workload import Workload, WorkloadResult

ANNOTATIONS = int(os.environ.get("ANNOCLOUD_CHAOS_ANNOTATIONS", "1000"))
ARMED_FAULT_GRACE = 240.0  # seconds an armed fault point may still take to fire after the workload
REPORT = Path(__file__).resolve().parents[2] / ".cache" / "chaos" / "report.json"
REPORTS: list[FaultReport] = []


class Fault:
    """Something done to the cluster once, when the workload is ``at`` of the way through."""

    def __init__(self, name: str, *, at: float = 0.33):
        self.name = name
        self.at = at
        self.time: datetime | None = None
        self.fired = threading.Event()
        self.error: BaseException | None = None

    def prepare(self, stack: ClusterStack) -> None:
        """Before the workload starts (e.g. arm a fault point in a process)."""

    def inject(self, stack: ClusterStack) -> None:
        """At ``at`` of the workload (runs on its own thread; the workers keep going)."""

    def finish(self, stack: ClusterStack) -> None:
        """After the workload: undo what is left (e.g. restart a process that is still down)."""


class ArmedKill(Fault):
    """A fault point armed in one service: the process SIGKILLs itself there; it is restarted like a pod."""

    def __init__(self, name: str, service: str, spec: str):
        super().__init__(name)
        self.service = service
        self.spec = spec
        self._watch: threading.Thread | None = None
        self._done = threading.Event()

    def prepare(self, stack: ClusterStack) -> None:
        stack.restart_service(self.service, extra_env={"ANNOCLOUD_FAULTS": self.spec})
        self._watch = threading.Thread(target=self._supervise, args=(stack,), daemon=True)
        self._watch.start()

    def _supervise(self, stack: ClusterStack) -> None:
        while not self._done.is_set():
            if not stack.is_running(self.service):
                self.time = datetime.now(UTC)
                code = stack.returncode(self.service)
                if code != -9:
                    self.error = AssertionError(f"{self.service} exited with {code}, not by SIGKILL")
                stack.start_service(self.service)  # what Kubernetes does: the same pod, no fault armed
                self.fired.set()
                return
            time.sleep(0.05)

    def finish(self, stack: ClusterStack) -> None:
        # A consumer's point counts events *applied*; a lagging consumer reaches it after the
        # clients are done, while it works off the backlog: give it that time before disarming.
        self.fired.wait(ARMED_FAULT_GRACE)
        self._done.set()
        if self._watch is not None:
            self._watch.join(60)
        if not self.fired.is_set():  # disarm, so the next fault does not inherit it
            stack.restart_service(self.service)
            self.error = AssertionError(f"{self.spec} never fired during the workload")
            self.fired.set()


class InfraRestart(Fault):
    def __init__(self, name: str, restart: Callable[[ClusterStack], None]):
        super().__init__(name)
        self._restart = restart

    def inject(self, stack: ClusterStack) -> None:
        self.time = datetime.now(UTC)
        self._restart(stack)
        self.fired.set()


class ReplayOffsets(Fault):
    """qa stops, its consumer group is rewound to the beginning of every partition, qa starts again."""

    def inject(self, stack: ClusterStack) -> None:
        self.time = datetime.now(UTC)
        assert stack.stop_service("qa") == 0
        rewind_group(stack.kafka_bootstrap, stack.kafka_group("qa"))
        stack.start_service("qa")
        self.fired.set()


def rewind_group(bootstrap: str, group: str) -> None:
    """Resets every partition the (idle) group has committed offsets for to its earliest offset."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        committed = admin.list_group_offsets({group: None}).get(group) or {}
        assert committed, f"consumer group {group} has no committed offsets to rewind"
        admin.reset_group_offsets(group, dict.fromkeys(committed, OffsetSpec.EARLIEST))
        after = admin.list_group_offsets({group: None}).get(group) or {}
        assert sum(int(m.offset) for m in after.values()) < sum(int(m.offset) for m in committed.values())
    finally:
        admin.close()


def run_fault(stack: ClusterStack, fault: Fault, *, organization: str) -> FaultReport:
    workload = Workload(stack.channel, stack.secret, organization=organization)
    result: WorkloadResult = workload.prepare(fault.name, ANNOTATIONS)
    stack.wait_idle(timeout=120)
    fault.prepare(stack)
    trigger = int(ANNOTATIONS * fault.at)
    injector: list[threading.Thread] = []

    def on_progress(done: int) -> None:
        if done >= trigger and not injector:
            thread = threading.Thread(target=_inject, args=(stack, fault), daemon=True)
            injector.append(thread)
            thread.start()

    with DuplicateWatcher(lambda: stack.metrics_text("qa"), lambda: stack.pid("qa")) as duplicates:
        workload.run(result, on_progress=on_progress)
        for thread in injector:
            thread.join(300)
        fault.finish(stack)
        wait_until(fault.fired.is_set, 120, f"fault {fault.name} to fire")
        if fault.error is not None:
            raise fault.error
        stack.wait_idle(timeout=300)
    report = audit(
        stack.database_url,
        fault=fault.name,
        result=result,
        organization=organization,
        fault_time=fault.time,
        duplicate_deliveries_seen=duplicates.seen,
    )
    REPORTS.append(report)
    print(f"\n{HEADER}\n{report.row()}", flush=True)
    return report


def _inject(stack: ClusterStack, fault: Fault) -> None:
    try:
        fault.inject(stack)
    except BaseException as exc:
        fault.error = exc
        fault.fired.set()


FAULTS: dict[str, Callable[[], Fault]] = {
    "consumer-killed-before-db-commit": lambda: ArmedKill(
        "(a1) qa consumer SIGKILL before db commit",
        "qa",
        f"consumer.before_db_commit@qa={max(5, ANNOTATIONS // 3)}",
    ),
    "consumer-killed-between-db-and-offset-commit": lambda: ArmedKill(
        "(a2) qa consumer SIGKILL after db, before offset",
        "qa",
        # Once per applied batch; a lagging consumer takes 100 events a batch, so keep it small.
        f"consumer.after_db_commit@qa={max(3, ANNOTATIONS // 200)}",
    ),
    "relay-killed-after-ack-before-mark": lambda: ArmedKill(
        "(b) annotations relay SIGKILL after ack",
        "annotations",
        f"relay.after_ack@annotations={max(3, ANNOTATIONS // 100)}",
    ),
    "kafka-broker-restart": lambda: InfraRestart("(c) Kafka broker restart", lambda s: s.restart_kafka()),
    "postgresql-restart": lambda: InfraRestart("(d) PostgreSQL restart", lambda s: s.restart_postgres()),
    "old-offsets-replayed": lambda: ReplayOffsets("(e) qa offsets rewound to the beginning"),
}


@pytest.mark.parametrize("fault_id", list(FAULTS))
def test_fault_loses_nothing_and_doubles_nothing(chaos_stack: ClusterStack, fault_id: str) -> None:
    """Under this fault every acknowledged annotation is applied once and its accepted item reaches export once."""
    fault = FAULTS[fault_id]()
    report = run_fault(chaos_stack, fault, organization=f"chaos-{fault_id}")
    assert report.produced == ANNOTATIONS, report
    assert report.acknowledged == report.produced, report
    assert report.lost == 0, report
    assert report.duplicate_effects == 0, report
    assert report.applied == report.produced, report
    if fault_id == "old-offsets-replayed":
        assert report.duplicate_deliveries_seen > 0, "a replay must redeliver events that the inbox skips"


def test_zz_summary_table(chaos_stack: ClusterStack) -> None:
    """Prints the per-fault table of the whole run (and saves it); every fault reported lost 0 and duplicates 0."""
    assert len(REPORTS) == len(FAULTS), f"only {len(REPORTS)} of {len(FAULTS)} faults ran"
    total = sum(r.produced for r in REPORTS)
    lines = [
        "",
        f"chaos summary: {total} uniquely identified annotations through the cluster, {len(REPORTS)} faults",
        HEADER,
        *(r.row() for r in REPORTS),
    ]
    print("\n".join(lines), flush=True)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps([r.as_dict() for r in REPORTS], indent=2))
    assert total >= 5000
    assert all(r.lost == 0 and r.duplicate_effects == 0 for r in REPORTS)
