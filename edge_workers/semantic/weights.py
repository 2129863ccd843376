"""all-MiniLM-L6-v2's weights as numpy arrays, and a plain numpy forward pass over them.

The forward pass is the exact reference: `edge-agent semantic fetch` checks the ONNX graph it
builds (`edge_workers.semantic.graph`) against it, and the tests do too. It is ~4x slower than
onnxruntime (≈ 11 ms per short prompt), so serving never uses it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

HIDDEN = 384
HEADS = 12
LAYERS = 6
LAYER_NORM_EPS = 1e-12
# What a padded position adds to an attention score (HF BERT adds the dtype's minimum; any
# value this negative gives the same softmax in float32).
MASKED = -1e9

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
Weights = dict[str, np.ndarray]


def read_safetensors(path: Path) -> Weights:
    """A `.safetensors` file's tensors (8-byte header length, JSON header, raw little-endian data):
    simple enough that the format needs no package of its own."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    tensors: Weights = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data, dtype=_DTYPES[info["dtype"]], count=-1, offset=base + start)
        count = (end - start) // array.itemsize
        tensors[name] = array[:count].reshape(info["shape"]).copy()
    return tensors


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 (Abramowitz and Stegun 7.1.26: off by at most 1.5e-7, below float32's
    own rounding at these magnitudes); numpy has no erf of its own."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: np.ndarray = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return result


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))).astype(np.float32)


def reference_embed(w: Weights, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings [batch, 384]: BERT, mean-pooled over the mask, L2-normalized."""
    ids = input_ids.astype(np.int64)
    mask = attention_mask.astype(np.float32)
    batch, length = ids.shape
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:length][None]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    bias = ((1.0 - mask) * MASKED)[:, None, None, :]
    head = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def dense(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
            out: np.ndarray = v @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            return out

        def heads(v: np.ndarray) -> np.ndarray:
            return v.reshape(batch, length, HEADS, head).transpose(0, 2, 1, 3)

        q = heads(dense(x, "attention.self.query"))
        k = heads(dense(x, "attention.self.key"))
        v = heads(dense(x, "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, HIDDEN)
        x = _layer_norm(
            x + dense(context, "attention.output.dense"),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        inner = _gelu(dense(x, "intermediate.dense"))
        x = _layer_norm(
            x + dense(inner, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
        )
    summed = (x * mask[:, :, None]).sum(1)
    pooled = summed / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    result: np.ndarray = (pooled / norms).astype(np.float32)
    return result
