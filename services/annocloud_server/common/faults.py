"""Fault injection for the chaos suite: SIGKILL this process at the Nth hit of a named point.

``ANNOCLOUD_FAULTS="consumer.before_db_commit@qa=300,relay.after_ack@annotations=20"``: each entry is
``POINT[@SCOPE]=N``; the scope is a consumer group or relay name (the service's short name), and an
entry without a scope counts the hits of every scope together. Hits are counted per entry in this
process; the Nth one writes one line to stderr, flushes, and sends SIGKILL to the process itself, so
nothing gets to clean up (no ``finally``, no atexit, no flush of buffers): a real crash.

Unset, :func:`hit` is one global read and a comparison. :func:`configure` (called by
``start_runtime``) installs the plan from the environment and raises ``ValueError`` on a malformed
spec or an unknown point, so a typo fails the start instead of silently injecting nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

ENV = "ANNOCLOUD_FAULTS"

POINTS: Mapping[str, str] = {
    "consumer.before_db_commit": (
        "inside the consumer's transaction, after the handler ran and the inbox row was written, "
        "before the commit; once per event applied"
    ),
    "consumer.after_db_commit": (
        "after the consumer's transaction committed, before the offsets are committed; once per batch"
    ),
    "relay.after_ack": (
        "after the bus acknowledged a relay's batch, before its outbox rows are marked published; "
        "once per batch"
    ),
}


@dataclass(frozen=True)
class Fault:
    """Kill the process at the ``at``-th hit of ``point`` (in ``scope``, or in any scope when None)."""

    point: str
    scope: str | None
    at: int


def parse(spec: str) -> tuple[Fault, ...]:
    """The faults of an ``ANNOCLOUD_FAULTS`` value; ValueError with the reason when it is malformed."""
    faults: list[Fault] = []
    seen: set[tuple[str, str | None]] = set()
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        target, sep, count = entry.partition("=")
        point, at_sign, scope = target.strip().partition("@")
        point, scope = point.strip(), scope.strip()
        if not sep or not point or (at_sign and not scope):
            raise ValueError(f"{ENV}: {entry!r} is not POINT[@SCOPE]=N")
        if point not in POINTS:
            raise ValueError(f"{ENV}: unknown fault point {point!r}; known: {', '.join(sorted(POINTS))}")
        try:
            at = int(count.strip())
        except ValueError:
            raise ValueError(f"{ENV}: {entry!r}: N must be a positive integer") from None
        if at < 1:
            raise ValueError(f"{ENV}: {entry!r}: N must be a positive integer")
        key = (point, scope or None)
        if key in seen:
            raise ValueError(f"{ENV}: {target.strip()!r} is given twice")
        seen.add(key)
        faults.append(Fault(point, scope or None, at))
    return tuple(faults)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FaultPlan:
    """Counts hits per fault and kills the process (``kill``) at the configured hit."""

    def __init__(
        self,
        faults: Sequence[Fault],
        *,
        kill: Callable[[], None] = kill_self,
        stderr: TextIO | None = None,
    ):
        self._at = {(f.point, f.scope): f.at for f in faults}
        self._counts = dict.fromkeys(self._at, 0)
        self._kill = kill
        self._stderr = stderr
        self._lock = threading.Lock()

    def count(self, point: str, scope: str | None = None) -> int:
        """Hits counted so far for the entry ``point@scope`` (``scope=None``: the scope-less entry)."""
        return self._counts.get((point, scope), 0)

    def hit(self, point: str, scope: str) -> None:
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}")
        fired: tuple[str, str | None, int] | None = None
        with self._lock:
            for key in ((point, scope), (point, None)):
                if key in self._at:
                    self._counts[key] += 1
                    if self._counts[key] == self._at[key] and fired is None:
                        fired = (point, key[1], self._at[key])
        if fired is None:
            return
        name = fired[0] if fired[1] is None else f"{fired[0]}@{fired[1]}"
        stream = self._stderr or sys.stderr
        stream.write(
            f"annocloud fault injection: {name}={fired[2]} fired (hit {fired[2]}, scope {scope}); "
            f"SIGKILL pid {os.getpid()}\n"
        )
        stream.flush()
        self._kill()


_plan: FaultPlan | None = None
_spec = ""


def install(plan: FaultPlan | None) -> None:
    """Makes ``plan`` the process's plan (None: no faults). Tests install plans with a fake kill."""
    global _plan
    _plan = plan


def configure(environ: Mapping[str, str] | None = None) -> FaultPlan | None:
    """Installs the plan of ``ANNOCLOUD_FAULTS``; the same spec again keeps the counts so far."""
    global _spec
    spec = (os.environ if environ is None else environ).get(ENV, "").strip()
    if spec == _spec and (_plan is not None or not spec):
        return _plan
    faults = parse(spec)
    _spec = spec
    install(FaultPlan(faults) if faults else None)
    return _plan


def hit(point: str, scope: str) -> None:
    """One pass through ``point`` in ``scope``; may not return (the configured hit kills)."""
    plan = _plan
    if plan is not None:
        plan.hit(point, scope)
