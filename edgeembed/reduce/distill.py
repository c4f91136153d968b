"""Distillation: the student learns the teacher's sentence embeddings (MSE) on corpus texts.

AdamW with linear warm-up and decay, length-bucketed batches (a seeded order per epoch, fixed before the
first step), evaluation every `eval_every` steps: agreement with the teacher on held-out texts (mean
cosine, and neighbour recall@10 among them) and, when given, STS Spearman. The best state by the
config's `select` is kept; training stops when the agreement has stopped rising (`patience`) or the
time budget is spent. Ctrl-C stops at the next step boundary, saves a checkpoint for `resume` and
returns the best state so far.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.errors import InputError
from edgeembed.head import normalize as l2_normalize
from edgeembed.reduce.config import DistillConfig
from edgeembed.reduce.student import SentenceModel, encode, to_torch, torch
from edgeembed.sts import StsData, sts_score
from edgeembed.tokenization import TextTokenizer
from edgeembed.yardstick import within

CHECKPOINT = "checkpoint.pt"
FIT_STEPS = 50  # steps timed before fitting the schedule to a time budget


@dataclass(frozen=True)
class EvalPoint:
    step: int
    train_seconds: float
    loss: float | None
    agreement: float
    sts: float | None
    recall: float | None = None  # neighbour recall@10 among the held-out texts vs the teacher


@dataclass(frozen=True)
class DistillResult:
    """The best state (transformer weights), where it came from, and the whole curve."""

    state: dict[str, Any] = field(repr=False)
    best_step: int
    best_score: float
    steps_done: int
    train_seconds: float
    history: tuple[EvalPoint, ...]
    interrupted: bool
    resumed_from: int | None = None
    stopped: str = "steps"  # steps | no gain | time budget | interrupted
    device: str = "cpu"
    horizon: int | None = None  # steps the schedule was fitted to when the budget could not hold all


def length_buckets(lengths: np.ndarray, batch_size: int, window: int, seed: int) -> list[np.ndarray]:
    """Batches of similar length: sort each window of `window` batches by length, shuffle the batches."""
    rng = np.random.default_rng(seed)
    batches: list[np.ndarray] = []
    span = batch_size * window
    for start in range(0, len(lengths) - len(lengths) % batch_size, span):
        idx = np.arange(start, min(start + span, len(lengths) - len(lengths) % batch_size))
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def epoch_batches(
    lengths: np.ndarray, batch_size: int, window: int, seed: int, steps: int
) -> list[np.ndarray]:
    """`steps` batches: passes over all texts, each pass in its own seeded bucketed order."""
    out: list[np.ndarray] = []
    epoch = 0
    while len(out) < steps:
        out.extend(length_buckets(lengths, batch_size, window, seed + epoch))
        epoch += 1
    return out[:steps]


def resolve_device(name: str) -> str:
    """auto: cuda when torch sees one, else cpu; cuda asked where there is none: one clear error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device here (use --device cpu or auto)")
    return name


def stale_evals(history: list[EvalPoint], min_gain: float) -> int:
    """Evaluations since the agreement last rose by at least `min_gain` over its best so far."""
    best, stale = -float("inf"), 0
    for h in history:
        if h.agreement >= best + min_gain:
            best, stale = h.agreement, 0
        else:
            stale += 1
    return stale


@contextmanager
def _sigint_at_step_boundary() -> Iterator[Callable[[], bool]]:
    """Ctrl-C sets a flag the loop checks between steps (so a checkpoint is never half an update);
    the previous handler is restored afterwards. Outside the main thread, nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hit = []
    previous = signal.signal(signal.SIGINT, lambda *_: hit.append(1))
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, previous)


def _save(obj: dict[str, Any], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ckpt-", suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def distill(
    student: SentenceModel,
    tokenizer: TextTokenizer,
    train_texts: list[str],
    train_targets: np.ndarray,
    holdout_texts: list[str],
    holdout_targets: np.ndarray,
    config: DistillConfig,
    seed: int,
    work_dir: Path,
    run_key: str,
    sts: StsData | None = None,
    resume: bool = False,
    show_progress: bool = False,
    on_train_step: Callable[[int], None] | None = None,
) -> DistillResult:
    """Train `student` in place; returns the best state. Checkpoints go to work_dir (kept for resume)."""
    config.check()
    device = resolve_device(config.device)
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = student.to(device)
    model.train(config.dropout)
    if not config.train_embeddings:
        model.transformer.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    warm = max(1, round(config.warmup * config.steps))
    # The steps the learning rate decays over: all of them, or, when the time budget cannot hold them
    # (measured over the first FIT_STEPS), as many as it can, so a budget-bound run still ends decayed
    # instead of being cut at a high learning rate.
    horizon = config.steps
    fit_at = min(FIT_STEPS, max(1, warm // 2))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (horizon - step) / max(1, horizon - warm))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    encodings = tokenizer.encode(train_texts)
    lengths = np.array([len(e.ids) for e in encodings])
    batches = epoch_batches(lengths, config.batch_size, config.bucket_batches, seed, config.steps)
    normalize = model.normalize
    targets = torch.from_numpy(_maybe_normalize(train_targets, normalize)).to(device)
    holdout_norm = _maybe_normalize(holdout_targets, True)
    by_sts = config.select == "sts" and sts is not None
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes

    def evaluate(step: int, seconds: float, loss: float | None) -> EvalPoint:
        emb = encode(model, tokenizer, holdout_texts, normalize=True)
        agree = float((emb * holdout_norm).sum(1).mean())
        recall = (
            within(holdout_norm, emb, n_queries=min(256, len(emb))).recall_at_k if len(emb) > 10 else None
        )
        score = None
        if sts is not None:
            score = sts_score(sts, encode(model, tokenizer, sts.sentences, normalize=True))
        return EvalPoint(step, round(seconds, 2), loss, agree, score, recall)

    def select_score(point: EvalPoint) -> float:
        return point.sts if by_sts and point.sts is not None else point.agreement

    ckpt_path = work_dir / CHECKPOINT
    step = 0
    history: list[EvalPoint] = []
    best_state: dict[str, Any] = {}
    best_score, best_step = -float("inf"), 0
    train_seconds = 0.0
    resumed_from = None
    if resume:
        if not ckpt_path.is_file():
            raise InputError(f"nothing to resume: no checkpoint in {work_dir} (run without --resume)")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["run_key"] != run_key:
            raise InputError(
                f"the checkpoint in {work_dir} is from a different run (teacher, corpus, layers or settings "
                "differ); run without --resume to start over"
            )
        model.transformer.load_state_dict(ckpt["model"])
        best_state = {k: v.to(device) for k, v in ckpt["best"].items()}
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        step, best_score, best_step = ckpt["step"], ckpt["best_score"], ckpt["best_step"]
        horizon = ckpt.get("horizon", config.steps)
        train_seconds = ckpt["train_seconds"]
        history = [EvalPoint(**h) for h in ckpt["history"]]
        resumed_from = step
    else:
        history.append(evaluate(0, 0.0, None))
        best_score = select_score(history[0])
        best_state = _clone(model)

    def checkpoint() -> None:
        _save(
            {
                "run_key": run_key,
                "step": step,
                "horizon": horizon,
                "model": {k: v.cpu() for k, v in model.transformer.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "best": {k: v.cpu() for k, v in best_state.items()},
                "best_score": best_score,
                "best_step": best_step,
                "train_seconds": train_seconds,
                "history": [asdict(h) for h in history],
            },
            ckpt_path,
        )

    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, unit="step", desc=f"distill ({device})")
    interrupted = False
    stopped = "steps"
    losses: list[float] = []
    with _sigint_at_step_boundary() as stop_requested:
        try:
            while step < horizon:
                t0 = time.perf_counter()
                idx = batches[step]
                batch = tokenizer.pad([encodings[i] for i in idx])
                pred = model(to_torch(batch, model.input_names, device))
                loss = ((pred - targets[torch.from_numpy(idx).to(device)]) ** 2).sum(-1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                train_seconds += time.perf_counter() - t0
                last_loss = float(loss.detach())
                losses.append(last_loss)
                if on_train_step is not None:
                    on_train_step(step)
                if budget is not None and step == fit_at and step < config.steps:
                    horizon = fitted_horizon(config.steps, step, train_seconds, budget)
                    if bar is not None and horizon < config.steps:
                        bar.total = horizon
                over_budget = budget is not None and train_seconds >= budget
                if step % config.eval_every == 0 or step == horizon or over_budget:
                    history.append(evaluate(step, train_seconds, float(np.mean(losses))))
                    losses = []
                    current = select_score(history[-1])
                    if current > best_score:
                        best_score, best_step, best_state = current, step, _clone(model)
                    checkpoint()
                    if config.patience and stale_evals(history, config.min_gain) >= config.patience:
                        stopped = "no gain"
                    elif over_budget:
                        stopped = "time budget"
                if bar is not None:
                    last = history[-1]
                    post = {"loss": f"{last_loss:.4f}", "agree": f"{last.agreement:.4f}"}
                    if last.sts is not None:
                        post["sts"] = f"{last.sts:.2f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                if stop_requested():
                    raise KeyboardInterrupt
                if stopped != "steps":
                    break
        except KeyboardInterrupt:
            interrupted, stopped = True, "interrupted"
            checkpoint()
        finally:
            if bar is not None:
                bar.close()
    if stopped == "steps" and horizon < config.steps:
        stopped = "time budget"
    model.to("cpu")
    return DistillResult(
        state={k: v.cpu() for k, v in best_state.items()},
        best_step=best_step,
        best_score=float(best_score),
        steps_done=step,
        train_seconds=round(train_seconds, 2),
        history=tuple(history),
        interrupted=interrupted,
        resumed_from=resumed_from,
        stopped=stopped,
        device=device,
        horizon=horizon if horizon < config.steps else None,
    )


def fitted_horizon(steps: int, done: int, seconds: float, budget: float, margin: float = 0.9) -> int:
    """The steps that fit `budget` seconds at the pace of the first `done` (with a margin for slower
    batches later); never more than `steps`, never fewer than `done`."""
    if seconds <= 0:
        return steps
    return max(done, min(steps, int(margin * budget * done / seconds)))


def _clone(model: SentenceModel) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.transformer.state_dict().items()}


def _maybe_normalize(x: np.ndarray, normalize: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return l2_normalize(x) if normalize else x
