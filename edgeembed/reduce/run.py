"""reduce(): teacher folder -> (layers + distillation) -> (PCA head) | (static table) -> model folder."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.artifact import atomic_folder
from edgeembed.errors import InputError, SourceError
from edgeembed.head import normalize as l2_normalize
from edgeembed.reduce.config import (
    DISTILL_PRESETS,
    STATIC_PRESETS,
    DistillConfig,
    ReducePlan,
    ReduceResult,
    StaticConfig,
)
from edgeembed.reduce.corpus import Corpus, read_corpus
from edgeembed.reduce.distill import CHECKPOINT, DistillResult, distill
from edgeembed.reduce.folder import (
    check_reduce_target,
    write_record,
    write_static_folder,
    write_transformer_folder,
)
from edgeembed.reduce.layers import LayerChoice, choose_layers, parse_keep
from edgeembed.reduce.pca import PcaHead, check_dim, fit_pca
from edgeembed.reduce.static import STATIC_MAX_SEQ_LENGTH, build_static, extend_vocabulary, table_rows
from edgeembed.reduce.student import (
    SentenceModel,
    check_keep,
    count_layers,
    encode,
    keep_layers,
    load_dense_torch,
    load_raw_tokenizer,
    load_tokenizer,
    load_transformer,
    torch,
)
from edgeembed.reduce.teacher import (
    ONNX_MIN_TEXTS,
    Embed,
    cached_embeddings,
    cached_text_embeddings,
    default_cache_dir,
    onnx_embedder,
    teacher_sha256,
    torch_embedder,
)
from edgeembed.source import ModelSpec, load_source
from edgeembed.sts import StsData, load_sts, sts_score
from edgeembed.tokenization import TextTokenizer
from edgeembed.yardstick import CORPUS_LINES, YardstickTexts, compare

AUTO_KEEP_TEXTS = 256
Step = Callable[[str], None]


def _resolve(plan: ReducePlan) -> tuple[DistillConfig, StaticConfig]:
    distill_cfg = plan.distill
    if isinstance(distill_cfg, str):
        if distill_cfg not in DISTILL_PRESETS:
            raise InputError(
                f"unknown distillation preset {distill_cfg!r}; choose from {sorted(DISTILL_PRESETS)}"
            )
        distill_cfg = DISTILL_PRESETS[distill_cfg]
    static_cfg = plan.static_config
    if isinstance(static_cfg, str):
        if static_cfg not in STATIC_PRESETS:
            raise InputError(f"unknown static preset {static_cfg!r}; choose from {sorted(STATIC_PRESETS)}")
        static_cfg = STATIC_PRESETS[static_cfg]
    if plan.static and plan.dim is not None:
        static_cfg = replace(static_cfg, dim=plan.dim)
    distill_cfg.check()
    return distill_cfg, static_cfg


def _inputs(teacher: str | Path | None) -> tuple[Path, ...]:
    """The teacher folder, which no --out may be or hold (the default model is a package's, never one)."""
    return () if teacher is None else (Path(teacher).expanduser(),)


def _sts_of(model: SentenceModel, tok: TextTokenizer, data: StsData | None) -> float | None:
    return (
        None
        if data is None
        else round(sts_score(data, encode(model, tok, data.sentences, normalize=True)), 4)
    )


def reduce(
    teacher: str | Path | None,
    out: str | Path,
    plan: ReducePlan,
    corpus: str | Path | None = None,
    sts: str | Path | None = None,
    sts_test: str | Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    show_progress: bool = False,
    on_step: Step | None = None,
    on_train_step: Callable[[int], None] | None = None,
    exclude_lines: tuple[int, int] | None = CORPUS_LINES,
    yardstick: YardstickTexts | None = None,
) -> ReduceResult:
    """Make a smaller Sentence-Transformers model from `teacher` (None = all-MiniLM-L6-v2) into `out`.

    `plan` says what: fewer layers (distilled on `corpus`), fewer dimensions (PCA head), or a static
    model. `sts` (e.g. STS-b dev) selects the best checkpoint; `sts_test` is only reported. The folder is
    written atomically, with reduce.json; `edgeembed export` takes it like any model. An interrupted
    distillation (Ctrl-C) still writes the best state so far and keeps a checkpoint for `resume=True`.

    Evaluation texts are never trained on: corpus lines `exclude_lines` (the yardstick's corpus, lines
    50,001-100,000 by default) and the STS sentences are left out of the corpus. With `yardstick`, the
    result's agreement with the teacher (neighbour recall@10, mean cosine) is measured on those texts
    and written to reduce.json.
    """
    started = time.perf_counter()
    step = on_step or (lambda _msg: None)
    distill_cfg, static_cfg = _resolve(plan)
    out = Path(out).expanduser().absolute()
    check_reduce_target(out, overwrite or resume, _inputs(teacher))
    spec = load_source(teacher)
    if spec.kind != "transformer":
        raise SourceError(
            f"the teacher {spec.path} is a {spec.kind} model; reduce needs a transformer teacher"
        )
    dev = load_sts(sts) if sts is not None else None
    test = load_sts(sts_test) if sts_test is not None else None
    needs_corpus = plan.layers is not None or plan.keep_given or (plan.dim is not None and not plan.static)
    if needs_corpus and corpus is None:
        raise InputError("fewer layers and --dim learn from texts: pass --corpus FILE (one text per line)")
    held_out = [*(dev.sentences if dev else []), *(test.sentences if test else [])]
    if yardstick is not None:
        held_out += yardstick.all
    texts = read_corpus(corpus, plan.seed, exclude_lines, held_out) if corpus is not None else None

    step(f"teacher: {spec.path}")
    transformer = load_transformer(spec.transformer_dir)
    dense = load_dense_torch(spec)
    teacher_model = SentenceModel(transformer, spec, dense)
    total_layers = count_layers(transformer)
    keep = None
    if plan.layers is not None and not 1 <= plan.layers < total_layers:
        raise InputError(
            f"--layers must be between 1 and {total_layers - 1} (the teacher has {total_layers} layers)"
        )
    if plan.layers is not None or plan.keep_given:
        keep = parse_keep(plan.keep, total_layers)
        if keep is not None and plan.layers is not None and len(keep) != plan.layers:
            raise InputError(f"--keep lists {len(keep)} layers but --layers is {plan.layers}")
        if keep is not None and len(keep) == total_layers:
            raise InputError(f"--keep keeps all {total_layers} layers; drop at least one")
        if keep is not None:
            check_keep(transformer, keep)
    if plan.dim is not None and not plan.static:
        check_dim(plan.dim, spec.dim)

    tokenizer = load_tokenizer(spec)
    train_tok = load_tokenizer(spec, distill_cfg.max_seq_length)
    t_hash = teacher_sha256(spec)
    # The cached embeddings depend on where the teacher's input was cut, as well as on the teacher.
    embed_key = hashlib.sha256(f"{t_hash}:{train_tok.max_seq_length}".encode()).hexdigest()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    work = out.parent / f".{out.name}.reduce-work"
    teacher_runtime = {"name": "cached"}

    embedders: dict[str, Embed | None] = {}  # one ONNX export per run, reused by later caches

    def make_embedder(count: int) -> Embed:
        if count >= ONNX_MIN_TEXTS and "onnxruntime" not in embedders:
            work.mkdir(parents=True, exist_ok=True)
            step(f"teacher embeddings of {count} texts: exporting the teacher to ONNX")
            embedders["onnxruntime"] = onnx_embedder(teacher_model, train_tok, spec, work)
            if embedders["onnxruntime"] is None:
                step("the ONNX teacher does not match torch; using torch")
        fast = embedders.get("onnxruntime")
        if fast is not None:
            teacher_runtime["name"] = "onnxruntime"
            return fast
        teacher_runtime["name"] = "torch"
        return torch_embedder(teacher_model, train_tok)

    def teacher_embeddings(n: int, what: str) -> np.ndarray:
        assert texts is not None
        texts.require(n, what)
        t0 = time.perf_counter()
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            # Created lazily: a run whose embeddings are all cached shows no bar.
            def progress(done: int, total: int) -> None:
                nonlocal bar
                if bar is None:
                    bar = tqdm(total=total, unit="text", desc="teacher embeddings (not cached)")
                bar.update(done - bar.n)

        try:
            emb = cached_embeddings(
                texts, n, embed_key, cache, make_embedder, progress=progress if show_progress else None
            )
        finally:
            if bar is not None:
                bar.close()
        step(f"teacher embeddings: {n} texts ({time.perf_counter() - t0:.0f} s, {teacher_runtime['name']})")
        return emb

    def yardstick_reference(texts: YardstickTexts) -> np.ndarray:
        return cached_text_embeddings(texts.all, texts.source["sha256"], embed_key, cache, make_embedder)

    record: dict[str, Any] = {
        "teacher": {"path": str(spec.path), "sha256": t_hash, "layers": total_layers, "dim": spec.dim},
        "seed": plan.seed,
        "plan": {
            "layers": plan.layers,
            "keep": list(keep) if keep else plan.keep,
            "dim": plan.dim,
            "static": plan.static,
        },
    }
    if texts is not None:
        record["corpus"] = {
            "path": str(texts.path),
            "sha256": texts.sha256,
            "size": len(texts),
            "excluded": texts.excluded,
            "excluded_lines": None if exclude_lines is None else [exclude_lines[0] + 1, exclude_lines[1]],
        }

    result_model: SentenceModel = teacher_model
    distilled: DistillResult | None = None
    interrupted = False
    try:
        check_reduce_target(out, overwrite or resume, _inputs(teacher))  # again: hours may have passed
        with atomic_folder(out, overwrite=overwrite or resume, keep=_inputs(teacher)) as tmp:
            if plan.static:
                _static(
                    tmp,
                    spec,
                    teacher_model,
                    tokenizer,
                    static_cfg,
                    texts,
                    dev,
                    test,
                    teacher_embeddings,
                    record,
                    step,
                    plan.seed,
                    show_progress,
                    None
                    if yardstick is None
                    else lambda embed: _yardstick(yardstick, yardstick_reference, embed, step),
                )
            else:
                if keep is not None or plan.layers is not None:
                    assert texts is not None
                    n = distill_cfg.texts_needed
                    targets = teacher_embeddings(
                        n, f"distillation ({distill_cfg.steps} steps of {distill_cfg.batch_size})"
                    )
                    hold_texts, hold_targets = (
                        texts.sample(0, distill_cfg.holdout),
                        targets[: distill_cfg.holdout],
                    )
                    choice = LayerChoice(keep) if keep is not None else None
                    if choice is None:
                        step(f"choosing {plan.layers} of {total_layers} layers by agreement with the teacher")
                        sample = min(AUTO_KEEP_TEXTS, len(hold_texts))
                        choice = choose_layers(
                            teacher_model,
                            plan.layers,
                            total_layers,
                            tokenizer,
                            hold_texts[:sample],
                            hold_targets[:sample],
                        )
                    keep = choice.keep
                    step(f"layers kept: {list(keep)}")
                    record["layers"] = {
                        "kept": list(keep),
                        "selection": "given" if plan.keep_given else "auto",
                        "scores": [
                            {"keep": list(k), "agreement": round(s, 5)} for k, s in choice.scores[:10]
                        ],
                    }
                    student = SentenceModel(keep_layers(transformer, keep), spec, dense)
                    run_key = hashlib.sha256(
                        json.dumps(
                            [t_hash, texts.sha256, list(keep), distill_cfg.to_dict(), plan.seed]
                        ).encode()
                    ).hexdigest()
                    step(
                        f"distilling: {distill_cfg.steps} steps of {distill_cfg.batch_size} over "
                        f"{distill_cfg.distinct_texts} texts ({distill_cfg.epochs:.2g} epochs), best by "
                        f"{distill_cfg.select if dev is not None else 'agreement'}"
                        + (f", at most {distill_cfg.max_minutes:g} min" if distill_cfg.max_minutes else "")
                    )
                    distilled = distill(
                        student,
                        train_tok,
                        texts.sample(distill_cfg.holdout, n),
                        targets[distill_cfg.holdout :],
                        hold_texts,
                        hold_targets,
                        distill_cfg,
                        plan.seed,
                        work,
                        run_key,
                        sts=dev,
                        resume=resume,
                        show_progress=show_progress,
                        on_train_step=on_train_step,
                    )
                    student.transformer.load_state_dict(distilled.state)
                    interrupted = distilled.interrupted
                    record["distill"] = {
                        "config": distill_cfg.to_dict(),
                        "texts": n - distill_cfg.holdout,
                        "holdout_texts": distill_cfg.holdout,
                        "epochs": round(
                            distilled.steps_done * distill_cfg.batch_size / (n - distill_cfg.holdout), 3
                        ),
                        "steps_done": distilled.steps_done,
                        "best_step": distilled.best_step,
                        "selected_by": "sts dev"
                        if distill_cfg.select == "sts" and dev is not None
                        else "agreement on held-out texts",
                        "stopped": distilled.stopped,
                        "schedule_fitted_to": distilled.horizon,
                        "device": distilled.device,
                        "train_seconds": distilled.train_seconds,
                        "interrupted": distilled.interrupted,
                        "resumed_from": distilled.resumed_from,
                        "teacher_runtime": teacher_runtime["name"],
                        "curve": [asdict(h) for h in distilled.history],
                    }
                    result_model = student
                pca: PcaHead | None = None
                if plan.dim is not None:
                    assert texts is not None
                    n_pca = max(20 * plan.dim, 10_000)
                    if result_model is teacher_model:
                        emb = teacher_embeddings(min(n_pca, len(texts)), f"PCA to {plan.dim}")
                    else:
                        texts.require(min(n_pca, len(texts)), f"PCA to {plan.dim}")
                        step(f"student embeddings of {min(n_pca, len(texts))} texts for PCA")
                        emb = encode(
                            result_model, train_tok, texts.sample(0, min(n_pca, len(texts))), normalize=False
                        )
                    if spec.head.normalize:
                        emb = l2_normalize(emb)
                    pca = fit_pca(emb, plan.dim)
                    step(f"PCA to {plan.dim}: {100 * pca.explained_variance:.1f}% of the variance kept")
                    record["pca"] = {
                        "dim": plan.dim,
                        "texts": len(emb),
                        "explained_variance": round(pca.explained_variance, 5),
                    }
                final_dense = [(w.numpy(), None if b is None else b.numpy(), a) for w, b, a in dense]
                if pca is not None:
                    final_dense.append((pca.weight, pca.bias, "identity"))
                scored = SentenceModel(
                    result_model.transformer,
                    spec,
                    [
                        (torch.from_numpy(w), None if b is None else torch.from_numpy(b), a)
                        for w, b, a in final_dense
                    ],
                )
                record["sts"] = {
                    name: {
                        "teacher": _sts_of(teacher_model, tokenizer, data),
                        "student": _sts_of(scored, tokenizer, data),
                    }
                    for name, data in (("dev", dev), ("test", test))
                    if data is not None
                }
                if yardstick is not None:
                    record["yardstick"] = _yardstick(
                        yardstick, yardstick_reference, lambda t: encode(scored, tokenizer, t), step
                    )
                write_transformer_folder(tmp, spec, result_model.transformer, final_dense)
            record["interrupted"] = interrupted
            record["wall_seconds"] = round(time.perf_counter() - started, 1)
            record["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            record["versions"] = _versions()
            write_record(tmp, record)
    except BaseException:
        # A failed run keeps its work folder only when it holds a checkpoint to resume from.
        if not (work / CHECKPOINT).is_file():
            shutil.rmtree(work, ignore_errors=True)
        raise
    if not interrupted:
        shutil.rmtree(work, ignore_errors=True)
    step(
        f"model written: {out}"
        + (" (interrupted: best state so far; continue with --resume)" if interrupted else "")
    )
    return ReduceResult(path=out, record=record, interrupted=interrupted)


def _yardstick(
    texts: YardstickTexts, reference: Callable[[YardstickTexts], np.ndarray], student: Embed, step: Step
) -> dict[str, Any]:
    """Agreement of the result with the teacher on the yardstick's texts (edgeembed.yardstick)."""
    step(f"agreement with the teacher: {len(texts.queries)} queries over {len(texts.corpus)} texts")
    ref = reference(texts)
    cand = student(texts.all)
    nq = len(texts.queries)
    return {**compare(ref[:nq], ref[nq:], cand[:nq], cand[nq:]).to_dict(), "texts": texts.source}


def _static(
    tmp: Path,
    spec: ModelSpec,
    teacher_model: SentenceModel,
    tokenizer: TextTokenizer,
    cfg: StaticConfig,
    texts: Corpus | None,
    dev: StsData | None,
    test: StsData | None,
    teacher_embeddings: Callable[[int, str], np.ndarray],
    record: dict[str, Any],
    step: Step,
    seed: int,
    show_progress: bool,
    measure: Callable[[Embed], dict[str, Any]] | None = None,
) -> None:
    pca_emb = freq = train = holdout = None
    if texts is not None:
        n = min(len(texts), max(cfg.pca_texts, cfg.train_texts if cfg.train_epochs else 0))
        n_hold = min(cfg.holdout, len(texts) - n) if cfg.train_epochs else 0
        emb = teacher_embeddings(n + n_hold, "static embeddings")
        pca_emb = emb[: cfg.pca_texts]
        if cfg.train_epochs:
            train = (texts.sample(0, n), emb[:n])
        if n_hold > 0:
            holdout = (texts.sample(n, n + n_hold), emb[n : n + n_hold])
        freq = texts.sample(0, min(len(texts), cfg.freq_texts))
    plain_json, words = plain_tokenizer_json(spec), []
    if freq and cfg.vocab_words:
        plain_json, words = extend_vocabulary(
            plain_json, freq, cfg.vocab_words, cfg.vocab_min_count, table_rows(teacher_model)
        )
        # extend_vocabulary adds nothing to a tokenizer that is not WordPiece: say so rather than stay silent.
        step(
            f"vocabulary: {len(words)} corpus words added (asked for up to {cfg.vocab_words}; WordPiece only)"
        )
    plain = _text_tokenizer(spec, plain_json)

    def evaluate(embed: Callable[[list[str]], np.ndarray]) -> float:
        assert dev is not None
        return round(sts_score(dev, embed(dev.sentences)), 4)

    step(
        "static embeddings: token vectors from the teacher, PCA, SIF weights"
        + (", tuning on the corpus" if train else "")
    )
    model = build_static(
        teacher_model,
        tokenizer,
        plain,
        cfg,
        pca_emb,
        freq,
        train,
        evaluate if dev is not None else None,
        seed,
        show_progress,
        holdout,
        words,
    )
    record["static"] = model.record
    record["sts"] = {
        name: {
            "teacher": _sts_of(teacher_model, tokenizer, data),
            "student": round(sts_score(data, model.embed(plain, data.sentences)), 4),
        }
        for name, data in (("dev", dev), ("test", test))
        if data is not None
    }
    if measure is not None:
        record["yardstick"] = measure(lambda t: model.embed(plain, list(t)))
    write_static_folder(
        tmp, model.embeddings, plain_json, spec.head.normalize, spec.head.similarity_fn, dense=model.dense
    )


def plain_tokenizer_json(spec: ModelSpec) -> str:
    """The teacher's tokenizer as StaticEmbedding uses it: no padding, truncation at STATIC_MAX_SEQ_LENGTH."""
    tok = load_raw_tokenizer(spec)
    tok.no_padding()
    tok.enable_truncation(max_length=STATIC_MAX_SEQ_LENGTH)
    return tok.to_str()


def _text_tokenizer(spec: ModelSpec, tokenizer_json: str) -> TextTokenizer:
    from tokenizers import Tokenizer

    return TextTokenizer(
        Tokenizer.from_str(tokenizer_json),
        STATIC_MAX_SEQ_LENGTH,
        spec.head.do_lower_case,
        add_special_tokens=False,
    )


def _versions() -> dict[str, str]:
    out = {}
    for name in ("edgeembed", "torch", "transformers", "tokenizers", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
