"""Worker, vendor and project quality figures from plain vote facts (qa/quality.py)."""

from __future__ import annotations

import pytest
from annocloud_server.qa import quality
from annocloud_server.qa.quality import VoteFact, WorkerEvidence


def fact(worker: str, org: str, item: str, label: str | None, seconds: float = 60.0) -> VoteFact:
    return VoteFact(
        worker=worker, organization=org, item=item, label=label, handle_seconds=seconds, active=True
    )


VOTES = [
    fact("w1", "va", "i1", "cat", 30),
    fact("w1", "va", "i2", "dog", 90),
    fact("w2", "va", "i1", "cat"),
    fact("w2", "va", "i2", "cat"),
    fact("w3", "vb", "i1", "dog"),
]
ACCEPTED = {"i1": "cat", "i2": "dog"}


def test_worker_figures() -> None:
    """Throughput, median handle time, rejection rate, gold accuracy and kappa against accepted labels."""
    evidence = {"w1": WorkerEvidence("va", gold_answered=2, gold_correct=2, rejected=1)}
    (w1,) = quality.all_worker_quality(VOTES, evidence, ACCEPTED, organization=None)[:1]
    assert (w1.worker, w1.vendor, w1.annotations) == ("w1", "vendors/va", 2)
    assert w1.tasks_per_hour == pytest.approx(60.0)
    assert w1.median_handle_seconds == pytest.approx(60.0)
    assert w1.rejection_rate == pytest.approx(0.5)
    assert w1.gold_accuracy == pytest.approx(4 / 5)
    assert w1.kappa_vs_accepted == pytest.approx(1.0)
    w3 = quality.all_worker_quality(VOTES, {}, ACCEPTED)[2]
    assert w3.kappa_vs_accepted == 0.0  # one disagreeing answer
    assert w3.reliability == 0.7


def test_vendor_filter_and_agreement() -> None:
    """A vendor sees only its rows; Fleiss / Krippendorff over items two of its workers labeled."""
    (va,) = quality.vendor_quality(VOTES, {}, ACCEPTED, organization="va")
    assert (va.vendor, va.workers, va.annotations) == ("vendors/va", 2, 4)
    assert va.fleiss_kappa == pytest.approx(-1 / 3)  # p_bar 0.5 against p_e 0.625
    assert [w.worker for w in quality.all_worker_quality(VOTES, {}, ACCEPTED, organization="vb")] == ["w3"]
    (vb,) = quality.vendor_quality(VOTES, {}, ACCEPTED, organization="vb")
    assert (vb.fleiss_kappa, vb.krippendorff_alpha) == (0.0, 0.0)  # undefined: one rater per item


def test_project_agreement_over_accepted_items() -> None:
    """Unanimous accepted items give kappa 1; unaccepted items do not count."""
    votes = [fact("a", "o", "i1", "cat"), fact("b", "o", "i1", "cat"), fact("a", "o", "i2", "dog")]
    votes += [fact("b", "o", "i2", "dog"), fact("a", "o", "i3", "cat"), fact("b", "o", "i3", "dog")]
    fleiss, alpha = quality.project_agreement(votes, {"i1": "cat", "i2": "dog"})
    assert fleiss == pytest.approx(1.0)
    assert alpha == pytest.approx(1.0)
    assert quality.project_agreement(votes, {}) == (0.0, 0.0)
