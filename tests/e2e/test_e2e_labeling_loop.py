"""The whole labeling loop through REST, in both ways to run annocloud: ingest, label 3x, QA, export."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from annocloud_server.demo import Scene, render_scene, street_schema
from pycocotools.coco import COCO
from support.e2e import Org, Stack, last, make_org, ok, wait_for

IMAGES = 50


def create_street_project(
    org: Org, scenes: list[Scene], redundancy: int = 3
) -> tuple[str, str, dict[str, Scene]]:
    """Dataset with the scenes uploaded, project over it; returns (dataset id, project id, item→scene)."""
    dataset = ok(
        org.admin.post("/v1/datasets", json={"dataset": {"display_name": "streets"}, "request_id": "ds-1"})
    )
    dataset_id = last(dataset["name"])
    by_item: dict[str, Scene] = {}
    for scene in scenes:
        body = ok(
            org.admin.post(
                f"/v1/datasets/{dataset_id}/items:upload",
                files={"file": (scene.file_name, scene.png, "image/png")},
                data={"metadata": json.dumps({"time_of_day": scene.time_of_day})},
            )
        )
        assert body["duplicate"] is False
        by_item[body["item"]["name"]] = scene
    project = ok(
        org.admin.post(
            "/v1/projects",
            json={
                "project": {
                    "display_name": "plates",
                    "redundancy": redundancy,
                    "datasets": [dataset["name"]],
                },
                "schema": street_schema(),
                "request_id": "proj-1",
            },
        )
    )
    return dataset_id, last(project["name"]), by_item


def scene_labels(scene: Scene, jitter: float) -> dict[str, Any]:
    return {
        "classes": [scene.time_of_day],
        "regions": [
            {
                "label": box.label,
                "box": {"x": box.x + jitter, "y": box.y + jitter, "width": box.width, "height": box.height},
            }
            for box in scene.boxes
        ],
    }


def label_everything(org: Org, project_id: str, by_item: dict[str, Scene]) -> int:
    """Annotator k shifts every box by (k-1)/2 px, so the mean of three is the ground truth."""
    submitted = 0
    active = list(enumerate(org.annotators))
    while active:
        still = []
        for index, client in active:
            response = client.post(f"/v1/projects/{project_id}/tasks:leaseNext", json={})
            if response.status_code == 404:
                assert response.json()["error"]["reason"] == "NO_TASK_AVAILABLE"
                continue
            task = ok(response)
            labels = scene_labels(by_item[task["item"]], jitter=(index - 1) * 0.5)
            ok(
                client.post(
                    f"/v1/projects/{project_id}/tasks/{last(task['name'])}:submit",
                    json={"lease_id": task["lease"]["lease_id"], "labels": labels},
                )
            )
            submitted += 1
            still.append((index, client))
        active = still
    return submitted


def export_zip(org: Org, project_id: str, fmt: str) -> zipfile.ZipFile:
    job = ok(org.admin.post(f"/v1/projects/{project_id}/exports", json={"format": fmt}))
    export_id = last(job["name"])

    def done() -> dict[str, Any] | None:
        current = ok(org.admin.get(f"/v1/projects/{project_id}/exports/{export_id}"))
        assert current["state"] != "EXPORT_STATE_FAILED", current
        return current if current["state"] == "EXPORT_STATE_DONE" else None

    wait_for(done, f"{fmt} export")
    response = org.admin.get(f"/v1/projects/{project_id}/exports/{export_id}/artifact")
    assert response.status_code == 200
    return zipfile.ZipFile(io.BytesIO(response.content))


def test_fifty_images_three_annotators_accepted_and_exported(stack: Stack, tmp_path: Path) -> None:
    """50 images x 3 REST annotators -> QA accepts all -> COCO/YOLO/VOC exports hold exactly the truth."""
    org = make_org(stack, "acme")
    scenes = [render_scene(i) for i in range(IMAGES)]
    _, project_id, by_item = create_street_project(org, scenes)
    wait_for(
        lambda: int(ok(org.admin.get(f"/v1/projects/{project_id}"))["task_counts"]["queued"]) == 3 * IMAGES,
        "150 queued tasks",
    )
    assert label_everything(org, project_id, by_item) == 3 * IMAGES

    quality = wait_for(
        lambda: (
            int((q := ok(org.admin.get(f"/v1/projects/{project_id}/quality")))["accepted_items"]) == IMAGES
            and q
        ),
        "50 accepted items",
    )
    assert int(quality["pending_reviews"]) == 0
    accepted: list[dict[str, Any]] = []
    token = ""
    while True:
        page = ok(
            org.admin.get(
                f"/v1/projects/{project_id}/acceptedLabels", params={"page_size": 20, "page_token": token}
            )
        )
        accepted += page["accepted_labels"]
        token = page.get("next_page_token", "")
        if not token:
            break
    assert len(accepted) == IMAGES
    for label in accepted:
        scene = by_item[label["item"]]
        assert label["labels"]["classes"] == [scene.time_of_day]
        got = sorted(
            (r["label"], r["box"]["x"], r["box"]["y"], r["box"]["width"], r["box"]["height"])
            for r in label["labels"]["regions"]
        )
        want = sorted((b.label, b.x, b.y, b.width, b.height) for b in scene.boxes)
        assert got == want

    stack.wait_idle()  # the export service receives ItemAccepted asynchronously
    total_boxes = sum(len(s.boxes) for s in scenes)
    truth_by_file = {s.file_name: s for s in scenes}

    coco_zip = export_zip(org, project_id, "COCO")
    coco_path = tmp_path / "coco.json"
    coco_path.write_bytes(coco_zip.read("annotations.json"))
    coco = COCO(str(coco_path))
    assert len(coco.getImgIds()) == IMAGES
    assert len(coco.getAnnIds()) == total_boxes
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["car", "plate"]
    for image in coco.loadImgs(coco.getImgIds()):
        scene = truth_by_file[image["file_name"]]
        boxes = sorted(
            (coco.loadCats(a["category_id"])[0]["name"], *a["bbox"])
            for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        )
        assert boxes == sorted((b.label, b.x, b.y, b.width, b.height) for b in scene.boxes)

    yolo_zip = export_zip(org, project_id, "YOLO")
    names = yolo_zip.read("obj.names").decode().split()
    assert names == ["car", "plate"]
    label_files = [n for n in yolo_zip.namelist() if n.startswith("obj_train_data/") and n.endswith(".txt")]
    assert len(label_files) == IMAGES
    for name in label_files:
        scene = truth_by_file[Path(name).stem + ".png"]
        lines = sorted(yolo_zip.read(name).decode().split("\n")[:-1] if yolo_zip.read(name) else [])
        expected = sorted(
            f"{names.index(b.label)} {(b.x + b.width / 2) / 640:.6f} {(b.y + b.height / 2) / 480:.6f} "
            f"{b.width / 640:.6f} {b.height / 480:.6f}"
            for b in scene.boxes
        )
        assert lines == expected

    voc_zip = export_zip(org, project_id, "PASCAL_VOC")
    xml_files = [n for n in voc_zip.namelist() if n.startswith("Annotations/")]
    assert len(xml_files) == IMAGES
    for name in xml_files:
        root = ElementTree.fromstring(voc_zip.read(name))
        scene = truth_by_file[root.findtext("filename") or ""]
        assert root.findtext("size/width") == "640"
        got_voc = sorted(
            (
                obj.findtext("name"),
                float(obj.findtext("bndbox/xmin") or "nan"),
                float(obj.findtext("bndbox/ymin") or "nan"),
                float(obj.findtext("bndbox/xmax") or "nan"),
                float(obj.findtext("bndbox/ymax") or "nan"),
            )
            for obj in root.iter("object")
        )
        assert got_voc == sorted((b.label, b.x, b.y, b.x + b.width, b.y + b.height) for b in scene.boxes)
