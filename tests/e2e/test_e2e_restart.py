"""annocloud survives restarts mid-project: no event lost, none applied twice.

Embedded: the whole process stack stops and starts again on the same data directory. Cluster:
every service process and the gateway get SIGTERM (each must exit 0) and start again, while events
may still sit in outboxes or be half-consumed.
"""

from __future__ import annotations

import json

from annocloud_server.demo import render_scene
from support.e2e import Stack, make_org
from test_e2e_labeling_loop import create_street_project, export_zip, last, ok, scene_labels, wait_for

ITEMS = 12


def test_restarts_between_submissions_lose_and_double_nothing(stack: Stack) -> None:
    """Labels around two restarts: ITEMS accepted and exported once each, 2*ITEMS annotations and done tasks."""
    org = make_org(stack, "acme", annotators=2)
    scenes = [render_scene(i, seed=5) for i in range(ITEMS)]
    _, project_id, by_item = create_street_project(org, scenes, redundancy=2)
    wait_for(
        lambda: int(ok(org.admin.get(f"/v1/projects/{project_id}"))["task_counts"]["queued"]) == 2 * ITEMS,
        "tasks",
    )

    def label(client_index: int, count: int) -> None:
        client = org.annotators[client_index]
        for _ in range(count):
            task = ok(client.post(f"/v1/projects/{project_id}/tasks:leaseNext", json={}))
            ok(
                client.post(
                    f"/v1/projects/{project_id}/tasks/{last(task['name'])}:submit",
                    json={
                        "lease_id": task["lease"]["lease_id"],
                        "labels": scene_labels(by_item[task["item"]], 0),
                    },
                )
            )

    label(0, ITEMS)
    stack.restart()  # the first votes may not have reached qa yet
    label(1, ITEMS // 2)
    stack.restart()  # half the items may be accepted, with ItemAccepted not yet at export
    label(1, ITEMS - ITEMS // 2)

    wait_for(
        lambda: int(ok(org.admin.get(f"/v1/projects/{project_id}/quality"))["accepted_items"]) == ITEMS,
        "acceptance",
    )
    stack.wait_idle()
    quality = ok(org.admin.get(f"/v1/projects/{project_id}/quality"))
    assert int(quality["accepted_items"]) == ITEMS
    assert int(quality["annotation_count"]) == 2 * ITEMS
    counts = ok(org.admin.get(f"/v1/projects/{project_id}"))["task_counts"]
    assert int(counts["completed"]) == 2 * ITEMS
    assert int(counts.get("queued", 0)) == 0
    accepted = ok(org.admin.get(f"/v1/projects/{project_id}/acceptedLabels", params={"page_size": 100}))
    assert len({a["item"] for a in accepted["accepted_labels"]}) == ITEMS == len(accepted["accepted_labels"])
    rows = [
        json.loads(line) for line in export_zip(org, project_id, "JSONL").read("items.jsonl").splitlines()
    ]
    assert sorted(row["item"] for row in rows) == sorted(by_item)
