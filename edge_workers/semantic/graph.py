"""The fp32 ONNX graph of all-MiniLM-L6-v2, built from its safetensors weights with `onnx`.

No registry package ships the fp32 model as ONNX, and exporting it needs torch (gigabytes of
CUDA wheels). The architecture is small (BERT, 6 layers, 12 heads, 384 wide), so the graph is
written out here op by op, with standard opset-17 operators; onnxruntime fuses them (attention,
GELU, layer norms) when it loads the model. Inputs `input_ids` and `attention_mask` (int64,
[batch, length]); output `embedding` [batch, 384]: mean-pooled over the mask, L2-normalized,
the same as `weights.reference_embed` (checked when fetched).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_workers.semantic.weights import HEADS, HIDDEN, LAYER_NORM_EPS, LAYERS, MASKED, Weights

OPSET = 17


class _Builder:
    def __init__(self) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(value, name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        self.count += 1
        out = f"{kind.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(kind, inputs, [out], **attrs))
        return out

    def dense(self, x: str, w: Weights, name: str) -> str:
        weight = self.const(name + ".wT", np.ascontiguousarray(w[name + ".weight"].T))
        bias = self.const(name + ".b", w[name + ".bias"])
        return self.op("Add", [self.op("MatMul", [x, weight]), bias])

    def layer_norm(self, x: str, w: Weights, name: str) -> str:
        scale = self.const(name + ".g", w[name + ".weight"])
        bias = self.const(name + ".b", w[name + ".bias"])
        return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=LAYER_NORM_EPS)


def build_model(w: Weights) -> bytes:
    """The serialized ONNX model."""
    b = _Builder()
    helper, tensor = b.helper, b.onnx.TensorProto
    head = HIDDEN // HEADS
    # Shapes and small constants.
    heads_shape = b.const("heads_shape", np.array([0, 0, HEADS, head], np.int64))
    merged_shape = b.const("merged_shape", np.array([0, 0, HIDDEN], np.int64))
    one_f = b.const("one_f", np.array(1.0, np.float32))
    masked = b.const("masked", np.array(MASKED, np.float32))
    scale = b.const("scale", np.array(1.0 / np.sqrt(head), np.float32))
    tiny = b.const("tiny", np.array(1e-9, np.float32))
    tiny_norm = b.const("tiny_norm", np.array(1e-12, np.float32))
    axes_1 = b.const("axes_1", np.array([1], np.int64))
    axes_12 = b.const("axes_12", np.array([1, 2], np.int64))
    axes_2 = b.const("axes_2", np.array([2], np.int64))
    zero_i = b.const("zero_i", np.array(0, np.int64))
    one_i = b.const("one_i", np.array(1, np.int64))
    half = b.const("half", np.array(0.5, np.float32))
    inv_sqrt2 = b.const("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), np.float32))
    # Embeddings: word + position + token type 0 (a single segment), then layer norm.
    words = b.const("word_embeddings", w["embeddings.word_embeddings.weight"])
    positions = b.const("position_embeddings", w["embeddings.position_embeddings.weight"])
    segment = b.const("segment_embedding", w["embeddings.token_type_embeddings.weight"][0])
    length = b.op("Gather", [b.op("Shape", ["input_ids"]), one_i], axis=0)
    position_ids = b.op("Range", [zero_i, length, one_i])
    x = b.op("Add", [b.op("Gather", [words, "input_ids"], axis=0), b.op("Gather", [positions, position_ids])])
    x = b.layer_norm(b.op("Add", [x, segment]), w, "embeddings.LayerNorm")
    # Padded positions get MASKED added to their attention scores: [batch, 1, 1, length].
    mask_f = b.op("Cast", ["attention_mask"], to=tensor.FLOAT)
    bias = b.op("Mul", [b.op("Sub", [one_f, mask_f]), masked])
    bias = b.op("Unsqueeze", [bias, axes_12])
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def split(v: str) -> str:
            return b.op("Transpose", [b.op("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])

        q = split(b.dense(x, w, p + "attention.self.query"))
        k = b.op(
            "Transpose",
            [b.op("Reshape", [b.dense(x, w, p + "attention.self.key"), heads_shape])],
            perm=[0, 2, 3, 1],
        )
        v = split(b.dense(x, w, p + "attention.self.value"))
        scores = b.op("Add", [b.op("Mul", [b.op("MatMul", [q, k]), scale]), bias])
        probs = b.op("Softmax", [scores], axis=-1)
        context = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = b.op("Reshape", [context, merged_shape])
        attended = b.dense(context, w, p + "attention.output.dense")
        x = b.layer_norm(b.op("Add", [x, attended]), w, p + "attention.output.LayerNorm")
        inner = b.dense(x, w, p + "intermediate.dense")
        # GELU (erf form, as BERT's): 0.5 * x * (1 + erf(x / sqrt 2)).
        erf = b.op("Erf", [b.op("Mul", [inner, inv_sqrt2])])
        inner = b.op("Mul", [b.op("Mul", [inner, half]), b.op("Add", [erf, one_f])])
        out = b.dense(inner, w, p + "output.dense")
        x = b.layer_norm(b.op("Add", [x, out]), w, p + "output.LayerNorm")
    # Mean over the unmasked positions, then L2 normalization.
    mask_3d = b.op("Unsqueeze", [mask_f, axes_2])
    summed = b.op("ReduceSum", [b.op("Mul", [x, mask_3d]), axes_1], keepdims=0)
    counts = b.op("Max", [b.op("ReduceSum", [mask_3d, axes_1], keepdims=0), tiny])
    pooled = b.op("Div", [summed, counts])
    # ReduceL2 takes its axes as an attribute before opset 18.
    norm = b.op("Max", [b.op("ReduceL2", [pooled], axes=[1], keepdims=1), tiny_norm])
    b.nodes.append(helper.make_node("Div", [pooled, norm], ["embedding"]))
    graph = helper.make_graph(
        b.nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", tensor.INT64, ["batch", "length"]),
            helper.make_tensor_value_info("attention_mask", tensor.INT64, ["batch", "length"]),
        ],
        [helper.make_tensor_value_info("embedding", tensor.FLOAT, ["batch", HIDDEN])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    b.onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
