"""export(): source folder -> graph -> (optimize / quantize) -> validated artifact, written atomically."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.artifact import Manifest, check_target, save_artifact, sha256_file
from edgeembed.calibration import CalibrationConfig
from edgeembed.encoder import TOKENIZER_FILE, Encoder, _load_dense
from edgeembed.errors import EdgeEmbedError
from edgeembed.quantize import DEFAULT_MIN_RETAINED, OptimizeConfig, QuantizeConfig, make_plan
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.source import ModelSpec, load_source
from edgeembed.tokenization import TextTokenizer
from edgeembed.validation import Agreement, agreement, require_agreement, validation_sentences

FORMATS = ("onnx", "openvino")
ONNX_GRAPH = "onnx/model.onnx"
FP32_MIN_COSINE = 0.9999
_SKIP_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".h5", ".msgpack", ".ot", ".pt", ".ckpt")
_SKIP_FILES = ("modules.json", ".gitattributes", ".gitignore", "desktop.ini", ".DS_Store")
_VERSIONED = (
    "edgeembed",
    "numpy",
    "tokenizers",
    "onnxruntime",
    "onnx",
    "torch",
    "transformers",
    "openvino",
    "nncf",
)

Step = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    """Where the artifact went and what its manifest says."""

    path: Path
    manifest: Manifest


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _weights_sha256(spec: ModelSpec) -> str | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = spec.transformer_dir / name
        if p.is_file():
            return sha256_file(p)
    return None


def write_st_layout(spec: ModelSpec, root: Path) -> None:
    """Configs, tokenizer and head modules in sentence-transformers' layout (transformer at the root)."""
    tdir = spec.transformer_dir
    for item in tdir.iterdir():
        if item.is_file() and not item.name.endswith(_SKIP_SUFFIXES) and item.name not in _SKIP_FILES:
            shutil.copy2(item, root / item.name)
    if not (root / TOKENIZER_FILE).is_file():
        from edgeembed._imports import require

        transformers = require("transformers", "export")
        tok = transformers.AutoTokenizer.from_pretrained(str(tdir))
        if not getattr(tok, "is_fast", False):
            raise EdgeEmbedError(f"{tdir} has no fast tokenizer; edgeembed needs tokenizer.json")
        tok.backend_tokenizer.save(str(root / TOKENIZER_FILE))
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
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        (root / "1_Pooling").mkdir()
        pooling = {"word_embedding_dimension": spec.head.hidden_size, "pooling_mode_mean_tokens": True}
        (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    sbert = root / "sentence_bert_config.json"
    sbert_cfg = json.loads(sbert.read_text()) if sbert.is_file() else {}
    sbert_cfg.update(max_seq_length=spec.head.max_seq_length, do_lower_case=spec.head.do_lower_case)
    sbert.write_text(json.dumps(sbert_cfg, indent=2))
    (root / "modules.json").write_text(json.dumps(modules, indent=2))


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
    from edgeembed._imports import require

    torch = require("torch", "export")
    from safetensors.torch import save_file

    state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"))


def _encoder_for(root: Path, runtime: Any, spec: ModelSpec) -> Encoder:
    tok = TextTokenizer.from_file(root / TOKENIZER_FILE, spec.head.max_seq_length, spec.head.do_lower_case)
    return Encoder(runtime, tok, spec.head, _load_dense(root, spec.head))


def reference_embeddings(encoder: Encoder, sentences: list[str]) -> np.ndarray:
    """Embeddings at batch size 4 (padding inside batches exercised) and without normalization."""
    return encoder.encode(sentences, batch_size=4, normalize=False)


def export(
    model: str | Path | None = None,
    out: str | Path = "edgeembed-model",
    format: str = "onnx",
    overwrite: bool = False,
    threads: int | None = None,
    min_cosine: float = FP32_MIN_COSINE,
    on_step: Step | None = None,
    optimize: str | OptimizeConfig | None = None,
    quantize: str | QuantizeConfig | Any | None = None,
    calibration: str | Path | CalibrationConfig | None = None,
    sts: str | Path | None = None,
    min_retained: float = DEFAULT_MIN_RETAINED,
    precision: str | None = None,
) -> ExportResult:
    """Export a Sentence-Transformers folder (None = the default all-MiniLM-L6-v2) to a validated artifact.

    ONNX: optimize is None/"none", "basic", "all" or an OptimizeConfig (ORT transformer fusions);
    quantize is None/"none", "dynamic", "static", a preset name (e.g. "dynamic_avx512_vnni") or a
    QuantizeConfig. OpenVINO: quantize is "static", "weights-int8", "weights-int4" or a config from
    edgeembed.quantize.openvino. Static quantization needs `calibration` (a file path or
    CalibrationConfig). A quantized graph is validated against the fp32 export (STS Spearman retained
    when `sts` is given) and must keep `min_retained`; otherwise nothing is written. OpenVINO
    `precision="bf16"` validates and records bf16 inference for float ops (faster on CPUs with bf16).
    """
    step = on_step or (lambda _msg: None)
    if format not in FORMATS:
        raise EdgeEmbedError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    # Bad settings fail here, before the model loads.
    if format == "openvino":
        from edgeembed.exporters.openvino import build_openvino, check_request

        if optimize not in (None, "none"):
            raise EdgeEmbedError(
                "--optimize applies to ONNX; OpenVINO fuses the graph itself at compile time"
            )
        check_request(quantize, calibration, sts, min_retained)
        if precision not in (None, "f32", "bf16"):
            raise EdgeEmbedError(f"unknown precision {precision!r}; choose f32 or bf16")
        plan = None
    else:
        if precision not in (None, "f32"):
            raise EdgeEmbedError("precision applies to OpenVINO artifacts (--format openvino)")
        plan = make_plan(optimize, quantize, calibration, sts, min_retained)
    out = Path(out).expanduser()
    check_target(out, overwrite)
    spec = load_source(model)
    step(f"source: {spec.path} (dim {spec.dim}, max_seq_length {spec.head.max_seq_length})")

    from edgeembed.exporters.onnx import export_onnx
    from edgeembed.exporters.torch_model import load_transformer

    torch_model = load_transformer(spec.transformer_dir)

    def build(tmp: Path) -> Manifest:
        if plan is None:
            return build_openvino(
                spec,
                torch_model,
                tmp,
                quantize,
                calibration,
                sts,
                min_retained,
                threads,
                step,
                inference_precision=None if precision == "f32" else precision,
            )
        write_st_layout(spec, tmp)
        how = "TorchScript, for attention fusion" if plan.torchscript_export else "dynamo"
        step(f"exporting the transformer to ONNX (torch.onnx.export, {how})")
        export_onnx(torch_model, tmp / ONNX_GRAPH, dynamo=not plan.torchscript_export)
        step("validating against torch")
        sentences = validation_sentences(spec.head.max_seq_length)
        ref_rt = load_runtime("torch", spec.transformer_dir, RuntimeOptions(threads=threads))
        ref = reference_embeddings(_encoder_for(tmp, ref_rt, spec), sentences)
        cand_rt = load_runtime("onnxruntime", tmp / ONNX_GRAPH, RuntimeOptions(threads=threads))
        agr: Agreement = agreement(ref, reference_embeddings(_encoder_for(tmp, cand_rt, spec), sentences))
        require_agreement(agr, min_cosine, f"ONNX export of {spec.path.name}")
        step(f"validation: min cosine {agr.min_cosine:.7f}, max abs diff {agr.max_abs_diff:.2e}")
        manifest = Manifest(
            runtime="onnxruntime",
            precision="fp32",
            graph=ONNX_GRAPH,
            inputs=cand_rt.input_names,
            head=spec.head,
            source={"path": str(spec.path), "weights_sha256": _weights_sha256(spec)},
            validation={"reference": "torch fp32", "min_cosine_required": min_cosine, **agr.to_dict()},
            versions=library_versions(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        if not plan.active:
            return manifest
        from edgeembed.quantize.onnx import apply_plan

        return apply_plan(plan, tmp, spec, manifest, threads, step)

    manifest = save_artifact(out, build, overwrite=overwrite)
    step(f"artifact written: {out}")
    return ExportResult(path=out.absolute(), manifest=manifest)
