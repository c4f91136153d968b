"""Static embeddings in numpy: token ids -> rows of a table (the Encoder then takes the masked mean and
normalizes). No graph, no onnxruntime: just the table of sentence-transformers' StaticEmbedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeembed.errors import ArtifactError
from edgeembed.runtimes import RuntimeOptions

TABLE_KEY = "embedding.weight"


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
    masked out by the Encoder's mean pooling."""

    input_names = ("input_ids", "attention_mask")

    def __init__(self, table: np.ndarray) -> None:
        # Widened once at load (a float16 file stays small on disk): gathering float32 rows then
        # needs no per-batch conversion.
        self._table = np.ascontiguousarray(table, dtype=np.float32)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ids = inputs["input_ids"]
        if ids.size and (ids.max() >= len(self._table) or ids.min() < 0):
            raise ArtifactError(f"token id out of range for a table of {len(self._table)} rows")
        return self._table[ids]


def load(graph: Path, options: RuntimeOptions) -> StaticRuntime:
    return StaticRuntime(load_table(graph))
