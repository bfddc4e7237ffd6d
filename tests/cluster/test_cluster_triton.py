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

import cv2
import httpx
import numpy as np
import pytest
import skimage.data
import tritonclient.grpc as triton_grpc
from annocloud_server.common.triton import (
    Box,
    Detections,
    TritonClient,
    TritonInvalidInput,
    TritonUnavailable,
)
from annocloud_server.devstack import free_ports
from PIL import Image
from support import triton_server as triton_support
from support.scenes import ASTRONAUT_FACE, PLATE_BOX, plate_scene
from tritonclient.utils import InferenceServerException

# Every model of gpu-inference/model_repository and its configured max_batch_size.
MODELS = {
    "face_detector": 8,
    "plate_detector": 8,
    "text_detector": 8,
    "text_embedder": 64,
    "image_embedder": 32,
}


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format=fmt)
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
    grpc_port, http_port, metrics_port = free_ports(3)
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


@pytest.mark.parametrize("model", sorted(MODELS))
def test_models_are_ready_with_batching(
    triton: triton_support.TritonServer, client: TritonClient, model: str
) -> None:
    """Every model of the repository loaded and serves batches (max_batch_size > 1 as configured)."""
    assert client.model_ready(model), triton.log_tail()
    assert client.max_batch_size(model) == MODELS[model]
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
    (port,) = free_ports(1)
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


# --- text_embedder, text_detector, image_embedder ----------------------------------------------------


@pytest.fixture(scope="module")
def raw(triton: triton_support.TritonServer) -> Iterator[triton_grpc.InferenceServerClient]:
    """tritonclient's own gRPC client, for the embedders (TritonClient speaks to detectors)."""
    grpc_client = triton_grpc.InferenceServerClient(url=triton.grpc_url)
    yield grpc_client
    grpc_client.close()


def embed(
    raw: triton_grpc.InferenceServerClient, model: str, items: list[bytes], name: str
) -> dict[str, np.ndarray]:
    data = np.empty((len(items), 1), dtype=np.object_)
    for index, item in enumerate(items):
        data[index, 0] = item
    request = triton_grpc.InferInput(name, [len(items), 1], "BYTES")
    request.set_data_from_numpy(data)
    result = raw.infer(model, [request], client_timeout=120)
    outputs = ("EMBEDDING", "TOKENS") if model == "text_embedder" else ("EMBEDDING", "SIZE")
    return {output: result.as_numpy(output) for output in outputs}


def embed_texts(raw: triton_grpc.InferenceServerClient, texts: list[str]) -> np.ndarray:
    return embed(raw, "text_embedder", [t.encode() for t in texts], "TEXT")["EMBEDDING"]


SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument, a guitar.",
    "The stock market fell sharply today.",
    "The cat sits on the mat.",
    "A kitten is lying on a rug.",
    "Quarterly revenue exceeded the analysts' forecasts.",
]


def test_text_embedder_gives_unit_384d_vectors_that_rank_paraphrases_first(
    raw: triton_grpc.InferenceServerClient,
) -> None:
    """all-MiniLM-L6-v2 on Triton returns one 384-d unit vector per text, and each paraphrase pair is
    closer than any pairing with an unrelated sentence."""
    vectors = embed_texts(raw, SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = vectors @ vectors.T
    for a, b in ((0, 1), (3, 4)):
        unrelated = [cosine[a, c] for c in range(len(SENTENCES)) if c not in (a, b)]
        assert cosine[a, b] > 0.5, cosine[a, b]
        assert cosine[a, b] > max(unrelated) + 0.2, (cosine[a, b], unrelated)
    assert cosine[2, 5] > cosine[2, 0]  # the two finance sentences are nearer each other than to music


def test_text_embedder_batches_and_pads_without_changing_results(
    raw: triton_grpc.InferenceServerClient,
) -> None:
    """One text embedded alone equals the same text inside a batch of very different lengths (so the
    attention mask and pooling ignore padding); TOKENS counts [CLS] and [SEP]; empty text is allowed."""
    texts = ["Hello world", "a much longer sentence " * 20, "", "Hello world"]
    result = embed(raw, "text_embedder", [t.encode() for t in texts], "TEXT")
    alone = embed_texts(raw, ["Hello world"])[0]
    np.testing.assert_allclose(result["EMBEDDING"][0], alone, atol=1e-5)
    np.testing.assert_array_equal(result["EMBEDDING"][0], result["EMBEDDING"][3])
    assert result["TOKENS"].reshape(-1).tolist()[0] == 4
    assert result["TOKENS"].reshape(-1).tolist()[2] == 2
    assert result["TOKENS"].reshape(-1)[1] == 82  # [CLS] + 4 words x 20 + [SEP]


def test_text_embedder_rejects_bytes_that_are_not_utf8(
    triton: triton_support.TritonServer, raw: triton_grpc.InferenceServerClient
) -> None:
    """A TEXT element that is not UTF-8 fails its request with INVALID_ARGUMENT naming it; the model
    keeps serving."""
    with pytest.raises(InferenceServerException, match=r"TEXT\[1\] is not UTF-8") as raised:
        embed(raw, "text_embedder", [b"fine", b"\xff\xfe broken"], "TEXT")
    assert str(raised.value.status()) == "StatusCode.INVALID_ARGUMENT"
    assert embed_texts(raw, ["still here"]).shape == (1, 384), triton.log_tail()


def text_scene(
    lines: list[tuple[str, tuple[int, int], float]], size: tuple[int, int] = (800, 400)
) -> tuple[bytes, list[tuple[float, float, float, float]]]:
    """A grey-gradient image with each (text, bottom-left origin, scale) drawn by cv2.putText, and the
    x, y, w, h of each text's ink (cv2.getTextSize: ascent above the origin, baseline below)."""
    width, height = size
    image = np.tile(np.linspace(170, 235, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
    truths = []
    for text, (x, y), scale in lines:
        thickness = max(2, round(scale * 2))
        (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.putText(
            image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (25, 25, 25), thickness, cv2.LINE_AA
        )
        truths.append((float(x), float(y - h), float(w), float(h + baseline)))
    ok, png = cv2.imencode(".png", image)
    assert ok
    return png.tobytes(), truths


def test_text_detector_finds_rendered_text_lines(client: TritonClient) -> None:
    """PP-OCRv4 detection on Triton (through the detectors' shared client code) boxes each line of text
    rendered into a generated image: one box per line, IoU > 0.5 with where the text was drawn."""
    lines = [
        ("ANNOCLOUD 2026", (60, 110), 2.0),
        ("label every box", (120, 250), 1.4),
        ("plate A123BC77", (380, 350), 1.0),
    ]
    png, truths = text_scene(lines)
    found = client.detect("text_detector", png, timeout=60)
    assert (found.image_width, found.image_height) == (800, 400)
    assert len(found) == len(lines), found
    for truth in truths:
        best = max(found.boxes, key=lambda box: iou(box, truth))
        assert iou(best, truth) > 0.5, (truth, best, iou(best, truth))
        assert 0.5 <= best.score <= 1.0
    assert list(found.boxes) == sorted(found.boxes, key=lambda b: -b.score)


def test_text_detector_finds_nothing_on_a_blank_image_and_rejects_garbage(client: TritonClient) -> None:
    """A plain gradient gives zero text boxes; undecodable bytes fail as INVALID_ARGUMENT like the Haar
    detectors; a batch of 2 keeps the images apart."""
    blank, _ = text_scene([])
    text, _ = text_scene([("hello", (300, 200), 2.0)])
    assert client.detect("text_detector", blank).boxes == ()
    with pytest.raises(TritonInvalidInput, match=r"IMAGE\[0\] \(9 bytes\) is not an image"):
        client.detect("text_detector", b"not a png")
    both = client.detect_many("text_detector", [blank, text])
    assert [len(d) for d in both] == [0, 1]


def test_image_embedder_is_deterministic_and_tells_images_apart(
    raw: triton_grpc.InferenceServerClient,
) -> None:
    """The HOG + colour features: 640-d unit vectors; the same image gives the same vector (alone, in a
    batch, PNG or lossless re-encode); different photos give clearly different vectors; a JPEG of a photo
    stays nearer to it than to another photo."""
    astronaut = skimage.data.astronaut()
    coffee = skimage.data.coffee()
    items = [encode(astronaut), encode(coffee), encode(astronaut, "BMP"), encode(astronaut, "JPEG")]
    result = embed(raw, "image_embedder", items, "IMAGE")
    vectors, sizes = result["EMBEDDING"], result["SIZE"]
    assert vectors.shape == (4, 640)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert sizes.tolist() == [[512, 512], [600, 400], [512, 512], [512, 512]]
    again = embed(raw, "image_embedder", [items[0]], "IMAGE")["EMBEDDING"][0]
    np.testing.assert_array_equal(vectors[0], again)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert float(vectors[0] @ vectors[1]) < 0.9
    assert float(vectors[0] @ vectors[3]) > 0.95 > float(vectors[3] @ vectors[1])


def test_image_embedder_rejects_garbage(raw: triton_grpc.InferenceServerClient) -> None:
    """Empty IMAGE bytes fail as INVALID_ARGUMENT naming the element."""
    with pytest.raises(InferenceServerException, match=r"IMAGE\[0\] is empty") as raised:
        embed(raw, "image_embedder", [b""], "IMAGE")
    assert str(raised.value.status()) == "StatusCode.INVALID_ARGUMENT"
