"""A cheap, deterministic image feature vector (HOG + colour histogram) behind Triton's Python backend.

For active learning on image items: project heads (logistic regression) are trained on these vectors
and uncertainty / diversity are measured in this space. No learned weights: OpenCV only.

  shape   576 = HOG of the grey image resized to 64x64 (8x8-pixel cells, 2x2-cell blocks without
                overlap -> 4x4 blocks x 4 cells x 9 orientations), L2-normalised
  colour   64 = 4x4x4 BGR histogram of the image resized to 64x64, square-rooted (Hellinger), L2-normalised
  EMBEDDING = [sqrt(shape_weight) * shape, sqrt(1 - shape_weight) * colour]: unit length, so the cosine
              of two embeddings is shape_weight * cos(shape) + (1 - shape_weight) * cos(colour)

Interface (per request of batch size B; ``max_batch_size`` in config.pbtxt):
  IMAGE      BYTES [B, 1]    an encoded image (JPEG, PNG, BMP, TIFF, WebP … whatever cv2.imdecode reads)
  EMBEDDING  FP32  [B, 640]  unit-length feature vector (cosine = dot product)
  SIZE       INT32 [B, 2]    width, height of the decoded image
A request whose IMAGE is not a decodable image fails with INVALID_ARGUMENT naming the element.
"""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

SIDE = 64
HISTOGRAM_BINS = 4


class BadInput(ValueError):
    """The request's data is not what the model takes (answered as a request error)."""


class ImageFeatures:
    def __init__(self, shape_weight: float = 0.75) -> None:
        if not 0.0 <= shape_weight <= 1.0:
            raise ValueError(f"shape_weight must be in [0, 1], not {shape_weight}")
        self.hog = cv2.HOGDescriptor((SIDE, SIDE), (16, 16), (16, 16), (8, 8), 9)
        self.dimension = int(self.hog.getDescriptorSize()) + HISTOGRAM_BINS**3
        self.shape_scale = np.float32(np.sqrt(shape_weight))
        self.colour_scale = np.float32(np.sqrt(1.0 - shape_weight))

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        small = cv2.resize(bgr, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        shape = self.hog.compute(grey).reshape(-1).astype(np.float32)
        colour = cv2.calcHist([small], [0, 1, 2], None, [HISTOGRAM_BINS] * 3, [0, 256] * 3).reshape(-1)
        colour = np.sqrt(colour.astype(np.float32))
        return np.concatenate([self.shape_scale * _unit(shape), self.colour_scale * _unit(colour)])


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.name = config.get("name", "image_embedder")
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.features = ImageFeatures(float(params.get("shape_weight", "0.75")))
        dims = [list(o["dims"]) for o in config.get("output", []) if o["name"] == "EMBEDDING"]
        if dims and [int(d) for d in dims[0]] != [self.features.dimension]:
            raise pb_utils.TritonModelException(
                f"{self.name}: config.pbtxt says EMBEDDING dims {dims[0]}, the features have {self.features.dimension}"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._infer(request))
            except BadInput as error:
                invalid = pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=invalid))
        return responses

    def _infer(self, request: Any) -> Any:
        tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        if tensor is None:
            raise BadInput(f"{self.name}: the request has no IMAGE input")
        images = [self._decode(index, data) for index, data in enumerate(tensor.as_numpy().reshape(-1))]
        embedding = np.zeros((len(images), self.features.dimension), dtype=np.float32)
        for row, bgr in enumerate(images):
            embedding[row] = self.features(bgr)
        size = np.array([[bgr.shape[1], bgr.shape[0]] for bgr in images], dtype=np.int32)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor("EMBEDDING", embedding), pb_utils.Tensor("SIZE", size)]
        )

    def _decode(self, index: int, data: Any) -> np.ndarray:
        if isinstance(data, str):
            data = data.encode("latin-1")
        if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
            raise BadInput(f"{self.name}: IMAGE[{index}] is empty")
        try:
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            bgr = None
        if bgr is None or bgr.size == 0:
            raise BadInput(
                f"{self.name}: IMAGE[{index}] ({len(data)} bytes) is not an image OpenCV can decode "
                "(send encoded JPEG/PNG/BMP/TIFF/WebP bytes)"
            )
        return bgr
