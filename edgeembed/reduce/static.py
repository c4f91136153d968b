"""Static embeddings (the model2vec method), implemented here because model2vec[distill] 0.10 pins
transformers<5.4: one vector per vocabulary token from the teacher, PCA, SIF frequency weighting, then
(optionally, with a corpus) the table is tuned so that the mean of a text's token vectors matches the
teacher's embedding of that text (the tokenlearn idea).

A text's embedding is the mean of its tokens' rows (tokenized without special tokens, as
sentence-transformers' StaticEmbedding does), then normalized.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeembed.errors import InputError
from edgeembed.reduce.config import StaticConfig
from edgeembed.reduce.pca import PcaHead, fit_pca
from edgeembed.reduce.student import SentenceModel, torch
from edgeembed.tokenization import TextTokenizer
from edgeembed.yardstick import within

STATIC_MAX_SEQ_LENGTH = 512


@dataclass(frozen=True)
class StaticModel:
    """The table (vocab, dim) float32 and how it was made."""

    embeddings: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)


def token_vectors(teacher: SentenceModel, tokenizer: TextTokenizer, batch: int = 512) -> np.ndarray:
    """Each vocabulary token as the teacher sees it alone: [CLS] token [SEP] through the model's head,
    before normalization."""
    vocab_size = teacher.transformer.get_input_embeddings().weight.shape[0]
    probe = tokenizer.encode(["a"])[0]
    special = [i for i, m in zip(probe.ids, probe.special_tokens_mask) if m]
    bos, eos = (special[0], special[-1]) if len(special) >= 2 else (None, None)
    teacher.eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, vocab_size, batch):
            ids = np.arange(start, min(start + batch, vocab_size), dtype=np.int64)[:, None]
            if bos is not None:
                ids = np.concatenate([np.full_like(ids, bos), ids, np.full_like(ids, eos)], axis=1)
            inputs = {
                "input_ids": torch.from_numpy(ids),
                "attention_mask": torch.ones(ids.shape, dtype=torch.int64),
                "token_type_ids": torch.zeros(ids.shape, dtype=torch.int64),
            }
            rows.append(teacher(inputs, normalize=False).float().numpy())
    return np.concatenate(rows)


def token_counts(tokenizer: TextTokenizer, texts: list[str], vocab_size: int) -> np.ndarray:
    ids = [e.ids for e in tokenizer.encode(texts)]
    flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
    return np.bincount(flat, minlength=vocab_size)[:vocab_size]


def sif_weights(counts: np.ndarray | None, vocab_size: int, a: float) -> np.ndarray:
    """a / (a + p): frequent tokens count less. Without counts, p from Zipf's law over the vocab order."""
    if counts is None or counts.sum() == 0:
        rank = np.arange(1, vocab_size + 1, dtype=np.float64)
        p = (1 / rank) / (1 / rank).sum()
    else:
        p = counts / counts.sum()
    return (a / (a + p)).astype(np.float32)


def mean_embed(
    table: np.ndarray, tokenizer: TextTokenizer, texts: list[str], normalize: bool = True
) -> np.ndarray:
    """Reference encoder: mean of token rows (no special tokens), normalized unless told otherwise; an
    empty text gives zeros."""
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
    for i, e in enumerate(tokenizer.encode(texts)):
        if e.ids:
            out[i] = table[e.ids].mean(0)
    if not normalize:
        return out
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def build_static(
    teacher: SentenceModel,
    tokenizer: TextTokenizer,
    plain_tokenizer: TextTokenizer,
    config: StaticConfig,
    pca_embeddings: np.ndarray | None,
    freq_texts: list[str] | None,
    train: tuple[list[str], np.ndarray] | None,
    evaluate: Callable[[np.ndarray], float] | None,
    seed: int,
    show_progress: bool = False,
    holdout: tuple[list[str], np.ndarray] | None = None,
) -> StaticModel:
    """`tokenizer` adds special tokens (for the teacher); `plain_tokenizer` does not (for the table).
    `pca_embeddings`: teacher sentence embeddings that define the PCA basis (else the token vectors do).
    `evaluate(table) -> score` (STS dev) is recorded per epoch; the best epoch is the one of highest
    agreement with the teacher on `holdout` (texts never trained on, their teacher embeddings) when
    given and `config.select` is "agreement", else of highest `evaluate`."""
    vectors = token_vectors(teacher, tokenizer, config.token_batch)
    vocab_size, width = vectors.shape
    if not 1 <= config.dim <= width:
        raise InputError(f"static --dim {config.dim} must be between 1 and {width} (the teacher's dimension)")
    basis = pca_embeddings if pca_embeddings is not None else vectors
    pca: PcaHead | None = fit_pca(basis, config.dim, center=True) if config.dim < width else None
    table = vectors if pca is None else _project(vectors, pca)
    counts = token_counts(plain_tokenizer, freq_texts, vocab_size) if freq_texts else None
    table = (table * sif_weights(counts, vocab_size, config.sif)[:, None]).astype(np.float32)
    record: dict[str, Any] = {
        "config": config.to_dict(),
        "vocab_size": vocab_size,
        "pca_explained_variance": None if pca is None else pca.explained_variance,
        "frequencies_from_texts": len(freq_texts or []),
    }
    agree = None
    if holdout is not None:
        h_texts, h_targets = holdout[0], holdout[1] if pca is None else _project(holdout[1], pca)

        def agree(t: np.ndarray) -> dict[str, float]:
            emb = mean_embed(t, plain_tokenizer, h_texts)
            ref = h_targets / np.maximum(np.linalg.norm(h_targets, axis=1, keepdims=True), 1e-12)
            y = within(ref, emb, n_queries=min(256, len(emb)))
            return {"agreement": float((emb * ref).sum(1).mean()), "recall": y.recall_at_k}

    if evaluate is not None:
        record["sts_dev_untrained"] = evaluate(table)
    if train is not None and config.train_epochs > 0:
        texts, targets = train
        if pca is not None:
            targets = _project(targets, pca)
        table, curve, best_epoch = _tune(
            table, plain_tokenizer, texts, targets, config, evaluate, seed, show_progress, agree
        )
        record["training"] = {
            "texts": len(texts),
            "holdout_texts": 0 if holdout is None else len(holdout[0]),
            "selected_by": "agreement on held-out texts" if _by_agreement(config, agree) else "sts dev",
            "best_epoch": best_epoch,
            "curve": curve,
        }
    return StaticModel(table.astype(np.float32), record)


def _tune(
    table: np.ndarray,
    tokenizer: TextTokenizer,
    texts: list[str],
    targets: np.ndarray,
    config: StaticConfig,
    evaluate: Callable[[np.ndarray], float] | None,
    seed: int,
    show_progress: bool,
    agree: Callable[[np.ndarray], dict[str, float]] | None = None,
) -> tuple[np.ndarray, list[dict[str, float]], int]:
    """Cosine loss between mean-of-rows and the (PCA-projected) teacher embedding; SparseAdam; best epoch."""
    torch.manual_seed(seed)
    bag = torch.nn.EmbeddingBag.from_pretrained(
        torch.from_numpy(table.copy()), freeze=False, mode="mean", sparse=True
    )
    optimizer = torch.optim.SparseAdam(bag.parameters(), lr=config.lr)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode(texts)]
    keep = [i for i, x in enumerate(ids) if len(x)]
    target = torch.nn.functional.normalize(torch.from_numpy(np.asarray(targets, dtype=np.float32)), dim=-1)
    rng = np.random.default_rng(seed)
    by_agreement = _by_agreement(config, agree)

    def measure(t: np.ndarray) -> dict[str, float]:
        point = dict(agree(t)) if agree is not None else {}
        if evaluate is not None:
            point["sts_dev"] = float(evaluate(t))
        return point

    def score_of(point: dict[str, float]) -> float:
        return point["agreement"] if by_agreement else point.get("sts_dev", -np.inf)

    first = measure(table)
    best_table, best, best_epoch = table.copy(), score_of(first), 0
    curve = [{"epoch": 0, **first}] if first else []
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.train_epochs * (len(keep) // config.batch_size + 1), unit="step", desc="static"
        )
    for epoch in range(1, config.train_epochs + 1):
        order = rng.permutation(keep)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            flat = torch.from_numpy(np.concatenate([ids[i] for i in idx]))
            offsets = torch.from_numpy(np.cumsum([0] + [len(ids[i]) for i in idx[:-1]]))
            pred = torch.nn.functional.normalize(bag(flat, offsets), dim=-1)
            loss = (1 - (pred * target[idx]).sum(-1)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            if bar is not None:
                bar.update(1)
        current = bag.weight.detach().numpy().copy()
        point = {"epoch": epoch, "loss": total / len(keep), **measure(current)}
        if agree is None and evaluate is None:
            best_table, best_epoch = current, epoch
        elif score_of(point) > best:
            best, best_table, best_epoch = score_of(point), current, epoch
        curve.append(point)
    if bar is not None:
        bar.close()
    return best_table, curve, best_epoch


def _by_agreement(config: StaticConfig, agree: Callable[..., Any] | None) -> bool:
    return agree is not None and config.select == "agreement"


def _project(x: np.ndarray, pca: PcaHead) -> np.ndarray:
    y = x @ pca.weight.T
    return y if pca.bias is None else y + pca.bias
