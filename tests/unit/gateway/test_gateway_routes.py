"""Routes: request mapping to the gRPC messages and proto JSON responses."""

from __future__ import annotations

import json

from annocloud.export.v1 import export_pb2
from annocloud.qa.v1 import qa_pb2
from annocloud.tasks.v1 import tasks_pb2


def test_create_dataset_maps_body_and_request_id(gw):
    """POST /v1/datasets: Dataset fields + request_id; the response is the Dataset with int64 as numbers."""
    body = {"display_name": "streets", "description": "d", "request_id": "r-1"}
    response = gw.client.post("/v1/datasets", json=body, headers=gw.auth())
    assert response.status_code == 200
    assert response.json()["name"] == "datasets/d1"
    assert response.json()["display_name"] == "streets"
    assert response.json()["item_count"] == 3
    request, _ = gw.calls.last("CreateDataset")
    assert request.request_id == "r-1"
    assert request.dataset.description == "d"


def test_create_dataset_accepts_wrapped_form(gw):
    """{"dataset": {...}} works too."""
    response = gw.client.post("/v1/datasets", json={"dataset": {"display_name": "w"}}, headers=gw.auth())
    assert response.status_code == 200
    assert response.json()["display_name"] == "w"


def test_pagination_params_pass_through(gw):
    """page_size and page_token reach the service; next_page_token comes back."""
    first = gw.client.get("/v1/datasets?page_size=2", headers=gw.auth())
    assert first.json()["next_page_token"] == "page-2"
    assert [d["name"] for d in first.json()["datasets"]] == ["datasets/a", "datasets/b"]
    request, _ = gw.calls.last("ListDatasets")
    assert (request.page_size, request.page_token) == (2, "")
    second = gw.client.get("/v1/datasets", params={"page_size": 5, "page_token": "page-2"}, headers=gw.auth())
    assert second.json()["next_page_token"] == ""
    request, _ = gw.calls.last("ListDatasets")
    assert (request.page_size, request.page_token) == (5, "page-2")


def test_list_items_and_get_item(gw):
    """Item list and get use the dataset/item resource names."""
    gw.client.get("/v1/datasets/d1/items?page_token=t", headers=gw.auth())
    request, _ = gw.calls.last("ListItems")
    assert (request.parent, request.page_token) == ("datasets/d1", "t")
    response = gw.client.get("/v1/datasets/d1/items/i9", headers=gw.auth())
    assert response.json()["name"] == "datasets/d1/items/i9"


def test_import_manifest_raw_and_multipart(gw):
    """The manifest arrives as raw x-ndjson (request_id in the query) or as a multipart file."""
    manifest = b'{"text": "a"}\n{"text": "b"}\n'
    headers = {**gw.auth(), "Content-Type": "application/x-ndjson"}
    response = gw.client.post(
        "/v1/datasets/d1/items:importManifest?request_id=m1", content=manifest, headers=headers
    )
    assert response.status_code == 200
    assert len(response.json()["items"]) == 2
    request, _ = gw.calls.last("ImportManifest")
    assert (request.manifest, request.request_id) == (manifest, "m1")
    files = {"file": ("m.jsonl", manifest, "application/x-ndjson")}
    response = gw.client.post(
        "/v1/datasets/d1/items:importManifest", files=files, data={"request_id": "m2"}, headers=gw.auth()
    )
    assert response.status_code == 200
    request, _ = gw.calls.last("ImportManifest")
    assert (request.manifest, request.request_id) == (manifest, "m2")


def test_import_manifest_wrong_content_type_is_415(gw):
    """A JSON body is not a manifest."""
    response = gw.client.post("/v1/datasets/d1/items:importManifest", json={"x": 1}, headers=gw.auth())
    assert response.status_code == 415
    assert response.json()["error"]["reason"] == "UNSUPPORTED_CONTENT_TYPE"


def test_batch_create_text(gw):
    """Records with metadata become CreateTextItems."""
    body = {"records": [{"text": "hi", "metadata": {"lang": "en"}}, {"text": "yo"}], "request_id": "t1"}
    response = gw.client.post("/v1/datasets/d1/items:batchCreateText", json=body, headers=gw.auth())
    assert response.status_code == 200
    assert [i["text"] for i in response.json()["items"]] == ["hi", "yo"]
    request, _ = gw.calls.last("CreateTextItems")
    assert request.parent == "datasets/d1"
    assert request.records[0].metadata["lang"] == "en"


def test_projects_and_schemas(gw):
    """Create/get/list projects, add a dataset by bare id, publish and read schemas."""
    body = {
        "project": {"display_name": "cats", "redundancy": 2, "review_policy": "REVIEW_POLICY_ALL"},
        "schema": {"classification_mode": "CLASSIFICATION_MODE_SINGLE", "classes": [{"name": "cat"}]},
        "request_id": "p-1",
    }
    response = gw.client.post("/v1/projects", json=body, headers=gw.auth())
    assert response.status_code == 200
    assert response.json()["review_policy"] == "REVIEW_POLICY_ALL"
    request, _ = gw.calls.last("CreateProject")
    assert request.schema.classes[0].name == "cat"
    assert request.request_id == "p-1"
    response = gw.client.post("/v1/projects/p1:addDataset", json={"dataset": "d7"}, headers=gw.auth())
    assert response.json()["datasets"] == ["datasets/d7"]
    response = gw.client.post(
        "/v1/projects/p1/schemas", json={"schema": {"allow_not_sure": True}}, headers=gw.auth()
    )
    assert response.json()["version"] == 2
    assert response.json()["allow_not_sure"] is True
    assert gw.client.get("/v1/projects/p1/schemas/latest", headers=gw.auth()).json()["name"] == (
        "projects/p1/schemas/latest"
    )
    assert gw.client.get("/v1/projects/p1/schemas/abc", headers=gw.auth()).status_code == 400
    assert gw.client.get("/v1/projects/p1/schemas", headers=gw.auth()).json() == {
        "schemas": [],
        "next_page_token": "",
    }


def test_tasks_lease_heartbeat_release_submit(gw):
    """Task routes map to TaskService and submit to AnnotationService.SubmitAnnotation."""
    gw.client.get("/v1/projects/p1/tasks?state=queued&page_size=3", headers=gw.auth())
    request, _ = gw.calls.last("ListTasks")
    assert (request.state, request.page_size) == (tasks_pb2.TASK_STATE_QUEUED, 3)
    response = gw.client.post(
        "/v1/projects/p1/tasks:leaseNext", json={"lease_seconds": 120}, headers=gw.auth()
    )
    assert response.json()["lease"]["lease_id"] == "lease-1"
    request, _ = gw.calls.last("LeaseNextTask")
    assert request.lease_duration.seconds == 120
    response = gw.client.post("/v1/projects/p1/tasks:leaseNext", headers=gw.auth())
    assert response.status_code == 200
    request, _ = gw.calls.last("LeaseNextTask")
    assert not request.HasField("lease_duration")
    gw.client.post("/v1/projects/p1/tasks/t1:heartbeat", json={"lease_id": "lease-1"}, headers=gw.auth())
    assert gw.calls.last("HeartbeatLease")[0].lease_id == "lease-1"
    gw.client.post("/v1/projects/p1/tasks/t1:release", json={"lease_id": "lease-1"}, headers=gw.auth())
    assert gw.calls.last("ReleaseTask")[0].name == "projects/p1/tasks/t1"
    body = {"lease_id": "lease-1", "labels": {"classes": ["cat"], "regions": []}, "request_id": "s1"}
    response = gw.client.post("/v1/projects/p1/tasks/t1:submit", json=body, headers=gw.auth("annotator"))
    assert response.status_code == 200
    assert response.json()["annotator"] == "user:ann"
    assert response.json()["labels"]["classes"] == ["cat"]
    request, _ = gw.calls.last("SubmitAnnotation")
    assert (request.task, request.lease_id, request.request_id) == ("projects/p1/tasks/t1", "lease-1", "s1")
    assert (
        gw.client.get("/v1/projects/p1/tasks/t1", headers=gw.auth()).json()["name"] == "projects/p1/tasks/t1"
    )


def test_annotations_and_predictions(gw):
    """Annotation reads, PATCH, revisions, predictions with an item filter."""
    gw.client.get("/v1/projects/p1/annotations?item=datasets/d1/items/i1", headers=gw.auth())
    assert gw.calls.last("ListAnnotations")[0].item == "datasets/d1/items/i1"
    response = gw.client.patch(
        "/v1/projects/p1/annotations/a1", json={"labels": {"not_sure": True}, "etag": "e1"}, headers=gw.auth()
    )
    assert response.json()["revision"] == 2
    assert gw.calls.last("UpdateAnnotation")[0].labels.not_sure is True
    assert gw.client.get("/v1/projects/p1/annotations/a1", headers=gw.auth()).status_code == 200
    gw.client.get("/v1/projects/p1/annotations/a1/revisions?page_size=1", headers=gw.auth())
    assert gw.calls.last("ListAnnotationRevisions")[0].page_size == 1
    body = {"prediction": {"item": "datasets/d1/items/i1", "model": "m", "score": 0.5}, "request_id": "x"}
    response = gw.client.post("/v1/projects/p1/predictions", json=body, headers=gw.auth())
    assert response.json()["name"] == "projects/p1/predictions/pr1"
    assert gw.calls.last("CreatePrediction")[0].request_id == "x"
    gw.client.get("/v1/projects/p1/predictions?item=datasets/d1/items/i1", headers=gw.auth())
    assert gw.calls.last("ListPredictions")[0].item == "datasets/d1/items/i1"


def test_qa_routes(gw):
    """Reviews by state, approve with labels, reject by bare annotation id, accepted labels, quality."""
    gw.client.get("/v1/projects/p1/reviews?state=REVIEW_STATE_REWORK", headers=gw.auth())
    assert gw.calls.last("ListReviews")[0].state == qa_pb2.REVIEW_STATE_REWORK
    assert gw.client.get("/v1/projects/p1/reviews?state=nope", headers=gw.auth()).status_code == 400
    assert (
        gw.client.get("/v1/projects/p1/reviews/r1", headers=gw.auth()).json()["name"]
        == "projects/p1/reviews/r1"
    )
    response = gw.client.post(
        "/v1/projects/p1/reviews/r1:approve", json={"labels": {"classes": ["cat"]}}, headers=gw.auth()
    )
    assert response.json()["labels"]["classes"] == ["cat"]
    assert gw.client.post("/v1/projects/p1/reviews/r1:approve", headers=gw.auth()).status_code == 200
    response = gw.client.post(
        "/v1/projects/p1/reviews/r1:reject",
        json={"annotation": "a1", "reason": "wrong class"},
        headers=gw.auth(),
    )
    assert response.json()["state"] == "REVIEW_STATE_REWORK"
    request, _ = gw.calls.last("RejectAnnotation")
    assert (request.annotation, request.reason) == ("projects/p1/annotations/a1", "wrong class")
    gw.client.get("/v1/projects/p1/acceptedLabels?page_size=9", headers=gw.auth())
    assert gw.calls.last("ListAcceptedLabels")[0].page_size == 9
    response = gw.client.get("/v1/projects/p1/acceptedLabels/i1", headers=gw.auth())
    assert response.json()["name"] == "projects/p1/acceptedLabels/i1"
    quality = gw.client.get("/v1/projects/p1/quality", headers=gw.auth()).json()
    assert quality["accepted_items"] == 7
    assert quality["mean_agreement"] == 0.5


def test_exports_accept_short_and_full_formats(gw):
    """COCO, coco and EXPORT_FORMAT_YOLO all work; the response is the Export."""
    for fmt, expected in (("COCO", export_pb2.EXPORT_FORMAT_COCO), ("yolo", export_pb2.EXPORT_FORMAT_YOLO)):
        response = gw.client.post(
            "/v1/projects/p1/exports", json={"format": fmt, "request_id": "e"}, headers=gw.auth()
        )
        assert response.status_code == 200
        assert gw.calls.last("CreateExport")[0].format == expected
    response = gw.client.post(
        "/v1/projects/p1/exports", json={"format": "EXPORT_FORMAT_PASCAL_VOC"}, headers=gw.auth()
    )
    assert response.json()["format"] == "EXPORT_FORMAT_PASCAL_VOC"
    assert response.json()["state"] == "EXPORT_STATE_PENDING"
    assert gw.client.get("/v1/projects/p1/exports/e1", headers=gw.auth()).json()["item_count"] == 2
    assert gw.client.get("/v1/projects/p1/exports", headers=gw.auth()).json()["exports"] == []


def test_openapi_has_stable_operation_ids(gw):
    """Operation ids are the route function names; docs are served."""
    spec = gw.client.get("/openapi.json").json()
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {
        "create_dataset",
        "upload_item",
        "lease_next_task",
        "submit_task",
        "download_export_artifact",
    } <= ops
    assert gw.client.get("/docs").status_code == 200
    assert json.dumps(spec)
