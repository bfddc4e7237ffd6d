"""What the chaos suite counts, read straight from the services' PostgreSQL schemas and metrics.

The ground truth is what the clients got acknowledged (``workload.WorkloadResult``). Against it:
- acknowledged by the broker: the AnnotationSubmitted outbox rows the relay marked published
  (marked only after the broker's ack);
- applied: the qa service's votes for those annotations;
- lost: acknowledged annotations without a vote, plus items qa accepted that never reached export;
- duplicate effects: anything that happened twice for one input — two annotations for one task,
  two votes for one annotation, two ItemAccepted events emitted for one item, two export rows for
  one item. Unique constraints make some of these impossible as rows; the emitted events are what a
  handler applied twice would show;
- duplicate deliveries seen: how often qa's inbox skipped an event it had already applied
  (``annocloud_consumer_duplicates_skipped_total``, scraped while the processes live);
- end-to-end lag: qa's inbox ``applied_time`` minus the client's acknowledgement time;
- recovery time: from the fault until the last annotation acknowledged before it was applied.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg
from annocloud.events.v1 import events_pb2
from workload import WorkloadResult

ITEM_ACCEPTED = "annocloud.events.v1.ItemAccepted"


@dataclass
class FaultReport:
    fault: str
    produced: int
    acknowledged: int
    applied: int
    lost: int
    duplicate_effects: int
    duplicate_deliveries_seen: int
    max_lag_s: float
    p50_lag_s: float
    recovery_s: float
    client_retries: int
    workload_s: float

    def row(self) -> str:
        return (
            f"{self.fault:<48} {self.produced:>8} {self.acknowledged:>6} {self.applied:>7} {self.lost:>4} "
            f"{self.duplicate_effects:>5} {self.duplicate_deliveries_seen:>6} {self.max_lag_s:>7.2f} "
            f"{self.p50_lag_s:>7.2f} {self.recovery_s:>8.2f} {self.client_retries:>7} {self.workload_s:>7.1f}"
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


HEADER = (
    f"{'fault':<48} {'produced':>8} {'acked':>6} {'applied':>7} {'lost':>4} {'dupFx':>5} {'dupDlv':>6} "
    f"{'maxLag':>7} {'p50Lag':>7} {'recovery':>8} {'retries':>7} {'secs':>7}"
)


def libpq(database_url: str) -> str:
    """A libpq URL from the SQLAlchemy one (``postgresql+psycopg://`` → ``postgresql://``, no query)."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", database_url).split("?", 1)[0]


def _project_id(project: str) -> str:
    return project.split("/")[1]


def audit(
    database_url: str,
    *,
    fault: str,
    result: WorkloadResult,
    organization: str,
    fault_time: datetime | None,
    duplicate_deliveries_seen: int,
) -> FaultReport:
    project_id = _project_id(result.project)
    acked = result.acknowledged
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        per_task = conn.execute(
            "SELECT task, count(*) FROM annotations.annotations "
            "WHERE organization_id = %s AND project_id = %s GROUP BY task",
            (organization, project_id),
        ).fetchall()
        published = conn.execute(
            "SELECT count(DISTINCT key) FROM annotations.outbox "
            "WHERE key LIKE %s AND published_time IS NOT NULL",
            (f"{result.project}/annotations/%",),
        ).fetchone()
        votes = dict(
            conn.execute(
                "SELECT annotation, count(*) FROM qa.votes WHERE organization_id = %s AND project_id = %s "
                "GROUP BY annotation",
                (organization, project_id),
            ).fetchall()
        )
        qa_accepted = {
            row[0]
            for row in conn.execute(
                "SELECT item FROM qa.accepted_labels WHERE organization_id = %s AND project_id = %s",
                (organization, project_id),
            )
        }
        exported = Counter(
            row[0]
            for row in conn.execute(
                "SELECT item FROM export.accepted_items WHERE organization_id = %s AND project_id = %s",
                (organization, project_id),
            )
        )
        accepted_events: Counter[str] = Counter()
        for (value,) in conn.execute(
            "SELECT value FROM qa.outbox WHERE key LIKE %s", (f"{result.project}/%",)
        ).fetchall():
            envelope = events_pb2.EventEnvelope.FromString(bytes(value))
            if envelope.event_type == ITEM_ACCEPTED:
                accepted_events[envelope.resource_name] += 1
        applied_times = dict(
            conn.execute(
                "SELECT o.key, min(i.applied_time) FROM annotations.outbox o "
                "JOIN qa.inbox i ON i.event_id = o.event_id AND i.consumer = 'qa' "
                "WHERE o.key LIKE %s GROUP BY o.key",
                (f"{result.project}/annotations/%",),
            ).fetchall()
        )

    lost = sum(1 for name in acked if name not in votes) + len(qa_accepted - set(exported))
    duplicate_effects = (
        sum(n - 1 for _task, n in per_task if n > 1)
        + sum(n - 1 for n in votes.values() if n > 1)
        + sum(n - 1 for n in accepted_events.values() if n > 1)
        + sum(n - 1 for n in exported.values() if n > 1)
    )
    lags = sorted(
        (applied_times[name] - ack.ack_time).total_seconds()
        for name, ack in acked.items()
        if name in applied_times
    )
    recovery = 0.0
    if fault_time is not None:
        before = [
            applied_times[n] for n, a in acked.items() if a.ack_time <= fault_time and n in applied_times
        ]
        if before:
            recovery = max(0.0, max((t - fault_time).total_seconds() for t in before))
    return FaultReport(
        fault=fault,
        produced=len(acked),
        acknowledged=int(published[0]) if published else 0,
        applied=sum(1 for name in acked if name in votes),
        lost=lost,
        duplicate_effects=duplicate_effects,
        duplicate_deliveries_seen=duplicate_deliveries_seen,
        max_lag_s=max(lags) if lags else float("nan"),
        p50_lag_s=lags[len(lags) // 2] if lags else float("nan"),
        recovery_s=recovery,
        client_retries=result.retries,
        workload_s=result.finished - result.started,
    )


_DUPLICATES = re.compile(
    r'^annocloud_consumer_duplicates_skipped_total\{[^}]*group="qa"[^}]*\}\s+([0-9.eE+]+)', re.M
)


class DuplicateWatcher:
    """Sums qa's ``duplicates_skipped`` counter across process restarts by scraping it twice a second.

    Each process (told apart by its PID) counts from zero; what an earlier process had counted is
    kept. Increments in the last half second before a SIGKILL can be missed: a lower bound.
    """

    def __init__(self, scrape: Callable[[], str], pid: Callable[[], int | None]):
        self._scrape = scrape
        self._pid = pid
        self._base = 0.0
        self._last = 0.0
        self._last_pid: int | None = None
        self._origin = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="duplicate-watcher", daemon=True)

    def __enter__(self) -> DuplicateWatcher:
        self._read()
        self._origin = self._base + self._last
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._read()

    @property
    def seen(self) -> int:
        return int(self._base + self._last - self._origin)

    def _read(self) -> None:
        pid = self._pid()
        try:
            text = self._scrape()
        except Exception:  # the process is down right now (it is being killed): next time
            return
        if pid != self._pid():
            return  # restarted between the two looks: next time
        match = _DUPLICATES.search(text)
        value = float(match.group(1)) if match else 0.0
        if pid != self._last_pid and self._last_pid is not None:
            self._base += self._last  # a new process: its counter started again from zero
            self._last = 0.0
        self._last_pid = pid
        self._last = value

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._read()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
