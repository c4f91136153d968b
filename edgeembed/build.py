"""The one orchestrator: source -> back-end export -> gate vs torch -> graph steps -> gate vs the fp32
graph -> atomic artifact. Back-ends and steps are plain functions (edgeembed.backends, edgeembed.steps);
this module alone decides their order, runs the gate (edgeembed.gate) and writes the manifest.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.artifact import (
    ArtifactGraph,
    Manifest,
    check_target,
    save_artifact,
    sha256_file,
    target_lock,
)
from edgeembed.backends import DEFAULT as DEFAULT_FORMAT
from edgeembed.backends import EndToEnd, PlannedStep, backend, resolve_format
from edgeembed.calibration import CalibrationConfig, check_sources
from edgeembed.context import BuildContext, Graph, Progress
from edgeembed.encoder import TOKENIZER_FILE, Encoder, tokenizer_for
from edgeembed.errors import DriftError, InputError, RetentionError
from edgeembed.gate import (
    GatePolicy,
    batch_invariance,
    check_export,
    check_step,
    load_policy_sts,
    summary,
)
from edgeembed.runtimes import RuntimeOptions, load_runtime
from edgeembed.source import ModelSpec, default_model_path, load_source
from edgeembed.st_layout import write_st_layout
from edgeembed.steps import step_module
from edgeembed.sts import StsData

INFERENCE_PRECISIONS = ("f32", "bf16")
WORK_DIR = ".build"  # inside the artifact's temporary folder: every scratch file of an export lives there
LINEAGE_FILE = "reduce.json"  # written by `edgeembed reduce`; carried into the manifest
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


@dataclass(frozen=True)
class ExportResult:
    """Where the artifact went and what its manifest says."""

    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class BuildSettings:
    """What to build, checked before any model is loaded. `optimize` is "auto", "none" or a fusion
    Config; `quantize` a step config (onnx_int8.QuantizeConfig or an nncf config) or None."""

    format: str = DEFAULT_FORMAT
    optimize: Any = "auto"
    quantize: Any = None
    calibration: CalibrationConfig | None = None
    precision: str | None = None  # inference precision of float ops (OpenVINO): None/"f32" or "bf16"
    policy: GatePolicy = field(default_factory=GatePolicy)
    end_to_end: bool = False  # also an ONNX graph with the tokenizer inside (strings in, embeddings out)
    ort: bool = False  # convert the ONNX graphs to ONNX Runtime's mobile format (.ort)
    keep_onnx: bool = False  # with ort: keep the .onnx files beside the .ort ones
    # policy.sts parsed once, by settings(): every gate check of the build reads this, not the file
    sts: StsData | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class _Job:
    """One export's fixed inputs, handed whole to the build functions instead of seven parameters."""

    out: Path
    settings: BuildSettings
    overwrite: bool
    threads: int | None
    progress: Progress
    lock: Any
    keep: tuple[Path, ...] = ()  # the source model folder: never replaced by the output


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def settings(
    format: str = DEFAULT_FORMAT,
    optimize: Any = "auto",
    quantize: Any = None,
    calibration: str | Path | CalibrationConfig | None = None,
    sts: str | Path | None = None,
    min_retained: float | None = None,
    precision: str | None = None,
    policy: GatePolicy | None = None,
    end_to_end: bool = False,
    keep_onnx: bool = False,
) -> BuildSettings:
    """Resolve and check export settings; every mistake fails here, before the model loads.
    A format alias (backends.ALIASES: "ort") is its format plus a packaging step."""
    format, packaging = resolve_format(format)
    ort = packaging is not None  # the one packaging alias: conversion to .ort
    module = backend(format)
    if keep_onnx and not ort:
        raise InputError("--keep-onnx applies to --format ort")
    if end_to_end and module.END_TO_END is None:
        raise InputError(f"--end-to-end builds no graph for {format!r}")
    if end_to_end or ort:
        from edgeembed._imports import require

        if end_to_end:
            require(module.END_TO_END.extra, "mobile")
        require("onnx", "export")
    policy = policy or GatePolicy()
    if sts is not None or min_retained is not None:
        policy = replace(
            policy,
            sts=str(sts) if sts is not None else policy.sts,
            min_retained=policy.min_retained if min_retained is None else min_retained,
        )
    if isinstance(calibration, (str, Path)):
        calibration = CalibrationConfig(str(calibration))
    if precision not in (None, *INFERENCE_PRECISIONS):
        raise InputError(f"unknown precision {precision!r}; choose from {', '.join(INFERENCE_PRECISIONS)}")
    resolved = module.resolve_options(optimize, quantize, precision)
    optimize, quant, static = resolved.optimize, resolved.quantize, resolved.static
    if static and calibration is None:
        raise InputError(
            "static quantization needs calibration texts: pass --calibration FILE (a .txt with one text "
            "per line, a .csv/.tsv/.jsonl with --calibration-column, or an STS tsv); nothing is fetched "
            "from a hub"
        )
    if calibration is not None and not static:
        raise InputError("calibration data is used only with --quantize static")
    check_sources(calibration, None)
    sts_data = load_policy_sts(policy)
    return BuildSettings(
        format,
        optimize,
        quant,
        calibration,
        None if precision == "f32" else precision,
        policy,
        end_to_end=end_to_end,
        ort=ort,
        keep_onnx=keep_onnx,
        sts=sts_data,
    )


def plan_steps(s: BuildSettings, spec: ModelSpec, progress: Progress) -> tuple[PlannedStep, ...]:
    """The graph steps for this model: the format's own (ONNX: fusion), then quantization."""
    steps = list(backend(s.format).plan(s, spec))
    if s.quantize is not None:
        # A config may name alternatives, fastest first (dynamic int8 "auto": per-tensor, then per-row).
        first, *rest = s.quantize.alternatives() if hasattr(s.quantize, "alternatives") else (s.quantize,)
        steps.append(PlannedStep(first, fallbacks=tuple(rest)))
    return tuple(steps)


@dataclass(frozen=True)
class _Tried:
    """The alternative of a planned step that the gate kept, and the refused tries before it."""

    config: Any
    graph: Graph
    encoder: Encoder
    check: dict[str, Any]
    rejected: tuple[dict[str, Any], ...]


def _differs(config: Any, other: Any) -> str:
    """The settings of `config` that `other` sets differently ("activations=tensor"): what a progress
    line names when the build moves from one alternative to the next."""
    mine, theirs = config.to_dict(), other.to_dict()
    keys = [k for k in mine if k in theirs and mine[k] != theirs[k] and k != "batch_invariant"]
    return ", ".join(f"{k}={mine[k]}" for k in keys) or type(config).__name__


def _place(graph: Graph, root: Path, file_name: str) -> None:
    """Move a graph file (and its same-stem companions, e.g. OpenVINO's .bin) to its artifact name."""
    dst = root / file_name
    dst.parent.mkdir(parents=True, exist_ok=True)
    for f in graph.path.parent.glob(graph.path.stem + ".*"):
        shutil.move(str(f), dst.with_suffix(f.suffix))


def _lineage(spec: ModelSpec) -> dict[str, Any] | None:
    path = spec.path / LINEAGE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path} is not valid JSON ({exc}); re-run `edgeembed reduce` or remove it"
        ) from None


def _weights_sha256(spec: ModelSpec) -> str | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = spec.transformer_dir / name
        if p.is_file():  # through a link: the hub cache keeps a model's files as links into blobs/
            return sha256_file(p.resolve())
    return None


def export(
    model: str | Path | None = None,
    out: str | Path = "edgeembed-model",
    format: str = DEFAULT_FORMAT,
    overwrite: bool = False,
    threads: int | None = None,
    on_step: Progress | None = None,
    optimize: Any = "auto",
    quantize: Any = None,
    calibration: str | Path | CalibrationConfig | None = None,
    sts: str | Path | None = None,
    min_retained: float | None = None,
    precision: str | None = None,
    policy: GatePolicy | None = None,
    end_to_end: bool = False,
    keep_onnx: bool = False,
) -> ExportResult:
    """Export a Sentence-Transformers folder (None = the default all-MiniLM-L6-v2) to a validated artifact.

    format: "onnx" or "openvino". optimize (ONNX): "auto" (default: fuse when supported and exact, else
    the plain graph), "none", "basic", "all" or a steps.fusion.Config. quantize: ONNX "dynamic", "static",
    a preset ("dynamic_avx512_vnni", ...) or a steps.onnx_int8.QuantizeConfig; OpenVINO "static",
    "weights-int8", "weights-int4" or a steps.nncf config. Static needs `calibration`. Every graph is
    validated (edgeembed.gate; `sts` and `min_retained` tighten it, `policy` sets every tolerance);
    past a tolerance nothing is written. precision="bf16" (OpenVINO) validates and records bf16 inference.
    end_to_end=True adds onnx/<graph>_e2e.onnx (strings in, embeddings out; the `mobile` extra);
    format="ort" converts the graphs to .ort with a required_operators.config (keep_onnx keeps the .onnx).
    """
    progress = on_step or (lambda _msg: None)
    s = settings(
        format=format,
        optimize=optimize,
        quantize=quantize,
        calibration=calibration,
        sts=sts,
        min_retained=min_retained,
        precision=precision,
        policy=policy,
        end_to_end=end_to_end,
        keep_onnx=keep_onnx,
    )
    out = Path(out).expanduser()
    keep = (default_model_path() if model is None else Path(model).expanduser(),)
    # A non-empty target, a source inside it, a folder that is not an artifact under --overwrite, or
    # another export writing it: fail before any work.
    check_target(out, overwrite, keep, artifact_only=True)
    # The lock is then held from before the model loads to the final rename: a second export to the same
    # folder fails at once, naming this process.
    with target_lock(out) as lock:
        return _export(model, _Job(out, s, overwrite, threads, progress, lock, keep))


def _export(model: str | Path | None, job: _Job) -> ExportResult:
    s, threads, progress = job.settings, job.threads, job.progress
    spec = load_source(model)
    progress(f"source: {spec.path} (dim {spec.dim}, max_seq_length {spec.head.max_seq_length})")
    lineage = _lineage(spec)
    if spec.kind == "static":
        return _export_static(spec, job, lineage)
    if s.end_to_end:  # the tokenizer's adapter refuses what it cannot build before the model loads
        from edgeembed.steps.e2e_tokenizers import check_support

        check_support(spec.transformer_dir / TOKENIZER_FILE, spec.head, s.format)
    from edgeembed.runtimes.torch import TorchRuntime
    from edgeembed.torch_model import load_transformer

    reference = load_transformer(spec.transformer_dir)
    steps = plan_steps(s, spec, progress)

    def build(tmp: Path) -> Manifest:
        write_st_layout(spec, tmp)
        ctx = BuildContext(
            spec=spec,
            reference=reference,
            tokenizer=tokenizer_for(tmp, spec.head),
            root=tmp,
            work_dir=tmp / WORK_DIR,
            threads=threads,
            calibration=s.calibration,
            progress=progress,
            policy=s.policy,
            sts=s.sts,
        )
        ctx.work_dir.mkdir()
        options = RuntimeOptions(threads=threads, precision=s.precision)

        def encoder(graph: Graph) -> Encoder:
            return Encoder.from_parts(tmp, load_runtime(graph.runtime, graph.path, options), spec.head)

        module = backend(s.format)
        config = module.backend_config(s, steps)
        progress(f"exporting to {s.format} ({module.__name__.rsplit('.', 1)[-1]} back-end, {config})")
        graph = module.export(ctx, config)
        # Settings the back-end found its graph needs (e.g. OpenVINO without denormal flushing): the gate
        # runs with them and the manifest keeps them as the artifact's defaults.
        graph_options = dict(graph.record.get("runtime_options", {}))
        options = replace(options, **graph_options)
        torch_encoder = Encoder.from_parts(
            tmp, TorchRuntime(reference, RuntimeOptions(threads=threads)), spec.head
        )
        fp32 = encoder(graph)
        extra = f" ({s.precision} inference)" if s.precision else ""
        progress(f"gate: {s.format} export vs torch{extra}")
        validation = check_export(torch_encoder, fp32, s.policy, f"{s.format} export of {spec.path.name}")
        del torch_encoder
        progress(
            f"gate passed: min cosine {validation['min_cosine']:.7f}, max abs diff {validation['max_abs_diff']:.2e}"
        )
        validation = {**validation, "backend": dict(graph.record)}

        def gated_step(planned: PlannedStep, before: Graph, reference: Encoder, what: str) -> _Tried:
            """The first of the planned config and its fallbacks whose graph passes the gate without
            falling short of the preferred floor (the last one needs only the floors)."""
            choices = (planned.config, *planned.fallbacks)
            rejected: list[dict[str, Any]] = []
            for i, choice in enumerate(choices):
                last = i == len(choices) - 1
                candidate = step_module(choice.step).apply(before, ctx, choice)
                cand_encoder = encoder(candidate)
                progress(
                    f"gate: {choice.step} graph vs the fp32 graph"
                    + (f" and STS ({s.policy.sts})" if s.policy.sts else "")
                )
                try:
                    check = check_step(reference, cand_encoder, s.policy, choice.gate, what, sts=s.sts)
                except (DriftError, RetentionError) as exc:
                    if not last:
                        short = str(exc)
                    elif rejected:  # every alternative failed: name them all
                        tried = "; ".join(f"{r['tried']}: {r['reason']}" for r in rejected)
                        raise type(exc)(f"{exc} (tried before it: {tried})") from exc
                    else:
                        raise
                else:
                    short = None if last else s.policy.short_of_preferred(check)
                if short is None:
                    return _Tried(choice, candidate, cand_encoder, check, tuple(rejected))
                was, now = _differs(choice, choices[i + 1]), _differs(choices[i + 1], choice)
                progress(f"{choice.step}: {was} fell short ({short}); trying {now}")
                rejected.append({"tried": was, "config": choice.to_dict(), "reason": short})
                del candidate, cand_encoder  # its session closes before the next try loads
            raise AssertionError("unreachable: the last alternative returns or raises")

        records: dict[str, dict[str, Any]] = {}
        final, final_config, final_encoder = graph, None, fp32
        for planned in steps:
            cfg = planned.config
            what = f"{cfg.step} step ({cfg.gate}) on {spec.path.name}"
            if planned.skip:
                progress(f"optimize auto: {planned.skip}; keeping the plain graph")
                records[cfg.step] = {"level": "auto", "applied": False, "reason": planned.skip}
                continue
            try:
                tried = gated_step(planned, final, fp32, what)
            except Exception as exc:
                if not planned.optional:
                    raise
                progress(f"{cfg.step} skipped, keeping the graph before it: {type(exc).__name__}: {exc}")
                records[cfg.step] = {
                    "level": "auto",
                    "applied": False,
                    "reason": f"{type(exc).__name__}: {exc}",
                }
                continue
            cfg, candidate, cand_encoder, check = tried.config, tried.graph, tried.encoder, tried.check
            progress(f"gate passed: {summary(check)}")
            records[cfg.step] = {**candidate.record, "validation": check}
            if tried.rejected:
                records[cfg.step]["rejected"] = list(tried.rejected)
            if planned.optional:
                records[cfg.step]["level"] = "auto"
                records[cfg.step]["applied"] = True
            final, final_config, final_encoder = candidate, cfg, cand_encoder
        if final_config is not None:
            validation = {**records[final_config.step]["validation"], "reference_validation": validation}
        invariance = batch_invariance(
            final_encoder,
            s.policy,
            sts=s.sts,
            required=getattr(final_config, "batch_invariant", False),
            what=f"the {final_config.step if final_config else s.format} graph of {spec.path.name}",
        )
        validation["batch_invariance"] = invariance
        progress(
            f"batch invariance (alone vs mixed batch of {invariance['batch_size']}, {invariance['n']} texts): "
            f"mean {invariance['mean_cosine']:.5f}, min {invariance['min_cosine']:.5f}"
        )
        del fp32, final_encoder
        file_name = final_config.file_name if final_config is not None else module.FILE_NAME
        _place(final, tmp, file_name)
        shutil.rmtree(ctx.work_dir)
        progress(
            f"graph: {file_name} ({sum(f.stat().st_size for f in (tmp / file_name).parent.glob(Path(file_name).stem + '.*')) / 1e6:.1f} MB)"
        )
        precision = (
            final_config.precision if final_config is not None else graph.record.get("weights", "fp32")
        )
        main = ArtifactGraph(file_name, final.runtime, "tokens", precision, final.input_names, validation)
        if module.HEAD_OUTPUT:
            main = _head_output(s, ctx, main)
        packaging = _package(s, ctx, main, final_config)
        graphs = packaging.get("graphs", [main])
        external = None
        # The .ort conversion (without --keep-onnx) replaces the graph: its weights stay inside it.
        if module.EXTERNAL_DATA and graphs[0].file == file_name:
            external = _external_data(s, ctx, final.runtime, tmp / file_name)
            progress(f"weights in {external['file']} (external data, mapped at load)")
        optimization = records.get("fusion")
        quantization = next(
            (
                records[p.config.step]
                for p in steps
                if p.config.precision != "fp32" and p.config.step in records
            ),
            None,
        )
        if quantization is not None:
            quantization = {k: v for k, v in quantization.items() if k != "validation"}
        return Manifest(
            graphs=tuple(graphs),
            head=spec.head,
            source={"path": str(spec.path), "weights_sha256": _weights_sha256(spec)},
            optimization=optimization,
            quantization=quantization,
            runtime_options={**graph_options, **({"precision": s.precision} if s.precision else {})},
            lineage=lineage,
            ort=packaging.get("ort"),
            build={
                "format": s.format,
                "policy": s.policy.to_dict(),
                "steps": [p.config.step for p in steps],
                **({"external_data": external} if external else {}),
            },
            versions=library_versions(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )

    return _save(job, build)


def _save(job: _Job, build: Any) -> ExportResult:
    manifest = save_artifact(job.out, build, overwrite=job.overwrite, lock=job.lock, keep=job.keep)
    job.progress(f"artifact written: {job.out}")
    return ExportResult(path=job.out.absolute(), manifest=manifest)


def _head_output(s: BuildSettings, ctx: BuildContext, main: ArtifactGraph) -> ArtifactGraph:
    """The head step: the final token graph rewritten with the head as a second output
    (steps.sentence_output), gated against the graph before it through the Encoder: the token output
    pooled in numpy and the sentence output, each within conversion_max_abs_diff. A graph that cannot
    carry it (no attention mask, an old opset) keeps the token output alone, recorded."""
    from edgeembed.encoder import load_dense
    from edgeembed.gate import check_sentence_graph, gate_texts, invariance_texts
    from edgeembed.steps.sentence_output import add_sentence_output, details

    root, head, progress = ctx.root, ctx.spec.head, ctx.progress
    graph_file = root / main.file
    before = graph_file.with_name(graph_file.stem + ".tokens" + graph_file.suffix)
    graph_file.rename(before)
    try:
        token_output = add_sentence_output(before, graph_file, head, load_dense(root, head))
    except ValueError as exc:
        before.rename(graph_file)
        progress(f"head output not added: {exc}")
        return replace(main, details={**main.details, "head_output": f"not added: {exc}"})
    progress(
        f"head step: {graph_file.name} also outputs the sentence embedding (pooling + Dense in the graph)"
    )
    options = RuntimeOptions(threads=ctx.threads, precision=s.precision)
    entry = replace(main, details={**main.details, **details(head, token_output)})
    reference = Encoder.from_parts(root, load_runtime(main.runtime, before, options), head)
    runtime = load_runtime(main.runtime, graph_file, options)
    via_tokens = Encoder.from_parts(root, runtime, head)
    via_head = Encoder.from_parts(root, runtime, head, graph=entry)
    if via_head.sentence_output is None:  # pragma: no cover - a format declares HEAD_OUTPUT with its runtime
        raise ValueError(f"runtime {main.runtime!r} cannot be asked for a named output")
    texts = list(dict.fromkeys([*gate_texts(head.max_seq_length, s.sts), *invariance_texts()]))
    progress(f"gate: the graph's sentence output vs the Encoder's pooling ({len(texts)} texts)")
    record = check_sentence_graph(
        reference,
        via_tokens,
        lambda all_texts: via_head.encode(all_texts, batch_size=32),
        texts,
        s.policy,
        f"head output of {ctx.spec.path.name}",
    )
    before.unlink()
    progress(f"gate passed: max abs diff {record['max_abs_diff_sentence_embedding']:.2e}")
    validation = {**main.validation, "head_output": {**record, "reference": "the graph before the head step"}}
    return replace(entry, validation=validation)


def _package(s: BuildSettings, ctx: BuildContext, main: ArtifactGraph, final_config: Any) -> dict[str, Any]:
    """Packaging steps after the graph is final: the format's strings-in graph and the .ort conversion,
    each checked by the gate against the artifact's own Encoder. Returns {"graphs": the artifact's
    graphs, the default first (the .ort one when it replaced the .onnx), "ort": the conversion's record}."""
    if not (s.end_to_end or s.ort):
        return {}
    from edgeembed.gate import check_conversion, gate_texts
    from edgeembed.runtimes.onnxruntime_e2e import clean_text
    from edgeembed.steps.e2e_onnx import HARD_CASES

    module = backend(s.format)
    root, head, progress = ctx.root, ctx.spec.head, ctx.progress
    graph_file = root / main.file
    options = RuntimeOptions(threads=ctx.threads, precision=s.precision)
    token_encoder = Encoder.from_parts(root, load_runtime(main.runtime, graph_file, options), head)
    texts = gate_texts(head.max_seq_length, s.sts)
    graphs = [main]
    out: dict[str, Any] = {"graphs": graphs}
    e2e = e2e_encoder = None
    if s.end_to_end:
        e2e, e2e_encoder = _end_to_end(s, ctx, module.END_TO_END, main, token_encoder, texts)
        graphs.append(e2e)
    if s.ort:
        from edgeembed.steps.ort_format import convert_to_ort

        isa, target = module.ort_target(final_config)
        progress(f".ort conversion ({target}) with onnxruntime.tools.convert_onnx_models_to_ort")
        sources = [graph_file, *([root / e2e.file] if e2e else [])]
        files = convert_to_ort(sources, graph_file.parent, target)
        ort_main = files.models[0]
        ort_runtime = load_runtime(main.runtime, ort_main, RuntimeOptions(threads=ctx.threads))
        # As the artifact's Encoder runs it: its sentence output when the graph carries the head; the
        # token output is checked too, for the calls that pool in numpy.
        ort_encoder = Encoder.from_parts(root, ort_runtime, head, graph=main)
        sample = texts[:64]
        what = f".ort graph of {ctx.spec.path.name}"
        check = check_conversion(token_encoder, ort_encoder, sample, s.policy, what)
        if ort_encoder.sentence_output is not None:
            tokens = check_conversion(
                token_encoder, Encoder.from_parts(root, ort_runtime, head), sample, s.policy, what
            )
            check["max_abs_diff_token_output_vs_onnx"] = tokens["max_abs_diff_vs_onnx"]
        converted = [replace(main, file=ort_main.relative_to(root).as_posix())]
        if e2e is not None:
            ort_e2e = load_runtime(e2e.runtime, files.models[1], RuntimeOptions(threads=ctx.threads))
            e2e_check = check_conversion(
                e2e_encoder,
                Encoder.from_parts(root, ort_e2e, head),
                [*sample, *(clean_text(t) for t in HARD_CASES)],
                s.policy,
                f".ort end-to-end graph of {ctx.spec.path.name}",
            )
            check["max_abs_diff_e2e_vs_onnx"] = e2e_check["max_abs_diff_vs_onnx"]
            converted.append(replace(e2e, file=files.models[1].relative_to(root).as_posix()))
        out["ort"] = {
            "files": [f.relative_to(root).as_posix() for f in files.models],
            "config": files.config.relative_to(root).as_posix(),
            "target_platform": target,
            "isa": isa,
            "onnx_kept": s.keep_onnx,
            **check,
        }
        progress(f"gate passed: .ort max abs diff {check['max_abs_diff_vs_onnx']:.2e} vs ONNX")
        if s.keep_onnx:
            graphs.extend(converted)
        else:  # the .ort files replace the .onnx ones
            for source in sources:
                source.unlink()
            out["graphs"] = converted
    return out


def _end_to_end(
    s: BuildSettings,
    ctx: BuildContext,
    e2e: EndToEnd,
    main: ArtifactGraph,
    token_encoder: Encoder,
    texts: list[str],
) -> tuple[ArtifactGraph, Encoder]:
    """The format's strings-in graph beside the token graph, gated against the artifact's own Encoder:
    its token ids against `tokenizers` on the gate texts and hard cases (none may differ where the
    format's tokenizer is exact), its embeddings against the token path."""
    from edgeembed.encoder import load_dense
    from edgeembed.gate import check_end_to_end
    from edgeembed.runtimes.onnxruntime_e2e import TEXT_INPUT, clean_text, e2e_path
    from edgeembed.steps.e2e_onnx import HARD_CASES

    root, head, progress = ctx.root, ctx.spec.head, ctx.progress
    graph_file, tokenizer_file = root / main.file, root / TOKENIZER_FILE
    e2e_file = e2e_path(graph_file)
    progress(f"{e2e.what}: tokenizer + {graph_file.name} + head in one file")
    e2e.build(graph_file, tokenizer_file, head, load_dense(root, head), e2e_file)
    checked = [*texts, *HARD_CASES]
    mismatches = e2e.compare(e2e_file, tokenizer_file, head, checked)
    options = RuntimeOptions(threads=ctx.threads, precision=s.precision if e2e.options_precision else None)
    e2e_encoder = Encoder.from_parts(root, load_runtime(e2e.runtime, e2e_file, options), head)
    progress(f"gate: {e2e.what} vs the Encoder ({len(checked)} texts, one per call)")
    record = check_end_to_end(
        token_encoder,
        e2e_encoder,
        checked,
        {m.index: m.to_dict() for m in mismatches},
        replace(s.policy, e2e_max_token_mismatch_share=0.0) if e2e.exact_token_ids else s.policy,
        f"{e2e.what} of {ctx.spec.path.name}",
        prepare=clean_text,
        sts=s.sts,
    )
    for m in mismatches:
        progress(f"token ids differ in the graph for: {m.text[:80]!r}")
    progress(
        f"gate passed: min cosine {record['min_cosine_vs_encoder']:.7f}, {len(mismatches)} token-id mismatches"
    )
    entry = ArtifactGraph(
        e2e_file.relative_to(root).as_posix(),
        e2e.runtime,
        "text",
        main.precision,
        (TEXT_INPUT,),
        record,
        e2e.details(e2e_file, tokenizer_file),
    )
    return entry, e2e_encoder


def _external_data(s: BuildSettings, ctx: BuildContext, runtime: str, graph_file: Path) -> dict[str, Any]:
    """The final .onnx graph rewritten with its weights in `<graph>_data` (steps.external_data), so ONNX
    Runtime maps them instead of holding them twice while a session is created; checked against the
    single-file graph (the same bytes, so any difference is a bug) after the packaging steps that read it."""
    from edgeembed.gate import check_conversion, gate_texts
    from edgeembed.steps.external_data import externalize

    single = graph_file.with_name(graph_file.stem + ".single.onnx")
    graph_file.rename(single)
    data = externalize(single, graph_file)
    options = RuntimeOptions(threads=ctx.threads, precision=s.precision)
    head = ctx.spec.head
    before = Encoder.from_parts(ctx.root, load_runtime(runtime, single, options), head)
    after = Encoder.from_parts(ctx.root, load_runtime(runtime, graph_file, options), head)
    texts = gate_texts(head.max_seq_length, s.sts)[:64]
    check = check_conversion(before, after, texts, s.policy, f"external-data graph of {ctx.spec.path.name}")
    del before, after
    single.unlink()
    return {"file": data.relative_to(ctx.root).as_posix(), "bytes": data.stat().st_size, **check}


def _export_static(spec: ModelSpec, job: _Job, lineage: dict[str, Any] | None) -> ExportResult:
    """A static-embedding model (a token table, `edgeembed reduce --static`): the static back-end writes
    the table (float16) and its sentence-transformers layout; the gate compares the artifact with the
    source's float32 table through the same Encoder path. No graph, so no graph steps."""
    from edgeembed.backends import static as static_backend
    from edgeembed.gate import batch_invariance
    from edgeembed.runtimes.static import StaticRuntime, load_table

    s, progress = job.settings, job.progress

    if (
        s.format != DEFAULT_FORMAT
        or s.quantize is not None
        or s.optimize not in ("auto", "none")
        or s.end_to_end
        or s.ort
    ):
        raise InputError(
            f"{spec.path} is a static-embedding model: it exports as its token table; drop --format, "
            "--optimize, --quantize and --end-to-end"
        )

    def build(tmp: Path) -> Manifest:
        progress("static back-end: token table (float16) + tokenizer in sentence-transformers' layout")
        g = static_backend.write_static(spec, tmp)
        head = spec.head
        table = load_table(spec.path / spec.transformer_path / static_backend.TABLE_FILE)
        reference = Encoder.from_parts(tmp, StaticRuntime(table), head)  # with the Dense head
        candidate = Encoder.from_parts(tmp, load_runtime(static_backend.RUNTIME, g.path), head)
        progress("gate: the artifact's table vs the source's float32 table")
        validation = check_export(reference, candidate, s.policy, f"static export of {spec.path.name}")
        validation = {**validation, "reference": "source table (float32)"}
        validation["batch_invariance"] = batch_invariance(candidate, s.policy, sts=s.sts)
        progress(f"gate passed: min cosine {validation['min_cosine']:.7f}")
        table = ArtifactGraph(
            g.path.relative_to(tmp).as_posix(),
            static_backend.RUNTIME,
            "tokens",
            g.precision,
            g.input_names,
            validation,
        )
        return Manifest(
            graphs=(table, _static_onnx(spec, tmp, g.path, candidate, job)),
            head=head,
            source={
                "path": str(spec.path),
                "weights_sha256": sha256_file(spec.path / spec.transformer_path / static_backend.TABLE_FILE),
            },
            lineage=lineage,
            build={"format": "static", "policy": s.policy.to_dict(), "steps": []},
            versions=library_versions(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )

    return _save(job, build)


def _static_onnx(spec: ModelSpec, root: Path, table_file: Path, encoder: Encoder, job: _Job) -> ArtifactGraph:
    """The static model's ONNX graph (for ONNX-only runtimes: mobile), gated against the artifact's
    numpy Encoder on the gate texts."""
    from edgeembed._imports import require
    from edgeembed.backends import static as static_backend
    from edgeembed.encoder import load_dense
    from edgeembed.gate import check_sentence_graph, gate_texts, invariance_texts
    from edgeembed.runtimes.onnxruntime import session
    from edgeembed.shippable import operator_set

    require("onnx", "export")
    policy, progress, head = job.settings.policy, job.progress, spec.head
    progress(f"static ONNX graph: Gather + mean + head, table shared with {table_file.name}")
    g = static_backend.write_static_onnx(
        spec, table_file, root / static_backend.ONNX_FILE, load_dense(root, head)
    )
    options = RuntimeOptions(threads=job.threads)
    sess = session(g.path, options)

    def sentence_output(texts: list[str]) -> Any:  # the raw session, as an app runs it: batches of 32
        return np.concatenate(
            [
                sess.run([g.output_name], encoder.tokenizer(texts[i : i + 32]).as_inputs(g.input_names))[0]
                for i in range(0, len(texts), 32)
            ]
        )

    via_encoder = Encoder.from_parts(root, load_runtime(static_backend.ONNX_RUNTIME, g.path, options), head)
    texts = list(dict.fromkeys([*gate_texts(head.max_seq_length, job.settings.sts), *invariance_texts()]))
    progress(f"gate: static ONNX graph vs the static runtime ({len(texts)} texts)")
    record = check_sentence_graph(
        encoder, via_encoder, sentence_output, texts, policy, f"static ONNX graph of {spec.path.name}"
    )
    progress(f"gate passed: max abs diff {record['max_abs_diff_sentence_embedding']:.2e}")
    details = {
        "outputs": list(static_backend.ONNX_OUTPUTS),
        "normalized": head.normalize,
        "table": {"external_data": table_file.relative_to(root).as_posix(), "precision": g.precision},
        "operators": operator_set(g.path),
    }
    rel = g.path.relative_to(root).as_posix()
    return ArtifactGraph(
        rel, static_backend.ONNX_RUNTIME, "tokens", g.precision, g.input_names, record, details
    )
