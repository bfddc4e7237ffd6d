"""A small typed client for annocloud's models on a Triton Inference Server (KServe v2 gRPC).

It talks to the detector models of ``gpu-inference/model_repository`` (``face_detector``,
``plate_detector``): one BYTES input ``IMAGE`` holding an encoded image, outputs ``BOXES`` (x, y,
width, height in pixels, padded to the largest count in the request), ``SCORES``, ``COUNT`` and
``SIZE`` (see ``gpu-inference/README.md``). No global state: each :class:`TritonClient` owns one gRPC
channel; it is safe to share between threads and is closed with :meth:`TritonClient.close` (or as a
context manager).

Errors map onto the project's hierarchy (``common.errors``): the model rejecting the input is
:class:`TritonInvalidInput` (``InvalidArgument``), a server that cannot be reached, is not ready or
does not answer in time is :class:`TritonUnavailable` (``Unavailable``), anything else from the
server is :class:`TritonModelError`.

Usage::

    with TritonClient("127.0.0.1:18001") as triton:
        if triton.model_ready("face_detector"):
            found = triton.detect("face_detector", jpeg_bytes, timeout=5.0)
            for box in found.boxes:
                print(box.x, box.y, box.width, box.height, box.score)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from annocloud_server.common.errors import AnnocloudError, InvalidArgument, Unavailable

__all__ = [
    "DETECTOR_OUTPUTS",
    "Box",
    "Detections",
    "ModelStatistics",
    "TritonClient",
    "TritonInvalidInput",
    "TritonModelError",
    "TritonUnavailable",
]

DETECTOR_OUTPUTS = ("BOXES", "SCORES", "COUNT", "SIZE")
DEFAULT_TIMEOUT = 10.0

_UNAVAILABLE_CODES = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}
_INVALID_CODES = {"StatusCode.INVALID_ARGUMENT"}


class TritonModelError(AnnocloudError):
    """Triton or the model failed for a reason other than the input or the connection."""

    default_reason = "TRITON_MODEL_ERROR"


class TritonInvalidInput(InvalidArgument):
    """The model rejected the input (e.g. bytes that are not a decodable image)."""

    default_reason = "TRITON_INVALID_INPUT"


class TritonUnavailable(Unavailable):
    """The server could not be reached, was not ready, or did not answer within the timeout."""

    default_reason = "TRITON_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Box:
    """One detection: top-left corner and size in pixels of the decoded image, and its score."""

    x: float
    y: float
    width: float
    height: float
    score: float

    def normalized(self, image_width: int, image_height: int) -> tuple[float, float, float, float]:
        """(x, y, width, height) as fractions of the image size."""
        return (
            self.x / image_width,
            self.y / image_height,
            self.width / image_width,
            self.height / image_height,
        )


@dataclass(frozen=True, slots=True)
class Detections:
    """What a detector model found in one image, best score first."""

    model: str
    image_width: int
    image_height: int
    boxes: tuple[Box, ...]

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    """Cumulative counters of one model version since the server started (Triton's statistics)."""

    model: str
    version: str
    inference_count: int
    """Images (batch elements) inferred."""
    execution_count: int
    """Model executions; fewer than ``inference_count`` when requests were batched."""
    success_count: int
    """Successful requests."""
    failure_count: int
    """Failed requests (e.g. rejected inputs)."""


def _status(error: InferenceServerException) -> str:
    status = error.status()
    return str(status) if status is not None else ""


def _message(error: InferenceServerException) -> str:
    message = error.message()
    return str(message) if message is not None else str(error)


def _translate(error: InferenceServerException, what: str) -> AnnocloudError:
    status = _status(error)
    message = f"{what}: {_message(error)}"
    metadata = {"triton_status": status} if status else {}
    if status in _INVALID_CODES:
        return TritonInvalidInput(message, metadata=metadata)
    if status in _UNAVAILABLE_CODES or not status:
        return TritonUnavailable(message, metadata=metadata)
    return TritonModelError(message, metadata=metadata)


class TritonClient:
    """KServe v2 gRPC client for one Triton server, e.g. ``TritonClient("127.0.0.1:18001")``.

    ``url`` is ``host:port`` of the gRPC endpoint (``scripts/infra/triton.sh url``); ``timeout`` is
    the default deadline in seconds of every call.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not url or "://" in url:
            raise ValueError(f"TritonClient wants the gRPC address as host:port, not {url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.url = url
        self.timeout = timeout
        self._client: Any = triton_grpc.InferenceServerClient(url=url)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def is_live(self, timeout: float | None = None) -> bool:
        """True when the server answers its liveness probe; False when it is unreachable."""
        try:
            return bool(self._client.is_server_live(client_timeout=self._deadline(timeout)))
        except InferenceServerException:
            return False

    def is_ready(self, timeout: float | None = None) -> bool:
        """True when the server is ready (it starts with every model of its repository loaded)."""
        try:
            return bool(self._client.is_server_ready(client_timeout=self._deadline(timeout)))
        except InferenceServerException:
            return False

    def model_ready(self, name: str, version: str = "", timeout: float | None = None) -> bool:
        """True when model ``name`` (latest version unless ``version``) is loaded and ready."""
        try:
            return bool(
                self._client.is_model_ready(
                    name, model_version=version, client_timeout=self._deadline(timeout)
                )
            )
        except InferenceServerException:
            return False

    def max_batch_size(self, model: str, timeout: float | None = None) -> int:
        """The model's ``max_batch_size`` (the most images :meth:`detect_many` may send at once)."""
        try:
            config = self._client.get_model_config(model, client_timeout=self._deadline(timeout))
        except InferenceServerException as error:
            raise _translate(error, f"config of {model}") from error
        return int(config.config.max_batch_size)

    def statistics(self, model: str, version: str = "", timeout: float | None = None) -> ModelStatistics:
        """Inference/execution counters of ``model`` (its latest version unless ``version``)."""
        try:
            reply = self._client.get_inference_statistics(
                model_name=model, model_version=version, client_timeout=self._deadline(timeout)
            )
        except InferenceServerException as error:
            raise _translate(error, f"statistics of {model}") from error
        if not reply.model_stats:
            raise TritonModelError(f"Triton has no statistics for {model}")
        stats = max(reply.model_stats, key=lambda item: int(item.version or 0))
        return ModelStatistics(
            model=str(stats.name),
            version=str(stats.version),
            inference_count=int(stats.inference_count),
            execution_count=int(stats.execution_count),
            success_count=int(stats.inference_stats.success.count),
            failure_count=int(stats.inference_stats.fail.count),
        )

    def detect(self, model: str, image: bytes, timeout: float | None = None) -> Detections:
        """Runs detector ``model`` on one encoded image (JPEG, PNG, …)."""
        return self.detect_many(model, [image], timeout=timeout)[0]

    def detect_many(
        self, model: str, images: Sequence[bytes], timeout: float | None = None
    ) -> list[Detections]:
        """Runs detector ``model`` on several encoded images in one request (at most its max_batch_size).

        Triton's dynamic batcher also merges concurrent single-image requests, so calling
        :meth:`detect` from several threads batches as well.
        """
        if not images:
            return []
        for index, image in enumerate(images):
            if not isinstance(image, bytes | bytearray | memoryview):
                raise TypeError(f"images[{index}] must be encoded image bytes, not {type(image).__name__}")
        data = np.empty((len(images), 1), dtype=np.object_)
        for index, image in enumerate(images):
            data[index, 0] = bytes(image)
        request = triton_grpc.InferInput("IMAGE", [len(images), 1], "BYTES")
        request.set_data_from_numpy(data)
        outputs = [triton_grpc.InferRequestedOutput(name) for name in DETECTOR_OUTPUTS]
        try:
            result = self._client.infer(
                model, [request], outputs=outputs, client_timeout=self._deadline(timeout)
            )
        except InferenceServerException as error:
            raise _translate(error, f"{model} on {len(images)} image(s)") from error
        return _detections(model, result, len(images))

    def embed_many(
        self, model: str, inputs: Sequence[bytes], *, input_name: str, timeout: float | None = None
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Runs embedding ``model`` (``IMAGE`` or ``TEXT`` BYTES in, ``EMBEDDING`` FP32 [n, d] out)."""
        if not inputs:
            return np.zeros((0, 0), dtype=np.float32)
        data = np.empty((len(inputs), 1), dtype=np.object_)
        for index, value in enumerate(inputs):
            if not isinstance(value, bytes | bytearray | memoryview):
                raise TypeError(f"inputs[{index}] must be bytes, not {type(value).__name__}")
            data[index, 0] = bytes(value)
        request = triton_grpc.InferInput(input_name, [len(inputs), 1], "BYTES")
        request.set_data_from_numpy(data)
        try:
            result = self._client.infer(
                model,
                [request],
                outputs=[triton_grpc.InferRequestedOutput("EMBEDDING")],
                client_timeout=self._deadline(timeout),
            )
        except InferenceServerException as error:
            raise _translate(error, f"{model} on {len(inputs)} input(s)") from error
        return _output(result, "EMBEDDING", model).astype(np.float32).reshape(len(inputs), -1)

    def model_version(self, model: str, timeout: float | None = None) -> str:
        """The newest version the server has loaded of ``model`` (provenance of its outputs)."""
        try:
            metadata = self._client.get_model_metadata(model, client_timeout=self._deadline(timeout))
        except InferenceServerException as error:
            raise _translate(error, f"metadata of {model}") from error
        versions = [str(v) for v in metadata.versions]
        return max(versions, key=lambda v: (len(v), v)) if versions else ""


def _output(result: Any, name: str, model: str) -> np.ndarray[Any, Any]:
    array = result.as_numpy(name)
    if array is None:
        raise TritonModelError(f"{model} returned no {name} output (is it a detector model?)")
    return np.asarray(array)


def _detections(model: str, result: Any, expected: int) -> list[Detections]:
    boxes = _output(result, "BOXES", model).reshape(expected, -1, 4)
    scores = _output(result, "SCORES", model).reshape(expected, -1)
    counts = _output(result, "COUNT", model).reshape(expected)
    sizes = _output(result, "SIZE", model).reshape(expected, 2)
    found: list[Detections] = []
    for row in range(expected):
        count = int(counts[row])
        if not 0 <= count <= boxes.shape[1]:
            raise TritonModelError(f"{model} returned COUNT {count} for {boxes.shape[1]} boxes")
        found.append(
            Detections(
                model=model,
                image_width=int(sizes[row, 0]),
                image_height=int(sizes[row, 1]),
                boxes=tuple(
                    Box(
                        x=float(boxes[row, i, 0]),
                        y=float(boxes[row, i, 1]),
                        width=float(boxes[row, i, 2]),
                        height=float(boxes[row, i, 3]),
                        score=float(scores[row, i]),
                    )
                    for i in range(count)
                ),
            )
        )
    return found
