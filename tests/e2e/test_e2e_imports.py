"""Import jobs through REST in both modes: a COCO archive becomes items and predictions; hostile uploads are 400;
the project must be the caller's (404 otherwise) and its schema must know the labels."""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

import httpx
from PIL import Image
from support.e2e import Stack, make_org


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (shade, 90, 255 - shade)).save(buffer, "PNG")
    return buffer.getvalue()


def zip_of(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


COCO = {
    "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
    "categories": [{"id": 1, "name": "car"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 10]}],
}


def create_project(admin: httpx.Client, kind: str = "OBJECT_KIND_BOX") -> str:
    schema = {"objects": [{"name": "car", "kind": kind}]}
    name: str = ok(admin.post("/v1/projects", json={"project": {"display_name": "p"}, "schema": schema}))[
        "name"
    ]
    return name


def post_import(admin: httpx.Client, base: str, project: str, archive: bytes) -> httpx.Response:
    return admin.post(
        base,
        files={"file": ("coco.zip", archive, "application/zip")},
        data={"format": "COCO", "project": project},
    )


def finished(admin: httpx.Client, job: Any) -> Any:
    deadline = time.monotonic() + 60
    while job["state"] not in ("IMPORT_STATE_SUCCEEDED", "IMPORT_STATE_FAILED"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = ok(admin.get(f"/v1/{job['name']}"))
    return job


def test_coco_import_over_rest_gives_items_and_predictions_and_refuses_zip_slip(stack: Stack) -> None:
    """POST /imports with a COCO zip ends SUCCEEDED with one item and one import:coco prediction visible over
    REST; a zip-slip archive is 400 with its reason and creates no job."""
    admin = make_org(stack, "acme", annotators=0).admin
    dataset = ok(admin.post("/v1/datasets", json={"display_name": "imports"}))["name"]
    project = create_project(admin)
    base = f"/v1/{dataset}/imports"
    archive = zip_of({"a.png": png(30), "annotations.json": json.dumps(COCO)})
    job = finished(admin, ok(post_import(admin, base, project, archive)))
    assert job["state"] == "IMPORT_STATE_SUCCEEDED", job
    items = ok(admin.get(f"/v1/{dataset}/items"))["items"]
    assert [i["file_name"] for i in items] == ["a.png"]
    stack.wait_idle()
    predictions = ok(admin.get(f"/v1/{project}/predictions"))["predictions"]
    assert [(p["model"], p["item"]) for p in predictions] == [("import:coco", items[0]["name"])]
    assert predictions[0]["model_version"] == job["name"].rsplit("/", 1)[1]

    hostile = post_import(admin, base, project, zip_of({"../../evil.png": png(1)}))
    assert hostile.status_code == 400
    assert hostile.json()["error"]["reason"] == "ZIP_UNSAFE_PATH"
    assert [j["name"] for j in ok(admin.get(base))["import_jobs"]] == [job["name"]]


def test_import_needs_a_project_of_the_caller_whose_schema_knows_the_labels(stack: Stack) -> None:
    """An unknown project and another organization's project are 404 NOT_FOUND and create no job; car
    boxes into a project where car is a polygon end FAILED with LABEL_KIND_MISMATCH and create no item."""
    admin = make_org(stack, "acme", annotators=0).admin
    stranger = make_org(stack, "globex", annotators=0).admin
    dataset = ok(admin.post("/v1/datasets", json={"display_name": "imports"}))["name"]
    base = f"/v1/{dataset}/imports"
    archive = zip_of({"a.png": png(60), "annotations.json": json.dumps(COCO)})
    for project in ("projects/nope", create_project(stranger)):
        refused = post_import(admin, base, project, archive)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["reason"] == "NOT_FOUND"
    assert ok(admin.get(base))["import_jobs"] == []

    job = finished(admin, ok(post_import(admin, base, create_project(admin, "OBJECT_KIND_POLYGON"), archive)))
    assert (job["state"], job["failure_reason"]) == ("IMPORT_STATE_FAILED", "IMPORT_INVALID"), job
    assert [e["reason"] for e in job["errors"]] == ["LABEL_KIND_MISMATCH"]
    assert ok(admin.get(f"/v1/{dataset}/items"))["items"] == []
