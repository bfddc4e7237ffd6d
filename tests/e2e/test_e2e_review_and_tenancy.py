"""Review loop (tie -> reject -> rework -> accept) and organization isolation on every REST route."""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import httpx
import pytest
from annocloud_server.demo import render_scene
from support.e2e import Org, Stack, make_org
from test_e2e_labeling_loop import create_street_project, last, ok, scene_labels, wait_for


def lease(client: httpx.Client, project_id: str) -> dict[str, Any]:
    return ok(client.post(f"/v1/projects/{project_id}/tasks:leaseNext", json={}))


def submit(
    client: httpx.Client, project_id: str, task: dict[str, Any], labels: dict[str, Any]
) -> dict[str, Any]:
    return ok(
        client.post(
            f"/v1/projects/{project_id}/tasks/{last(task['name'])}:submit",
            json={"lease_id": task["lease"]["lease_id"], "labels": labels},
        )
    )


def tie_review(org: Org, project_id: str, by_item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two annotators disagree on day/night for the only item: a TIE review opens."""
    first, second = org.annotators[0], org.annotators[1]
    task_a = lease(first, project_id)
    scene = by_item[task_a["item"]]
    wrong = "night" if scene.time_of_day == "day" else "day"
    annotation_a = submit(first, project_id, task_a, {**scene_labels(scene, 0), "classes": [wrong]})
    task_b = lease(second, project_id)
    submit(second, project_id, task_b, scene_labels(scene, 0))
    review = wait_for(
        lambda: ok(org.reviewer.get(f"/v1/projects/{project_id}/reviews"))["reviews"], "a pending review"
    )[0]
    assert review["reason"] == "REVIEW_REASON_TIE"
    return review, annotation_a


def test_tie_goes_to_review_reject_makes_rework_and_fixed_label_is_accepted(stack: Stack) -> None:
    """A tied vote opens a review; rejecting one vote gives its annotator a rework task; the fix is accepted."""
    org = make_org(stack, "acme")
    scene = render_scene(0)
    _, project_id, by_item = create_street_project(org, [scene], redundancy=2)
    wait_for(
        lambda: int(ok(org.admin.get(f"/v1/projects/{project_id}"))["task_counts"]["queued"]) == 2, "tasks"
    )
    review, wrong_annotation = tie_review(org, project_id, by_item)

    denied = org.annotators[2].post(
        f"/v1/projects/{project_id}/reviews/{last(review['name'])}:approve", json={}
    )
    assert denied.status_code == 403
    ok(
        org.reviewer.post(
            f"/v1/projects/{project_id}/reviews/{last(review['name'])}:reject",
            json={"annotation": wrong_annotation["name"], "reason": "it is clearly daytime/nighttime"},
        )
    )
    assert org.annotators[1].post(f"/v1/projects/{project_id}/tasks:leaseNext", json={}).status_code == 404
    rework = wait_for(
        lambda: (
            (r := org.annotators[0].post(f"/v1/projects/{project_id}/tasks:leaseNext", json={})).status_code
            == 200
            and r.json()
        ),
        "the rework task",
    )
    assert rework["kind"] == "TASK_KIND_REWORK"
    assert rework["rework_reason"] == "it is clearly daytime/nighttime"
    submit(org.annotators[0], project_id, rework, scene_labels(scene, 0))
    accepted = wait_for(
        lambda: ok(org.admin.get(f"/v1/projects/{project_id}/acceptedLabels"))["accepted_labels"],
        "acceptance",
    )
    assert accepted[0]["labels"]["classes"] == [scene.time_of_day]


def test_bad_labels_are_refused_with_a_reason_and_change_nothing(stack: Stack) -> None:
    """NaN, out-of-image and unknown-label submissions get 400 + reason; the task stays leased, no annotation."""
    org = make_org(stack, "acme")
    scene = render_scene(1)
    _, project_id, _ = create_street_project(org, [scene], redundancy=1)
    wait_for(
        lambda: int(ok(org.admin.get(f"/v1/projects/{project_id}"))["task_counts"]["queued"]) == 1, "task"
    )
    task = lease(org.annotators[0], project_id)
    url = f"/v1/projects/{project_id}/tasks/{last(task['name'])}:submit"
    cases = {
        "BAD_GEOMETRY": {"label": "car", "box": {"x": "NaN", "y": 1, "width": 10, "height": 10}},
        "GEOMETRY_OUT_OF_IMAGE": {"label": "car", "box": {"x": 600, "y": 10, "width": 100, "height": 10}},
        "UNKNOWN_LABEL": {"label": "bicycle", "box": {"x": 1, "y": 1, "width": 10, "height": 10}},
    }
    for reason, region in cases.items():
        response = org.annotators[0].post(
            url,
            json={"lease_id": task["lease"]["lease_id"], "labels": {"classes": ["day"], "regions": [region]}},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["reason"] == reason
    bad_name = org.admin.post(
        f"/v1/datasets/{last(task['item'].rsplit('/items/', 1)[0])}/items:upload",
        files={"file": ("../../etc/passwd.png", scene.png, "image/png")},
    )
    assert bad_name.status_code == 400
    assert ok(org.admin.get(f"/v1/projects/{project_id}/annotations"))["annotations"] == []
    assert (
        ok(org.admin.get(f"/v1/projects/{project_id}/tasks/{last(task['name'])}"))["state"]
        == "TASK_STATE_LEASED"
    )


ID_PARAM = re.compile(r"\{(\w+)\}")


def coco_zip(png: bytes) -> bytes:
    """A one-image COCO archive with one box: a valid import, so only isolation can refuse it."""
    coco = {
        "images": [{"id": 1, "file_name": "imported.png", "width": 640, "height": 480}],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 10]}],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("imported.png", png)
        archive.writestr("annotations.json", json.dumps(coco))
    return buffer.getvalue()


def _bodies(ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A valid body for every write route, so isolation (not validation) decides the answer."""
    return {
        ":upload": {},
        ":importManifest": {},
        ":batchCreateText": {"records": [{"text": "hello"}]},
        ":addDataset": {"dataset": f"datasets/{ids['dataset']}"},
        "/schemas": {
            "schema": {"classification_mode": "CLASSIFICATION_MODE_SINGLE", "classes": [{"name": "x"}]}
        },
        ":leaseNext": {},
        ":heartbeat": {"lease_id": "x"},
        ":release": {"lease_id": "x"},
        ":submit": {"lease_id": "x", "labels": {"classes": ["day"]}},
        "/annotations/{annotation}": {"labels": {"classes": ["day"]}, "etag": "x"},
        "/predictions": {
            "prediction": {"item": ids["item_name"], "model": "m", "model_version": "1", "score": 0.5}
        },
        ":approve": {},
        ":reject": {"annotation": ids["annotation_name"], "reason": "no"},
        "/exports": {"format": "COCO"},
        "/datasetVersions": {"display_name": "stolen"},
        ":escalate": {"note": "hard"},
        "/goldItems": {"item": ids["item_name"], "labels": {"classes": ["day"]}},
        "/grants": {"vendor": "vendors/globex"},
        "/payRates": {
            "task_kind": "TASK_KIND_LABEL",
            "difficulty_tier": 1,
            "amount_micros": 1,
            "currency": "USD",
        },
        "/bonuses": {
            "worker": "vendors/globex/workers/w",
            "amount_micros": 1,
            "currency": "USD",
            "reason": "x",
        },
        "/workers": {"worker_id": "w", "subject": "user:w", "display_name": "w"},
        "/workers/{worker}": {"level": 2},
    }


def _snapshot(client: httpx.Client, ids: dict[str, str]) -> list[Any]:
    project = f"/v1/projects/{ids['project']}"
    paths = [
        "/v1/datasets",
        f"/v1/datasets/{ids['dataset']}/items",
        f"/v1/datasets/{ids['dataset']}/imports",
        project,
        f"{project}/tasks",
        f"{project}/annotations",
        f"{project}/reviews",
        f"{project}/exports",
        f"{project}/acceptedLabels",
        f"{project}/predictions",
        f"{project}/schemas",
        f"{project}/datasetVersions",
        f"{project}/changes",
    ]
    return [ok(client.get(path)) for path in paths]


def test_every_route_gives_another_organization_404_and_changes_nothing(stack: Stack) -> None:
    """Org B using org A's ids on every REST route (from the OpenAPI document) gets 404; A's state is intact."""
    org_a = make_org(stack, "acme")
    org_b = make_org(stack, "globex")
    scene = render_scene(2)
    dataset_id, project_id, by_item = create_street_project(org_a, [scene], redundancy=2)
    wait_for(
        lambda: int(ok(org_a.admin.get(f"/v1/projects/{project_id}"))["task_counts"]["queued"]) == 2, "tasks"
    )
    review, annotation = tie_review(org_a, project_id, by_item)
    tasks = ok(org_a.admin.get(f"/v1/projects/{project_id}/tasks"))["tasks"]
    export = ok(org_a.admin.post(f"/v1/projects/{project_id}/exports", json={"format": "JSONL"}))
    wait_for(
        lambda: (
            ok(org_a.admin.get(f"/v1/projects/{project_id}/exports/{last(export['name'])}"))["state"]
            == "EXPORT_STATE_DONE"
        ),
        "the export",
    )
    import_job = ok(
        org_a.admin.post(
            f"/v1/datasets/{dataset_id}/imports",
            files={"file": ("coco.zip", coco_zip(render_scene(7).png), "application/zip")},
            data={"format": "COCO", "project": f"projects/{project_id}"},
        )
    )
    wait_for(
        lambda: ok(org_a.admin.get(f"/v1/{import_job['name']}"))["state"] == "IMPORT_STATE_SUCCEEDED",
        "the import",
    )
    dataset_version = ok(
        org_a.admin.post(f"/v1/projects/{project_id}/datasetVersions", json={"display_name": "v1"})
    )
    item_name = next(iter(by_item))
    ids = {
        "import_id": last(import_job["name"]),
        "dataset_version": last(dataset_version["name"]),
        "dataset": dataset_id,
        "item": last(item_name),
        "item_name": item_name,
        "project": project_id,
        "task": last(tasks[0]["name"]),
        "annotation": last(annotation["name"]),
        "annotation_name": annotation["name"],
        "review": last(review["name"]),
        "export": last(export["name"]),
        "version": "1",
        "vendor": "acme",
        "worker": "nobody",
    }
    stack.wait_idle()
    before = _snapshot(org_a.admin, ids)

    spec = ok(org_b.admin.get("/openapi.json"))
    bodies = _bodies(ids)
    checked = 0
    leaks: list[str] = []
    for path, operations in spec["paths"].items():
        params = ID_PARAM.findall(path)
        if not params:
            continue
        url = ID_PARAM.sub(lambda m: ids[m.group(1)], path)
        if path.endswith(":diff"):
            url += f"?base={ids['dataset_version']}"
        for method in operations:
            body = next((b for suffix, b in bodies.items() if path.endswith(suffix)), None)
            if method in ("post", "patch") and path.endswith(":upload"):
                response = org_b.admin.post(url, files={"file": ("a.png", scene.png, "image/png")})
            elif method == "post" and path.endswith("/imports"):
                response = org_b.admin.post(
                    url,
                    files={"file": ("coco.zip", coco_zip(render_scene(7).png), "application/zip")},
                    data={"format": "COCO", "project": f"projects/{ids['project']}"},
                )
            elif method in ("post", "patch") and path.endswith(":importManifest"):
                response = org_b.admin.post(
                    url, content=b'{"text": "hi"}\n', headers={"Content-Type": "application/x-ndjson"}
                )
            else:
                response = org_b.admin.request(
                    method.upper(), url, json=body if method in ("post", "patch") else None
                )
            if response.status_code != 404:
                leaks.append(f"{method.upper()} {path}: {response.status_code} {response.text[:200]}")
            checked += 1
    assert leaks == [], "\n".join(leaks)
    assert checked >= 25
    stack.wait_idle()
    assert _snapshot(org_a.admin, ids) == before


@pytest.mark.parametrize("header", [{}, {"Authorization": "Bearer ak_not-a-key"}])
def test_requests_without_a_valid_key_get_401(stack: Stack, header: dict[str, str]) -> None:
    """No key or an unknown key: 401 with a JSON error, on reads and writes."""
    with httpx.Client(base_url=stack.base_url, headers=header) as client:
        for method, path in (("GET", "/v1/projects"), ("POST", "/v1/datasets")):
            response = client.request(method, path, json={})
            assert response.status_code == 401
            assert response.json()["error"]["status"] == "UNAUTHENTICATED"
