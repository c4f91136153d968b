"""Static embeddings (the model2vec method), implemented here because model2vec[distill] 0.10 pins
transformers<5.4: one vector per vocabulary token from the teacher, PCA, SIF frequency weighting, then
(optionally, with a corpus) the table is tuned so that the mean of a text's token vectors matches the
teacher's embedding of that text (the tokenlearn idea).

A text's embedding is the mean of its tokens' rows (tokenized without special tokens, as
sentence-transformers' StaticEmbedding does), then normalized.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeembed.errors import InputError
from edgeembed.head.numpy import dense as apply_dense
from edgeembed.head.numpy import normalize as l2_normalize
from edgeembed.head.torch import activation_module
from edgeembed.reduce.config import StaticConfig
from edgeembed.reduce.pca import PcaHead, fit_pca
from edgeembed.reduce.student import SentenceModel, torch
from edgeembed.tokenization import Batch, TextTokenizer
from edgeembed.yardstick import within

STATIC_MAX_SEQ_LENGTH = 512
TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


Dense = tuple[np.ndarray, np.ndarray | None, str]  # weight (out, in), bias, activation name
Embedder = Callable[[Sequence[str]], np.ndarray]  # texts -> normalized embeddings


@dataclass(frozen=True)
class StaticModel:
    """The table (vocab, dim) float32, the Dense layers after the mean (none for a plain static model) and
    how it was made."""

    embeddings: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)
    dense: tuple[Dense, ...] = ()

    def embed(self, tokenizer: TextTokenizer, texts: Sequence[str]) -> np.ndarray:
        """Reference encoder of the whole model: mean of token rows, the Dense layers, normalized."""
        return static_embed(self.embeddings, self.dense, tokenizer, texts)


def extend_vocabulary(
    tokenizer_json: str, texts: Sequence[str], n: int, min_count: int, first_id: int
) -> tuple[str, list[str]]:
    """A WordPiece vocabulary plus the `n` most frequent whole words of `texts` (seen at least `min_count`
    times) that it splits into pieces; they take ids from `first_id` on (the table's row count).

    Why: a static model is a context-free mean, and its held-out agreement with the teacher stops rising
    from the table's capacity, not its training (bench/REDUCE.md). A word of its own gets the vector the
    teacher gives the whole word instead of the mean of its pieces. WordPiece matches the longest vocabulary
    entry first, so a whole word in the vocabulary is taken whole by the same tokenizer everywhere (the
    Encoder, sentence-transformers' StaticEmbedding, the mobile graph). Other tokenizer models are returned
    unchanged (no words added): for BPE and Unigram an added entry is not picked by the algorithm itself."""
    from tokenizers import Tokenizer

    cfg = json.loads(tokenizer_json)
    model = cfg.get("model") or {}
    if n <= 0 or model.get("type") != "WordPiece" or not texts:
        return tokenizer_json, []
    tok = Tokenizer.from_str(tokenizer_json)
    normalizer, pre = tok.normalizer, tok.pre_tokenizer
    counts: Counter[str] = Counter()
    for text in texts:
        s = normalizer.normalize_str(text) if normalizer is not None else text
        counts.update(
            w for w, _ in (pre.pre_tokenize_str(s) if pre is not None else [(w, None) for w in s.split()])
        )
    vocab: dict[str, int] = model["vocab"]
    prefix = model.get("continuing_subword_prefix") or "##"
    longest = int(model.get("max_input_chars_per_word") or 100)
    words = [
        w
        for w, c in counts.most_common()
        if c >= min_count and len(w) > 1 and w not in vocab and not w.startswith(prefix) and len(w) <= longest
    ][:n]
    first_id = max(first_id, max(vocab.values(), default=-1) + 1)
    vocab.update({w: first_id + i for i, w in enumerate(words)})
    return json.dumps(cfg, ensure_ascii=False), words


def table_rows(teacher: SentenceModel) -> int:
    """Rows of the teacher's token-embedding matrix: the static table's base vocabulary."""
    return int(teacher.transformer.get_input_embeddings().weight.shape[0])


def token_vectors(
    teacher: SentenceModel, tokenizer: TextTokenizer, batch: int = 512, words: Sequence[str] = ()
) -> np.ndarray:
    """Each vocabulary token as the teacher sees it alone: [CLS] token [SEP] through the model's head,
    before normalization; then each of `words` (added to the vocabulary) as the teacher reads that word."""
    vocab_size = table_rows(teacher)
    probe = tokenizer.encode(["a"])[0]
    special = [i for i, m in zip(probe.ids, probe.special_tokens_mask) if m]
    bos, eos = (special[0], special[-1]) if len(special) >= 2 else (None, None)

    def token_batch(start: int) -> Batch:
        ids = np.arange(start, min(start + batch, vocab_size), dtype=np.int64)[:, None]
        if bos is not None:
            ids = np.concatenate([np.full_like(ids, bos), ids, np.full_like(ids, eos)], axis=1)
        return Batch(ids, np.ones_like(ids), np.zeros_like(ids))

    batches = [token_batch(start) for start in range(0, vocab_size, batch)]
    batches += [tokenizer(list(words[start : start + batch])) for start in range(0, len(words), batch)]
    teacher.eval()
    rows = []
    with torch.inference_mode():
        for b in batches:
            inputs = {k: torch.from_numpy(v) for k, v in b.as_inputs(TEACHER_INPUTS).items()}
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
    return l2_normalize(out, inplace=True) if normalize else out


def static_embed(
    table: np.ndarray, dense: Sequence[Dense], tokenizer: TextTokenizer, texts: Sequence[str]
) -> np.ndarray:
    """mean_embed, then each Dense layer (as sentence-transformers' Dense applies it), then normalized."""
    if not dense:
        return mean_embed(table, tokenizer, list(texts))
    x = mean_embed(table, tokenizer, list(texts), normalize=False)
    for weight, bias, activation in dense:
        x = apply_dense(x, weight, bias, activation, blas=True)  # no runtime pool beside it
    return l2_normalize(x, inplace=True)


def build_static(
    teacher: SentenceModel,
    tokenizer: TextTokenizer,
    plain_tokenizer: TextTokenizer,
    config: StaticConfig,
    pca_embeddings: np.ndarray | None,
    freq_texts: list[str] | None,
    train: tuple[list[str], np.ndarray] | None,
    evaluate: Callable[[Embedder], float] | None,
    seed: int,
    show_progress: bool = False,
    holdout: tuple[list[str], np.ndarray] | None = None,
    words: Sequence[str] = (),
) -> StaticModel:
    """`tokenizer` adds special tokens (for the teacher); `plain_tokenizer` does not (for the table).
    `pca_embeddings`: teacher sentence embeddings that define the PCA basis (else the token vectors do).
    `evaluate(embed) -> score` (STS dev) is recorded per epoch; the best epoch is the one of highest
    agreement with the teacher on `holdout` (texts never trained on, their teacher embeddings) when
    given and `config.select` is "agreement", else of highest `evaluate`. `words`: whole words added to
    `plain_tokenizer`'s vocabulary after the teacher's (extend_vocabulary), in id order."""
    vectors = token_vectors(teacher, tokenizer, config.token_batch, words)
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
        "head_width": config.head_width,
        "vocab_size": vocab_size,
        "words_added": len(words),
        "words_added_first": list(words[:20]),
        "pca_explained_variance": None if pca is None else pca.explained_variance,
        "frequencies_from_texts": len(freq_texts or []),
    }
    agree = None
    if holdout is not None:
        h_texts = holdout[0]
        ref = l2_normalize(holdout[1] if pca is None else _project(holdout[1], pca))  # once, not per epoch

        def agree(embed: Embedder) -> dict[str, float]:
            emb = embed(h_texts)
            y = within(ref, emb, n_queries=min(256, len(emb)))
            return {"agreement": float((emb * ref).sum(1).mean()), "recall": y.recall_at_k}

    if evaluate is not None:
        record["sts_dev_untrained"] = evaluate(lambda t: mean_embed(table, plain_tokenizer, list(t)))
    dense: tuple[Dense, ...] = ()
    if train is not None and config.train_epochs > 0:
        texts, targets = train
        if pca is not None:
            targets = _project(targets, pca)
        table, dense, curve, best_epoch = _tune(
            table, plain_tokenizer, texts, targets, config, evaluate, seed, show_progress, agree
        )
        record["training"] = {
            "texts": len(texts),
            "holdout_texts": 0 if holdout is None else len(holdout[0]),
            "selected_by": "agreement on held-out texts" if _by_agreement(config, agree) else "sts dev",
            "best_epoch": best_epoch,
            "curve": curve,
        }
    return StaticModel(table.astype(np.float32), record, dense)


def _tune(
    table: np.ndarray,
    tokenizer: TextTokenizer,
    texts: list[str],
    targets: np.ndarray,
    config: StaticConfig,
    evaluate: Callable[[Embedder], float] | None,
    seed: int,
    show_progress: bool,
    agree: Callable[[Embedder], dict[str, float]] | None = None,
) -> tuple[np.ndarray, tuple[Dense, ...], list[dict[str, float]], int]:
    """Cosine loss between the model's output and the (PCA-projected) teacher embedding; SparseAdam for
    the table, Adam for the head (config.head_width); the best epoch's table and head."""
    torch.manual_seed(seed)
    bag = torch.nn.EmbeddingBag.from_pretrained(
        torch.from_numpy(table.copy()), freeze=False, mode="mean", sparse=True
    )
    optimizers: list[Any] = [torch.optim.SparseAdam(bag.parameters(), lr=config.lr)]
    head = _identity_head(table.shape[1], config) if config.head_width else None
    if head is not None:
        optimizers.append(torch.optim.Adam(head.parameters(), lr=config.head_lr))
    ids = [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode(texts)]
    keep = [i for i, x in enumerate(ids) if len(x)]
    target = torch.nn.functional.normalize(torch.from_numpy(np.asarray(targets, dtype=np.float32)), dim=-1)
    rng = np.random.default_rng(seed)
    by_agreement = _by_agreement(config, agree)

    def snapshot() -> tuple[np.ndarray, tuple[Dense, ...]]:
        t = bag.weight.detach().numpy().copy()
        if head is None:
            return t, ()
        layers = [m for m in head if isinstance(m, torch.nn.Linear)]
        acts = (config.head_activation, "identity")
        return t, tuple(
            (m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy(), a)
            for m, a in zip(layers, acts)
        )

    def measure(t: np.ndarray, dense: tuple[Dense, ...]) -> dict[str, float]:
        def embed(x: Sequence[str]) -> np.ndarray:
            return static_embed(t, dense, tokenizer, x)

        point = dict(agree(embed)) if agree is not None else {}
        if evaluate is not None:
            point["sts_dev"] = float(evaluate(embed))
        return point

    def score_of(point: dict[str, float]) -> float:
        return point["agreement"] if by_agreement else point.get("sts_dev", -np.inf)

    best_table, best_dense = snapshot()
    first = measure(best_table, best_dense)
    best, best_epoch = score_of(first), 0
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
            pooled = bag(flat, offsets)
            pred = torch.nn.functional.normalize(pooled if head is None else head(pooled), dim=-1)
            loss = (1 - (pred * target[idx]).sum(-1)).mean()
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in optimizers:
                opt.step()
            total += float(loss.detach()) * len(idx)
            if bar is not None:
                bar.update(1)
        current, dense = snapshot()
        point = {"epoch": epoch, "loss": total / len(keep), **measure(current, dense)}
        if agree is None and evaluate is None:
            best_table, best_dense, best_epoch = current, dense, epoch
        elif score_of(point) > best:
            best, best_table, best_dense, best_epoch = score_of(point), current, dense, epoch
        curve.append(point)
    if bar is not None:
        bar.close()
    return best_table, best_dense, curve, best_epoch


def _identity_head(dim: int, config: StaticConfig) -> Any:
    """Dense(dim -> hidden, activation) and Dense(hidden -> dim) that start as the identity, so training
    begins from the plain mean's agreement and only learns what the nonlinearity adds: with ReLU the first
    2 x dim units hold x and -x (relu(x) - relu(-x) = x); the rest start near zero. Other activations
    start from small random weights."""
    hidden = config.head_width
    head = torch.nn.Sequential(
        torch.nn.Linear(dim, hidden), activation_module(config.head_activation), torch.nn.Linear(hidden, dim)
    )
    with torch.no_grad():
        for layer in (head[0], head[2]):
            layer.weight.normal_(0.0, 1e-3)
            layer.bias.zero_()
        if config.head_activation == "relu" and hidden >= 2 * dim:
            eye = torch.eye(dim)
            head[0].weight[:dim] = eye
            head[0].weight[dim : 2 * dim] = -eye
            head[2].weight[:, :dim] = eye
            head[2].weight[:, dim : 2 * dim] = -eye
    return head


def _by_agreement(config: StaticConfig, agree: Callable[..., Any] | None) -> bool:
    return agree is not None and config.select == "agreement"


def _project(x: np.ndarray, pca: PcaHead) -> np.ndarray:
    y = x @ pca.weight.T
    return y if pca.bias is None else y + pca.bias
