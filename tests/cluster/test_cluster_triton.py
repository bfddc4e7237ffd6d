"""The real Triton Inference Server (scripts/infra/triton.sh) with the model repository of
gpu-inference/, through annocloud's client (common.triton, KServe v2 gRPC)."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import skimage.data
import triton_support
from annocloud_server.common.triton import (
    Box,
    Detections,
    TritonClient,
    TritonInvalidInput,
    TritonUnavailable,
)
from PIL import Image, ImageDraw, ImageFont

MODELS = ("face_detector", "plate_detector")
# Eileen Collins' face in skimage.data.astronaut() (512x512): brow to chin, ear to ear (x, y, w, h).
ASTRONAUT_FACE = (180.0, 70.0, 90.0, 95.0)
# Where plate_scene() draws the plate on skimage.data.coffee() (600x400).
PLATE_BOX = (150, 250, 260, 58)


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def plate_scene(text: str = "A123BC77") -> bytes:
    """skimage's coffee photo with a white Russian-style plate drawn at PLATE_BOX (ground truth)."""
    image = Image.fromarray(skimage.data.coffee()).convert("RGB")
    draw = ImageDraw.Draw(image)
    x, y, w, h = PLATE_BOX
    draw.rectangle([x, y, x + w, y + h], fill=(250, 250, 250), outline=(10, 10, 10), width=4)
    font = ImageFont.load_default(size=int(h * 0.75))
    draw.text((x + w / 2, y + h / 2), text, fill=(15, 15, 15), font=font, anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def iou(box: Box, truth: tuple[float, float, float, float]) -> float:
    tx, ty, tw, th = truth
    ix = max(0.0, min(box.x + box.width, tx + tw) - max(box.x, tx))
    iy = max(0.0, min(box.y + box.height, ty + th) - max(box.y, ty))
    inter = ix * iy
    return inter / (box.width * box.height + tw * th - inter)


def centre_inside(box: Box, truth: tuple[float, float, float, float]) -> bool:
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    tx, ty, tw, th = truth
    return tx <= cx <= tx + tw and ty <= cy <= ty + th


@pytest.fixture(scope="module")
def triton(request: pytest.FixtureRequest) -> triton_support.TritonServer:
    return triton_support.server(request.config)


@pytest.fixture(scope="module")
def client(triton: triton_support.TritonServer) -> Iterator[TritonClient]:
    with TritonClient(triton.grpc_url, timeout=30.0) as triton_client:
        yield triton_client


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    return encode(skimage.data.astronaut())


def test_server_is_live_ready_and_scripted(triton: triton_support.TritonServer, client: TritonClient) -> None:
    """tritonserver started by triton.sh answers live/ready over gRPC, and `status`/`url` report it."""
    assert client.is_live(), triton.log_tail()
    assert client.is_ready(), triton.log_tail()
    print(f"\ntriton up on {triton.grpc_url} in {triton.start_seconds:.1f}s")
    if triton.started_here:
        status = triton.script("status", check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith("up"), status.stdout
        assert triton.script("url").stdout.strip() == triton.grpc_url
        assert triton.script("url", "http").stdout.strip() == triton.http_url


def test_status_of_a_server_that_is_not_running_exits_3(tmp_path: Path) -> None:
    """`triton.sh status` exits 3 and says "down" for ports where nothing was started (no server needed)."""
    grpc_port, http_port, metrics_port = triton_support._free_ports(3)
    done = subprocess.run(
        ["bash", str(triton_support.SCRIPT), "status"],
        env={
            **os.environ,
            "ANNOCLOUD_INFRA_DIR": str(tmp_path),
            "ANNOCLOUD_TRITON_GRPC_PORT": str(grpc_port),
            "ANNOCLOUD_TRITON_HTTP_PORT": str(http_port),
            "ANNOCLOUD_TRITON_METRICS_PORT": str(metrics_port),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith("down")


@pytest.mark.parametrize("model", MODELS)
def test_models_are_ready_with_batching(
    triton: triton_support.TritonServer, client: TritonClient, model: str
) -> None:
    """Every model of the repository loaded and serves batches (max_batch_size > 1 as configured)."""
    assert client.model_ready(model), triton.log_tail()
    assert client.max_batch_size(model) == 8
    assert not client.model_ready("no_such_model")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_face_detected_on_astronaut_photo(client: TritonClient, fmt: str) -> None:
    """The Haar face cascade finds Eileen Collins' face in skimage's astronaut photo, PNG or JPEG encoded."""
    found = client.detect("face_detector", encode(skimage.data.astronaut(), fmt), timeout=30)
    assert isinstance(found, Detections)
    assert (found.image_width, found.image_height) == (512, 512)
    assert len(found) >= 1, found
    best = found.boxes[0]
    assert best.score >= 5  # min_neighbors of config.pbtxt
    assert centre_inside(best, ASTRONAUT_FACE), best
    assert iou(best, ASTRONAUT_FACE) > 0.5, (best, iou(best, ASTRONAUT_FACE))
    assert list(found.boxes) == sorted(found.boxes, key=lambda b: -b.score)


def test_no_face_on_a_photo_without_people(client: TritonClient) -> None:
    """skimage's coffee-cup photo and a rendered plate scene give zero face boxes (and sizes come back)."""
    coffee = client.detect("face_detector", encode(skimage.data.coffee()))
    assert coffee.boxes == ()
    assert (coffee.image_width, coffee.image_height) == (600, 400)
    assert client.detect("face_detector", plate_scene()).boxes == ()


def test_plate_detected_where_it_was_drawn(client: TritonClient) -> None:
    """The Russian-plate cascade finds a plate drawn on a photo at a known place, and none on the bare photo."""
    found = client.detect("plate_detector", plate_scene())
    assert len(found) >= 1, found
    best = found.boxes[0]
    assert centre_inside(best, PLATE_BOX), best
    assert iou(best, PLATE_BOX) > 0.4, (best, iou(best, PLATE_BOX))
    assert client.detect("plate_detector", encode(skimage.data.coffee())).boxes == ()


def test_one_request_with_several_images(client: TritonClient, astronaut_png: bytes) -> None:
    """detect_many sends a batch of 3 in one request; rows are padded per request and COUNT keeps them apart."""
    coffee = encode(skimage.data.coffee())
    found = client.detect_many("face_detector", [astronaut_png, coffee, astronaut_png])
    assert [len(d) >= 1 for d in found] == [True, False, True]
    assert found[0] == found[2]
    assert [(d.image_width, d.image_height) for d in found] == [(512, 512), (600, 400), (512, 512)]
    assert client.detect_many("face_detector", []) == []


def test_concurrent_requests_are_batched(
    triton: triton_support.TritonServer, client: TritonClient, astronaut_png: bytes
) -> None:
    """16 simultaneous single-image requests all succeed with identical answers, and Triton's dynamic
    batcher merged some of them (fewer model executions than inferences)."""
    reference = client.detect("face_detector", astronaut_png)
    before = client.statistics("face_detector")
    n = 16
    barrier = threading.Barrier(n)

    def one(_: int) -> Detections:
        barrier.wait(timeout=30)
        return client.detect("face_detector", astronaut_png, timeout=60)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    elapsed = time.monotonic() - began
    assert results == [reference] * n
    after = client.statistics("face_detector")
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    print(
        f"\n{n} concurrent requests in {elapsed * 1000:.0f} ms: {inferences} inferences, {executions} executions"
    )
    assert inferences == n
    assert executions < inferences, triton.log_tail()


def test_garbage_input_is_a_clear_error_and_the_server_carries_on(
    triton: triton_support.TritonServer, client: TritonClient, astronaut_png: bytes
) -> None:
    """Bytes that are no image (and empty bytes) fail as INVALID_ARGUMENT naming the problem; the server
    stays ready and answers the next good request; a batch holding one bad image fails naming its index."""
    with pytest.raises(TritonInvalidInput, match=r"IMAGE\[0\] \(21 bytes\) is not an image") as raised:
        client.detect("face_detector", b"definitely not a JPEG")
    assert raised.value.metadata["triton_status"] == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(TritonInvalidInput, match=r"IMAGE\[0\] is empty"):
        client.detect("plate_detector", b"")
    with pytest.raises(TritonInvalidInput, match=r"IMAGE\[1\]"):
        client.detect_many("face_detector", [astronaut_png, astronaut_png[: len(astronaut_png) // 8]])
    assert client.is_ready(), triton.log_tail()
    assert client.model_ready("face_detector"), triton.log_tail()
    assert len(client.detect("face_detector", astronaut_png)) >= 1


def test_unreachable_server_is_unavailable_not_a_hang() -> None:
    """A client pointed at a port nobody listens on reports not-ready and raises TritonUnavailable fast."""
    (port,) = triton_support._free_ports(1)
    with TritonClient(f"127.0.0.1:{port}", timeout=2.0) as nowhere:
        began = time.monotonic()
        assert not nowhere.is_ready()
        with pytest.raises(TritonUnavailable):
            nowhere.detect("face_detector", b"x")
        assert time.monotonic() - began < 10


def test_prometheus_metrics_count_the_requests(
    triton: triton_support.TritonServer, client: TritonClient
) -> None:
    """The metrics endpoint (127.0.0.1) exports per-model success counters that grew with the calls above."""
    if not triton.started_here:
        pytest.fail("ANNOCLOUD_TEST_TRITON_GRPC: the metrics port of an external server is unknown")
    client.detect("face_detector", encode(skimage.data.coffee()))
    text = httpx.get(triton.metrics_url, timeout=10).text
    line = next(
        (
            row
            for row in text.splitlines()
            if row.startswith("nv_inference_request_success{") and 'model="face_detector"' in row
        ),
        None,
    )
    assert line is not None, text[:2000]
    assert float(line.rsplit(" ", 1)[1]) >= 1
