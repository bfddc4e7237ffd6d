"""Quality figures per worker, per vendor and per project, from plain facts about votes.

Pure: the servicer loads the rows, this module computes. Class-based figures (kappa, alpha) use the
votes with exactly one class (single-choice answers); items without such votes do not count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from annocloud.qa.v1 import qa_pb2

from annocloud_server.crowd.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha
from annocloud_server.crowd.quality import beta_accuracy, throughput
from annocloud_server.qa import scoring


@dataclass(frozen=True)
class VoteFact:
    worker: str
    organization: str
    item: str
    label: str | None
    """The single class answered, None for other answers."""
    handle_seconds: float
    active: bool


@dataclass(frozen=True)
class WorkerEvidence:
    organization: str
    gold_answered: int = 0
    gold_correct: int = 0
    accepted_votes: int = 0
    agreed: int = 0
    rejected: int = 0


def vendor_name(organization: str) -> str:
    return f"vendors/{organization}"


def _safe(measure: Callable[[], float]) -> float:
    """A statistic, or 0 when it is undefined for the data (too few items or ratings)."""
    try:
        value = measure()
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if value == value else 0.0  # NaN -> 0


def agreement_over(units: Sequence[Sequence[str]]) -> tuple[float, float]:
    """(Fleiss' kappa, Krippendorff's alpha) over items with at least two single-class ratings."""
    rated = [list(u) for u in units if len(u) >= 2]
    if not rated:
        return 0.0, 0.0
    return _safe(lambda: fleiss_kappa(rated)), _safe(lambda: krippendorff_alpha(rated))


def workers_of(votes: Sequence[VoteFact], evidence: Mapping[str, WorkerEvidence]) -> dict[str, str]:
    """Worker -> organization: of their latest vote, else of their evidence row."""
    organizations = {w: e.organization for w, e in evidence.items()}
    for vote in votes:
        organizations[vote.worker] = vote.organization
    return organizations


def worker_quality(
    worker: str,
    organization: str,
    votes: Sequence[VoteFact],
    evidence: WorkerEvidence | None,
    accepted: Mapping[str, str | None],
) -> qa_pb2.WorkerQuality:
    """One worker's figures; ``accepted`` maps accepted items to their single class (None: other)."""
    ev = evidence or WorkerEvidence(organization)
    pace = throughput([v.handle_seconds for v in votes])
    pairs = [
        (v.label, accepted[v.item]) for v in votes if v.label is not None and accepted.get(v.item) is not None
    ]
    kappa = _safe(lambda: cohen_kappa([a for a, _ in pairs], [b or "" for _, b in pairs])) if pairs else 0.0
    annotations = len(votes)
    return qa_pb2.WorkerQuality(
        worker=worker,
        vendor=vendor_name(organization),
        gold_answered=ev.gold_answered,
        gold_correct=ev.gold_correct,
        gold_accuracy=beta_accuracy(min(ev.gold_correct, ev.gold_answered), ev.gold_answered),
        annotations=annotations,
        kappa_vs_accepted=kappa,
        rejected=ev.rejected,
        rejection_rate=ev.rejected / annotations if annotations else 0.0,
        tasks_per_hour=pace.tasks_per_hour,
        median_handle_seconds=pace.median_seconds,
        reliability=scoring.reliability(
            gold_correct=ev.gold_correct,
            gold_answered=ev.gold_answered,
            agreed=ev.agreed,
            accepted_votes=ev.accepted_votes,
        ),
    )


def all_worker_quality(
    votes: Sequence[VoteFact],
    evidence: Mapping[str, WorkerEvidence],
    accepted: Mapping[str, str | None],
    *,
    organization: str | None = None,
) -> list[qa_pb2.WorkerQuality]:
    """Every worker's figures by subject, only those of ``organization`` when given."""
    by_worker: dict[str, list[VoteFact]] = defaultdict(list)
    for vote in votes:
        by_worker[vote.worker].append(vote)
    rows = []
    for worker, org in sorted(workers_of(votes, evidence).items()):
        if organization is not None and org != organization:
            continue
        rows.append(worker_quality(worker, org, by_worker.get(worker, []), evidence.get(worker), accepted))
    return rows


def vendor_quality(
    votes: Sequence[VoteFact],
    evidence: Mapping[str, WorkerEvidence],
    accepted: Mapping[str, str | None],
    *,
    organization: str | None = None,
) -> list[qa_pb2.VendorQuality]:
    """Figures per worker organization (only ``organization`` when given), by vendor name."""
    workers = all_worker_quality(votes, evidence, accepted, organization=organization)
    organizations = workers_of(votes, evidence)
    grouped: dict[str, list[qa_pb2.WorkerQuality]] = defaultdict(list)
    for row in workers:
        grouped[organizations[row.worker]].append(row)
    result = []
    for org, rows in sorted(grouped.items()):
        per_item: dict[str, dict[str, str]] = defaultdict(dict)
        for vote in votes:
            if vote.organization == org and vote.active and vote.label is not None:
                per_item[vote.item][vote.worker] = vote.label
        fleiss, alpha = agreement_over([list(labels.values()) for labels in per_item.values()])
        answered = sum(r.gold_answered for r in rows)
        correct = sum(r.gold_correct for r in rows)
        annotations = sum(r.annotations for r in rows)
        rejected = sum(r.rejected for r in rows)
        result.append(
            qa_pb2.VendorQuality(
                vendor=vendor_name(org),
                workers=len(rows),
                gold_answered=answered,
                gold_accuracy=beta_accuracy(min(correct, answered), answered),
                annotations=annotations,
                rejection_rate=rejected / annotations if annotations else 0.0,
                tasks_per_hour=sum(r.tasks_per_hour for r in rows),
                fleiss_kappa=fleiss,
                krippendorff_alpha=alpha,
            )
        )
    return result


def project_agreement(votes: Sequence[VoteFact], accepted: Mapping[str, str | None]) -> tuple[float, float]:
    """(Fleiss, Krippendorff) over the active single-class votes of accepted items."""
    per_item: dict[str, list[str]] = defaultdict(list)
    for vote in votes:
        if vote.active and vote.label is not None and vote.item in accepted:
            per_item[vote.item].append(vote.label)
    return agreement_over(list(per_item.values()))
