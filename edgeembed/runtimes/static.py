"""Static embeddings in numpy: token ids -> rows of a table (the Encoder then takes the masked mean and
normalizes). No graph, no onnxruntime: just the table of sentence-transformers' StaticEmbedding."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np

from edgeembed.errors import ArtifactError
from edgeembed.runtimes import RuntimeCapabilities, RuntimeOptions

TABLE_KEY = "embedding.weight"
# mean_of_ids: the Encoder's fast path for a mean-pooled head; thread-safe: reads of a table that never
# changes after load; blas_head: no thread pool here, so a Dense head (reduce --static makes one by
# default) runs its matmuls through BLAS.
CAPABILITIES = RuntimeCapabilities(mean_of_ids=True, thread_safe=True, blas_head=True)


def load_table(path: Path) -> np.ndarray:
    """The (vocab, dim) table from a safetensors file, in its stored dtype (float32 or float16)."""
    from safetensors.numpy import load_file

    try:
        table = load_file(str(path))[TABLE_KEY]
    except Exception as exc:
        raise ArtifactError(f"cannot read {TABLE_KEY} from {path}: {exc}") from None
    if table.ndim != 2:
        raise ArtifactError(f"{TABLE_KEY} in {path} has shape {table.shape}; expected (vocab, dim)")
    return table


class StaticRuntime:
    """`run` returns token vectors (batch, seq, dim) float32, the Runtime contract; padding rows are
    masked out by the Encoder's mean pooling. `mean_of_ids` is the fast path the Encoder takes for a
    mean-pooled head: each text's mean row straight from its token ids."""

    capabilities = CAPABILITIES
    input_names = ("input_ids", "attention_mask")

    def __init__(self, table: np.ndarray) -> None:
        # Widened once at load (a float16 file stays small on disk): gathering float32 rows then needs
        # no per-batch conversion. One extra zero row, the padding id of `mean_of_ids`: padding then adds
        # exact zeros, so no mask is built or multiplied.
        vocab, dim = table.shape
        self._vocab = vocab
        self._table = np.empty((vocab + 1, dim), dtype=np.float32)
        self._table[:vocab] = table
        self._table[vocab] = 0.0

    def _check(self, ids: np.ndarray) -> None:
        if ids.size and (ids.max() >= self._vocab or ids.min() < 0):
            raise ArtifactError(f"token id out of range for a table of {self._vocab} rows")

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ids = inputs["input_ids"]
        self._check(ids)
        return self._table[ids]

    def mean_of_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """(n, dim) float32: the mean of each text's rows (zeros for a text without tokens), the same
        numbers as masked mean pooling of `run`'s output (padding adds exact zeros here)."""
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        self._check(flat)
        width = int(lengths.max()) if len(ids) else 0
        padded = np.full((len(ids), width), self._vocab, dtype=np.int64)
        padded[np.arange(width) < lengths[:, None]] = flat  # row-major: each text's ids in order
        sums = self._table[padded].sum(axis=1)
        sums /= np.maximum(lengths, 1)[:, None].astype(np.float32)
        return sums


def load(graph: Path, options: RuntimeOptions) -> StaticRuntime:
    return StaticRuntime(load_table(graph))
