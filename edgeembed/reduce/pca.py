"""PCA to fewer dimensions, as a Dense module (identity activation) placed before Normalize.

Fitted on the model's own embeddings of corpus texts (the pooled output a Dense module receives);
centred, so the Dense has bias -W @ mean. sentence-transformers loads the result as any Dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeembed.errors import InputError

MIN_TEXTS_PER_DIM = 4


@dataclass(frozen=True)
class PcaHead:
    """weight (dim, in_features) and bias (dim,): y = x @ weight.T + bias."""

    weight: np.ndarray
    bias: np.ndarray
    explained_variance: float  # fraction of the total variance kept

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])


def check_dim(dim: int, model_dim: int) -> None:
    if not 1 <= dim < model_dim:
        raise InputError(
            f"--dim {dim} must be between 1 and {model_dim - 1} (the model's dimension is {model_dim})"
        )


def fit_pca(embeddings: np.ndarray, dim: int) -> PcaHead:
    """Principal axes of `embeddings` (n, d), largest variance first."""
    x = np.asarray(embeddings, dtype=np.float64)
    check_dim(dim, x.shape[1])
    if len(x) < MIN_TEXTS_PER_DIM * dim:
        raise InputError(
            f"PCA to {dim} dimensions needs at least {MIN_TEXTS_PER_DIM * dim} texts, got {len(x)}"
        )
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:dim]
    weight = vectors[:, order].T
    # A fixed sign per axis (largest |component| positive), so refits give the same head.
    signs = np.sign(weight[np.arange(dim), np.abs(weight).argmax(1)])
    weight = weight * signs[:, None]
    explained = float(values[order].sum() / values.sum())
    return PcaHead(weight.astype(np.float32), (-weight @ mean).astype(np.float32), explained)


def apply(head: PcaHead, embeddings: np.ndarray) -> np.ndarray:
    return (embeddings @ head.weight.T + head.bias).astype(np.float32)
