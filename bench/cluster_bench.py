"""Cluster mode next to the embedded default (issue #3): relay throughput and submit→QA latency.

1. Events per second through the outbox relay: N AnnotationSubmitted-sized envelopes written to an
   outbox (PostgreSQL + real Kafka broker, and SQLite + the in-process log), then one
   ``OutboxRelay`` publishes until the backlog is empty; publish = acknowledged by the bus, rows
   marked published.
2. End-to-end latency from ``SubmitAnnotation``'s acknowledgement to the QA decision (qa's inbox
   ``applied_time`` of the AnnotationSubmitted event; with redundancy 1 the vote and the acceptance
   commit in that transaction): the chaos workload (8 annotator threads over gRPC) on a
   ``ClusterStack`` (five service processes + gateway, Kafka, PostgreSQL) and on ``start_embedded``.

Run: ``make bench-cluster`` (= ``.venv/bin/python bench/cluster_bench.py``); ``--quick`` for small
sizes without touching README.md. Infra comes from ``scripts/infra`` (started if not running).
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from annocloud.annotations.v1 import annotations_pb2
from annocloud.events.v1 import events_pb2
from annocloud_server.common.db import Database, sqlite_url, with_schema
from annocloud_server.common.events import EventBus, EventWriter, OutboxRelay, outbox_table
from sqlalchemy import MetaData

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "chaos"))

from readme_section import write_section  # noqa: E402
from workload import Workload, WorkloadResult  # noqa: E402

BEGIN, END = "<!-- cluster-bench:begin -->", "<!-- cluster-bench:end -->"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- 1. relay ------------------------------------------------------------------------------------


def fill_outbox(db: Database, writer: EventWriter, count: int) -> None:
    payload = events_pb2.AnnotationSubmitted(
        annotation=annotations_pb2.Annotation(
            name="projects/p/annotations/a",
            task="projects/p/tasks/t",
            item="datasets/d/items/i",
            annotator="user:bench",
            labels=annotations_pb2.Labels(classes=["billing"]),
            revision=1,
        ),
        redundancy=1,
    )
    for start in range(0, count, 1000):
        with db.transaction() as session:
            for i in range(start, min(count, start + 1000)):
                payload.annotation.name = f"projects/p/annotations/a{i}"
                writer.emit(
                    session,
                    tenant_id="bench",
                    resource_name=payload.annotation.name,
                    aggregate_version=1,
                    payload=payload,
                )


def relay_rate(db: Database, bus: EventBus, count: int, name: str) -> dict[str, float]:
    metadata = MetaData()
    outbox = outbox_table(metadata)
    metadata.create_all(db.engine)  # a scratch table for the bench, not a service schema
    writer = EventWriter(outbox, f"annocloud.bench-{name}.v1")
    fill_outbox(db, writer, count)
    relay = OutboxRelay(name, db, outbox, bus, batch_size=500, linger=0)
    began = time.perf_counter()
    while relay.publish_pending():
        pass
    elapsed = time.perf_counter() - began
    assert relay.backlog() == 0
    return {"events": count, "seconds": elapsed, "per_second": count / elapsed}


def bench_relay_cluster(count: int) -> dict[str, float]:
    from annocloud_server.common.kafka_bus import KafkaEventBus
    from annocloud_server.devstack import KafkaBroker, PostgresServer

    postgres, broker = PostgresServer(), KafkaBroker()  # make infra-up's servers (started if down)
    postgres.start()
    broker.start()
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    bus = KafkaEventBus(broker.bootstrap, namespace=namespace)
    bus.ensure_topics(["annocloud.bench-cluster.v1"])
    url = postgres.create_database(prefix="bench")
    db = Database(with_schema(url, "public"))
    try:
        return relay_rate(db, bus, count, "cluster")
    finally:
        db.dispose()
        bus.close()


def bench_relay_embedded(count: int) -> dict[str, float]:
    from annocloud_server.common.inprocess_bus import InProcessEventBus

    with tempfile.TemporaryDirectory() as tmp:
        bus = InProcessEventBus(str(Path(tmp) / "events.db"))
        db = Database(sqlite_url(str(Path(tmp) / "bench.db")))
        try:
            return relay_rate(db, bus, count, "embedded")
        finally:
            db.dispose()
            bus.close()


# --- 2. submit → QA latency -----------------------------------------------------------------------


def lag_stats(result: WorkloadResult, applied: dict[str, datetime]) -> dict[str, float]:
    lags = [(applied[n] - a.ack_time).total_seconds() for n, a in result.acknowledged.items() if n in applied]
    assert len(lags) == len(result.acknowledged), "every acknowledged annotation must reach QA"
    return {
        "annotations": len(lags),
        "p50_ms": pct(lags, 0.5) * 1000,
        "p99_ms": pct(lags, 0.99) * 1000,
        "max_ms": max(lags) * 1000,
        "submits_per_second": len(lags) / (result.finished - result.started),
    }


def run_workload(channel_for: Callable[[str], object], secret: bytes, count: int) -> WorkloadResult:
    workload = Workload(channel_for, secret, organization=f"bench-{uuid.uuid4().hex[:6]}")  # type: ignore[arg-type]
    result = workload.prepare("latency", count)
    time.sleep(2)  # let project/schema events settle so they do not queue in front of the submits
    return workload.run(result)


def bench_latency_cluster(count: int) -> dict[str, float]:
    import psycopg
    from annocloud_server.devstack import ClusterStack

    sys.path.insert(0, str(REPO / "tests" / "chaos"))
    from audit import libpq

    stack = ClusterStack(triton=False)  # on make infra-up's servers, its own database and namespace
    stack.start()
    try:
        result = run_workload(stack.channel, stack.secret, count)
        stack.wait_idle(timeout=300)
        with psycopg.connect(libpq(stack.database_url), autocommit=True) as conn:
            applied = dict(
                conn.execute(
                    "SELECT o.key, min(i.applied_time) FROM annotations.outbox o JOIN qa.inbox i "
                    "ON i.event_id = o.event_id AND i.consumer = 'qa' WHERE o.key LIKE %s GROUP BY o.key",
                    (f"{result.project}/annotations/%",),
                ).fetchall()
            )
        return lag_stats(result, applied)
    finally:
        stack.stop()


def bench_latency_embedded(count: int) -> dict[str, float]:
    from annocloud_server.embedded import start_embedded

    with tempfile.TemporaryDirectory() as tmp:
        stack = start_embedded(data_dir=Path(tmp) / "data")
        try:
            result = run_workload(stack.channel, stack.secret, count)
            stack.wait_idle(timeout=300)
            conn = sqlite3.connect(str(Path(tmp) / "data" / "annotations.db"))
            conn.execute("ATTACH DATABASE ? AS qa", (str(Path(tmp) / "data" / "qa.db"),))
            rows = conn.execute(
                "SELECT o.key, min(i.applied_time) FROM outbox o JOIN qa.inbox i "
                "ON i.event_id = o.event_id AND i.consumer = 'qa' WHERE o.key LIKE ? GROUP BY o.key",
                (f"{result.project}/annotations/%",),
            ).fetchall()
            conn.close()
            applied = {key: _sqlite_time(value) for key, value in rows}
            return lag_stats(result, applied)
        finally:
            stack.stop()


def _sqlite_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- report --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; README.md untouched")
    args = parser.parse_args()
    events = 2000 if args.quick else 20000
    annotations = 100 if args.quick else 1000
    results = {
        "relay_cluster": bench_relay_cluster(events),
        "relay_embedded": bench_relay_embedded(events),
        "latency_cluster": bench_latency_cluster(annotations),
        "latency_embedded": bench_latency_embedded(annotations),
    }
    for name, figures in results.items():
        print(name, {k: round(v, 2) for k, v in figures.items()}, flush=True)
    if not args.quick:
        write_readme(results, events, annotations)


def write_readme(r: dict[str, dict[str, float]], events: int, annotations: int) -> None:
    rc, re_, lc, le = r["relay_cluster"], r["relay_embedded"], r["latency_cluster"], r["latency_embedded"]
    section = f"""{BEGIN}
## Cluster mode vs embedded default (issue #3)

Command: `make bench-cluster` (= `.venv/bin/python bench/cluster_bench.py`), on {platform.machine()} with
2 cores, Python {platform.python_version()}, {datetime.now(UTC).date()}. Cluster = five service processes + gateway
(`ClusterStack`) on PostgreSQL 15 and a real Kafka 4.4 broker (KRaft, one node), all on this machine;
embedded = `start_embedded` (SQLite + the in-process log). Clients: 8 annotator threads over gRPC.

| figure | cluster (Kafka + PostgreSQL) | embedded (log + SQLite) |
|---|---|---|
| events/s through the outbox relay ({events:,} envelopes, batches of 500, ack then mark) | {rc["per_second"]:,.0f} /s ({rc["seconds"]:.1f} s) | {re_["per_second"]:,.0f} /s ({re_["seconds"]:.1f} s) |
| `SubmitAnnotation` ack → QA decision, p50 ({annotations:,} annotations) | {lc["p50_ms"]:.0f} ms | {le["p50_ms"]:.0f} ms |
| same, p99 | {lc["p99_ms"]:.0f} ms | {le["p99_ms"]:.0f} ms |
| same, max | {lc["max_ms"]:.0f} ms | {le["max_ms"]:.0f} ms |
| annotations submitted per second (lease + submit, 8 workers) | {lc["submits_per_second"]:.0f} /s | {le["submits_per_second"]:.0f} /s |
{END}"""
    write_section(section, begin=BEGIN, end=END)


if __name__ == "__main__":
    main()
