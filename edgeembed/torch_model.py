"""The source transformer as a torch module that returns token embeddings, the part that gets a graph."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from edgeembed._imports import require
from edgeembed.arch import Arch, lookup
from edgeembed.errors import SourceError

torch = require("torch", "export")
transformers = require("transformers", "export")


class TokenEmbeddings(torch.nn.Module):
    """Wraps a transformers encoder so that forward(*inputs) -> last_hidden_state."""

    def __init__(self, model: Any, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.options = call_options(model)

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, **self.options}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.model(**kwargs, return_dict=True).last_hidden_state


def call_options(model: Any) -> dict[str, Any]:
    """Keyword arguments every forward call passes: no key/value cache where the model has one (one
    pass over the whole text; a decoder's cache only adds ops that OpenVINO's tracer cannot convert)."""
    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}


def graph_inputs(model: Any) -> tuple[str, ...]:
    """input_ids, attention_mask, and token_type_ids only where the family takes them and the config has
    token types."""
    params = inspect.signature(model.forward).parameters
    names: tuple[str, ...] = ("input_ids", "attention_mask")
    arch = lookup(getattr(model.config, "model_type", None))
    if arch.token_type_ids and "token_type_ids" in params and getattr(model.config, "type_vocab_size", 0):
        names += ("token_type_ids",)
    return names


def arch_of(model_dir: Path) -> Arch:
    """The registry entry of the transformer in `model_dir` (from its config.json)."""
    config = model_dir / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {config}: {exc}") from None
    return lookup(model_type, config)


def load_model(model_dir: Path, attn_implementation: str = "eager") -> Any:
    """The bare transformers encoder in fp32, eval mode, loaded by the class its family names."""
    loader = getattr(transformers, arch_of(model_dir).loader)
    try:
        model = loader.from_pretrained(
            str(model_dir), attn_implementation=attn_implementation, dtype=torch.float32
        )
    except OSError as exc:
        raise SourceError(f"cannot load the transformer from {model_dir}: {exc}") from None
    return model.eval()


def load_transformer(model_dir: Path, attn_implementation: str = "eager") -> TokenEmbeddings:
    """Load the encoder in fp32, eval mode. Eager attention exports to plain ops ORT can fuse."""
    model = load_model(model_dir, attn_implementation)
    return TokenEmbeddings(model, graph_inputs(model)).eval()
