"""The worker's batching against a fake Triton client: chunks never exceed a model's max batch
size, and a rejected chunk is retried item by item so only the bad item is dropped."""

from __future__ import annotations

from typing import Any

import numpy as np
from annocloud.common.v1 import common_pb2
from annocloud.events.v1 import events_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.common.triton import Box, Detections, TritonInvalidInput, TritonModelError
from annocloud_server.modelassist.worker import AssistWorker, _Job


class FakeTriton:
    """Answers like tritonclient would: refuses batches over max_batch and images named b"bad"."""

    def __init__(self, max_batch: int):
        self.max_batch = max_batch
        self.requests: list[tuple[str, int]] = []

    def max_batch_size(self, model: str, timeout: float | None = None) -> int:
        if model == "missing":
            raise TritonModelError("unknown model")
        return self.max_batch

    def model_version(self, model: str, timeout: float | None = None) -> str:
        return "1"

    def detect_many(self, model: str, images: list[bytes], timeout: float | None = None) -> list[Detections]:
        self.requests.append((model, len(images)))
        if len(images) > self.max_batch:
            raise TritonInvalidInput("batch-size must be <= max")
        if b"bad" in images:
            raise TritonInvalidInput("not an image")
        return [Detections(model, 10, 10, (Box(1, 1, 2, 2, 0.9),)) for _ in images]

    def embed_many(
        self, model: str, inputs: list[bytes], *, input_name: str, timeout: float | None = None
    ) -> Any:
        self.requests.append((model, len(inputs)))
        return np.ones((len(inputs), 3), dtype=np.float32)


def jobs(datas: list[bytes], model: str = "plate_detector") -> list[_Job]:
    settings = tasks_pb2.ModelAssistSettings(prelabel=[tasks_pb2.PrelabelModel(model=model, label="plate")])
    return [
        _Job(
            seq=i,
            project_id="p",
            item=f"datasets/d/items/{i}",
            context=events_pb2.ItemContext(media_type=common_pb2.MEDIA_TYPE_IMAGE),
            settings=settings,
            data=data,
        )
        for i, data in enumerate(datas)
    ]


def worker() -> AssistWorker:
    return AssistWorker(db=None, writer=None, blobs=None, triton=lambda: None)  # type: ignore[arg-type]


def test_requests_are_chunked_to_the_models_max_batch_size() -> None:
    """20 images to a model taking 8 go as 8 + 8 + 4, and every item gets its suggestion."""
    fake = FakeTriton(max_batch=8)
    results = worker()._infer(fake, jobs([b"img"] * 20))  # type: ignore[arg-type]
    assert [n for m, n in fake.requests if m == "plate_detector"] == [8, 8, 4]
    assert sorted(results.prelabels) == list(range(20))
    assert results.rejected == set()


def test_a_rejected_chunk_is_retried_item_by_item() -> None:
    """One undecodable image in a chunk: its neighbours are labeled, only it is rejected."""
    fake = FakeTriton(max_batch=8)
    results = worker()._infer(fake, jobs([b"img", b"bad", b"img"]))  # type: ignore[arg-type]
    assert results.rejected == {1}
    assert sorted(results.prelabels) == [0, 2]


def test_an_unknown_model_makes_its_items_wait_instead_of_failing_the_round() -> None:
    """A model the server lacks: the items are marked for a later retry, the embedder still runs."""
    fake = FakeTriton(max_batch=8)
    results = worker()._infer(fake, jobs([b"img", b"img"], model="missing"))  # type: ignore[arg-type]
    assert results.retry == {0, 1}
    assert sorted(results.embeddings) == [0, 1]
