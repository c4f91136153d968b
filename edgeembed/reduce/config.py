"""Settings of `reduce` as frozen dataclasses with named presets (no torch imported here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeembed.errors import InputError

SELECT = ("agreement", "sts")
DEVICES = ("auto", "cpu", "cuda")
MAX_HEAD_HIDDEN = 65_536


@dataclass(frozen=True)
class DistillConfig:
    """Training settings. `train_texts` distinct corpus texts (at most `steps * batch_size`: one pass) are
    cycled through for `steps` steps, so a smaller set means several epochs; `holdout` more texts are
    kept out of training for selection. The best checkpoint is chosen by `select`: agreement with the
    teacher on the held-out texts (mean cosine; what search and every other use inherit) or STS dev.
    Training stops early after `patience` evaluations without the agreement rising by `min_gain`, or
    after `max_minutes` of training steps (both keep the best checkpoint)."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-4
    warmup: float = 0.05  # fraction of steps
    weight_decay: float = 0.01
    eval_every: int = 100  # an evaluation on the held-out texts costs about 10 training steps
    max_seq_length: int = 128
    train_embeddings: bool = False  # the word-embedding matrix is most of the parameters and moves little
    bucket_batches: int = 32  # batches per length-sorted window
    holdout: int = 512  # corpus texts kept out of training, for selection and --keep auto
    train_texts: int | None = None
    select: str = "agreement"
    patience: int = 0  # evaluations without gain before stopping; 0 = never stop early
    min_gain: float = 0.0005  # agreement (mean cosine) gain that counts as still rising
    max_minutes: float | None = None  # training-time budget (evaluation excluded)
    device: str = "auto"
    # Off: the student regresses a deterministic teacher, and dropout only keeps it from fitting (L3,
    # 1,000 steps: held-out mean cosine 0.918 -> 0.928, recall 0.648 -> 0.665, STS-b dev 85.8 -> 86.2;
    # bench/REDUCE.md).
    dropout: bool = False

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
        if self.train_texts is not None and self.train_texts < self.batch_size:
            raise InputError(f"train_texts must be >= batch_size ({self.batch_size}), got {self.train_texts}")
        if self.select not in SELECT:
            raise InputError(f"select must be one of {SELECT}, got {self.select!r}")
        if self.device not in DEVICES:
            raise InputError(f"--device must be one of {DEVICES}, got {self.device!r}")
        if self.patience < 0:
            raise InputError(f"patience must be >= 0, got {self.patience}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise InputError(f"max_minutes must be > 0, got {self.max_minutes}")

    @property
    def distinct_texts(self) -> int:
        """Corpus texts trained on: `train_texts` at most, and no more than the steps can use."""
        one_pass = self.steps * self.batch_size
        return one_pass if self.train_texts is None else min(self.train_texts, one_pass)

    @property
    def texts_needed(self) -> int:
        return self.holdout + self.distinct_texts

    @property
    def epochs(self) -> float:
        return self.steps * self.batch_size / self.distinct_texts


DISTILL_PRESETS: dict[str, DistillConfig] = {
    # 16,000 steps over 512k texts (2 epochs), stopped where the agreement stops rising or at 60 minutes
    # of training (a slower CPU gets a schedule fitted to the steps 60 minutes hold). L3 on the 2-core
    # Xeon, both cores: 47 minutes, yardstick recall 0.709 / STS-b test 82.19 (8,000 steps over 256k:
    # 0.691), agreement still rising at the end (bench/REDUCE.md). lr 6e-4: of 3e-4, 6e-4, 1e-3 and 1.5e-3
    # over 1,000 steps, the highest agreement short of costing STS-b (bench/REDUCE.md).
    "default": DistillConfig(
        steps=16000, train_texts=512_000, lr=6e-4, eval_every=500, patience=4, max_minutes=60.0
    ),
    "quick": DistillConfig(steps=200, eval_every=25),
    "sts": DistillConfig(select="sts"),  # the first default: 600 steps, best by STS dev
    # Half the default (L3: recall 0.691 in 51 minutes of one shared core), for a shorter run.
    "short": DistillConfig(
        steps=8000, train_texts=256_000, lr=6e-4, eval_every=250, patience=4, max_minutes=60.0
    ),
    # Twice the default, no time budget: for a GPU or many cores (not measured here).
    "long": DistillConfig(steps=32000, train_texts=512_000, lr=6e-4, eval_every=1000, patience=4),
}


@dataclass(frozen=True)
class StaticConfig:
    """dim: PCA dimensions; sif: a in a/(a + p(token)); train_*: tuning on the corpus (0 epochs = none)."""

    dim: int = 256
    sif: float = 1e-4
    pca_texts: int = 20_000
    freq_texts: int = 200_000
    # 256k texts x 8 epochs: yardstick recall 0.276 -> 0.382 and STS-b test 72.5 -> 77.1 over 40k x 4;
    # the whole corpus (580k x 6) adds 0.006 more (bench/REDUCE.md), for twice the teacher embeddings.
    train_texts: int = 256_000
    train_epochs: int = 8
    batch_size: int = 256
    lr: float = 2e-3
    token_batch: int = 512
    holdout: int = 1024  # corpus texts never trained on: the best epoch by agreement with the teacher
    select: str = "agreement"  # or "sts" (STS dev, the first default)
    # Whole words of the corpus added to a WordPiece vocabulary (extend_vocabulary): their own rows.
    vocab_words: int = 0
    vocab_min_count: int = 5
    # A deep averaging network: after the mean, Dense(dim -> width, head_activation) and
    # Dense(width -> dim), trained with the table. The plain mean (0) is a linear bag of tokens whose
    # agreement with the teacher stops rising at 0.865 held-out mean cosine (yardstick recall 0.382, under
    # the 0.40 target); width 1024 at 256 dims reaches 0.893 (0.438) and, with the static runtime's BLAS
    # head (RuntimeCapabilities.blas_head), keeps about half the plain table's speed (bench/REDUCE.md).
    # None (the default): 4 x dim, so that with relu the head can start as the identity (it needs
    # 2 x dim units) at any --dim; an int: that width; 0: no head.
    head_hidden: int | None = None
    head_activation: str = "relu"
    head_lr: float = 1e-3

    def __post_init__(self) -> None:
        from edgeembed.head.spec import ACTIVATIONS

        for name in ("head_hidden", "vocab_words"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"static setting {name} must be >= 0, got {value}")
        if self.head_width > MAX_HEAD_HIDDEN:
            # A wider head would need gigabytes for two layers a static model runs per text.
            raise InputError(
                f"static head width {self.head_width} (head_hidden; by default 4 x dim) must be <= "
                f"{MAX_HEAD_HIDDEN}: pass a smaller --head-hidden or --dim"
            )
        if self.vocab_min_count < 1:
            raise InputError(f"vocab_min_count must be >= 1, got {self.vocab_min_count}")
        if self.head_activation not in ACTIVATIONS:
            raise InputError(
                f"head_activation must be one of {sorted(ACTIVATIONS)}, got {self.head_activation!r}"
            )
        if not 0 < self.head_lr < 1:
            raise InputError(f"head learning rate must be in (0, 1), got {self.head_lr}")

    @property
    def head_width(self) -> int:
        """The head's hidden width: `head_hidden`, or 4 x dim when it is None; 0 means no head."""
        return 4 * self.dim if self.head_hidden is None else self.head_hidden

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STATIC_PRESETS: dict[str, StaticConfig] = {
    "default": StaticConfig(),
    "quick": StaticConfig(train_texts=40_000, train_epochs=4),  # the first default's training length
    # Untrained, the head would be the identity: only its cost would remain.
    "no-training": StaticConfig(train_epochs=0, head_hidden=0),
    "sts": StaticConfig(select="sts"),
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
