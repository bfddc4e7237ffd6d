"""Model-assisted labeling through REST against the real tritonserver, in both ways to run
annocloud: images are pre-labeled on ingest and the suggestions' survival is measured; a text
project's queue is ordered by the cold start, then retrained and reordered by uncertainty after
accepted labels."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import skimage.data
from annocloud_server.crowd.geometry import iou
from annocloud_server.embedded import start_embedded
from PIL import Image
from support import infra, triton_server
from support.e2e import Stack, last, make_org, ok, wait_for
from support.scenes import ASTRONAUT_FACE, PLATE_BOX, plate_scene

SPORTS = [
    "the striker scored twice in the second half",
    "the marathon runners crossed the finish line",
    "our goalkeeper saved a penalty in extra time",
    "the tennis final went to five sets",
    "the cyclists climbed the mountain stage",
    "the team won the basketball championship",
    "she swam the fastest lap of the relay",
    "the boxer won the title fight on points",
]
COOKING = [
    "simmer the tomato sauce with garlic and basil",
    "knead the bread dough for ten minutes",
    "roast the vegetables with olive oil and salt",
    "whisk the eggs and sugar until pale",
    "season the soup with pepper and fresh herbs",
    "bake the cake at one hundred eighty degrees",
    "slice the onions thinly and fry them golden",
    "marinate the chicken in lemon and thyme",
]


@pytest.fixture(params=["embedded", "cluster"])
def assisted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A stack whose modelassist talks to the session's real tritonserver."""
    url = triton_server.server(request.config).grpc_url
    if request.param == "embedded":
        embedded = start_embedded(data_dir=tmp_path / "data", triton_url=url)
        yield embedded
        embedded.stop()
        return
    cluster = infra.cluster_stack(
        request.config, tmp_path / "stack", service_env={"modelassist": {"ANNOCLOUD_TRITON_URL": url}}
    )
    cluster.start()
    try:
        yield cluster
    finally:
        codes = cluster.stop()
        assert all(code == 0 for code in codes.values()), codes


def test_images_are_prelabeled_on_ingest_and_suggestion_survival_is_measured(assisted: Stack) -> None:
    """plate_detector's boxes arrive as predictions with provenance, for items ingested before and after
    the project, and come with each lease as suggestions; an annotator who moves the box
    shows up as an adjusted suggestion, one who keeps it as unchanged."""
    org = make_org(assisted, "acme", annotators=2)
    dataset = ok(org.admin.post("/v1/datasets", json={"dataset": {"display_name": "streets"}}))
    items = []
    for n, text in enumerate(("A123BC77", "K456MP99")):
        body = ok(
            org.admin.post(
                f"/v1/{dataset['name']}/items:upload",
                files={"file": (f"s{n}.png", plate_scene(text, n), "image/png")},
            )
        )
        items.append(body["item"]["name"])
    project = last(
        ok(
            org.admin.post(
                "/v1/projects",
                json={
                    "project": {
                        "display_name": "plates",
                        "redundancy": 2,
                        "datasets": [dataset["name"]],
                        "model_assist": {
                            "prelabel": [{"model": "plate_detector", "label": "plate", "min_score": 0.0}]
                        },
                    },
                    "schema": {
                        "classification_mode": "CLASSIFICATION_MODE_SINGLE",
                        "classes": [{"name": "day"}, {"name": "night"}],
                        "objects": [{"name": "plate", "kind": "OBJECT_KIND_BOX"}],
                    },
                },
            )
        )["name"]
    )
    # Items uploaded before the project existed are pre-labeled too (modelassist keeps a catalog).
    for n, text in enumerate(("P777KX50", "T222OO11")):
        body = ok(
            org.admin.post(
                f"/v1/{dataset['name']}/items:upload",
                files={"file": (f"n{n}.png", plate_scene(text, n + 2), "image/png")},
            )
        )
        items.append(body["item"]["name"])
    fresh = items

    def predictions(item: str) -> list[dict[str, Any]]:
        return ok(org.admin.get(f"/v1/projects/{project}/predictions", params={"item": item}))["predictions"]

    found = {
        item: wait_for(lambda item=item: predictions(item), f"the pre-label of {item}") for item in fresh
    }
    for _item, [prediction] in found.items():
        assert (prediction["model"], prediction["model_version"]) == ("plate_detector", "1")
        boxes = [r["box"] for r in prediction["labels"]["regions"] if r["label"] == "plate"]
        assert boxes, prediction
        best = max(boxes, key=lambda b: iou((b["x"], b["y"], b["width"], b["height"]), PLATE_BOX))
        assert iou((best["x"], best["y"], best["width"], best["height"]), PLATE_BOX) > 0.4, best

    # Two annotators label a pre-labeled item: one keeps the suggestion, one draws the true box.
    target = fresh[0]
    suggested = found[target][0]["labels"]["regions"]
    for annotator, regions in (
        (org.annotators[0], suggested),
        (
            org.annotators[1],
            [{"label": "plate", "box": dict(zip(("x", "y", "width", "height"), PLATE_BOX, strict=True))}],
        ),
    ):
        while True:
            task = ok(annotator.post(f"/v1/projects/{project}/tasks:leaseNext", json={}))
            # The lease offers the item's suggestions to start from.
            assert [s["model"] for s in task["suggestions"]] == ["plate_detector"], task
            labels = {"classes": ["day"], "regions": regions if task["item"] == target else []}
            ok(
                annotator.post(
                    f"/v1/{task['name']}:submit",
                    json={"lease_id": task["lease"]["lease_id"], "labels": labels},
                )
            )
            if task["item"] == target:
                break
    stats = wait_for(
        lambda: (
            [
                s
                for s in ok(org.admin.get(f"/v1/projects/{project}/suggestionStats"))["stats"]
                if s["annotator"] == "" and int(s["annotations"]) >= 2
            ]
            or None
        ),
        "suggestion stats",
    )
    (total,) = stats
    assert total["model"] == "plate_detector"
    assert int(total["unchanged_boxes"]) >= 1  # the annotator who kept it
    assert int(total["unchanged_boxes"]) + int(total["adjusted_boxes"]) + int(total["deleted_boxes"]) == int(
        total["suggested_boxes"]
    )
    keeper = next(
        s
        for s in ok(org.admin.get(f"/v1/projects/{project}/suggestionStats"))["stats"]
        if s["annotator"] == "user:acme-ann0"
    )
    assert float(keeper["unchanged_fraction"]) == 1.0  # rubber-stamping is visible per annotator


def test_queue_is_ordered_by_cold_start_then_reordered_by_uncertainty_after_retraining(
    assisted: Stack,
) -> None:
    """Text items are embedded by text_embedder; the diversity cold start orders the queue (its first
    six picks cover both topics); after retrain_every accepted labels the head is retrained, the
    queue is reordered by margin uncertainty and the next lease is the item ranked first."""
    org = make_org(assisted, "acme", annotators=1)
    ambiguous = ["the chef ran a marathon then baked bread", "the team ate pasta before the cup final"]
    texts = SPORTS + COOKING + ambiguous
    truth = (
        dict.fromkeys(SPORTS, "sports")
        | dict.fromkeys(COOKING, "cooking")
        | dict.fromkeys(ambiguous, "sports")
    )
    dataset = ok(org.admin.post("/v1/datasets", json={"dataset": {"display_name": "snippets"}}))
    project = last(
        ok(
            org.admin.post(
                "/v1/projects",
                json={
                    "project": {
                        "display_name": "topics",
                        "redundancy": 1,
                        "datasets": [dataset["name"]],
                        "model_assist": {
                            "strategy": "SAMPLING_STRATEGY_MARGIN",
                            "retrain_every": 6,
                            "cold_start": "COLD_START_DIVERSITY",
                        },
                    },
                    "schema": {
                        "classification_mode": "CLASSIFICATION_MODE_SINGLE",
                        "classes": [{"name": "sports"}, {"name": "cooking"}],
                    },
                },
            )
        )["name"]
    )
    ok(
        org.admin.post(
            f"/v1/{dataset['name']}/items:batchCreateText", json={"records": [{"text": t} for t in texts]}
        )
    )

    def project_model() -> dict[str, Any] | None:
        response = org.admin.get(f"/v1/projects/{project}/model")  # 404 until modelassist saw the project
        return response.json() if response.status_code == 200 else None

    model = wait_for(
        lambda: (m := project_model()) is not None and m["embedded_items"] == len(texts) and m,
        "every text embedded",
    )
    assert model["head_version"] == 0
    cold = ok(org.admin.post(f"/v1/projects/{project}/model:rescore"))
    assert (cold["head_version"], cold["scored_items"]) == (0, len(texts))

    def queued() -> list[dict[str, Any]]:
        return ok(
            org.admin.get(f"/v1/projects/{project}/tasks", params={"state": "QUEUED", "page_size": 100})
        )["tasks"]

    wait_for(lambda: max(t["priority"] for t in queued()) == 99, "the cold-start order in the queue")
    cold_order = {t["item_text"]: t["priority"] for t in queued()}
    annotator = org.annotators[0]
    labeled = []
    for _ in range(6):
        best = max(t["priority"] for t in queued())
        task = ok(annotator.post(f"/v1/projects/{project}/tasks:leaseNext", json={}))
        assert task["priority"] == best  # the queue follows the model's order
        labeled.append(task["item_text"])
        ok(
            annotator.post(
                f"/v1/{task['name']}:submit",
                json={
                    "lease_id": task["lease"]["lease_id"],
                    "labels": {"classes": [truth[task["item_text"]]]},
                },
            )
        )
    assert {truth[t] for t in labeled} == {"sports", "cooking"}, labeled  # diversity reached both topics
    trained = wait_for(
        lambda: (m := project_model()) is not None and m["head_version"] >= 1 and m,
        "the retrained head",
    )
    assert trained["trained_on"] == 6
    assert trained["strategy"] == "SAMPLING_STRATEGY_MARGIN"
    assert trained["scored_items"] == len(texts) - 6
    remaining = wait_for(
        lambda: (q := queued()) and max(t["priority"] for t in q) == 99 and len(q) == len(texts) - 6 and q,
        "the reordered queue",
    )
    by_text = {t["item_text"]: t["priority"] for t in remaining}
    assert by_text != {t: cold_order[t] for t in by_text}, "the retrained head did not reorder the queue"
    assert len(set(by_text.values())) > len(by_text) // 2  # a ranking, not a few buckets
    nxt = ok(annotator.post(f"/v1/projects/{project}/tasks:leaseNext", json={}))
    assert nxt["priority"] == 99


def _detail(pixels: Any) -> float:
    """Mean absolute difference of neighbouring pixels: what a blur removes (edges, texture)."""
    import numpy as np

    return float(np.abs(np.diff(pixels, axis=1)).mean() + np.abs(np.diff(pixels, axis=0)).mean())


def _pixels(data: bytes) -> Any:
    import numpy as np

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64)


def test_deidentified_dataset_stores_blurred_faces_and_reblurs_after_a_fix(assisted: Stack) -> None:
    """An upload into a de-identified dataset is stored with the face that face_detector found
    blurred (regions kept with their model); a person adds a missed region and the stored media is
    blurred again from the original; a plain dataset keeps its pixels."""
    org = make_org(assisted, "acme", annotators=0)
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, format="PNG")
    photo = buffer.getvalue()
    private = ok(
        org.admin.post("/v1/datasets", json={"dataset": {"display_name": "people", "deidentify": True}})
    )
    assert private["deidentify"] is True
    plain = ok(org.admin.post("/v1/datasets", json={"dataset": {"display_name": "plain"}}))
    item = ok(
        org.admin.post(
            f"/v1/{private['name']}/items:upload", files={"file": ("astronaut.png", photo, "image/png")}
        )
    )["item"]
    plain_item = ok(
        org.admin.post(
            f"/v1/{plain['name']}/items:upload", files={"file": ("astronaut.png", photo, "image/png")}
        )
    )["item"]
    regions = ok(org.admin.get(f"/v1/{item['name']}/sensitiveRegions"))["regions"]
    faces = [r for r in regions if r["kind"] == "SENSITIVE_KIND_FACE"]
    assert faces, regions
    assert all(r["source"].startswith("model:face_detector/") for r in faces)
    best = max(faces, key=lambda r: iou((r["x"], r["y"], r["width"], r["height"]), ASTRONAUT_FACE))
    assert iou((best["x"], best["y"], best["width"], best["height"]), ASTRONAUT_FACE) > 0.3, best
    assert item["blurred_regions"] == len(regions)

    original = _pixels(photo)
    stored = _pixels(org.admin.get(f"/v1/{item['name']}/content").content)
    untouched = _pixels(org.admin.get(f"/v1/{plain_item['name']}/content").content)
    x, y, w, h = (int(v) for v in ASTRONAUT_FACE)
    face_before, face_after = original[y : y + h, x : x + w], stored[y : y + h, x : x + w]
    assert _detail(face_after) < 0.35 * _detail(face_before)  # the face lost most of its detail
    assert abs(stored[400:, :100] - original[400:, :100]).max() == 0  # far from any region: unchanged
    assert (untouched == original).all()

    # A person marks the flag patch on the shoulder (a miss) and keeps the detected regions.
    missed = {"kind": "SENSITIVE_KIND_OTHER", "x": 380.0, "y": 420.0, "width": 60.0, "height": 60.0}
    updated = ok(org.admin.put(f"/v1/{item['name']}/sensitiveRegions", json={"regions": [*regions, missed]}))
    assert len(updated["regions"]) == len(regions) + 1
    assert updated["regions"][-1]["source"] == "user:acme-admin"
    reblurred = _pixels(org.admin.get(f"/v1/{item['name']}/content").content)
    patch = (slice(420, 480), slice(380, 440))
    assert _detail(reblurred[patch]) < 0.5 * _detail(original[patch])  # the added region is blurred now
    assert abs(reblurred[y : y + h, x : x + w] - stored[y : y + h, x : x + w]).max() < 1e-9  # same face blur
