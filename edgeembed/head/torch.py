"""The head in torch, with gradients: what distillation trains through (edgeembed.reduce).

Activations are the very torch.nn classes sentence-transformers instantiates from a Dense config (the
table's `torch_class`). Needs torch (export extra); nothing on the runtime path imports this module.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from edgeembed._imports import require
from edgeembed.head.spec import ACTIVATIONS, HeadModel, PoolingMode

torch = require("torch", "export")


def activation_module(name: str) -> Any:
    """A fresh torch.nn module for a table activation, as sentence-transformers' Dense.load makes it."""
    module_name, _, class_name = ACTIVATIONS[name].torch_class.rpartition(".")
    return getattr(import_module(module_name), class_name)()


def exclude_prompt(mask: Any, prompt_length: int) -> Any:
    """mask (B, L) with the prompt's positions (after any left padding) zeroed, on a copy."""
    first = mask.to(torch.int32).argmax(dim=1)
    positions = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
    return mask.masked_fill(positions < (first + prompt_length).unsqueeze(1), 0)


def pool(head: HeadModel, tokens: Any, mask: Any, prompt_length: int = 0) -> Any:
    """(B, L, H) token embeddings + (B, L) mask -> (B, len(pooling) * H), modes concatenated in order."""
    original = mask
    if prompt_length and not head.include_prompt:
        mask = exclude_prompt(mask, prompt_length)
    m = mask.unsqueeze(-1).to(tokens.dtype)
    parts = []
    for mode in head.pooling:
        if mode == PoolingMode.CLS:
            first = mask.to(torch.int32).argmax(dim=1)
            parts.append(tokens[torch.arange(tokens.size(0), device=tokens.device), first])
        elif mode == PoolingMode.MAX:
            parts.append(tokens.masked_fill(m == 0, float("-inf")).max(dim=1).values)
        elif mode in (PoolingMode.MEAN, PoolingMode.MEAN_SQRT_LEN_TOKENS):
            count = m.sum(dim=1).clamp(min=1e-9)
            parts.append((tokens * m).sum(dim=1) / (count if mode == PoolingMode.MEAN else count.sqrt()))
        elif mode == PoolingMode.WEIGHTEDMEAN:
            weights = torch.arange(1, tokens.size(1) + 1, device=tokens.device, dtype=tokens.dtype)
            weights = weights.unsqueeze(0) - original.to(torch.int32).argmax(dim=1, keepdim=True)
            w = m * weights.unsqueeze(-1)
            parts.append((tokens * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9))
        elif mode == PoolingMode.LASTTOKEN:
            seq_len = mask.size(1)
            values, idx = mask.to(torch.int32).flip(1).max(dim=1)
            last = seq_len - 1 - torch.where(values == 0, seq_len - 1, idx)
            parts.append((tokens * m)[torch.arange(tokens.size(0), device=tokens.device), last])
        else:  # pragma: no cover - PoolingMode is closed
            raise ValueError(f"pooling mode {mode.value!r} has no torch form")
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class TorchHead(torch.nn.Module):
    """Pooling -> Dense chain -> Normalize; Dense weights as frozen buffers (distillation trains the
    transformer under them, or replaces the chain)."""

    def __init__(self, head: HeadModel) -> None:
        super().__init__()
        self.head = head
        self.activations = torch.nn.ModuleList(activation_module(d.activation) for d in head.dense)
        for i, d in enumerate(head.dense):
            self.register_buffer(f"weight{i}", torch.from_numpy(d.weight.copy()), persistent=False)
            bias = None if d.bias is None else torch.from_numpy(d.bias.copy())
            self.register_buffer(f"bias{i}", bias, persistent=False)

    def project(self, pooled: Any, normalize: bool | None = None) -> Any:
        """Pooled vectors -> Dense chain -> L2 normalization (`None`: as the head says)."""
        x = pooled
        for i, act in enumerate(self.activations):
            x = act(torch.nn.functional.linear(x, getattr(self, f"weight{i}"), getattr(self, f"bias{i}")))
        if self.head.normalize if normalize is None else normalize:
            x = torch.nn.functional.normalize(x, p=2, dim=-1)
        return x

    def forward(self, tokens: Any, mask: Any, prompt_length: int = 0, normalize: bool | None = None) -> Any:
        return self.project(pool(self.head, tokens, mask, prompt_length), normalize)
