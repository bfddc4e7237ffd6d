"""The workforce marketplace through REST, in both ways to run annocloud: an enterprise grants a
project to a vendor, the vendor's workers label it, QA accepts and audits, the ledger pays and
reverses, and nobody sees what they were not granted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from support.e2e import Stack, last, make_org, ok, wait_for

RATE = 50_000  # USD micros per accepted LABEL task of tier 1
REWORK_RATE = 20_000
TEXTS = ["great product", "terrible service", "loved it", "never again"]
TRUTH = {"great product": "pos", "terrible service": "neg", "loved it": "pos", "never again": "neg"}


def client(stack: Stack, org: str, subject: str, role: str) -> httpx.Client:
    key = stack.api_keys.create_key(org, subject, [role])
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def label_all(worker: httpx.Client, project: str, answer: Callable[[str], str]) -> list[dict[str, Any]]:
    """Leases and submits until the worker gets no task; returns the tasks done."""
    done = []
    while True:
        response = worker.post(f"/v1/projects/{project}/tasks:leaseNext", json={})
        if response.status_code == 404:
            return done
        task = ok(response)
        body = {"lease_id": task["lease"]["lease_id"], "labels": {"classes": [answer(task["item_text"])]}}
        ok(worker.post(f"/v1/{task['name']}:submit", json=body))
        done.append(task)


def test_vendor_work_is_routed_paid_audited_reversed_and_isolated(stack: Stack) -> None:
    """Granted vendor A's workers label, every acceptance is audited, an audit rejection reverses
    the pay and sends the work back, and the payouts equal the accepted work at the rate; vendor B
    sees nothing of the project, A's workers or A's payouts; a worker cannot read another worker's
    task and an annotator cannot approve."""
    acme = make_org(stack, "acme", annotators=1)
    manager = acme.admin
    vendor_admin = {v: client(stack, v, "user:boss", "vendor-admin") for v in ("ven-a", "ven-b")}
    ana = client(stack, "ven-a", "user:ana", "vendor-worker")
    al = client(stack, "ven-a", "user:al", "vendor-worker")
    bea = client(stack, "ven-b", "user:bea", "vendor-worker")
    for vendor, workers in (("ven-a", ("ana", "al")), ("ven-b", ("bea",))):
        ok(vendor_admin[vendor].post("/v1/vendors:register", json={"display_name": vendor.upper()}))
        for worker in workers:
            ok(
                vendor_admin[vendor].post(
                    f"/v1/vendors/{vendor}/workers",
                    json={
                        "worker_id": worker,
                        "subject": f"user:{worker}",
                        "display_name": worker,
                        "level": 2,
                        "skills": {"media_types": ["MEDIA_TYPE_TEXT"], "languages": ["en"]},
                    },
                )
            )

    dataset = ok(manager.post("/v1/datasets", json={"dataset": {"display_name": "reviews"}}))
    ok(
        manager.post(
            f"/v1/{dataset['name']}/items:batchCreateText", json={"records": [{"text": t} for t in TEXTS]}
        )
    )
    project = last(
        ok(
            manager.post(
                "/v1/projects",
                json={
                    "project": {
                        "display_name": "sentiment",
                        "redundancy": 2,
                        "datasets": [dataset["name"]],
                        "quality": {
                            "audit_rate": 1.0,
                            "language": "en",
                            "error_taxonomy": [{"code": "wrong_class", "description": "the class is wrong"}],
                        },
                    },
                    "schema": {
                        "classification_mode": "CLASSIFICATION_MODE_SINGLE",
                        "classes": [{"name": "pos"}, {"name": "neg"}],
                    },
                },
            )
        )["name"]
    )
    for kind, amount in (("TASK_KIND_LABEL", RATE), ("TASK_KIND_REWORK", REWORK_RATE)):
        ok(
            manager.post(
                f"/v1/projects/{project}/payRates",
                json={"task_kind": kind, "difficulty_tier": 1, "amount_micros": amount, "currency": "USD"},
            )
        )
    wait_for(lambda: ok(manager.get(f"/v1/projects/{project}"))["task_counts"]["queued"] == 8, "8 tasks")

    # Not granted yet: the project does not exist for the vendor's workers.
    assert ana.post(f"/v1/projects/{project}/tasks:leaseNext", json={}).status_code == 404
    ok(manager.post(f"/v1/projects/{project}/grants", json={"vendor": "vendors/ven-a"}))
    held = ok(ana.post(f"/v1/projects/{project}/tasks:leaseNext", json={}))
    assert held["suggestions"] == []  # no model on this project; the vendor may read its item's
    assert (
        ok(ana.get(f"/v1/projects/{project}/predictions", params={"item": held["item"]}))["predictions"] == []
    )
    assert ana.get(f"/v1/projects/{project}/predictions").status_code == 400  # one item at a time
    ok(ana.post(f"/v1/{held['name']}:release", json={"lease_id": held["lease"]["lease_id"]}))

    done = label_all(ana, project, lambda text: TRUTH[text]) + label_all(
        al, project, lambda text: TRUTH[text]
    )
    assert len(done) == 8
    assert {t["lease"]["worker"] for t in done} == {"user:ana@ven-a", "user:al@ven-a"}

    audits = wait_for(
        lambda: (
            [
                r
                for r in ok(manager.get(f"/v1/projects/{project}/reviews"))["reviews"]
                if r["stage"] == "REVIEW_STAGE_AUDIT"
            ]
            if len(ok(manager.get(f"/v1/projects/{project}/reviews"))["reviews"]) == 4
            else None
        ),
        "4 audit reviews",
    )
    assert len(ok(manager.get(f"/v1/projects/{project}/acceptedLabels"))["accepted_labels"]) == 4
    wait_for(
        lambda: ok(manager.get(f"/v1/projects/{project}/payouts"))["totals_micros"].get("USD") == 8 * RATE,
        "8 accruals",
    )

    # Isolation: an annotator cannot approve; vendor B sees nothing; a worker sees only their tasks.
    audit, *others = audits
    assert acme.annotators[0].post(f"/v1/{audit['name']}:approve", json={}).status_code == 403
    for forbidden in (
        bea.post(f"/v1/projects/{project}/tasks:leaseNext", json={}),
        bea.get(f"/v1/{done[0]['name']}"),
        vendor_admin["ven-b"].get(f"/v1/projects/{project}/tasks"),
        vendor_admin["ven-b"].get(f"/v1/{done[0]['name']}"),
        vendor_admin["ven-b"].get("/v1/vendors/ven-a/workers"),
        vendor_admin["ven-b"].get("/v1/vendors/ven-a/workers/ana"),
        vendor_admin["ven-b"].get("/v1/vendors/ven-a/payouts"),
        vendor_admin["ven-b"].get("/v1/vendors/ven-a/ledgerEntries"),
        vendor_admin["ven-b"].get(f"/v1/projects/{project}/payouts"),
        vendor_admin["ven-b"].get(f"/v1/projects/{project}/goldItems"),
        vendor_admin["ven-b"].get(f"/v1/projects/{project}/workerQuality"),
        vendor_admin["ven-a"].get(f"/v1/projects/{project}/goldItems"),
    ):
        assert forbidden.status_code in (403, 404), forbidden.text
        assert "ana" not in forbidden.text
    assert vendor_admin["ven-b"].post(
        f"/v1/projects/{project}/exports", json={"format": "JSONL"}
    ).status_code in (403, 404)
    als_task = next(t for t in done if t["lease"]["worker"] == "user:al@ven-a")
    anas_task = next(t for t in done if t["lease"]["worker"] == "user:ana@ven-a")
    assert ana.get(f"/v1/{als_task['name']}").status_code == 404
    assert ok(ana.get(f"/v1/{anas_task['name']}"))["name"] == anas_task["name"]
    a_view = ok(vendor_admin["ven-a"].get(f"/v1/projects/{project}/workerQuality"))["workers"]
    assert {w["worker"] for w in a_view} == {"user:ana@ven-a", "user:al@ven-a"}

    # Audit: approve three, reject ana's vote on the fourth with a taxonomy code.
    for review in others:
        ok(manager.post(f"/v1/{review['name']}:approve", json={}))
    vote = next(v for v in audit["votes"] if v["annotator"] == "user:ana@ven-a")
    bad_code = manager.post(
        f"/v1/{audit['name']}:reject",
        json={"annotation": vote["annotation"], "reason": "no", "reason_code": "typo"},
    )
    assert bad_code.status_code == 400
    assert "wrong_class" in bad_code.text
    ok(
        manager.post(
            f"/v1/{audit['name']}:reject",
            json={"annotation": vote["annotation"], "reason": "sarcasm missed", "reason_code": "wrong_class"},
        )
    )
    wait_for(
        lambda: ok(manager.get(f"/v1/projects/{project}/payouts"))["totals_micros"].get("USD") == 7 * RATE,
        "the reversal",
    )
    rework = wait_for(
        lambda: next(
            (
                t
                for t in ok(ana.get(f"/v1/projects/{project}/tasks"))["tasks"]
                if t["kind"] == "TASK_KIND_REWORK"
            ),
            None,
        ),
        "ana's rework task",
    )
    assert rework["rework_reason"] == "sarcasm missed"
    assert label_all(al, project, lambda text: "pos") == []  # rework is ana's alone
    redone = label_all(ana, project, lambda text: TRUTH[text])
    assert [t["kind"] for t in redone] == ["TASK_KIND_REWORK"]
    reaudit = wait_for(
        lambda: next(
            (
                r
                for r in ok(manager.get(f"/v1/projects/{project}/reviews"))["reviews"]
                if r["reason"] == "REVIEW_REASON_REWORKED"
            ),
            None,
        ),
        "the re-review",
    )
    assert reaudit["stage"] == "REVIEW_STAGE_AUDIT"
    ok(manager.post(f"/v1/{reaudit['name']}:approve", json={}))
    stack.wait_idle()
    expected = 7 * RATE + REWORK_RATE
    summary = wait_for(
        lambda: (
            (s := ok(manager.get(f"/v1/projects/{project}/payouts")))["totals_micros"].get("USD") == expected
            and s
        ),
        "the rework's accrual",
    )
    assert summary["reconciled"] is True
    by_worker = {p["worker"]: p for p in summary["payouts"]}
    assert by_worker["user:ana@ven-a"]["reversed_tasks"] == 1
    assert sum(p["accepted_tasks"] for p in summary["payouts"]) == 9
    vendor_view = ok(vendor_admin["ven-a"].get("/v1/vendors/ven-a/payouts"))
    assert vendor_view["totals_micros"]["USD"] == expected
    assert vendor_view["reconciled"] is True
    entries = ok(vendor_admin["ven-a"].get("/v1/vendors/ven-a/ledgerEntries", params={"page_size": 100}))[
        "entries"
    ]
    assert sum(int(e["amount_micros"]) for e in entries) == expected
    assert [e["reason"] for e in entries if e["kind"] == "LEDGER_ENTRY_KIND_REVERSAL"] == [
        "wrong_class: sarcasm missed"
    ]
    forecast = ok(manager.get(f"/v1/projects/{project}/forecast"))
    assert forecast["remaining_tasks"] == 0
