"""The artifact folder in sentence-transformers' layout: configs, tokenizer and head modules from the
source (the transformer at the root, no torch weights), so sentence-transformers loads the artifact too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgeembed._imports import require
from edgeembed.encoder import TOKENIZER_FILE
from edgeembed.errors import SourceError
from edgeembed.source import ModelSpec

_SKIP_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".h5", ".msgpack", ".ot", ".pt", ".ckpt")
_SKIP_FILES = ("modules.json", ".gitattributes", ".gitignore", "desktop.ini", ".DS_Store", "reduce.json")
ST_MODULES = "sentence_transformers.models."


def module_entry(idx: int, path: str, kind: str) -> dict[str, Any]:
    """One modules.json entry as sentence-transformers writes it; `kind`: Transformer, Pooling, Dense,
    Normalize, StaticEmbedding."""
    return {"idx": idx, "name": str(idx), "path": path, "type": ST_MODULES + kind}


def write_st_layout(spec: ModelSpec, root: Path) -> None:
    """Configs, tokenizer and head modules in sentence-transformers' layout (transformer at the root)."""
    tdir = spec.transformer_dir
    for item in tdir.iterdir():
        if item.is_file() and not item.name.endswith(_SKIP_SUFFIXES) and item.name not in _SKIP_FILES:
            shutil.copy2(item, root / item.name)
    if not (root / TOKENIZER_FILE).is_file():
        transformers = require("transformers", "export")
        tok = transformers.AutoTokenizer.from_pretrained(str(tdir))
        if not getattr(tok, "is_fast", False):
            raise SourceError(f"{tdir} has no fast tokenizer; edgeembed needs tokenizer.json")
        tok.backend_tokenizer.save(str(root / TOKENIZER_FILE))
    _check_vocabulary(root / TOKENIZER_FILE, tdir)
    for name in ("config_sentence_transformers.json", "README.md", "LICENSE"):
        if (spec.path / name).is_file() and not (root / name).exists():
            shutil.copy2(spec.path / name, root / name)

    modules: list[dict[str, Any]] = []
    if spec.has_modules_json:
        for entry in json.loads((spec.path / "modules.json").read_text(encoding="utf-8")):
            entry = dict(entry)
            kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
            if kind == "Transformer":
                entry["path"] = ""
            elif kind == "Pooling":
                _copy_module(spec.path / entry["path"], root / entry["path"], ("config.json",))
            elif kind == "Dense":
                _copy_dense(spec.path / entry["path"], root / entry["path"])
            modules.append(entry)
    else:
        modules = [module_entry(0, "", "Transformer"), module_entry(1, "1_Pooling", "Pooling")]
        (root / "1_Pooling").mkdir()
        pooling = {"word_embedding_dimension": spec.head.hidden_size, "pooling_mode_mean_tokens": True}
        (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    sbert = root / "sentence_bert_config.json"
    sbert_cfg = json.loads(sbert.read_text()) if sbert.is_file() else {}
    sbert_cfg.update(max_seq_length=spec.head.max_seq_length, do_lower_case=spec.head.do_lower_case)
    sbert.write_text(json.dumps(sbert_cfg, indent=2))
    (root / "modules.json").write_text(json.dumps(modules, indent=2))


_PROBE = "the man is riding a horse on the road"


def _check_vocabulary(path: Path, tdir: Path) -> None:
    """Refuse a tokenizer that maps plain English words to its unknown token only: transformers builds
    one from tokenizer_config.json alone when the vocabulary file is missing, and the gate cannot see it
    (torch and the export share the tokenizer), so every text would get the same embedding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    ids = tok.encode(_PROBE, add_special_tokens=False).ids
    unk = [i for i in (tok.token_to_id(t) for t in ("[UNK]", "<unk>", "<UNK>")) if i is not None]
    if not ids or (unk and all(i in unk for i in ids)):
        raise SourceError(
            f"the tokenizer of {tdir} maps every word to its unknown token ({tok.get_vocab_size()} tokens "
            "in all): its vocabulary file (tokenizer.json, vocab.txt, sentencepiece.bpe.model, vocab.json + "
            "merges.txt) is missing; copy the model's tokenizer files into the folder"
        )


def _copy_module(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(src / name, dst / name)


def _copy_dense(src: Path, dst: Path) -> None:
    """Dense weights always land as model.safetensors, which numpy reads without torch."""
    _copy_module(src, dst, ("config.json",))
    if (src / "model.safetensors").is_file():
        shutil.copy2(src / "model.safetensors", dst / "model.safetensors")
        return
    torch = require("torch", "export")
    from safetensors.torch import save_file

    state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"))
