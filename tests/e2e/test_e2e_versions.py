"""Dataset versions through REST in both ways to run annocloud: snapshot, split, re-label, diff, feed, export."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

from annocloud_server.demo import render_scene, street_schema
from support.e2e import Org, Stack, last, make_org, ok, wait_for

IMAGES = 6


def label_all(org: Org, project_id: str, label_of: Callable[[str], dict[str, Any]]) -> None:
    active = list(org.annotators)
    while active:
        still = []
        for client in active:
            response = client.post(f"/v1/projects/{project_id}/tasks:leaseNext", json={})
            if response.status_code == 404:
                continue
            task = ok(response)
            ok(
                client.post(
                    f"/v1/projects/{project_id}/tasks/{last(task['name'])}:submit",
                    json={"lease_id": task["lease"]["lease_id"], "labels": label_of(task["item"])},
                )
            )
            still.append(client)
        active = still


def test_versions_diff_feed_and_split_export_over_rest(stack: Stack) -> None:
    """Accepted labels snapshot into v1 with a split; later labels land in v2 only; diff, feed and YOLO lists agree."""
    org = make_org(stack, "acme")
    dataset = ok(org.admin.post("/v1/datasets", json={"dataset": {"display_name": "d"}, "request_id": "d-1"}))
    items = []
    for scene in (render_scene(i) for i in range(IMAGES)):
        body = ok(
            org.admin.post(
                f"/v1/datasets/{last(dataset['name'])}/items:upload",
                files={"file": (scene.file_name, scene.png, "image/png")},
            )
        )
        items.append(body["item"]["name"])
    project = ok(
        org.admin.post(
            "/v1/projects",
            json={
                "project": {"display_name": "p", "redundancy": 3, "datasets": [dataset["name"]]},
                "schema": street_schema(),
                "request_id": "p-1",
            },
        )
    )
    pid = last(project["name"])
    wait_for(
        lambda: int(ok(org.admin.get(f"/v1/projects/{pid}"))["task_counts"]["queued"]) == 3 * IMAGES, "tasks"
    )
    first = {
        "classes": ["day"],
        "regions": [{"label": "car", "box": {"x": 10, "y": 10, "width": 40, "height": 30}}],
    }
    label_all(org, pid, lambda item: first)
    wait_for(
        lambda: int(ok(org.admin.get(f"/v1/projects/{pid}/quality"))["accepted_items"]) == IMAGES, "accepted"
    )
    stack.wait_idle()

    split = {"train_fraction": 0.5, "validation_fraction": 0.5, "test_fraction": 0, "seed": 3}
    body = {"display_name": "v1", "split": split, "request_id": "v-1"}
    v1 = ok(org.admin.post(f"/v1/projects/{pid}/datasetVersions", json=body))
    assert ok(org.admin.post(f"/v1/projects/{pid}/datasetVersions", json=body))["name"] == v1["name"]
    assert (int(v1["item_count"]), int(v1["train_count"]), int(v1["validation_count"])) == (IMAGES, 3, 3)
    again = ok(org.admin.post(f"/v1/projects/{pid}/datasetVersions", json={"split": split}))
    v1_items = ok(org.admin.get(f"/v1/projects/{pid}/datasetVersions/{last(v1['name'])}/items"))["items"]
    again_items = ok(org.admin.get(f"/v1/projects/{pid}/datasetVersions/{last(again['name'])}/items"))[
        "items"
    ]
    assert [(i["item"], i["split"]) for i in v1_items] == [(i["item"], i["split"]) for i in again_items]

    # A new dataset item, labelled and accepted after v1.
    extra = render_scene(IMAGES)
    added = ok(
        org.admin.post(
            f"/v1/datasets/{last(dataset['name'])}/items:upload",
            files={"file": (extra.file_name, extra.png, "image/png")},
        )
    )["item"]["name"]
    wait_for(lambda: int(ok(org.admin.get(f"/v1/projects/{pid}"))["task_counts"]["queued"]) == 3, "new tasks")
    label_all(org, pid, lambda item: first)
    wait_for(
        lambda: int(ok(org.admin.get(f"/v1/projects/{pid}/quality"))["accepted_items"]) == IMAGES + 1, "more"
    )
    stack.wait_idle()

    unchanged = ok(org.admin.get(f"/v1/projects/{pid}/datasetVersions/{last(v1['name'])}"))
    assert unchanged == v1
    v2 = ok(org.admin.post(f"/v1/projects/{pid}/datasetVersions", json={"display_name": "v2"}))
    diff = ok(
        org.admin.get(
            f"/v1/projects/{pid}/datasetVersions/{last(v2['name'])}:diff", params={"base": last(v1["name"])}
        )
    )
    assert [(e["item"], e["kind"]) for e in diff["entries"]] == [(added, "CHANGE_KIND_ADDED")]
    feed = ok(org.admin.get(f"/v1/projects/{pid}/changes", params={"since_version": last(v1["name"])}))
    assert [c["item"] for c in feed["changes"]] == [added]
    everything: list[str] = []
    token = ""
    while True:
        page = ok(org.admin.get(f"/v1/projects/{pid}/changes", params={"page_size": 2, "page_token": token}))
        everything += [c["item"] for c in page["changes"]]
        token = page.get("next_page_token", "")
        if not token:
            break
    assert sorted(everything) == sorted([*items, added])

    job = ok(
        org.admin.post(
            f"/v1/projects/{pid}/exports", json={"format": "YOLO", "dataset_version": last(v1["name"])}
        )
    )
    assert job["dataset_version"] == v1["name"]

    def done() -> dict[str, Any] | None:
        current = ok(org.admin.get(f"/v1/projects/{pid}/exports/{last(job['name'])}"))
        assert current["state"] != "EXPORT_STATE_FAILED", current
        return current if current["state"] == "EXPORT_STATE_DONE" else None

    finished = wait_for(done, "version export")
    archive = zipfile.ZipFile(
        io.BytesIO(org.admin.get(f"/v1/projects/{pid}/exports/{last(job['name'])}/artifact").content)
    )
    names = {i["file_name"].rsplit(".", 1)[0]: i["split"] for i in v1_items}
    for split_name, file in (("SPLIT_TRAIN", "train_split.txt"), ("SPLIT_VALIDATION", "val.txt")):
        listed = {line.rsplit("/", 1)[1].rsplit(".", 1)[0] for line in archive.read(file).decode().split()}
        assert listed == {stem for stem, s in names.items() if s == split_name}
    assert archive.read("test.txt") == b""
    manifest = ok(org.admin.get(f"/v1/projects/{pid}/exports/{last(job['name'])}/manifest"))
    assert manifest["artifact"]["sha256"] == finished["artifact_sha256"]
    assert json.loads(archive.read("manifest.json"))["counts"]["items"] == IMAGES
