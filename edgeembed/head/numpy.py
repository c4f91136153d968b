"""The head in numpy: what the Encoder runs on a runtime's token embeddings (no torch).

It mirrors sentence-transformers' Pooling/Dense/Normalize modules (tests/test_head.py holds it, the ONNX
and the torch emitters to them), so any runtime that yields token embeddings gives the same sentence
embeddings.
"""

from __future__ import annotations

import numpy as np

from edgeembed.head.spec import ACTIVATIONS, HeadModel, PoolingMode


def _cls(tok: np.ndarray, mask: np.ndarray, original_mask: np.ndarray) -> np.ndarray:
    first = mask.argmax(axis=1)
    return tok[np.arange(tok.shape[0]), first]


def _max(tok: np.ndarray, mask: np.ndarray, original_mask: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None] > 0, tok, -np.inf).max(axis=1)


def _masked_sum(tok: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of each row's unmasked token vectors and its token count, (batch, dim) and (batch, 1).

    einsum sums straight into the (batch, dim) result: no (batch, seq, dim) `tok * mask` temporary and
    its own loop, no BLAS threads (see `dense`)."""
    m = mask.astype(np.float32)
    return np.einsum("bsd,bs->bd", tok, m), np.maximum(m.sum(axis=1, keepdims=True), 1e-9)


def _mean(tok: np.ndarray, mask: np.ndarray, original_mask: np.ndarray) -> np.ndarray:
    total, count = _masked_sum(tok, mask)
    total /= count
    return total


def _mean_sqrt_len(tok: np.ndarray, mask: np.ndarray, original_mask: np.ndarray) -> np.ndarray:
    total, count = _masked_sum(tok, mask)
    total /= np.sqrt(count)
    return total


def _weightedmean(tok: np.ndarray, mask: np.ndarray, original_mask: np.ndarray) -> np.ndarray:
    # Position weights start at the first non-padding token (left padding), as in sentence-transformers.
    weights = np.arange(1, tok.shape[1] + 1, dtype=np.float32)[None, :]
    # float32 offsets: an int64 argmax would promote the whole computation (and the result) to float64
    weights = weights - original_mask.argmax(axis=1)[:, None].astype(np.float32)
    w = (mask.astype(np.float32) * weights)[..., None]
    return (tok * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)


def _lasttoken(tok: np.ndarray, mask: np.ndarray, original_mask: np.ndarray) -> np.ndarray:
    seq_len = mask.shape[1]
    flipped = mask[:, ::-1]
    idx = flipped.argmax(axis=1)
    idx = np.where(flipped.max(axis=1) == 0, seq_len - 1, idx)
    last = seq_len - idx - 1
    return (tok * mask[..., None].astype(np.float32))[np.arange(tok.shape[0]), last]


_POOLERS = {
    PoolingMode.CLS: _cls,
    PoolingMode.MAX: _max,
    PoolingMode.MEAN: _mean,
    PoolingMode.MEAN_SQRT_LEN_TOKENS: _mean_sqrt_len,
    PoolingMode.WEIGHTEDMEAN: _weightedmean,
    PoolingMode.LASTTOKEN: _lasttoken,
}


def exclude_prompt(mask: np.ndarray, prompt_length: int) -> np.ndarray:
    """Zero the prompt's positions (after any left padding) so that pooling ignores them."""
    mask = mask.copy()
    pad = mask.argmax(axis=1)
    positions = np.arange(mask.shape[1])[None, :]
    mask[positions < (pad + prompt_length)[:, None]] = 0
    return mask


def pool(
    modes: tuple[PoolingMode, ...],
    token_embeddings: np.ndarray,
    attention_mask: np.ndarray,
    prompt_length: int = 0,
) -> np.ndarray:
    """Pool (batch, seq, dim) token embeddings into (batch, len(modes) * dim), modes concatenated in order."""
    tok = token_embeddings.astype(np.float32, copy=False)
    original = attention_mask.astype(np.int64, copy=False)
    mask = exclude_prompt(original, prompt_length) if prompt_length else original
    parts = [_POOLERS[PoolingMode(m)](tok, mask, original) for m in modes]
    # One mode (the usual case): its own fresh array, not a concatenated copy of it.
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def dense(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, activation: str, blas: bool = False
) -> np.ndarray:
    """A Dense module: x @ W.T + b, then the named activation (edgeembed.head.spec.ACTIVATIONS).

    `blas=False`: einsum, not `@`: numpy's `@` hands a batch-sized product to OpenBLAS, whose threads then
    spin beside the runtime's own thread pool and slow it down on few cores; einsum runs its own loop.
    `blas=True` (a runtime without a pool, RuntimeCapabilities.blas_head): `@`, 3x faster than einsum
    even on one BLAS thread (batch 32, 256 -> 1024 -> 256: 545 us vs 1,745 us; bench/REDUCE.md).
    """
    y = x @ weight.T if blas else np.einsum("...i,oi->...o", x, weight)
    if bias is not None:
        y += bias  # y is a fresh array either way
    return ACTIVATIONS[activation].numpy(y).astype(np.float32, copy=False)


def normalize(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """L2-normalise rows; a zero row stays zero instead of becoming NaN. `inplace=True` divides a
    writable float32 `x` itself (the Encoder's head, on arrays it made) instead of a copy; same numbers."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    if inplace and x.dtype == np.float32 and x.flags.writeable:
        x /= norms
        return x
    return (x / norms).astype(np.float32, copy=False)


def pool_tokens(
    head: HeadModel, token_embeddings: np.ndarray, attention_mask: np.ndarray, prompt_length: int = 0
) -> np.ndarray:
    """The head's pooling; `prompt_length` counts only when the head excludes its prompt."""
    return pool(head.pooling, token_embeddings, attention_mask, 0 if head.include_prompt else prompt_length)


def project(
    head: HeadModel,
    pooled: np.ndarray,
    normalize_rows: bool | None = None,
    owned: bool = False,
    blas: bool = False,
) -> np.ndarray:
    """Pooled vectors -> the Dense chain -> L2 normalization (`None`: as the head says). `owned`: `pooled`
    is the caller's fresh array, so normalization may divide it in place; the Dense chain makes its own.
    `blas`: see `dense`."""
    x = pooled
    for d in head.dense:
        x = dense(x, d.weight, d.bias, d.activation, blas)
        owned = True
    do_norm = head.normalize if normalize_rows is None else normalize_rows
    return normalize(x, inplace=owned) if do_norm else x


def run(
    head: HeadModel,
    token_embeddings: np.ndarray,
    attention_mask: np.ndarray,
    prompt_length: int = 0,
    normalize_rows: bool | None = None,
) -> np.ndarray:
    """The whole head: (batch, seq, hidden) + (batch, seq) mask -> (batch, head.dim) float32."""
    pooled = pool_tokens(head, token_embeddings, attention_mask, prompt_length)
    return project(head, pooled, normalize_rows, owned=True)
