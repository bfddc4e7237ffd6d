"""The embedded default survives a restart mid-project: no event lost, none applied twice."""

from __future__ import annotations

from pathlib import Path

from annocloud_server.demo import render_scene
from annocloud_server.embedded import start_embedded
from conftest import make_org
from test_e2e_labeling_loop import create_street_project, last, ok, scene_labels, wait_for

ITEMS = 12


def test_restart_between_submissions_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """Half the labels before a restart, half after: exactly ITEMS accepted, 2*ITEMS annotations, 2*ITEMS done tasks."""
    data_dir = tmp_path / "data"
    stack = start_embedded(data_dir=data_dir)
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
    label(1, ITEMS // 2)
    stack.stop()  # events may still sit in outboxes or be half-consumed: the restart must finish them

    stack = start_embedded(data_dir=data_dir)
    try:
        for client in [org.admin, *org.annotators, org.reviewer]:
            client.base_url = stack.base_url
        label(1, ITEMS - ITEMS // 2)
        wait_for(
            lambda: int(ok(org.admin.get(f"/v1/projects/{project_id}/quality"))["accepted_items"]) == ITEMS,
            "acceptance",
        )
        stack.runtime.wait_idle()
        quality = ok(org.admin.get(f"/v1/projects/{project_id}/quality"))
        assert int(quality["accepted_items"]) == ITEMS
        assert int(quality["annotation_count"]) == 2 * ITEMS
        counts = ok(org.admin.get(f"/v1/projects/{project_id}"))["task_counts"]
        assert int(counts["completed"]) == 2 * ITEMS
        assert int(counts.get("queued", 0)) == 0
        accepted = ok(org.admin.get(f"/v1/projects/{project_id}/acceptedLabels", params={"page_size": 100}))
        assert (
            len({a["item"] for a in accepted["accepted_labels"]}) == ITEMS == len(accepted["accepted_labels"])
        )
    finally:
        stack.stop()
