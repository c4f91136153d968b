"""Graph fusion for ONNX Runtime: transformer ops (Attention, SkipLayerNormalization, BiasGelu,
EmbedLayerNormalization) replace their subgraphs, so fewer, faster kernels run.

Two engines (the registry says which match a family's attention):
- "ort" (preferred): onnxruntime.transformers' optimizer on a TorchScript-exported graph. Its fused
  Attention becomes QAttention (an int8 QKV projection) under dynamic int8, so the int8 graph gains most.
- "onnxscript": onnxscript's ORT fusion rewriter on the dynamo graph (the exporter torch keeps when the
  TorchScript one is removed). It fuses the same kinds of ops and more families (rotary attention), but
  ORT's dynamic quantizer does not quantize its MultiHeadAttention, so where both fit "ort" goes first.
The ORT optimizer on the dynamo graph fuses no Attention (its mask subgraph matches no pattern).

Both engines fuse residual Add + LayerNormalization into SkipLayerNormalization; this step splits it back
(unless `skip_layer_norm=True`), because ONNX Runtime 1.32's CPU SkipLayerNormalization kernel is 4-5x
slower than Add + LayerNormalization on the same rows (MiniLM fused int8: +33 % sentences/s at batch 32,
-10 % batch-1 latency; bench/PROFILE.md section 12). The runtime then keeps ORT from fusing it again at
load (runtimes/onnxruntime.py). SkipSimplifiedLayerNormalization (RMSNorm) is as fast as its parts: kept.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeembed._imports import require
from edgeembed.arch import REGISTRY
from edgeembed.context import BuildContext, Graph
from edgeembed.errors import InputError, UnsupportedError
from edgeembed.steps import onnx_opset

LEVELS = ("basic", "all")
ENGINES = ("ort", "onnxscript")


@dataclass(frozen=True)
class Config:
    """basic: ONNX Runtime's basic rewrites (constant folding, redundant nodes) saved to disk.
    all: the transformer fusions, with `engine` "ort" (needs a TorchScript export) or "onnxscript"."""

    level: str = "all"
    engine: str = "ort"
    # Keep ORT's SkipLayerNormalization instead of Add + LayerNormalization (slower on ORT 1.32's CPU).
    skip_layer_norm: bool = False

    step: ClassVar[str] = "fusion"
    gate: ClassVar[str] = "float"
    precision: ClassVar[str] = "fp32"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise InputError(
                f"unknown optimize level {self.level!r}; choose from none, auto, {', '.join(LEVELS)}"
            )
        if self.engine not in ENGINES:
            raise InputError(f"unknown fusion engine {self.engine!r}; choose from {', '.join(ENGINES)}")

    @property
    def exporter(self) -> str:
        """The ONNX exporter whose graph this engine fuses."""
        return "torchscript" if self.level == "all" and self.engine == "ort" else "dynamo"

    @property
    def file_name(self) -> str:
        """As optimum / sentence-transformers name optimized graphs (O1 basic, O2 with fusions)."""
        return "onnx/model_O1.onnx" if self.level == "basic" else "onnx/model_O2.onnx"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exporter": self.exporter}


def model_dims(transformer_dir: Path) -> tuple[str, int, int]:
    """(model_type, num_heads, hidden_size) from config.json, which the fusions need to match attention."""
    cfg = json.loads((transformer_dir / "config.json").read_text(encoding="utf-8"))
    heads = cfg.get("num_attention_heads") or cfg.get("n_heads") or 0
    hidden = cfg.get("hidden_size") or cfg.get("dim") or 0
    return str(cfg.get("model_type", "")), int(heads), int(hidden)


def engines(model_type: str) -> tuple[str, ...]:
    """The fusion engines that match this family's attention, preferred first (from the registry)."""
    arch = REGISTRY.get(model_type)
    if arch is None:
        return ()
    return (("ort",) if arch.ort_fusion else ()) + (("onnxscript",) if arch.onnxscript_fusion else ())


def supported(model_type: str, engine: str | None = None) -> bool:
    """Whether `engine` (any engine when None) fuses this family; others keep the plain graph."""
    return bool(engines(model_type)) if engine is None else engine in engines(model_type)


def unsupported_reason(model_type: str, engine: str | None = None) -> str:
    """One line: why this family is not fused (by `engine`, or at all), with the registry's note."""
    arch = REGISTRY.get(model_type)
    note = f": {arch.fusion_note}" if arch is not None and arch.fusion_note else ""
    by = f" with engine {engine!r}" if engine else ""
    return f"fusion does not support model type {model_type!r}{by}{note}"


def for_model(config: Config, model_type: str) -> Config:
    """The config with the family's engine when the requested one cannot fuse it but another can
    (ModernBERT and decoders fuse with onnxscript only)."""
    choices = engines(model_type)
    if config.level == "all" and choices and config.engine not in choices:
        return Config(level=config.level, engine=choices[0])
    return config


def apply(graph: Graph, ctx: BuildContext, config: Config) -> Graph:
    """The fused graph, and the fused operators with their counts (zeros dropped) in its record."""
    out = ctx.work_dir / f"fused-{config.level}-{config.engine}.onnx"
    if config.level == "basic":
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = optimize_model(str(graph.path), opt_level=1, only_onnxruntime=True, use_gpu=False)
        model.save_model_to_file(str(out))
        return Graph(out, graph.runtime, graph.input_names, {**config.to_dict(), "fused": {}})
    model_type, heads, hidden = model_dims(ctx.spec.transformer_dir)
    if not supported(model_type, config.engine):
        raise UnsupportedError(unsupported_reason(model_type, config.engine))
    if config.engine == "onnxscript":
        fused = _onnxscript(graph.path, out)
    else:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = optimize_model(
                str(graph.path),
                model_type=REGISTRY[model_type].ort_fusion,
                num_heads=heads,
                hidden_size=hidden,
                opt_level=0,
            )
        fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(out))
    # ORT names the op (Attention), onnxscript its rewrite rule (attention, sdpa_via_mha).
    if not any("attention" in k.lower() or "mha" in k.lower() for k in fused):
        raise UnsupportedError(
            f"fusion matched no attention in this {model_type} graph ({fused or 'nothing fused'})"
        )
    record: dict[str, Any] = {**config.to_dict(), "fused": fused}
    if not config.skip_layer_norm:
        record["skip_layer_norm_split"] = split_skip_layer_norm(out)
    return Graph(out, graph.runtime, graph.input_names, record)


def split_skip_layer_norm(path: Path) -> int:
    """Rewrite each SkipLayerNormalization in the ONNX file at `path` (in place) as Add (bias), Add (skip)
    and LayerNormalization, the same arithmetic in standard ops; returns how many were split.

    Outputs map one to one: Y, mean and inverse std dev are LayerNormalization's own three outputs (same
    shapes), and the optional fourth (input + skip + bias, which pre-norm models feed to the next residual)
    is the sum. Only node lists change, so weights in external data stay where they are.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    if not any(
        n.op_type == "SkipLayerNormalization" and n.domain == "com.microsoft" for n in model.graph.node
    ):
        return 0
    # LayerNormalization is a standard op from opset 17 on; every graph the exporters write is newer.
    if onnx_opset(model, 0) < 17:
        raise UnsupportedError(
            f"{path}: opset {onnx_opset(model, 0)} has no LayerNormalization (17 or newer needed)"
        )
    nodes: list[onnx.NodeProto] = []
    split = 0
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        split += 1
        ins = list(node.input) + [""] * (5 - len(node.input))
        x, skip, gamma, beta, bias = ins[:5]
        outs = list(node.output) + [""] * (4 - len(node.output))
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        name = node.name or f"SkipLayerNormalization_{split}"
        total = outs[3] or f"{name}/sum"
        if bias:
            nodes.append(helper.make_node("Add", [x, bias], [f"{name}/biased"], name=f"{name}/add_bias"))
            x = f"{name}/biased"
        nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{name}/add_skip"))
        ln_inputs = [total, gamma] + ([beta] if beta else [])
        ln_outputs = outs[:3]
        while ln_outputs and not ln_outputs[-1]:
            ln_outputs.pop()
        nodes.append(
            helper.make_node(
                "LayerNormalization", ln_inputs, ln_outputs, name=f"{name}/ln", axis=-1, epsilon=eps
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))
    return split


def _onnxscript(src: Path, dst: Path) -> dict[str, int]:
    require("onnxscript", "export")
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, counts = optimize_for_ort(ir.load(str(src)))
    ir.save(model, str(dst))
    return {k: int(v) for k, v in counts.items() if v}
