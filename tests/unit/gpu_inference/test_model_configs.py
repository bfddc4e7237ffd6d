"""The Triton model repository (gpu-inference/model_repository) is well-formed, without a server.

Every ``config.pbtxt`` parses into Triton's ``inference.ModelConfig`` (the proto that tritonclient
ships), batches dynamically on CPU instances, and has a ``1/model.py`` for the Python backend; the
detectors expose the interface that ``annocloud_server.common.triton`` reads. No sockets.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from annocloud_server.common.triton import DETECTOR_OUTPUTS
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

REPO = Path(__file__).resolve().parents[3]
GPU_INFERENCE = REPO / "gpu-inference"
MODEL_REPOSITORY = GPU_INFERENCE / "model_repository"
MODEL_DIRS = sorted(p for p in MODEL_REPOSITORY.iterdir() if p.is_dir() and not p.name.startswith("."))
DETECTORS = ("face_detector", "plate_detector")


def load(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def test_the_repository_holds_the_detectors() -> None:
    """The face and plate detectors are there, and nothing but model directories is."""
    assert {p.name for p in MODEL_DIRS} >= set(DETECTORS)
    strays = [p.name for p in MODEL_REPOSITORY.iterdir() if not p.is_dir()]
    assert strays == [], f"Triton would try to load these as models: {strays}"


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_config_parses_and_batches_dynamically_on_cpu(model_dir: Path) -> None:
    """config.pbtxt is a valid ModelConfig named like its directory, with dynamic batching,
    max_batch_size > 0 and only KIND_CPU instance groups, served by the Python backend."""
    config = load(model_dir)
    assert config.name == model_dir.name
    assert config.backend == "python"
    assert config.max_batch_size > 0
    assert config.HasField("dynamic_batching")
    assert config.instance_group, "no instance_group"
    for group in config.instance_group:
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU, group
        assert group.count >= 1
    assert not config.HasField("sequence_batching")
    assert not config.HasField("ensemble_scheduling")


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_every_version_has_a_python_backend_model(model_dir: Path) -> None:
    """Version 1 exists and each version directory has a model.py defining TritonPythonModel with
    initialize and execute (parsed, not imported: cv2 lives in Triton's own venv)."""
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [v.name for v in versions][:1] == ["1"]
    for version in versions:
        source = version / "model.py"
        assert source.is_file(), f"{source} is missing"
        tree = ast.parse(source.read_text(), filename=str(source))
        classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
        assert "TritonPythonModel" in classes
        methods = {n.name for n in classes["TritonPythonModel"].body if isinstance(n, ast.FunctionDef)}
        assert {"initialize", "execute"} <= methods


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_interface_matches_the_client(name: str) -> None:
    """Detectors take one BYTES IMAGE per batch element and return BOXES [-1,4], SCORES [-1],
    COUNT [1], SIZE [2] — the outputs TritonClient.detect reads — and a Haar cascade parameter."""
    config = load(MODEL_REPOSITORY / name)
    inputs = [(i.name, i.data_type, list(i.dims)) for i in config.input]
    assert inputs == [("IMAGE", model_config_pb2.TYPE_STRING, [1])]
    outputs = {o.name: (o.data_type, list(o.dims)) for o in config.output}
    assert tuple(outputs) == DETECTOR_OUTPUTS
    assert outputs == {
        "BOXES": (model_config_pb2.TYPE_FP32, [-1, 4]),
        "SCORES": (model_config_pb2.TYPE_FP32, [-1]),
        "COUNT": (model_config_pb2.TYPE_INT32, [1]),
        "SIZE": (model_config_pb2.TYPE_INT32, [2]),
    }
    params = parameters(config)
    assert re.fullmatch(r"haarcascade_[a-z0-9_]+\.xml", params["cascade"]), params
    assert float(params["scale_factor"]) > 1.0
    for key in ("min_neighbors", "min_width", "min_height", "max_side", "max_detections"):
        assert int(params[key]) > 0, (key, params[key])
    assert params["equalize_histogram"] in {"true", "false"}


def test_detectors_share_one_model_file() -> None:
    """The detectors differ only in config.pbtxt: their model.py copies are identical."""
    sources = {name: (MODEL_REPOSITORY / name / "1" / "model.py").read_bytes() for name in DETECTORS}
    assert len(set(sources.values())) == 1, "copy face_detector/1/model.py over the other detectors"


def test_triton_venv_pins_are_exact_and_compatible() -> None:
    """gpu-inference/requirements.txt pins every package exactly, with numpy < 2 (the Python backend
    stub) and opencv-python-headless 4.x (5.x ships no Haar cascades)."""
    pins: dict[str, str] = {}
    for raw in (GPU_INFERENCE / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9_.\-]*)", line)
        assert match, f"not an exact pin: {raw!r}"
        pins[match[1].lower().replace("_", "-")] = match[2]
    assert pins["nvidia-pytriton"] == "0.7.0"
    assert int(pins["numpy"].split(".")[0]) < 2
    assert pins["opencv-python-headless"].startswith("4.")
