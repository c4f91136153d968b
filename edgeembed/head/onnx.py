"""The head in ONNX ops: appended to a graph whose output is token embeddings (the strings-in graph, the
static graph) or built alone (`head_model`, which OpenVINO's end-to-end model converts).

Every pooling mode works on any padding (left or right), as the numpy emitter does; `include_prompt=False`
reads the prompt's token count from an int64 scalar input. Needs the `onnx` package (export extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.head.spec import ACTIVATIONS, SENTENCE_OUTPUT, HeadModel, PoolingMode

TOKENS_INPUT = "token_embeddings"
MASK_INPUT = "attention_mask"
PROMPT_LENGTH_INPUT = "prompt_length"
OUTPUT = SENTENCE_OUTPUT
MIN_OPSET = 13  # GatherND batch_dims, Unsqueeze and ReduceSum axes as inputs


class OnnxBuilder:
    """Appends ONNX nodes and initializers under unique names that start with `prefix`."""

    def __init__(self, opset: int, prefix: str = "head/") -> None:
        if opset < MIN_OPSET:
            raise ValueError(f"the ONNX head needs opset >= {MIN_OPSET}, the graph has {opset}")
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0
        self._onnx = require("onnx", "export")

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self._onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def const(self, value: Any, hint: str = "c") -> str:
        name = self.name(hint)
        self.initializers.append(self._onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int) -> str:
        """Reduce* with axes as an input (ReduceSum from opset 13, the others from 18) or an attribute."""
        if self.opset >= (13 if op_type == "ReduceSum" else 18):
            return self.op(op_type, [x, self.const(np.array(axes, np.int64))], keepdims=keepdims)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.const(np.array(axes, np.int64))])


def _positions(b: OnnxBuilder, mask: str, start: int) -> str:
    """[start, start + seq) as int64, shape (seq,)."""
    length = b.op("Gather", [b.op("Shape", [mask]), b.const(np.int64(1))], axis=0)  # a scalar
    end = b.op("Add", [length, b.const(np.int64(start))])
    return b.op("Range", [b.const(np.int64(start)), end, b.const(np.int64(1))])


def _exclude_prompt(b: OnnxBuilder, mask: str, first: str, prompt_length: str) -> str:
    """mask with the prompt's positions (after any left padding) zeroed, as numpy's `exclude_prompt`."""
    start = b.op("Add", [first, b.op("Cast", [prompt_length], to=7)])  # (B, 1)
    keep = b.op("Not", [b.op("Less", [b.unsqueeze(_positions(b, mask, 0), [0]), start])])
    return b.op("Where", [keep, mask, b.const(np.int64(0))], hint="pool_mask")


def _pool(b: OnnxBuilder, head: HeadModel, tok: str, mask: str, prompt_length: str | None) -> str:
    original = b.op("Cast", [mask], to=7)  # int64 whatever the graph's mask type
    first: list[str] = []

    def first_of() -> str:
        """(B, 1) int64: each row's first non-padding position. Only built where a mode needs it:
        ArgMax fails on a zero-length batch (all texts empty), which mean pooling handles."""
        if not first:
            first.append(b.op("ArgMax", [b.op("Cast", [original], to=1)], axis=1, keepdims=1))
        return first[0]

    pmask = original
    if not head.include_prompt and prompt_length is not None:
        pmask = _exclude_prompt(b, original, first_of(), prompt_length)
    m2 = b.op("Cast", [pmask], to=1)  # (B, L) float
    m = b.unsqueeze(m2, [-1])  # (B, L, 1)
    count = b.op("Max", [b.reduce("ReduceSum", m, [1], 0), b.const(np.float32(1e-9))])  # (B, 1)
    outs = []
    for mode in head.pooling:
        if mode in (PoolingMode.MEAN, PoolingMode.MEAN_SQRT_LEN_TOKENS):
            summed = b.reduce("ReduceSum", b.op("Mul", [tok, m]), [1], 0)
            denom = count if mode == PoolingMode.MEAN else b.op("Sqrt", [count])
            outs.append(b.op("Div", [summed, denom], hint=mode.value))
        elif mode == PoolingMode.MAX:
            valid = b.op("Greater", [m, b.const(np.float32(0))])
            masked = b.op("Where", [valid, tok, b.const(np.float32(-np.inf))])
            outs.append(b.reduce("ReduceMax", masked, [1], 0))
        elif mode == PoolingMode.CLS:  # the first pooled position (0 on an all-masked row, as argmax)
            at = b.op("ArgMax", [m2], axis=1, keepdims=1)
            outs.append(b.op("GatherND", [tok, at], batch_dims=1, hint="cls"))
        elif mode == PoolingMode.WEIGHTEDMEAN:  # weights 1, 2, ... from the first non-padding position
            pos = b.op("Cast", [_positions(b, mask, 1)], to=1)
            weights = b.op("Sub", [b.unsqueeze(pos, [0]), b.op("Cast", [first_of()], to=1)])  # (B, L)
            w = b.op("Mul", [m, b.unsqueeze(weights, [-1])])  # (B, L, 1)
            summed = b.reduce("ReduceSum", b.op("Mul", [tok, w]), [1], 0)
            wsum = b.op("Max", [b.reduce("ReduceSum", w, [1], 0), b.const(np.float32(1e-9))])
            outs.append(b.op("Div", [summed, wsum], hint="weightedmean"))
        elif mode == PoolingMode.LASTTOKEN:
            # the last pooled position; 0 on an all-masked row, where numpy takes seq - 1: both read a
            # zero vector there (tokens times mask)
            pos = b.unsqueeze(_positions(b, mask, 0), [0])  # (1, L)
            last = b.reduce("ReduceMax", b.op("Mul", [pos, pmask]), [1], 1)  # (B, 1)
            outs.append(b.op("GatherND", [b.op("Mul", [tok, m]), last], batch_dims=1, hint="lasttoken"))
        else:  # pragma: no cover - PoolingMode is closed
            raise ValueError(f"pooling mode {mode.value!r} has no ONNX form")
    return outs[0] if len(outs) == 1 else b.op("Concat", outs, axis=-1, hint="pooled")


def emit(b: OnnxBuilder, head: HeadModel, tokens: str, mask: str, prompt_length: str | None = None) -> str:
    """Append the head's nodes: `tokens` (B, L, H) float, `mask` (B, L) int -> the returned name, (B, dim).

    `prompt_length`: an int64 scalar holding the prompt's token count, for a head with
    include_prompt=False (None: every token is pooled)."""
    x = _pool(b, head, tokens, mask, prompt_length)
    for d in head.dense:
        x = b.op("MatMul", [x, b.const(np.ascontiguousarray(d.weight.T.astype(np.float32)), "dense_w")])
        if d.bias is not None:
            x = b.op("Add", [x, b.const(d.bias.astype(np.float32), "dense_b")])
        x = ACTIVATIONS[d.activation].onnx(b, x)
    if head.normalize:  # x / max(|x|, 1e-12), as sentence-transformers' Normalize: a zero row stays zero
        norm = b.op("Max", [b.reduce("ReduceL2", x, [-1], 1), b.const(np.float32(1e-12))])
        x = b.op("Div", [x, norm], hint="normalized")
    return x


def head_model(head: HeadModel, opset: int = 17, prompt_input: bool = True) -> Any:
    """The head alone as an ONNX model: `token_embeddings` (n, seq, hidden) float32 + `attention_mask`
    (n, seq) int64 (+ `prompt_length`, int64 scalar, when the head excludes its prompt and
    `prompt_input`; without it every token is pooled, as in the strings-in graphs) ->
    `sentence_embedding` (n, dim) float32."""
    onnx = require("onnx", "export")
    helper, tp = onnx.helper, onnx.TensorProto
    b = OnnxBuilder(opset)
    inputs = [
        helper.make_tensor_value_info(TOKENS_INPUT, tp.FLOAT, ["n", "seq", head.hidden_size]),
        helper.make_tensor_value_info(MASK_INPUT, tp.INT64, ["n", "seq"]),
    ]
    prompt = None
    if not head.include_prompt and prompt_input:
        prompt = PROMPT_LENGTH_INPUT
        inputs.append(helper.make_tensor_value_info(prompt, tp.INT64, []))
    x = emit(b, head, TOKENS_INPUT, MASK_INPUT, prompt)
    b.nodes.append(helper.make_node("Identity", [x], [OUTPUT], name=f"{b.prefix}output"))
    graph = helper.make_graph(
        b.nodes,
        "edgeembed_head",
        inputs,
        [helper.make_tensor_value_info(OUTPUT, tp.FLOAT, ["n", head.dim])],
        initializer=b.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
