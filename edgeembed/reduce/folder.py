"""Write the reduced model as a Sentence-Transformers folder (transformer at the root, or a
StaticEmbedding), plus reduce.json. The caller writes into a temporary folder that is renamed into place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.artifact import check_target
from edgeembed.errors import InputError
from edgeembed.head import ACTIVATIONS
from edgeembed.source import ModelSpec
from edgeembed.st_layout import module_entry

REDUCE_JSON = "reduce.json"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write_dense(folder: Path, weight: np.ndarray, bias: np.ndarray | None, activation: str) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    cfg = {
        "in_features": int(weight.shape[1]),
        "out_features": int(weight.shape[0]),
        "bias": bias is not None,
        "activation_function": ACTIVATIONS[activation].torch_class,
    }
    _write_json(folder / "config.json", cfg)
    tensors = {"linear.weight": np.ascontiguousarray(weight, dtype=np.float32)}
    if bias is not None:
        tensors["linear.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "model.safetensors").chmod(0o644)  # safetensors writes 0600; a model folder is shared


def _copy_st_configs(spec: ModelSpec, root: Path) -> None:
    for name in _TOKENIZER_FILES:
        if (spec.transformer_dir / name).is_file():
            shutil.copy2(spec.transformer_dir / name, root / name)
    st_cfg = spec.path / "config_sentence_transformers.json"
    cfg = json.loads(st_cfg.read_text(encoding="utf-8")) if st_cfg.is_file() else {}
    cfg.setdefault("similarity_fn_name", spec.head.similarity_fn)
    _write_json(root / "config_sentence_transformers.json", cfg)


def write_transformer_folder(
    root: Path,
    spec: ModelSpec,
    transformer: Any,
    dense: list[tuple[np.ndarray, np.ndarray | None, str]],
) -> None:
    """Transformer (HF save_pretrained) at the root, Pooling as the teacher's, Dense modules, Normalize."""
    _copy_st_configs(spec, root)
    transformer.save_pretrained(str(root))
    modules = [module_entry(0, "", "Transformer")]
    (root / "1_Pooling").mkdir()
    pooling_src = next(
        (spec.path / m["path"] / "config.json" for m in _modules(spec) if m["type"].endswith("Pooling")), None
    )
    if pooling_src is not None and pooling_src.is_file():
        shutil.copy2(pooling_src, root / "1_Pooling" / "config.json")
    else:
        _write_json(
            root / "1_Pooling" / "config.json",
            {"word_embedding_dimension": spec.head.hidden_size, "pooling_mode_mean_tokens": True},
        )
    modules.append(module_entry(1, "1_Pooling", "Pooling"))
    for weight, bias, activation in dense:
        idx = len(modules)
        _write_dense(root / f"{idx}_Dense", weight, bias, activation)
        modules.append(module_entry(idx, f"{idx}_Dense", "Dense"))
    if spec.head.normalize:
        modules.append(module_entry(len(modules), f"{len(modules)}_Normalize", "Normalize"))
    _write_json(root / "modules.json", modules)
    _write_json(
        root / "sentence_bert_config.json",
        {"max_seq_length": spec.head.max_seq_length, "do_lower_case": spec.head.do_lower_case},
    )


def _modules(spec: ModelSpec) -> list[dict[str, Any]]:
    path = spec.path / "modules.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def write_static_folder(
    root: Path,
    table: np.ndarray,
    tokenizer_json: str,
    normalize: bool,
    similarity_fn: str = "cosine",
    dense: list[tuple[np.ndarray, np.ndarray | None, str]] = (),
) -> None:
    """StaticEmbedding at the root (model.safetensors with `embedding.weight`, tokenizer.json), Dense
    modules (weight, bias, activation name), Normalize."""
    from safetensors.numpy import save_file

    save_file(
        {"embedding.weight": np.ascontiguousarray(table, dtype=np.float32)}, str(root / "model.safetensors")
    )
    (root / "model.safetensors").chmod(0o644)
    (root / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    modules = [module_entry(0, "", "StaticEmbedding")]
    for weight, bias, activation in dense:
        idx = len(modules)
        _write_dense(root / f"{idx}_Dense", weight, bias, activation)
        modules.append(module_entry(idx, f"{idx}_Dense", "Dense"))
    if normalize:
        modules.append(module_entry(len(modules), f"{len(modules)}_Normalize", "Normalize"))
    _write_json(root / "modules.json", modules)
    _write_json(root / "config_sentence_transformers.json", {"similarity_fn_name": similarity_fn})


def write_record(root: Path, record: dict[str, Any]) -> None:
    _write_json(root / REDUCE_JSON, record)


def is_reduced(folder: Path) -> bool:
    """Whether `folder` holds the reduce.json a reduce run writes (a JSON object naming its teacher): the
    one kind of non-empty folder `reduce --overwrite` may replace, so a user's own folder (or a model
    they did not make with reduce) is never deleted."""
    path = Path(folder) / REDUCE_JSON
    try:
        record = None if path.is_symlink() else json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, a folder, unreadable or not JSON
        return False
    return isinstance(record, dict) and isinstance(record.get("teacher"), dict)


def check_reduce_target(out: Path, overwrite: bool, keep: tuple[Path, ...] = ()) -> None:
    """check_target for a reduce output: --overwrite (or --resume) replaces only a folder reduce wrote."""
    check_target(out, overwrite, keep)
    if overwrite and out.is_dir() and any(out.iterdir()) and not is_reduced(out):
        raise InputError(
            f"refusing to replace {out}: --overwrite replaces only a folder `edgeembed reduce` wrote (it "
            f"has {REDUCE_JSON}) and this one has none; choose another --out"
        )
