"""An OpenCV Haar-cascade object detector behind Triton's Python backend.

The same file serves ``face_detector`` and ``plate_detector`` (tests keep the copies identical); the
cascade and its tuning come from the model's ``config.pbtxt`` ``parameters``. The weights are the
cascade XML files that ``opencv-python-headless`` 4.x ships in ``cv2.data.haarcascades``: nothing is
downloaded.

Interface (per request of batch size B; ``max_batch_size`` in config.pbtxt):
  IMAGE   BYTES [B, 1]     an encoded image (JPEG, PNG, BMP, TIFF, WebP … whatever cv2.imdecode reads)
  BOXES   FP32  [B, N, 4]  x, y, width, height in pixels of the decoded image, best first; N is the
                           largest count in this request, rows past COUNT[b] are zero padding
  SCORES  FP32  [B, N]     neighbour count of each box (raw detections merged into it, >= the
                           model's min_neighbors; higher is more certain, not a probability)
  COUNT   INT32 [B, 1]     how many rows of BOXES / SCORES are real for each image
  SIZE    INT32 [B, 2]     width, height of the decoded image (to normalise the boxes)
A request whose IMAGE is not a decodable image fails with INVALID_ARGUMENT naming the element; the
server and the other requests carry on.
"""

from __future__ import annotations

import json
import os
from typing import Any

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils


class BadInput(ValueError):
    """The request's data is not what the model takes (answered as a request error)."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.name = config.get("name", "detector")
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        cascade = params.get("cascade")
        if not cascade:
            raise pb_utils.TritonModelException(f"{self.name}: config.pbtxt has no 'cascade' parameter")
        path = os.path.join(cv2.data.haarcascades, cascade)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"{self.name}: OpenCV {cv2.__version__} ships no cascade {cascade} in {cv2.data.haarcascades}"
            )
        self.classifier = cv2.CascadeClassifier(path)
        if self.classifier.empty():
            raise pb_utils.TritonModelException(f"{self.name}: could not load the cascade {path}")
        self.scale_factor = float(params.get("scale_factor", "1.1"))
        self.min_neighbors = int(params.get("min_neighbors", "5"))
        self.min_size = (int(params.get("min_width", "30")), int(params.get("min_height", "30")))
        self.max_side = int(params.get("max_side", "1280"))
        self.max_detections = int(params.get("max_detections", "100"))
        self.equalize = params.get("equalize_histogram", "true").lower() == "true"

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
        images = tensor.as_numpy().reshape(-1)
        found = [self._detect(index, data) for index, data in enumerate(images)]
        width = max((len(scores) for _, scores, _ in found), default=0)
        boxes = np.zeros((len(found), width, 4), dtype=np.float32)
        scores = np.zeros((len(found), width), dtype=np.float32)
        count = np.zeros((len(found), 1), dtype=np.int32)
        size = np.zeros((len(found), 2), dtype=np.int32)
        for row, (image_boxes, image_scores, image_size) in enumerate(found):
            n = len(image_scores)
            boxes[row, :n] = image_boxes
            scores[row, :n] = image_scores
            count[row, 0] = n
            size[row] = image_size
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("BOXES", boxes),
                pb_utils.Tensor("SCORES", scores),
                pb_utils.Tensor("COUNT", count),
                pb_utils.Tensor("SIZE", size),
            ]
        )

    def _detect(self, index: int, data: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        if isinstance(data, str):
            data = data.encode("latin-1")
        if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
            raise BadInput(f"{self.name}: IMAGE[{index}] is empty")
        try:
            gray = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        except cv2.error:
            gray = None
        if gray is None or gray.size == 0:
            raise BadInput(
                f"{self.name}: IMAGE[{index}] ({len(data)} bytes) is not an image OpenCV can decode "
                "(send encoded JPEG/PNG/BMP/TIFF/WebP bytes)"
            )
        height, width = gray.shape[:2]
        scale = 1.0
        if max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        rects, neighbours = self.classifier.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=self.min_size
        )
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), (width, height)
        boxes = np.asarray(rects, dtype=np.float32).reshape(-1, 4) / scale
        scores = np.asarray(neighbours, dtype=np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")[: self.max_detections]
        return boxes[order], scores[order], (width, height)
