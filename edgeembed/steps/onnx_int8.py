"""int8 with ONNX Runtime: dynamic (int8 weights, activation scales at run time: per batch tensor, or per
row with `activations="row"`, batch invariant) or static QDQ (activation scales fixed by calibration;
batch invariant). Settings are frozen dataclasses with named
presets by instruction set (see edgeembed.isa); files are named as sentence-transformers names them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeembed._imports import require
from edgeembed.context import BuildContext, Graph, calibration_batches
from edgeembed.errors import InputError
from edgeembed.isa import ISAS, detect_isa
from edgeembed.steps import onnx_opset
from edgeembed.torch_model import arch_of

onnx = require("onnx", "export")
ortq = require("onnxruntime.quantization", "export")  # needs onnx

MODES = ("dynamic", "static")
ACTIVATIONS = ("tensor", "row", "auto")
# What `--quantize dynamic` gets: per-tensor scales (the fastest: bench/QUANT.md), or per-row ones where
# per-tensor scales move a model's embeddings past GatePolicy.int8_preferred_mean_cosine (bench/REDUCE.md:
# a long-distilled student whose per-tensor int8 lost 0.066 neighbour recall, per-row 0.008).
DEFAULT_ACTIVATIONS = "auto"
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Static QDQ default scope, measured on MiniLM (bench/quant_knobs.py, STS-b test, fp32 82.03):
# every MatMul 79.6; all ORT QDQ ops 75.0; weight MatMuls + embedding Gathers 80.0; the same without
# the FFN down-projections 81.6 (their post-GELU inputs have outliers one int8 range cannot hold).
STATIC_OPS = ("MatMul", "Gather")
_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
_TYPES = {"qint8": "QInt8", "quint8": "QUInt8"}
_FLOAT = 1  # onnx.TensorProto.FLOAT: fused contrib ops lack shape inference; tell the quantizer their type


@dataclass(frozen=True)
class QuantizeConfig:
    """int8 quantization with ONNX Runtime.

    dynamic: int8 weights, activation scales computed per batch tensor at run time (no calibration).
    static: QDQ with activation scales fixed by calibration; batch invariant, needs `calibration`.
    `op_types` None means the mode's default (STATIC_OPS / static_nodes for static).
    """

    step: ClassVar[str] = "onnx_int8"
    gate: ClassVar[str] = "int8"
    precision: ClassVar[str] = "int8"

    mode: str = "dynamic"
    # dynamic only: "tensor" = ORT's DynamicQuantizeLinear, one activation scale per batch tensor (a text's
    # embedding depends on its batch neighbours); "row" = each token row's activations quantized on their
    # own: batch invariant by construction; "auto" = tensor, then row if tensor falls short of the gate's
    # preferred floor (`alternatives()`; the build resolves it, the manifest records the resolved one).
    activations: str = "tensor"
    # activations "row": None = one scale per row (MatMulIntegerToFloat, the u8 x s8 GEMM that per-tensor
    # int8 runs on: 0.79x per-tensor's speed on the AMX Xeon vs 0.44x for blocks of 64); a power of two =
    # scales per block of that many along K (MatMulNBits, accuracy_level 4): closer to fp32 (MiniLM STS-b
    # 82.00 at 64 vs 81.70 per row), slower. 128 was not batch invariant in ORT 1.32 (bench/QUANT.md).
    block_size: int | None = None
    isa: str = "avx512_vnni"
    weight_type: str = "qint8"
    activation_type: str = "quint8"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None
    method: str = "minmax"  # static only
    calibration_batch_size: int = 1  # static only: real lengths, no padding in the ranges
    # Static only, when op_types is None (weight MatMuls and embedding Gathers are quantized):
    attention_matmuls: bool = False  # also QK^T and softmax x V (activation x activation)
    ffn_down: bool = False  # also the FFN down-projection, whose post-GELU input has outliers
    attention_output: bool = True  # also the attention output projection (the registry may say no)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown quantization mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.isa not in ISAS:
            raise InputError(f"unknown ISA {self.isa!r}; choose from {', '.join(ISAS)}")
        if self.weight_type not in ("qint8", "quint8") or self.activation_type not in ("qint8", "quint8"):
            raise InputError("weight_type and activation_type must be 'qint8' or 'quint8'")
        if self.activations not in ACTIVATIONS:
            raise InputError(
                f"unknown activation scales {self.activations!r}; choose from {', '.join(ACTIVATIONS)}"
            )
        if self.activations != "tensor" and self.mode != "dynamic":
            raise InputError(f"activation scales {self.activations!r} apply to dynamic quantization")
        if self.block_size is not None and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            raise InputError(
                f"block_size must be None (per row) or a power of two >= 16, got {self.block_size}"
            )
        if self.method not in CALIBRATION_METHODS:
            raise InputError(
                f"unknown calibration method {self.method!r}; choose from {', '.join(CALIBRATION_METHODS)}"
            )

    @property
    def file_name(self) -> str:
        """sentence-transformers' names: onnx/model_qint8_avx512_vnni.onnx, onnx/model_quint8_avx2.onnx..."""
        if self.activations == "row":
            return f"onnx/model_qint8_row_{self.isa}.onnx"
        if self.mode == "dynamic":
            return f"onnx/model_{self.weight_type}_{self.isa}.onnx"
        return f"onnx/model_{self.weight_type}_static_{self.isa}.onnx"

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's embedding must not depend on its batch: the gate holds such a graph to
        GatePolicy.invariance_min_cosine."""
        return self.mode == "static" or self.activations == "row"

    def alternatives(self) -> tuple[QuantizeConfig, ...]:
        """The configs to try in order, fastest first: "auto" = per-tensor scales, then per-row ones
        (0.7-0.8x the speed, batch invariant) when per-tensor ones move the embeddings too far."""
        if self.activations != "auto":
            return (self,)
        return replace(self, activations="tensor"), replace(self, activations="row")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_types"] = list(self.op_types) if self.op_types is not None else None
        if self.mode == "dynamic":
            for key in (
                "method",
                "calibration_batch_size",
                "attention_matmuls",
                "ffn_down",
                "attention_output",
            ):
                d.pop(key)
        if self.activations == "row":  # symmetric int8: the per-tensor knobs do not apply
            for key in ("weight_type", "activation_type", "per_channel", "reduce_range"):
                d.pop(key)
            if self.block_size is None:
                d["weight_bits"] = row_weight_bits(self.isa)
        else:
            d.pop("block_size")
        d["batch_invariant"] = self.batch_invariant
        return d


def _isa_preset(mode: str, isa: str) -> QuantizeConfig:
    weight = "quint8" if isa == "avx2" else "qint8"
    return QuantizeConfig(mode=mode, isa=isa, weight_type=weight, reduce_range=isa == "avx512")


PRESETS: dict[str, QuantizeConfig] = {
    **{f"dynamic_{isa}": _isa_preset("dynamic", isa) for isa in ISAS},
    **{f"static_{isa}": _isa_preset("static", isa) for isa in ISAS},
}
PRESETS["static_qdq"] = PRESETS["static_avx512_vnni"]
# Batch-invariant dynamic int8 (per-row activation scales); the ISA only names the file and the check
# at load, since its kernel picks the instructions at run time.
PRESETS.update({f"dynamic_row_{isa}": replace(PRESETS[f"dynamic_{isa}"], activations="row") for isa in ISAS})


def quantize_config(
    quantize: str | QuantizeConfig | None,
    isa: str | None = None,
    method: str | None = None,
    activations: str | None = None,
) -> QuantizeConfig | None:
    """A config from a preset name, a mode ('dynamic'/'static', ISA detected unless given) or a config.
    `activations` ("row"/"tensor"; None or "auto" = the config's own) sets dynamic int8's activation
    scales; plain "dynamic" gets DEFAULT_ACTIVATIONS."""
    if quantize is None or quantize == "none":
        return None
    isa = None if isa == "auto" else isa
    if isinstance(quantize, QuantizeConfig):
        cfg = quantize
    elif quantize in MODES:
        cfg = _isa_preset(quantize, isa or detect_isa())
        if quantize == "dynamic":
            cfg = replace(cfg, activations=DEFAULT_ACTIVATIONS)
        isa = None
    elif quantize in PRESETS:
        cfg = PRESETS[quantize]
    else:
        raise InputError(
            f"unknown quantization {quantize!r}; choose none, dynamic, static or a preset: {', '.join(PRESETS)}"
        )
    if isa is not None:
        cfg = replace(
            _isa_preset(cfg.mode, isa),
            op_types=cfg.op_types,
            method=cfg.method,
            activations=cfg.activations,
            block_size=cfg.block_size,
        )
    if method is not None:
        cfg = replace(cfg, method=method)
    if activations not in (None, "auto") and activations != cfg.activations:
        if cfg.mode != "dynamic":
            raise InputError(f"--activations {activations} applies to --quantize dynamic, not {cfg.mode}")
        cfg = replace(cfg, activations=activations)
    return cfg


class OrtCalibrationReader(ortq.CalibrationDataReader):
    """ORT's CalibrationDataReader over a list of model input dicts (from `calibration_inputs`)."""

    def __init__(self, inputs: Sequence[dict[str, np.ndarray]]) -> None:
        self._inputs = list(inputs)
        self._pos = 0
        self._end = len(self._inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        self._pos += 1
        return self._inputs[self._pos - 1]

    def rewind(self) -> None:
        self._pos = 0
        self._end = len(self._inputs)

    def set_range(self, start_index: int, end_index: int) -> None:
        """ORT's strided calibration (CalibStridedMinMax) reads the inputs one slice at a time."""
        self._pos = start_index
        self._end = min(end_index, len(self._inputs))

    def __len__(self) -> int:
        return len(self._inputs)


def static_nodes(path: Path, cfg: QuantizeConfig) -> list[str]:
    """Nodes static QDQ quantizes by default: MatMuls with a constant weight (optionally also the
    attention products) and Gathers from a constant table; FFN down-projections (weight wider in than
    out) only when cfg.ffn_down."""
    graph = onnx.load(str(path)).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    shapes.update(
        {n.output[0]: tuple(a.t.dims) for n in graph.node if n.op_type == "Constant" for a in n.attribute}
    )
    producers = {o: n for n in graph.node for o in n.output}
    nodes = []
    for n in graph.node:
        if n.op_type == "Gather" and n.input[0] in shapes:
            nodes.append(n.name)
        elif n.op_type == "MatMul":
            w = shapes.get(n.input[1])
            if w is None:
                if cfg.attention_matmuls:
                    nodes.append(n.name)
            elif not cfg.attention_output and _attention_context(n.input[0], producers, shapes):
                continue
            elif cfg.ffn_down or len(w) != 2 or w[0] <= w[1]:
                nodes.append(n.name)
    return nodes


def _attention_context(name: str, producers: dict[str, Any], shapes: dict[str, Any]) -> bool:
    """Whether tensor `name` is an attention context: the product of two activations (softmax x V),
    seen through the reshapes and transposes that merge the heads."""
    for _ in range(8):
        node = producers.get(name)
        if node is None or node.op_type not in ("MatMul", "Reshape", "Transpose", "Identity"):
            return False
        if node.op_type == "MatMul":
            return node.input[1] not in shapes
        name = node.input[0]
    return False


def row_weight_bits(isa: str) -> int:
    """Weight bits of the per-row graph: u8 x s8 products are summed in pairs in int16 by AVX2 and
    AVX-512 without VNNI (vpmaddubsw), where 2 x 255 x 127 saturates and 2 x 255 x 63 does not (the
    reason ORT's own presets reduce the range there); VNNI and arm64 accumulate in int32."""
    return 8 if isa in ("avx512_vnni", "arm64") else 7


def per_row_matmuls(model: Any, weight_bits: int) -> int:
    """Every MatMul with a 2-D float initializer as its weight becomes, for activations x (..., K):

        s = max(|x| over K) / 127                     one scale per row, from that row alone
        q = QuantizeLinear(x * (1 / s), 1, 128)       uint8, a constant zero point
        y = MatMulIntegerToFloat(q, W, 1, w_scale, 128) * s

    with W symmetric int8 per output column. MatMulIntegerToFloat is the u8 x s8 GEMM with the float
    rescale fused, the kernel per-tensor int8 runs on; a per-row zero point or scale is not among its
    inputs, hence the constant 128 and the scale applied after. Returns how many were rewritten."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    opset = onnx_opset(model, 13)
    qmax = 2 ** (weight_bits - 1) - 1
    make = onnx.helper.make_node

    def reduce(op: str, x: str, out: str) -> Any:
        # Axes are an attribute before opset 18, an input from 18 on.
        if opset >= 18:
            return make(op, [x, "row_axes"], [out], keepdims=1)
        return make(op, [x], [out], axes=[-1], keepdims=1)

    nodes, replaced, done = [], set(), 0
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is None or len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        weight = onnx.numpy_helper.to_array(w)
        w_scale = np.maximum(np.abs(weight).max(axis=0), 1e-30) / qmax
        p = f"{node.name or node.output[0]}_row"
        x = node.input[0]
        graph.initializer.extend(
            [
                onnx.numpy_helper.from_array(np.round(weight / w_scale).astype(np.int8), f"{p}_W"),
                onnx.numpy_helper.from_array(w_scale.astype(np.float32), f"{p}_ws"),
            ]
        )
        # max|x| as max(max x, -min x): two reductions read x, where Abs would first write a copy of it
        # (+1-2 %, bench/QUANT.md); row_tiny keeps an all-zero row from dividing 0 by 0.
        nodes += [
            reduce("ReduceMax", x, f"{p}_hi"),
            reduce("ReduceMin", x, f"{p}_lo"),
            make("Neg", [f"{p}_lo"], [f"{p}_nlo"]),
            make("Max", [f"{p}_hi", f"{p}_nlo", "row_tiny"], [f"{p}_max"]),
            make("Mul", [f"{p}_max", "row_inv127"], [f"{p}_s"]),
            make("Reciprocal", [f"{p}_s"], [f"{p}_r"]),
            make("Mul", [x, f"{p}_r"], [f"{p}_d"]),
            make("QuantizeLinear", [f"{p}_d", "row_one", "row_z128"], [f"{p}_q"]),
            make(
                "MatMulIntegerToFloat",
                [f"{p}_q", f"{p}_W", "row_one", f"{p}_ws", "row_z128"],
                [f"{p}_f"],
                name=f"{p}_MatMulIntegerToFloat",
                domain="com.microsoft",
            ),
            make("Mul", [f"{p}_f", f"{p}_s"], list(node.output), name=f"{p}_rescale"),
        ]
        replaced.add(w.name)
        done += 1
    if done:
        graph.initializer.extend(
            onnx.numpy_helper.from_array(np.array(v, dtype), name)
            for name, v, dtype in (
                ("row_axes", [-1], np.int64),
                ("row_inv127", 1 / 127, np.float32),
                ("row_tiny", 1e-30, np.float32),
                ("row_one", 1.0, np.float32),
                ("row_z128", 128, np.uint8),
            )
        )
        graph.ClearField("node")
        graph.node.extend(nodes)
        # Only the float weights this replaced go, and only where nothing else reads them.
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dropped = (replaced - used) | ({"row_axes"} - used)
        keep = [i for i in graph.initializer if i.name not in dropped]
        graph.ClearField("initializer")
        graph.initializer.extend(keep)
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return done


def quantize_rows(src: Path, dst: Path, cfg: QuantizeConfig) -> None:
    """Batch-invariant dynamic int8: every MatMul with a constant weight (fused Attention's QKV projection
    split out first) quantizes each activation row at run time with its own scale, whatever else is in
    the batch: per whole row (`per_row_matmuls`) or per block of `block_size` (MatMulNBits with symmetric
    8-bit weight blocks and accuracy_level 4). Embedding tables go int8 weight-only (ORT's dynamic
    quantizer on Gather / EmbedLayerNormalization only, which quantizes no activation)."""
    model = onnx.load(str(src))
    split_attention(model)
    if cfg.block_size is None:
        per_row_matmuls(model, row_weight_bits(cfg.isa))
    else:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:  # the module calls logging.basicConfig(level=INFO) on import: keep the app's logging as it was
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=8,
            block_size=cfg.block_size,
            is_symmetric=True,
            accuracy_level=4,  # int8 activations, per row and block (ORT: "CompInt8")
            op_types_to_quantize=tuple(t for t in (cfg.op_types or ("MatMul",)) if t == "MatMul"),
        )
        quantizer.process()
        model = quantizer.model.model
    weights_only = dst.with_name(dst.stem + ".rows.onnx")
    onnx.save(model, str(weights_only))
    try:
        ortq.quantize_dynamic(
            str(weights_only),
            str(dst),
            op_types_to_quantize=["Gather", "EmbedLayerNormalization"],
            per_channel=cfg.per_channel,
            weight_type=ortq.QuantType.QInt8,
            extra_options={"DefaultTensorType": _FLOAT},
        )
    finally:
        weights_only.unlink(missing_ok=True)


def quantize_graph(
    src: Path, dst: Path, cfg: QuantizeConfig, calibration: Sequence[dict[str, np.ndarray]] | None = None
) -> None:
    """int8 graph from `src`: dynamic (MatMulInteger / DynamicQuantizeLinear) or static QDQ."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range,
        "weight_type": getattr(ortq.QuantType, _TYPES[cfg.weight_type]),
    }
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # ORT logs "consider pre-processing" on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cfg.activations == "row":
                quantize_rows(src, dst, cfg)
                return
            if cfg.mode == "dynamic":
                ortq.quantize_dynamic(
                    str(src),
                    str(dst),
                    op_types_to_quantize=list(cfg.op_types) if cfg.op_types is not None else None,
                    extra_options={"DefaultTensorType": _FLOAT},
                    **common,
                )
                return
            if not calibration:
                raise InputError("static quantization needs calibration inputs")
            ortq.quantize_static(
                str(src),
                str(dst),
                OrtCalibrationReader(calibration),
                quant_format=ortq.QuantFormat.QDQ,
                op_types_to_quantize=list(cfg.op_types if cfg.op_types is not None else STATIC_OPS),
                nodes_to_quantize=static_nodes(src, cfg) if cfg.op_types is None else None,
                activation_type=getattr(ortq.QuantType, _TYPES[cfg.activation_type]),
                calibrate_method=getattr(ortq.CalibrationMethod, _METHODS[cfg.method]),
                # One input per collection step: histograms (percentile, entropy) cannot stack texts
                # of different lengths, and memory stays flat however many texts calibrate.
                extra_options={
                    "DefaultTensorType": _FLOAT,
                    "CalibMovingAverage": False,
                    "CalibStridedMinMax": 1,
                },
                **common,
            )
    finally:
        quiet.setLevel(level)


def split_attention(model: Any) -> int:
    """Each fused `Attention` (QKV projection inside the op) becomes MatMul + Split + `MultiHeadAttention`
    (the same attention kernel without the projection), so the projection is an ordinary MatMul that the
    per-row quantizer reaches; the bias and mask move to MultiHeadAttention unchanged. Attention nodes
    with past state, unequal Q/K/V sizes or a causal mask are left as they are. Returns how many split."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    split = 0
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1]) if node.op_type == "Attention" and len(node.input) > 1 else None
        plain = (
            weight is not None
            and node.domain == "com.microsoft"
            and len(weight.dims) == 2
            and weight.dims[1] % 3 == 0
            and not any(node.input[4:])
            and len(node.output) == 1
            and set(attrs) <= {"num_heads", "mask_filter_value", "scale"}
        )
        if not plain:
            nodes.append(node)
            continue
        name = node.name or f"Attention_{split}"
        hidden = weight.dims[1] // 3
        qkv = f"{name}_qkv"
        parts = [f"{name}_{p}" for p in "qkv"]
        sizes = f"{name}_split_sizes"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array([hidden] * 3, dtype=np.int64), sizes))
        mask = node.input[3] if len(node.input) > 3 else ""
        nodes += [
            onnx.helper.make_node("MatMul", [node.input[0], node.input[1]], [qkv], name=f"{name}_MatMul"),
            onnx.helper.make_node("Split", [qkv, sizes], parts, name=f"{name}_Split", axis=-1),
            onnx.helper.make_node(
                "MultiHeadAttention",
                [*parts, node.input[2], *([mask] if mask else [])],
                list(node.output),
                name=f"{name}_MHA",
                domain="com.microsoft",
                **attrs,
            ),
        ]
        split += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    return split


def apply(graph: Graph, ctx: BuildContext, config: QuantizeConfig) -> Graph:
    """The int8 graph; static calibration comes from ctx.calibration, tokenized at real lengths."""
    if config.activations == "auto":  # a programming error: the build tries config.alternatives()
        raise ValueError("activations 'auto' is resolved by the build; apply one of config.alternatives()")
    if config.mode == "static" and arch_of(ctx.spec.transformer_dir).static_int8_float_attention_output:
        config = replace(config, attention_output=False)  # the registry's reason; recorded in the manifest
    record = config.to_dict()
    calib = None
    if config.mode == "static":
        calib, record["calibration"] = calibration_batches(
            ctx, graph.input_names, config.calibration_batch_size
        )
    detail = (
        (
            f"activations per row, {row_weight_bits(config.isa)}-bit weights per column"
            if config.block_size is None
            else f"activations per row, 8-bit weight blocks of {config.block_size}"
        )
        if config.activations == "row"
        else f"{config.weight_type} weights, per-channel {config.per_channel}"
    )
    ctx.progress(f"quantizing ({config.mode} int8, {config.isa}: {detail})")
    # Named by activations too: a refused per-tensor try must not be overwritten under its open session.
    out = ctx.work_dir / f"int8-{config.mode}-{config.activations}.onnx"
    quantize_graph(graph.path, out, config, calib)
    return Graph(out, graph.runtime, graph.input_names, record)
