"""The architecture registry: what edgeembed needs to know about each transformers `model_type`.

Pure data (no torch): the source reader, the torch loader, `reduce`, fusion and the strings-in graphs ask
this table instead of keeping their own lists. Adding a family is one entry here plus its test
(tests/test_families.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeembed.errors import SourceError

__all__ = ["REGISTRY", "Arch", "lookup", "supported"]


@dataclass(frozen=True)
class Arch:
    """One architecture family.

    loader: the transformers class that loads the encoder (by name, resolved where torch is imported).
    layers: dotted path of the ModuleList of transformer layers (what `reduce --layers` subsets).
    layer_count_key: the config key that counts those layers.
    per_layer_keys: config lists with one entry per layer, subset along with the layers.
    keep_first_layer: why layer 0 cannot be dropped (it owns something the others share), or None.
    position_offset: positions reserved before the first token (RoBERTa-style: padding_idx + 1).
    token_type_ids: whether the model takes token_type_ids (used when its config has token types).
    ort_fusion: onnxruntime.transformers optimizer model_type (TorchScript graph), or None.
    onnxscript_fusion: onnxscript's ORT rewriter fuses its attention (dynamo graph).
    fusion_note: why an engine is missing (its attention matches no pattern of that engine).
    tokenizer: its usual tokenizer family: wordpiece, unigram or bpe (the strings-in graph adapters).
    decoder: a causal decoder (its embedding models pool the last token; informational).
    static_int8_float_attention_output: why ONNX static int8 keeps the attention output projections in
    float (their input, the attention context, cannot share one int8 scale across positions), or None.
    static_int8_float_attention_scores: why OpenVINO static int8 (nncf) keeps the attention score
    MatMuls in float, or None (nncf quantizes them by default; ONNX static int8 never does).
    """

    loader: str = "AutoModel"
    layers: str = "encoder.layer"
    layer_count_key: str = "num_hidden_layers"
    per_layer_keys: tuple[str, ...] = ()
    keep_first_layer: str | None = None
    position_offset: int = 0
    token_type_ids: bool = False
    ort_fusion: str | None = None
    onnxscript_fusion: bool = False
    fusion_note: str | None = None
    tokenizer: str = "wordpiece"
    decoder: bool = False
    static_int8_float_attention_output: str | None = None
    static_int8_float_attention_scores: str | None = None


_BERT = Arch(token_type_ids=True, ort_fusion="bert", onnxscript_fusion=True)
_ROBERTA = Arch(
    token_type_ids=True, position_offset=2, ort_fusion="bert", onnxscript_fusion=True, tokenizer="bpe"
)
_T5 = Arch(
    loader="T5EncoderModel",  # the encoder only: AutoModel would build (and randomly fill) a decoder
    layers="encoder.block",
    layer_count_key="num_layers",
    keep_first_layer="T5's layer 0 holds the relative position bias every other layer reuses",
    fusion_note="no engine fuses its attention (relative position bias, no scaling): the ORT optimizer's t5 "
    "type targets generation graphs and onnxscript fuses only its RMS norms",
    tokenizer="unigram",
    static_int8_float_attention_scores="T5 does not scale its attention scores by 1/sqrt(d) and adds a "
    "relative position bias, so their range is too wide for one int8 scale per tensor",
)
_DECODER = Arch(
    layers="layers",
    per_layer_keys=("layer_types",),
    onnxscript_fusion=True,  # MultiHeadAttention and SkipSimplifiedLayerNormalization
    fusion_note="the ORT optimizer has no type for rotary, grouped-query decoder layers; onnxscript fuses them",
    tokenizer="bpe",
    decoder=True,
    static_int8_float_attention_output="under causal attention the first positions' context is one value "
    "vector at full size while the last token's (the pooled one) averages the whole text and is much "
    "smaller, so a per-tensor scale set by the first rounds the pooled token's away",
)

REGISTRY: dict[str, Arch] = {
    "bert": _BERT,
    "electra": _BERT,
    "roberta": _ROBERTA,
    "camembert": replace(_ROBERTA, tokenizer="unigram"),
    "xlm-roberta": replace(_ROBERTA, tokenizer="unigram"),
    "distilbert": replace(
        _BERT, layers="transformer.layer", layer_count_key="n_layers", token_type_ids=False
    ),
    "mpnet": Arch(
        position_offset=2,
        fusion_note="no engine fuses its attention (a relative position bias is added to the scores): the "
        "ORT optimizer and onnxscript match only its layer norms and GELUs",
    ),
    "modernbert": Arch(
        layers="layers",
        per_layer_keys=("layer_types",),
        keep_first_layer="ModernBERT's layer 0 has no attention norm (the embeddings' norm serves it)",
        onnxscript_fusion=True,  # MultiHeadAttention (rotary, global and sliding-window masks) and Gelu
        fusion_note="the ORT optimizer's bert type fails on its rotary attention; onnxscript fuses it",
        tokenizer="bpe",
    ),
    "t5": _T5,
    "mt5": _T5,
    "umt5": _T5,
    "qwen2": _DECODER,
    "qwen3": _DECODER,
}


def supported() -> tuple[str, ...]:
    return tuple(REGISTRY)


def lookup(model_type: object, where: object = None) -> Arch:
    """The entry for a config.json's model_type; SourceError in one line when edgeembed does not know it."""
    arch = REGISTRY.get(str(model_type)) if model_type else None
    if arch is None:
        place = f" in {where}" if where is not None else ""
        raise SourceError(f"unsupported model_type {model_type!r}{place}; supported: {', '.join(REGISTRY)}")
    return arch
