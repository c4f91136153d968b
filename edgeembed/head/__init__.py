"""The sentence-transformers head (pooling, Dense, Normalize): one definition, three emitters.

`spec` defines it (PoolingMode, the activation table, HeadModel); `numpy` runs it for the Encoder;
`onnx` (needs onnx) and `torch` (needs torch) emit it for graphs and for training. Importing this package
imports neither onnx nor torch.
"""

from edgeembed.head.numpy import dense, exclude_prompt, normalize, pool, pool_tokens, project, run
from edgeembed.head.spec import (
    ACTIVATIONS,
    DEFAULT_ACTIVATION,
    SENTENCE_OUTPUT,
    Activation,
    DenseLayer,
    HeadModel,
    PoolingMode,
    activation_name,
)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_ACTIVATION",
    "Activation",
    "DenseLayer",
    "HeadModel",
    "PoolingMode",
    "SENTENCE_OUTPUT",
    "activation_name",
    "dense",
    "exclude_prompt",
    "normalize",
    "pool",
    "pool_tokens",
    "project",
    "run",
]
