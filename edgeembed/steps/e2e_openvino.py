"""One OpenVINO model from strings to sentence embeddings: openvino-tokenizers + transformer + head.

Why: an OpenVINO app (C++, or the OpenVINO Android/ARM builds) then needs no tokenizer code of its own.
The tokenizer comes from openvino-tokenizers through its family's adapter (steps.e2e_tokenizers); the head
(pooling, Dense, Normalize) is the same ONNX head as the ONNX end-to-end graph, converted by OpenVINO.
Plain function; no validation.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import InputError
from edgeembed.runtimes.openvino import PAD_TO_MULTIPLE_OF
from edgeembed.runtimes.openvino_e2e import NORMALIZE_KEY
from edgeembed.source import Head
from edgeembed.steps.e2e_onnx import EMBEDDING_OUTPUT, head_model
from edgeembed.steps.e2e_tokenizers import check_support
from edgeembed.tokenization import TextTokenizer

TEXT_INPUT = "text"


def _feed(param: Any, source: Any) -> None:
    """Make every consumer of a model Parameter read `source` instead."""
    for target in list(param.output(0).get_target_inputs()):
        target.replace_source_output(source)


def _pad_to_multiple(outputs: dict[str, Any], multiple: int, max_length: int, pad_id: int) -> dict[str, Any]:
    """The tokenizer's (batch, length) outputs right padded to a multiple of `multiple` (never past
    max_length), as the Encoder pads for the OpenVINO runtime: int8 results depend slightly on the padded
    length (min cosine 0.9996 between lengths padded to 16 and unpadded, MiniLM static int8), so the
    strings-in IR must pad alike to match the Encoder; and fewer distinct shapes hold less memory."""
    ops = require("openvino.opset13", "openvino")
    ids = outputs["input_ids"]
    length = ops.gather(ops.shape_of(ids, "i64"), ops.constant(np.array([1], np.int64)), 0)
    step = ops.constant(np.array([multiple], np.int64))
    rounded = ops.multiply(
        ops.divide(ops.add(length, ops.constant(np.array([multiple - 1], np.int64))), step), step
    )
    target = ops.maximum(length, ops.minimum(rounded, ops.constant(np.array([max_length], np.int64))))
    pads_end = ops.concat([ops.constant(np.array([0], np.int64)), ops.subtract(target, length)], 0)
    pads_begin = ops.constant(np.array([0, 0], np.int64))
    out = {}
    for name, value in outputs.items():
        fill = pad_id if name == "input_ids" else 0
        dtype = value.get_element_type().to_dtype()
        out[name] = ops.pad(
            value, pads_begin, pads_end, "constant", ops.constant(np.array(fill, dtype))
        ).output(0)
    return out


def build_e2e_openvino(
    graph: Path,
    tokenizer_json: Path,
    head: Head,
    dense_layers: Sequence[tuple[np.ndarray, np.ndarray | None]],
    out: Path,
) -> Path:
    """Write `out` (an .xml IR, its .bin beside it): input `text` (1-D strings), output
    `sentence_embedding` (n, dim). `graph` is the transformer as OpenVINO IR or ONNX, fp32 or int8."""
    ov = require("openvino", "openvino")
    onnx = require("onnx", "export")
    tokenizer = check_support(tokenizer_json, head, "openvino").build_openvino(tokenizer_json, head)
    core = ov.Core()
    model = core.read_model(str(graph))
    with tempfile.TemporaryDirectory() as tmp:
        head_path = Path(tmp) / "head.onnx"
        onnx.save(head_model(head, dense_layers), str(head_path))
        head_ov = core.read_model(str(head_path))
    # A model's outputs are Result nodes; consumers must read what feeds each Result.
    outputs = {o.get_any_name(): o.get_node().input_value(0) for o in tokenizer.outputs}
    pad_id = TextTokenizer.from_file(Path(tokenizer_json), head.max_seq_length).pad_id
    outputs = _pad_to_multiple(outputs, PAD_TO_MULTIPLE_OF, head.max_seq_length, pad_id)
    if "token_type_ids" not in outputs:  # Unigram/BPE tokenizers give none; such models take zeros
        ops = require("openvino.opset13", "openvino")
        ids = outputs["input_ids"]
        outputs["token_type_ids"] = ops.multiply(ids, ops.constant(np.array(0, np.int64))).output(0)
    for param in model.get_parameters():
        name = param.get_friendly_name()
        if name not in outputs:
            raise InputError(f"{graph}: input {name!r} is not produced by the tokenizer ({sorted(outputs)})")
        _feed(param, outputs[name])
    params = {p.get_friendly_name(): p for p in head_ov.get_parameters()}
    _feed(params["token_embeddings"], model.output(0).get_node().input_value(0))
    _feed(params["attention_mask"], outputs["attention_mask"])
    result = head_ov.output(0)
    result.get_tensor().set_names({EMBEDDING_OUTPUT})
    tokenizer.input(0).get_tensor().set_names({TEXT_INPUT})
    # The tokenizer keeps state (ReadValue/Assign pairs caching its vocabulary): carry its sinks along.
    merged = ov.Model([result.get_node()], tokenizer.get_sinks(), tokenizer.get_parameters(), "edgeembed_e2e")
    merged.validate_nodes_and_infer_types()
    merged.set_rt_info("true" if head.normalize else "false", NORMALIZE_KEY)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(merged, str(out), compress_to_fp16=False)
    return out


def compare_token_ids_openvino(tokenizer_json: Path, head: Head, texts: Sequence[str]) -> list[Any]:
    """Texts whose openvino-tokenizers ids differ from `tokenizers`' (same rules as the ONNX check)."""
    from tokenizers import Tokenizer

    from edgeembed.runtimes.onnxruntime_e2e import clean_text
    from edgeembed.steps.e2e_onnx import TokenMismatch

    ov = require("openvino", "openvino")
    tokenizer = check_support(tokenizer_json, head, "openvino").build_openvino(tokenizer_json, head)
    compiled = ov.compile_model(tokenizer, "CPU")
    ref = Tokenizer.from_file(str(tokenizer_json))
    ref.no_padding()
    ref.enable_truncation(max_length=head.max_seq_length)
    out = []
    for index, raw in enumerate(texts):
        text = clean_text(raw)
        expected = ref.encode(text.lower() if head.do_lower_case else text).ids
        got = compiled([text])["input_ids"][0].tolist()
        if got != expected:
            out.append(TokenMismatch(index, raw, tuple(expected), tuple(got)))
    return out
