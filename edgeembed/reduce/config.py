"""Settings of `reduce` as frozen dataclasses with named presets (no torch imported here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeembed.errors import InputError


@dataclass(frozen=True)
class DistillConfig:
    """Training settings; `steps * batch_size` corpus texts are used once each (plus `holdout`)."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-4
    warmup: float = 0.05  # fraction of steps
    weight_decay: float = 0.01
    eval_every: int = 100  # an STS-b dev evaluation costs about 15 training steps
    max_seq_length: int = 128
    train_embeddings: bool = False  # the word-embedding matrix is most of the parameters and moves little
    bucket_batches: int = 32  # batches per length-sorted window
    holdout: int = 512  # corpus texts kept out of training, for agreement and --keep auto

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "max_seq_length", "bucket_batches", "holdout"):
            if getattr(self, name) < 1:
                raise InputError(f"distillation setting {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise InputError(f"learning rate must be in (0, 1), got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise InputError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")

    @property
    def texts_needed(self) -> int:
        return self.holdout + self.steps * self.batch_size


DISTILL_PRESETS: dict[str, DistillConfig] = {
    "default": DistillConfig(),
    "quick": DistillConfig(steps=200, eval_every=25),
    "long": DistillConfig(steps=3000, lr=2e-4, eval_every=150),
}


@dataclass(frozen=True)
class StaticConfig:
    """dim: PCA dimensions; sif: a in a/(a + p(token)); train_*: tuning on the corpus (0 epochs = none)."""

    dim: int = 256
    sif: float = 1e-4
    pca_texts: int = 20_000
    freq_texts: int = 200_000
    train_texts: int = 40_000
    train_epochs: int = 4
    batch_size: int = 256
    lr: float = 2e-3
    token_batch: int = 512

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STATIC_PRESETS: dict[str, StaticConfig] = {
    "default": StaticConfig(),
    "no-training": StaticConfig(train_epochs=0),
}


@dataclass(frozen=True)
class ReducePlan:
    """What to reduce: fewer layers (`layers` and/or `keep`), fewer dimensions (`dim`), or `static`.

    `keep` is "auto" (chosen by agreement with the teacher), "0,2,4" or a tuple of layer numbers.
    With `static`, `dim` is the static model's dimension (default 256).
    """

    layers: int | None = None
    keep: str | tuple[int, ...] = "auto"
    dim: int | None = None
    static: bool = False
    distill: DistillConfig | str = "default"
    static_config: StaticConfig | str = "default"
    seed: int = 0

    @property
    def keep_given(self) -> bool:
        return not (isinstance(self.keep, str) and self.keep.strip().lower() == "auto")

    def __post_init__(self) -> None:
        if self.layers is None and not self.keep_given and self.dim is None and not self.static:
            raise InputError("nothing to reduce: ask for --layers N, --keep 0,2,4, --dim D or --static")
        if self.static and (self.layers is not None or self.keep_given):
            raise InputError("--static replaces the transformer: it does not combine with --layers/--keep")
        if self.layers is not None and self.layers < 1:
            raise InputError(f"--layers must be >= 1, got {self.layers}")
        if self.dim is not None and self.dim < 1:
            raise InputError(f"--dim must be >= 1, got {self.dim}")


@dataclass(frozen=True)
class ReduceResult:
    """Where the model folder went, its reduce.json record, and whether training was cut short."""

    path: Path
    record: dict[str, Any] = field(repr=False)
    interrupted: bool = False
