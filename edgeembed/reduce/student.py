"""The model being reduced, in torch: transformer -> pooling -> Dense -> (normalize), from a ModelSpec.

Training needs gradients through the whole sentence embedding, so the head runs in torch here: the torch
emitter of the one head definition (edgeembed.head), which tests/test_head.py holds to the numpy and ONNX
emitters and to sentence-transformers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.arch import Arch, lookup
from edgeembed.errors import InputError, SourceError
from edgeembed.head import DenseLayer, HeadModel
from edgeembed.head.torch import TorchHead
from edgeembed.source import ModelSpec
from edgeembed.tokenization import TextTokenizer
from edgeembed.torch_model import call_options, graph_inputs, load_model

torch = require("torch", "export")
transformers = require("transformers", "export")


def load_raw_tokenizer(spec: ModelSpec) -> Any:
    """The model's fast `tokenizers.Tokenizer` (tokenizer.json, or converted by transformers when absent)."""
    from tokenizers import Tokenizer

    path = spec.transformer_dir / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    auto = transformers.AutoTokenizer.from_pretrained(str(spec.transformer_dir))
    if not getattr(auto, "is_fast", False):
        raise SourceError(f"{spec.transformer_dir} has no fast tokenizer; edgeembed needs tokenizer.json")
    return auto.backend_tokenizer


def load_tokenizer(spec: ModelSpec, max_seq_length: int | None = None) -> TextTokenizer:
    """The model's tokenizer, truncating at min(max_seq_length, the model's)."""
    tok = load_raw_tokenizer(spec)
    length = min(max_seq_length or spec.head.max_seq_length, spec.head.max_seq_length)
    return TextTokenizer(tok, length, spec.head.do_lower_case)


def arch_of_model(model: Any) -> Arch:
    """The registry entry of a loaded transformers model."""
    return lookup(getattr(model.config, "model_type", None))


def layer_list(model: Any) -> Any:
    """The ModuleList of transformer layers, where the model's registry entry says it is."""
    path = arch_of_model(model).layers
    obj = _resolve(model, path)
    if not isinstance(obj, torch.nn.ModuleList):
        raise SourceError(f"{type(model).__name__} has no layer list at {path!r} (the registry's entry)")
    return obj


def count_layers(model: Any) -> int:
    return len(layer_list(model))


def required_layers(model: Any) -> tuple[int, ...]:
    """Layers every student of this family keeps."""
    return (0,) if arch_of_model(model).keep_first_layer else ()


def check_keep(model: Any, keep: Sequence[int]) -> None:
    """One line, before any work, when this family cannot drop the layers `keep` leaves out."""
    why = arch_of_model(model).keep_first_layer
    if why and 0 not in keep:
        raise InputError(f"--keep {list(keep)} drops layer 0, which must stay: {why}")


def keep_layers(model: Any, keep: Sequence[int]) -> Any:
    """A copy of `model` with only the layers `keep` (in that order), its config updated."""
    check_keep(model, keep)
    arch = arch_of_model(model)
    student = copy.deepcopy(model)
    layers = layer_list(student)
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(kept):
        # Decoders index their per-layer cache and mask type by layer_idx: number the kept ones afresh.
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_idx
    parent, _, name = arch.layers.rpartition(".")
    setattr(_resolve(student, parent), name, kept)
    setattr(student.config, arch.layer_count_key, len(keep))
    for key in arch.per_layer_keys:
        values = getattr(student.config, key, None)
        if isinstance(values, list | tuple) and len(values) == len(layers):
            setattr(student.config, key, [values[i] for i in keep])
    return student


def _resolve(obj: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        obj = getattr(obj, part, None)
    return obj


def load_dense_torch(spec: ModelSpec) -> list[tuple[Any, Any, str]]:
    """(weight, bias, activation) of each Dense module, frozen torch tensors."""
    out = []
    for d in spec.head.dense:
        folder = spec.path / d.path
        if (folder / "model.safetensors").is_file():
            from safetensors.torch import load_file

            state = load_file(str(folder / "model.safetensors"))
        else:
            state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        out.append((state["linear.weight"].float(), state.get("linear.bias"), d.activation))
    return out


class SentenceModel(torch.nn.Module):
    """transformer -> the spec's head (edgeembed.head.torch: pooling, `dense`, normalize), in torch.

    `dense`: (weight, bias, activation) per Dense layer, frozen; usually the spec's own, or those plus a
    PCA layer when scoring a reduced model."""

    def __init__(self, transformer: Any, spec: ModelSpec, dense: list[tuple[Any, Any, str]]) -> None:
        super().__init__()
        self.transformer = transformer
        self.spec = spec
        self.pooling = spec.head.pooling
        self.normalize = spec.head.normalize
        self.dense = dense
        self.head = TorchHead(
            HeadModel(
                spec.head.hidden_size,
                spec.head.pooling,
                spec.head.include_prompt,
                tuple(
                    DenseLayer(
                        w.detach().float().numpy(), None if b is None else b.detach().float().numpy(), a
                    )
                    for w, b, a in dense
                ),
                spec.head.normalize,
            )
        )
        self.input_names = graph_inputs(transformer)
        self.options = call_options(transformer)

    def forward(self, inputs: dict[str, Any], normalize: bool | None = None) -> Any:
        tokens = self.transformer(
            **{k: inputs[k] for k in self.input_names}, **self.options, return_dict=True
        )
        return self.head(tokens.last_hidden_state, inputs["attention_mask"], normalize=normalize)


def load_transformer(model_dir: Path) -> Any:
    return load_model(model_dir)


def to_torch(batch: Any, names: Sequence[str], device: str = "cpu") -> dict[str, Any]:
    return {name: torch.from_numpy(getattr(batch, name)).to(device) for name in names}


def encode(
    model: SentenceModel,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    normalize: bool | None = False,
) -> np.ndarray:
    """Embeddings in input order, eval mode, batches sorted by length (as the Encoder does)."""
    was_training = model.training
    model.eval()
    encodings = tokenizer.encode(list(texts))
    order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
    device = next(model.transformer.parameters()).device
    out: np.ndarray | None = None
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer.pad([encodings[i] for i in idx])
            emb = model(to_torch(batch, model.input_names, device), normalize=normalize).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)
