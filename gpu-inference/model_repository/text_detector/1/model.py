"""PP-OCRv4 text-region detection (DB) behind Triton's Python backend, run by onnxruntime on CPU.

The weights are ``ch_PP-OCRv4_det_infer.onnx`` as the ``rapidocr-onnxruntime`` 1.4.4 wheel ships it
(``rapidocr_onnxruntime/models/``): nothing is downloaded, and only that file of the package is used.
Pre- and post-processing follow rapidocr's ``ch_ppocr_det`` (BGR as OpenCV decodes it, scaled to
[-1, 1], sides rounded to multiples of 32; DB: probability map > ``thresh``, 2x2 dilation, contours,
minimum-area rectangles scored by the mean probability inside, kept when >= ``box_thresh``, grown by
``area * unclip_ratio / perimeter`` on every side — what pyclipper's round offset does to a
rectangle). Each rotated rectangle is reported as its axis-aligned bounding box.

Interface: identical to the Haar detectors (``face_detector``), so ``TritonClient.detect`` serves it:
  IMAGE   BYTES [B, 1]     an encoded image (JPEG, PNG, BMP, TIFF, WebP … whatever cv2.imdecode reads)
  BOXES   FP32  [B, N, 4]  x, y, width, height in pixels of the decoded image, best first; rows past
                           COUNT[b] are zero padding
  SCORES  FP32  [B, N]     mean DB text probability inside the region (0..1, >= box_thresh)
  COUNT   INT32 [B, 1]     how many rows of BOXES / SCORES are real for each image
  SIZE    INT32 [B, 2]     width, height of the decoded image
Images of the merged requests whose network input has the same shape share onnxruntime calls
(``onnx_batch`` images per call).
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

WEIGHTS_PACKAGE = "rapidocr_onnxruntime"
WEIGHTS_FILE = "models/ch_PP-OCRv4_det_infer.onnx"


class BadInput(ValueError):
    """The request's data is not what the model takes (answered as a request error)."""


def package_dir(package: str) -> str:
    """The directory of an installed package, without importing it (rapidocr imports its own deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package} is not installed")
    return next(iter(spec.submodule_search_locations))


class TextDetector:
    def __init__(self, onnx_path: str, params: dict[str, str]) -> None:
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            onnx_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.limit_side_len = int(params.get("limit_side_len", "960"))
        self.limit_type = params.get("limit_type", "max")
        if self.limit_type not in ("max", "min"):
            raise ValueError(f"limit_type must be max or min, not {self.limit_type!r}")
        self.thresh = float(params.get("thresh", "0.3"))
        self.box_thresh = float(params.get("box_thresh", "0.5"))
        self.unclip_ratio = float(params.get("unclip_ratio", "1.6"))
        self.max_candidates = int(params.get("max_candidates", "1000"))
        self.max_detections = int(params.get("max_detections", "100"))
        # Images per onnxruntime call: on CPU a larger batch is no faster per image (measured 49 ms at
        # 2, 64 ms at 8 for 800x384), so the batcher's gain is the saved per-request overhead only.
        self.onnx_batch = max(1, int(params.get("onnx_batch", "2")))
        self.min_size = 3

    def network_input(self, bgr: np.ndarray) -> np.ndarray:
        """float32 [3, H', W']: resized (multiples of 32) and scaled to [-1, 1] like rapidocr's DetPreProcess."""
        height, width = bgr.shape[:2]
        ratio = 1.0
        if self.limit_type == "max" and max(height, width) > self.limit_side_len:
            ratio = self.limit_side_len / max(height, width)
        elif self.limit_type == "min" and min(height, width) < self.limit_side_len:
            ratio = self.limit_side_len / min(height, width)
        new_h = max(32, round(int(height * ratio) / 32) * 32)
        new_w = max(32, round(int(width * ratio) / 32) * 32)
        resized = cv2.resize(bgr, (new_w, new_h))
        scaled = resized.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
        return np.ascontiguousarray(scaled.transpose(2, 0, 1))

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """[N, 3, H, W] -> DB probability maps [N, H, W]."""
        return self.session.run(None, {self.input_name: batch})[0][:, 0]

    def boxes(self, prob: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        map_h, map_w = prob.shape
        mask = cv2.dilate((prob > self.thresh).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        found: list[tuple[float, float, float, float]] = []
        scores: list[float] = []
        for contour in contours[: self.max_candidates]:
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
            if min(rw, rh) < self.min_size:
                continue
            corners = cv2.boxPoints(((cx, cy), (rw, rh), angle))
            score = self._mean_inside(prob, corners)
            if score < self.box_thresh:
                continue
            grow = rw * rh * self.unclip_ratio / (2.0 * (rw + rh))
            rw, rh = rw + 2 * grow, rh + 2 * grow
            if min(rw, rh) < self.min_size + 2:
                continue
            corners = cv2.boxPoints(((cx, cy), (rw, rh), angle))
            xs = np.clip(np.round(corners[:, 0] / map_w * width), 0, width)
            ys = np.clip(np.round(corners[:, 1] / map_h * height), 0, height)
            x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
            if x1 - x0 <= 3 or y1 - y0 <= 3:
                continue
            found.append((x0, y0, x1 - x0, y1 - y0))
            scores.append(score)
        if not found:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes = np.asarray(found, dtype=np.float32)
        values = np.asarray(scores, dtype=np.float32)
        order = np.argsort(-values, kind="stable")[: self.max_detections]
        return boxes[order], values[order]

    @staticmethod
    def _mean_inside(prob: np.ndarray, corners: np.ndarray) -> float:
        h, w = prob.shape
        x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, w - 1))
        x1 = int(np.clip(np.ceil(corners[:, 0].max()), 0, w - 1))
        y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, h - 1))
        y1 = int(np.clip(np.ceil(corners[:, 1].max()), 0, h - 1))
        mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
        shifted = (corners - np.array([x0, y0], dtype=np.float32)).astype(np.int32)
        cv2.fillPoly(mask, [shifted.reshape(-1, 1, 2)], 1)
        return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.name = config.get("name", "text_detector")
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        try:
            path = os.path.join(package_dir(params.get("weights_package", WEIGHTS_PACKAGE)), WEIGHTS_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} does not exist")
            self.detector = TextDetector(path, params)
        except (OSError, ValueError, RuntimeError) as error:
            raise pb_utils.TritonModelException(f"{self.name}: cannot load PP-OCRv4 det: {error}") from error

    def execute(self, requests: list[Any]) -> list[Any]:
        # Decode every image of every request first; a bad element fails only its own request.
        decoded: list[list[np.ndarray] | BadInput] = []
        for request in requests:
            try:
                decoded.append(self._images(request))
            except BadInput as error:
                decoded.append(error)
        inputs: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        tensors: dict[tuple[int, int], np.ndarray] = {}
        for r, images in enumerate(decoded):
            if isinstance(images, BadInput):
                continue
            for i, bgr in enumerate(images):
                tensor = self.detector.network_input(bgr)
                tensors[(r, i)] = tensor
                inputs.setdefault(tensor.shape, []).append((r, i))
        probs: dict[tuple[int, int], np.ndarray] = {}
        for same_shape in inputs.values():
            for start in range(0, len(same_shape), self.detector.onnx_batch):
                keys = same_shape[start : start + self.detector.onnx_batch]
                maps = self.detector.probabilities(np.stack([tensors[key] for key in keys]))
                probs.update(zip(keys, maps, strict=True))
        responses = []
        for r, images in enumerate(decoded):
            if isinstance(images, BadInput):
                invalid = pb_utils.TritonError(str(images), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=invalid))
                continue
            found = []
            for i, bgr in enumerate(images):
                height, width = bgr.shape[:2]
                boxes, scores = self.detector.boxes(probs[(r, i)], width, height)
                found.append((boxes, scores, (width, height)))
            responses.append(_response(found))
        return responses

    def _images(self, request: Any) -> list[np.ndarray]:
        tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        if tensor is None:
            raise BadInput(f"{self.name}: the request has no IMAGE input")
        return [self._decode(index, data) for index, data in enumerate(tensor.as_numpy().reshape(-1))]

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


def _response(found: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]) -> Any:
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
