"""What a sentence-transformers head is: pooling modes, Dense layers with an activation, Normalize.

One definition, read from a model's `Head` (edgeembed.source) and its Dense weights; the numpy, ONNX and
torch emitters (edgeembed.head.numpy, .onnx, .torch) all build from it and from the one activation table
below, so the three targets cannot drift apart. numpy only: the runtime path imports this without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from math import erf
from typing import Any, Protocol

import numpy as np

# The name a graph gives the head's output (the static ONNX graph, the end-to-end graphs, a token graph
# carrying its head): the Encoder asks a runtime for it by this name.
SENTENCE_OUTPUT = "sentence_embedding"


class PoolingMode(str, Enum):
    CLS = "cls"
    MAX = "max"
    MEAN = "mean"
    MEAN_SQRT_LEN_TOKENS = "mean_sqrt_len_tokens"
    WEIGHTEDMEAN = "weightedmean"
    LASTTOKEN = "lasttoken"


class OnnxOps(Protocol):
    """The node builder an activation's ONNX recipe writes with (edgeembed.head.onnx.OnnxBuilder)."""

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "", **attrs: Any) -> str: ...

    def const(self, value: Any, hint: str = "c") -> str: ...


@dataclass(frozen=True)
class Activation:
    """One Dense activation on every target.

    `torch_class`: what sentence-transformers writes as `activation_function` and instantiates on load
    (the torch emitter instantiates the same class, so it is sentence-transformers' own semantics);
    `numpy`: float32 in, float32 out; `onnx`: appends the nodes for `x` and returns the output name.
    """

    name: str
    torch_class: str
    numpy: Callable[[np.ndarray], np.ndarray]
    onnx: Callable[[OnnxOps, str], str]


_F = np.float32


def _np_erf(x: np.ndarray) -> np.ndarray:
    # A polynomial erf (Abramowitz-Stegun 7.1.26) is too coarse for parity with torch; math.erf is exact.
    return np.vectorize(erf, otypes=[np.float32])(x)


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _np_softplus(x: np.ndarray) -> np.ndarray:
    # torch's Softplus (beta 1) returns x itself above its threshold of 20
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))).astype(np.float32)


def _np_hardsigmoid(x: np.ndarray) -> np.ndarray:
    return (np.clip(x + _F(3), 0, 6) / _F(6)).astype(np.float32)


def _onnx_gelu(b: OnnxOps, x: str) -> str:
    """Exact GELU: 0.5 x (1 + erf(x / sqrt 2)), torch.nn.GELU's default."""
    e = b.op("Erf", [b.op("Div", [x, b.const(_F(np.sqrt(2.0)))])])
    return b.op("Mul", [b.op("Mul", [x, b.const(_F(0.5))]), b.op("Add", [e, b.const(_F(1.0))])])


def _onnx_clip(low: float, high: float) -> Callable[[OnnxOps, str], str]:
    return lambda b, x: b.op("Clip", [x, b.const(_F(low)), b.const(_F(high))])


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

_TORCH = "torch.nn.modules.activation."
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", "torch.nn.modules.linear.Identity", lambda x: x, lambda b, x: x),
        Activation("tanh", _TORCH + "Tanh", np.tanh, lambda b, x: b.op("Tanh", [x])),
        Activation("relu", _TORCH + "ReLU", lambda x: np.maximum(x, 0), lambda b, x: b.op("Relu", [x])),
        Activation("sigmoid", _TORCH + "Sigmoid", _np_sigmoid, lambda b, x: b.op("Sigmoid", [x])),
        Activation(
            "gelu", _TORCH + "GELU", lambda x: 0.5 * x * (1.0 + _np_erf(x / np.sqrt(2.0))), _onnx_gelu
        ),
        Activation(
            "silu",
            _TORCH + "SiLU",
            lambda x: x / (1.0 + np.exp(-x)),
            lambda b, x: b.op("Mul", [x, b.op("Sigmoid", [x])]),
        ),
        Activation(
            "leakyrelu",
            _TORCH + "LeakyReLU",
            lambda x: np.where(x >= 0, x, x * _F(0.01)),
            lambda b, x: b.op("LeakyRelu", [x], alpha=0.01),
        ),
        Activation(
            "elu",
            _TORCH + "ELU",
            lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
            lambda b, x: b.op("Elu", [x], alpha=1.0),
        ),
        Activation(
            "selu",
            _TORCH + "SELU",
            lambda x: _F(_SELU_SCALE) * np.where(x > 0, x, _F(_SELU_ALPHA) * np.expm1(np.minimum(x, 0))),
            lambda b, x: b.op("Selu", [x], alpha=_SELU_ALPHA, gamma=_SELU_SCALE),
        ),
        Activation("softplus", _TORCH + "Softplus", _np_softplus, lambda b, x: b.op("Softplus", [x])),
        Activation(
            "softsign", _TORCH + "Softsign", lambda x: x / (1 + np.abs(x)), lambda b, x: b.op("Softsign", [x])
        ),
        Activation(
            "mish",
            _TORCH + "Mish",
            lambda x: x * np.tanh(_np_softplus(x)),
            lambda b, x: b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])]),
        ),
        Activation(
            "hardsigmoid",
            _TORCH + "Hardsigmoid",
            _np_hardsigmoid,
            lambda b, x: b.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5),
        ),
        Activation(
            "hardswish",
            _TORCH + "Hardswish",
            lambda x: x * _np_hardsigmoid(x),
            lambda b, x: b.op("Mul", [x, b.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)]),
        ),
        Activation("relu6", _TORCH + "ReLU6", lambda x: np.clip(x, 0, 6), _onnx_clip(0.0, 6.0)),
        Activation("hardtanh", _TORCH + "Hardtanh", lambda x: np.clip(x, -1, 1), _onnx_clip(-1.0, 1.0)),
    )
}
DEFAULT_ACTIVATION = "tanh"  # sentence-transformers' Dense default


def activation_name(config_value: str | None) -> str | None:
    """The table's name for a Dense config's `activation_function` ('torch.nn.modules.activation.GELU',
    'torch.nn.GELU' or 'gelu'); the default (tanh) when it is unset; None when the table lacks it."""
    if not config_value:
        return DEFAULT_ACTIVATION
    short = str(config_value).rsplit(".", 1)[-1].lower()
    return short if short in ACTIVATIONS else None


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """One Dense module with its weights: y = activation(x @ weight.T + bias); weight (out, in)."""

    weight: np.ndarray
    bias: np.ndarray | None
    activation: str

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown Dense activation {self.activation!r}; known: {list(ACTIVATIONS)}")
        if self.weight.ndim != 2 or (self.bias is not None and self.bias.shape != (self.weight.shape[0],)):
            raise ValueError(f"Dense weight {self.weight.shape} and bias do not fit")

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True, eq=False)
class HeadModel:
    """Token embeddings (batch, seq, hidden_size) + attention mask -> sentence embeddings.

    `include_prompt=False`: positions of the prompt (given at run time as its token count, after any
    left padding) are left out of pooling, as sentence-transformers' Pooling does.
    """

    hidden_size: int
    pooling: tuple[PoolingMode, ...]
    include_prompt: bool = True
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "pooling", tuple(PoolingMode(m) for m in self.pooling))
        if not self.pooling:
            raise ValueError("a head needs at least one pooling mode")
        width = self.hidden_size * len(self.pooling)
        for d in self.dense:
            if d.weight.shape[1] != width:
                raise ValueError(f"a Dense layer takes {d.weight.shape[1]} inputs but receives {width}")
            width = d.out_features

    @property
    def dim(self) -> int:
        return self.dense[-1].out_features if self.dense else self.hidden_size * len(self.pooling)

    @classmethod
    def from_head(cls, head: Any, weights: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> HeadModel:
        """From a model's `edgeembed.source.Head` and its Dense weights ((weight, bias) per module, as
        `edgeembed.encoder.load_dense` reads them)."""
        if len(weights) != len(head.dense):
            raise ValueError("one (weight, bias) pair is needed per Dense module")
        dense = tuple(
            DenseLayer(
                np.asarray(w, np.float32), None if b is None else np.asarray(b, np.float32), d.activation
            )
            for (w, b), d in zip(weights, head.dense)
        )
        return cls(head.hidden_size, tuple(head.pooling), head.include_prompt, dense, head.normalize)
