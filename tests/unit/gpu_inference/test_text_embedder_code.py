"""The pure parts of text_embedder/1/model.py (WordPiece, the safetensors reader, the BERT forward
pass), imported with a stand-in for Triton's ``triton_python_backend_utils``; no weights, no sockets.

The real weights and their semantics are checked against the running server in
tests/cluster/test_cluster_triton.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MODEL_FILE = Path(__file__).resolve().parents[3] / "gpu-inference/model_repository/text_embedder/1/model.py"
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "un",
    "##aff",
    "##able",
    "the",
    "cafe",
    ",",
    "!",
    "北",
    "京",
    "run",
    "##ning",
]


@pytest.fixture(scope="module")
def model() -> Any:
    stub = types.ModuleType("triton_python_backend_utils")
    stub.TritonModelException = RuntimeError  # type: ignore[attr-defined]
    saved = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = stub
    try:
        spec = importlib.util.spec_from_file_location("text_embedder_model", MODEL_FILE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["triton_python_backend_utils"]
        else:
            sys.modules["triton_python_backend_utils"] = saved
    return module


def ids(model: Any, *tokens: str) -> list[int]:
    return [VOCAB.index(token) for token in tokens]


def test_wordpiece_splits_like_bert_uncased(model: Any) -> None:
    """Lower-casing, accent stripping, punctuation and CJK splitting, greedy longest-match ## pieces."""
    wp = model.WordPiece(VOCAB)
    assert wp.words("Unaffable, CAFÉ!  北京") == ["unaffable", ",", "cafe", "!", "北", "京"]
    assert wp.encode("Unaffable, CAFÉ!", 64) == ids(
        model, "[CLS]", "un", "##aff", "##able", ",", "cafe", "!", "[SEP]"
    )
    assert wp.encode("running", 64) == ids(model, "[CLS]", "run", "##ning", "[SEP]")


def test_wordpiece_unknowns_control_chars_and_truncation(model: Any) -> None:
    """A word with an unmatched piece becomes one [UNK]; control characters vanish; encode keeps
    [CLS] … [SEP] within max_tokens."""
    wp = model.WordPiece(VOCAB)
    assert wp.encode("unxyz the", 64) == ids(model, "[CLS]", "[UNK]", "the", "[SEP]")
    assert wp.encode("th\x00e\u200b", 64) == ids(model, "[CLS]", "the", "[SEP]")
    assert wp.encode("the " * 10, 5) == ids(model, "[CLS]", "the", "the", "the", "[SEP]")
    assert wp.encode("", 5) == ids(model, "[CLS]", "[SEP]")
    assert wp.encode("a" * 101, 64) == ids(model, "[CLS]", "[UNK]", "[SEP]")


def test_safetensors_reader_round_trips(model: Any, tmp_path: Path) -> None:
    """load_safetensors reads names, shapes, dtypes and values of a file written to the format spec."""
    arrays = {
        "a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([7, -1], dtype=np.int64),
    }
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blob = b""
    for name, array in arrays.items():
        data = array.tobytes()
        dtype = {"float32": "F32", "int64": "I64"}[str(array.dtype)]
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [len(blob), len(blob) + len(data)],
        }
        blob += data
    encoded = json.dumps(header).encode()
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob)
    loaded = model.load_safetensors(str(path))
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_erf_matches_math_erf(model: Any) -> None:
    """The polynomial erf behind the exact GELU is within 2e-7 of math.erf."""
    x = np.linspace(-6, 6, 2001)
    assert np.max(np.abs(model._erf(x) - np.vectorize(math.erf)(x))) < 2e-7


def test_padding_does_not_change_an_embedding(model: Any, tmp_path: Path) -> None:
    """A tiny random BERT: a text embedded alone equals the same text padded next to a longer one
    (the attention mask and mean pooling ignore padding), and every output has unit length."""
    rng = np.random.default_rng(0)
    hidden, inter, layers, vocab = 8, 16, 2, len(VOCAB)
    shapes = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (32, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            shapes[p + f"attention.self.{n}.weight"] = (hidden, hidden)
            shapes[p + f"attention.self.{n}.bias"] = (hidden,)
        shapes[p + "attention.output.dense.weight"] = (hidden, hidden)
        shapes[p + "attention.output.dense.bias"] = (hidden,)
        shapes[p + "attention.output.LayerNorm.weight"] = (hidden,)
        shapes[p + "attention.output.LayerNorm.bias"] = (hidden,)
        shapes[p + "intermediate.dense.weight"] = (inter, hidden)
        shapes[p + "intermediate.dense.bias"] = (inter,)
        shapes[p + "output.dense.weight"] = (hidden, inter)
        shapes[p + "output.dense.bias"] = (hidden,)
        shapes[p + "output.LayerNorm.weight"] = (hidden,)
        shapes[p + "output.LayerNorm.bias"] = (hidden,)
    header: dict[str, Any] = {}
    blob = b""
    for name, shape in shapes.items():
        data = rng.normal(size=shape).astype(np.float32).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [len(blob), len(blob) + len(data)],
        }
        blob += data
    encoded = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob)
    config = {
        "num_attention_heads": 2,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    embedder = model.TextEmbedder(str(tmp_path), max_tokens=32)
    alone, _ = embedder(["the cafe"])
    together, lengths = embedder(["the cafe", "unaffable running, the cafe! the the the"])
    assert lengths.tolist() == [4, 14]
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert abs(float(together[0] @ together[1])) < 0.9999
