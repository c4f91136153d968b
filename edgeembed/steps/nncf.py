"""NNCF on an OpenVINO IR: static int8 (`nncf.quantize`) and weight-only compression
(`nncf.compress_weights`). Settings are frozen dataclasses with named presets; their dict goes into the
manifest. Calibration inputs come from `edgeembed.calibration` at real sentence lengths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import numpy as np

from edgeembed._imports import require
from edgeembed.context import BuildContext, Graph, calibration_batches
from edgeembed.errors import InputError
from edgeembed.isa import ISAS, detect_isa
from edgeembed.torch_model import arch_of


@dataclass(frozen=True)
class OpenVinoStaticConfig:
    """Static int8 (weights and activations) with nncf.quantize, model_type TRANSFORMER.

    preset: "performance" (weights and activations symmetric) or "mixed" (asymmetric activations).
    smooth_quant_alpha: SmoothQuant strength on MatMuls, None = nncf's choice, a negative value disables
    it. The defaults are the faster preset at the same accuracy (symmetric activations take the CPU's
    int8 kernels without a zero-point correction), with SmoothQuant strong enough to move the
    activation outliers of a transformer into the weights, which symmetric activations need; the
    comparison is in bench/QUANT.md. Calibration runs one text per batch, at its real length.
    accuracy_control: with an STS file, use nncf.quantize_with_accuracy_control to keep the gate's
    criteria (False: plain nncf.quantize, and the gate alone decides).
    isa: the CPU the IR is tuned for (edgeembed.isa). Without VNNI (avx512, avx2) the int8 kernels add
    u8 x s8 products in pairs into 16 bits, which saturates on full-range weights; there every layer gets
    nncf's overflow fix (7-bit weights), as ONNX Runtime's avx512 preset takes reduce_range. With VNNI
    or AMX nothing saturates and nncf's default (the first layer only) stays.
    float_attention_scores: keep the activation x activation MatMuls (scores QK^T and their product with
    V) in float; the architecture registry sets it where their range needs it (ONNX static int8 never
    quantizes them).
    """

    step: ClassVar[str] = "nncf"
    gate: ClassVar[str] = "int8"
    precision: ClassVar[str] = "int8"

    mode: str = "static"
    preset: str = "performance"
    subset_size: int = 300
    fast_bias_correction: bool = True
    smooth_quant_alpha: float | None = 0.95
    calibration_batch_size: int = 1
    accuracy_control: bool = True
    isa: str = "avx512_vnni"
    float_attention_scores: bool = False

    def __post_init__(self) -> None:
        if self.isa not in ISAS:
            raise InputError(f"unknown ISA {self.isa!r}; choose from {', '.join(ISAS)}")
        if self.mode != "static":
            raise InputError(f"OpenVinoStaticConfig.mode is 'static', got {self.mode!r}")
        if self.preset not in ("mixed", "performance"):
            raise InputError(f"unknown nncf preset {self.preset!r}; choose from mixed, performance")

    @property
    def file_name(self) -> str:
        """What sentence-transformers' export_static_quantized_openvino_model writes."""
        return "openvino/openvino_model_qint8_quantized.xml"

    @property
    def overflow_fix(self) -> str:
        """nncf's OverflowFix for this ISA: "enable" (every layer) where VNNI is missing."""
        return "enable" if self.isa in ("avx512", "avx2") else "first_layer_only"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": "nncf", **asdict(self), "overflow_fix": self.overflow_fix}


@dataclass(frozen=True)
class OpenVinoWeightsConfig:
    """Weight-only compression: weights stored as int8/int4 and decompressed on the fly (OpenVINO's CPU
    plugin may also quantize activations dynamically for such layers); no calibration data needed.
    group_size -1 = per output channel; ratio = share of layers in `weight_type` (the rest, and the
    embeddings, in int8)."""

    step: ClassVar[str] = "nncf"

    mode: str = "weights"
    weight_type: str = "int8_asym"
    group_size: int = -1
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.mode != "weights":
            raise InputError(f"OpenVinoWeightsConfig.mode is 'weights', got {self.mode!r}")
        if self.weight_type not in WEIGHT_TYPES:
            raise InputError(
                f"unknown weight type {self.weight_type!r}; choose from {', '.join(WEIGHT_TYPES)}"
            )

    @property
    def bits(self) -> int:
        return 4 if self.weight_type.startswith("int4") else 8

    @property
    def gate(self) -> str:
        return f"int{self.bits}"

    @property
    def precision(self) -> str:
        return f"int{self.bits}"

    @property
    def file_name(self) -> str:
        return f"openvino/openvino_model_int{self.bits}_weights.xml"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": "nncf", **asdict(self)}


WEIGHT_TYPES = ("int8_asym", "int8_sym", "int4_sym", "int4_asym")


QuantizeSpec = OpenVinoStaticConfig | OpenVinoWeightsConfig

PRESETS: dict[str, QuantizeSpec] = {
    "static": OpenVinoStaticConfig(),
    "weights-int8": OpenVinoWeightsConfig(weight_type="int8_asym"),
    # 384/1536-wide MiniLM matrices split evenly into groups of 128.
    "weights-int4": OpenVinoWeightsConfig(weight_type="int4_sym", group_size=128, ratio=1.0),
}


def resolve(quantize: str | QuantizeSpec, isa: str | None = None) -> QuantizeSpec:
    """A preset name or a config object -> a config object. A static preset is tuned for `isa`
    (None or "auto": this CPU's); a config object keeps its own unless `isa` is given."""
    isa = None if isa == "auto" else isa
    if isinstance(quantize, (OpenVinoStaticConfig, OpenVinoWeightsConfig)):
        config = quantize
    else:
        try:
            config = PRESETS[quantize]
        except KeyError:
            raise InputError(
                f"unknown OpenVINO quantization {quantize!r}; choose from {', '.join(PRESETS)}"
            ) from None
        if isinstance(config, OpenVinoStaticConfig):
            config = replace(config, isa=isa or detect_isa())
    if isa is not None:
        if not isinstance(config, OpenVinoStaticConfig):
            raise InputError("--isa applies to OpenVINO static int8 (weight compression has no ISA preset)")
        config = replace(config, isa=isa)
    return config


def quantize_static(model: Any, config: OpenVinoStaticConfig, inputs: Sequence[dict[str, np.ndarray]]) -> Any:
    """int8 IR calibrated on `inputs` (model input dicts, one text each at its real length)."""
    nncf = require("nncf", "openvino")
    return nncf.quantize(
        model,
        nncf.Dataset(list(inputs)),
        preset=nncf.QuantizationPreset(config.preset),
        subset_size=min(config.subset_size, len(inputs)),
        fast_bias_correction=config.fast_bias_correction,
        model_type=nncf.ModelType.TRANSFORMER,
        ignored_scope=ignored_scope(model, config),
        advanced_parameters=advanced_parameters(config),
    )


def attention_score_matmuls(model: Any) -> list[str]:
    """The IR's MatMuls whose two inputs both depend on the model's inputs (activation x activation:
    attention scores and their product with V), as opposed to a MatMul by a weight, however the weight
    is stored (a Constant, or int8 / fp16 constants decompressed by Convert, Subtract, Multiply)."""
    computed: dict[str, bool] = {}  # by get_name(), unique per node (Python wrappers are not)

    def depends_on_input(node: Any) -> bool:
        stack = [node]
        while stack:  # iterative post-order: deep graphs would overflow recursion
            top = stack[-1]
            key = top.get_name()
            if key in computed:
                stack.pop()
                continue
            if top.get_type_name() == "Parameter":
                computed[key] = True
                stack.pop()
                continue
            parents = [top.input_value(i).get_node() for i in range(top.get_input_size())]
            pending = [p for p in parents if p.get_name() not in computed]
            if pending:
                stack.extend(pending)
                continue
            computed[key] = any(computed[p.get_name()] for p in parents)
            stack.pop()
        return computed[node.get_name()]

    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "MatMul"
        and all(depends_on_input(op.input_value(i).get_node()) for i in range(2))
    ]


def ignored_scope(model: Any, config: OpenVinoStaticConfig) -> Any:
    """What stays in float: the attention score MatMuls when the config says so, else nothing."""
    nncf = require("nncf", "openvino")
    if not config.float_attention_scores:
        return None
    return nncf.IgnoredScope(names=attention_score_matmuls(model), validate=False)


# validate(run, items) -> (metric, one float per item); `run` maps model inputs to the graph's first
# output. Higher metric = better (e.g. STS Spearman). The per-item values pick the items the int8 graph
# changed most; nncf ranks quantizers by the metric on those ("metric mode"), so items need not be
# single model inputs (an STS item is a pair of texts).
Validate = Callable[[Callable[[dict[str, np.ndarray]], np.ndarray], list[Any]], tuple[float, list[float]]]


def advanced_parameters(config: OpenVinoStaticConfig) -> Any:
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    kwargs: dict[str, Any] = {"overflow_fix": OverflowFix(config.overflow_fix)}
    if config.smooth_quant_alpha is not None:
        kwargs["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=config.smooth_quant_alpha)
    return AdvancedQuantizationParameters(**kwargs)


def quantize_with_accuracy_control(
    model: Any,
    config: OpenVinoStaticConfig,
    inputs: Sequence[dict[str, np.ndarray]],
    validation_items: Sequence[Any],
    validate: Validate,
    max_relative_drop: float,
    ranking_subset_size: int = 100,
    max_reverts: int | None = None,
    tune_hyperparams: bool = False,
) -> Any:
    """int8 IR whose `validate` metric stays within `max_relative_drop` of the fp32 model's.

    nncf.quantize_with_accuracy_control quantizes as `quantize_static` does, measures the metric, and if
    the drop is too large ranks the quantizers by the metric on the items int8 changed most and reverts
    the worst to float, one group at a time, until the drop fits (or nothing more helps; the caller's
    gate then decides). `validate` gets the compiled model as a plain `run(inputs) -> output`;
    `max_reverts` caps the revert steps (None: as many as there are quantizers); `tune_hyperparams`
    first searches nncf's grid (SmoothQuant alpha, preset, range estimators, bias correction).
    """
    nncf = require("nncf", "openvino")
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    if not 0.0 <= max_relative_drop < 1.0:
        raise InputError(f"max_relative_drop must be in [0, 1), got {max_relative_drop}")

    def validation_fn(compiled: Any, items: Any) -> tuple[float, list[float]]:
        output = compiled.output(0)
        return validate(lambda feed: compiled(feed)[output], list(items))

    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(list(inputs)),
        nncf.Dataset(list(validation_items)),
        validation_fn,
        max_drop=max_relative_drop,
        drop_type=nncf.DropType.RELATIVE,
        preset=nncf.QuantizationPreset(config.preset),
        subset_size=min(config.subset_size, len(inputs)),
        fast_bias_correction=config.fast_bias_correction,
        model_type=nncf.ModelType.TRANSFORMER,
        ignored_scope=ignored_scope(model, config),
        advanced_quantization_parameters=advanced_parameters(config),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            ranking_subset_size=min(ranking_subset_size, len(validation_items)),
            num_ranking_workers=1,
            tune_hyperparams=tune_hyperparams,
            **({} if max_reverts is None else {"max_num_iterations": max_reverts}),
        ),
    )


def quantizer_count(model: Any) -> int:
    """Quantizers in an IR: activation FakeQuantize ops plus int8 weight constants (how much of it runs
    in int8; accuracy control reverts some to float)."""
    count = 0
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize" or (
            kind == "Constant" and op.get_output_element_type(0).get_type_name() in ("i8", "u8")
        ):
            count += 1
    return count


def compress_weights(model: Any, config: OpenVinoWeightsConfig) -> Any:
    """Weight-only int8/int4 IR (data-free)."""
    nncf = require("nncf", "openvino")
    mode = nncf.CompressWeightsMode(config.weight_type)
    if mode in (nncf.CompressWeightsMode.INT8_ASYM, nncf.CompressWeightsMode.INT8_SYM):
        # int8 is per channel only; nncf refuses group_size/ratio for it.
        return nncf.compress_weights(model, mode=mode)
    return nncf.compress_weights(model, mode=mode, group_size=config.group_size, ratio=config.ratio)


# Revert steps nncf may take (each re-validates; a re-ranking costs one compile per quantizer group):
# bounds an export's time when reverting cannot reach the gate (then the gate fails with its numbers).
ACCURACY_MAX_REVERTS = 8


def gather_tables_int8(model: Any) -> int:
    """Gather each int8 lookup table (Gather over Convert(int8) [- zero point] * scale, what nncf.quantize
    leaves for the word embeddings) straight from its int8 constant and dequantize the gathered rows;
    returns how many were rewritten. Same int8 values and scales as nncf's, only in another order.

    Why: in a model with quantized activations the CPU plugin hands a Gather over a dequantized int8
    constant to its low-precision pipeline, which folds the table to an fp32 copy at compile_model
    (vocabulary x hidden x 4 bytes of peak memory). A Gather over the int8 constant itself leaves nothing
    to fold: the table stays in the mapped file at one byte a value (half the fp16 table this rewrite
    used to store: MiniLM's IR 36 -> 23 MB, 3-6 MB less peak RSS; bench/PROFILE.md section 16), and only
    the rows a batch gathers are converted. Per-row scales and zero points are gathered with them."""
    ov = require("openvino", "openvino")
    ops = ov.opset13
    done = 0
    for gather in model.get_ops():
        if gather.get_type_name() != "Gather" or gather.get_batch_dims() != 0:
            continue
        parts = _int8_table(gather.input_value(0).get_node())
        ids, axis = gather.input_value(1), gather.input_value(2)
        if (
            parts is None
            or axis.get_node().get_type_name() != "Constant"
            or axis.get_node().get_data().reshape(-1).tolist() != [0]
        ):
            continue
        weights, zero, scale = parts
        out = ops.convert(ops.gather(weights.output(0), ids, axis), "f32")
        if zero is not None:
            out = ops.subtract(out, _per_row(ops, zero, weights, ids, axis))
        out = ops.multiply(out, _per_row(ops, scale, weights, ids, axis))
        for target in list(gather.output(0).get_target_inputs()):
            target.replace_source_output(out.output(0))
        done += 1
    return done


def _per_row(ops: Any, values: np.ndarray, table: Any, ids: Any, axis: Any) -> Any:
    """`values` for the rows `ids` gathers from `table`: a per-row array (one value per table row) is
    gathered with them; a per-column or scalar one broadcasts over whatever rows were gathered."""
    shape = table.get_output_partial_shape(0)
    if values.ndim == shape.rank.get_length() and values.shape[0] == shape[0].get_length():
        return ops.gather(ops.constant(values), ids, axis)
    return ops.constant(values[0] if values.ndim and values.shape[0] == 1 else values)


def _int8_table(node: Any) -> tuple[Any, np.ndarray | None, np.ndarray] | None:
    """(int8 Constant node, zero point, scale) of Multiply(Convert(int8 Constant) [- zero point], scale
    Constant), zero point and scale as fp32 arrays; else None."""
    if node.get_type_name() != "Multiply":
        return None
    first, scale = (node.input_value(i).get_node() for i in range(2))
    if scale.get_type_name() != "Constant":
        return None
    zero = None
    if first.get_type_name() == "Subtract":
        first, zero = (first.input_value(i).get_node() for i in range(2))
        if zero.get_type_name() == "Convert":
            zero = zero.input_value(0).get_node()
        if zero.get_type_name() != "Constant":
            return None
    if first.get_type_name() != "Convert":
        return None
    weights = first.input_value(0).get_node()
    if weights.get_type_name() != "Constant" or weights.get_output_element_type(0).get_type_name() not in (
        "i8",
        "u8",
    ):
        return None
    return (
        weights,
        None if zero is None else zero.get_data().astype(np.float32),
        scale.get_data().astype(np.float32),
    )


def _accuracy_controlled(
    model: Any, graph: Graph, ctx: BuildContext, config: OpenVinoStaticConfig, inputs: list
) -> tuple[Any, dict[str, Any]]:
    """Static int8 that keeps the gate's criteria (STS retained >= min_retained, cosine vs the fp32
    graph above the int8 floors, on the STS and validation sentences): nncf reverts the quantizers that
    hurt them most to float until they hold. The orchestrator's gate then checks the result as usual."""
    from edgeembed.encoder import Encoder
    from edgeembed.gate import validation_sentences
    from edgeembed.runtimes import RuntimeOptions, load_runtime
    from edgeembed.steps.gate_metric import GateMetric, gate_items

    policy = ctx.policy
    min_cos, min_mean = policy.floors("int8")
    fp32 = Encoder.from_parts(
        ctx.root, load_runtime(graph.runtime, graph.path, RuntimeOptions(threads=ctx.threads)), ctx.spec.head
    )
    items = gate_items(ctx.sts, validation_sentences(ctx.spec.head.max_seq_length))
    metric = GateMetric.from_encoder(fp32, items, policy.min_retained, min_cos, min_mean)
    max_drop = round(1.0 - policy.min_retained, 6)
    ctx.progress(
        f"static int8 with nncf.quantize_with_accuracy_control ({config.preset}, {len(inputs)} calibration "
        f"batches; gate on {len(items)} items: STS retained >= {policy.min_retained}, cosine vs fp32 >= {min_cos})"
    )
    q_model = quantize_with_accuracy_control(
        model, config, inputs, items, metric, max_drop, max_reverts=ACCURACY_MAX_REVERTS
    )
    return q_model, {
        "metric": "gate (sts retained, cosine floors)",
        "items": len(items),
        "max_relative_drop": max_drop,
    }


def apply(graph: Graph, ctx: BuildContext, config: QuantizeSpec) -> Graph:
    """The IR quantized (static, calibrated on ctx.calibration) or weight-compressed."""
    ov = require("openvino", "openvino")
    model = ov.Core().read_model(str(graph.path))
    if (
        isinstance(config, OpenVinoStaticConfig)
        and arch_of(ctx.spec.transformer_dir).static_int8_float_attention_scores
    ):
        config = replace(
            config, float_attention_scores=True
        )  # the registry's reason; recorded in the manifest
    record = config.to_dict()
    if isinstance(config, OpenVinoStaticConfig):
        inputs, record["calibration"] = calibration_batches(
            ctx, graph.input_names, config.calibration_batch_size
        )
        policy = ctx.policy
        if config.accuracy_control and policy is not None and ctx.sts is not None:
            out_model, record["accuracy_aware"] = _accuracy_controlled(model, graph, ctx, config, inputs)
        else:
            ctx.progress(
                f"static int8 with nncf.quantize ({config.preset}, {len(inputs)} calibration batches)"
            )
            out_model = quantize_static(model, config, inputs)
        record["quantizers"] = quantizer_count(out_model)
        record["int8_gather_tables"] = gather_tables_int8(out_model)
    else:
        ctx.progress(f"weight compression with nncf.compress_weights ({config.weight_type})")
        out_model = compress_weights(model, config)
    xml = ctx.work_dir / f"nncf-{config.mode}" / "openvino_model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(out_model, str(xml), compress_to_fp16=False)
    return Graph(xml, graph.runtime, graph.input_names, record)
