"""The gate: one validation policy for every back-end and every step, whatever the format.

- An export is compared with the torch reference model held in the build context (per-sentence cosine,
  max abs diff) on fixed sentences from one token to past max_seq_length.
- A graph step's output is compared with the fp32 graph: cosine floors by kind (float rewrites must stay
  exact; int8 and int4 have floors that catch a broken graph), and, with an STS file, the share of the
  STS Spearman it retains (`min_retained`), the measure users care about.
- Batch invariance: each of >= 200 texts of varied length embedded alone vs inside a mixed batch of 32.
Past a tolerance it raises one exception per kind of failure (DriftError, RetentionError) with the numbers.

The STS file the policy names (`policy.sts`, the path the manifest records) is parsed once per build by
the caller (`load_policy_sts`) and passed to each check as `sts`: the gate reads no file itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeembed.encoder import Encoder
from edgeembed.errors import DriftError, InputError, RetentionError
from edgeembed.sts import StsData, load_sts, sts_score
from edgeembed.yardstick import within

# The manifest's neighbour recall@10 (edgeembed.yardstick) is measured inside the texts the gate embeds
# anyway (with an STS file, ~2,500 sentences): each of up to this many as a query over all the others.
# Cheaper and smaller than the full yardstick (1,000 queries over 50,000 corpus texts), so the numbers
# are recorded, not gated; below YARDSTICK_MIN_TEXTS texts a top-10 says nothing and none is recorded.
YARDSTICK_QUERIES = 500
YARDSTICK_MIN_TEXTS = 200

KINDS = ("float", "int8", "int4")

_BASE = [
    "",
    "a",
    "Hello!",
    "The cat sat on the mat.",
    "A man is playing a guitar on stage while the crowd sings along.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates again.",
    "¿Dónde está la biblioteca? Das Wetter ist schön. 東京は大きな都市です。",
    "Numbers 3.14159, e-mail someone@example.com, URL https://example.org/path?q=1 and #hashtags.",
    "   leading and trailing whitespace   ",
    "UPPER CASE TEXT SHOUTING ABOUT EMBEDDINGS",
]

# Source of the built-in invariance texts when no STS file is given: windows of varied length.
_PROSE = (
    "Edge devices embed text quickly when the model is small and well quantized. A phone keeps a "
    "thousand notes and finds the one you meant before you finish typing. The warehouse robot reads "
    "labels, the kiosk answers questions, and the car summarises a long message at a red light. Search "
    "works offline on a train in a tunnel. Prices fell by three percent on Monday; analysts expected "
    "worse. She played the cello in the evening while the children painted boats on the old fence. "
    "Water boils at one hundred degrees at sea level, and at less on a mountain. Please send the report "
    "by Friday, including the tables and the figures from the second quarter. Birds migrate south when "
    "the days grow short, guided by the sun, the stars and the magnetic field of the earth."
)


def validation_sentences(max_seq_length: int) -> list[str]:
    """Texts from one token to past max_seq_length, so truncation and padding are both exercised."""
    long_unit = "Edge devices embed text quickly when the model is small and well quantized. "
    return [*_BASE, long_unit * 3, long_unit * (max_seq_length // 8 + 2)]


def invariance_texts(n: int = 256, seed: int = 0) -> list[str]:
    """`n` deterministic texts of varied length (1 word to ~1.5x a 128-token window), in mixed order."""
    words = _PROSE.split()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(1, len(words)))
        start = int(rng.integers(0, len(words) - length + 1))
        out.append(" ".join(words[start : start + length]))
    return out


@dataclass(frozen=True)
class Agreement:
    """How closely candidate embeddings follow the reference, per sentence."""

    n: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    if reference.shape != candidate.shape:
        raise DriftError(f"shape mismatch: reference {reference.shape} vs candidate {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = (ref * cand).sum(axis=1) / np.maximum(norms, 1e-12)
    # Two zero vectors agree (a static model embeds an empty text as zeros): cosine 1, not 0.
    both_zero = (np.abs(ref).max(axis=1) == 0) & (np.abs(cand).max(axis=1) == 0)
    cos = np.where(both_zero, 1.0, cos)
    return Agreement(
        n=int(ref.shape[0]),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float(np.abs(ref - cand).max()),
    )


@dataclass(frozen=True)
class GatePolicy:
    """Tolerances, in one place. The int8 floors sit below what good int8 graphs reach and above what a
    broken quantization scope gives (bench/QUANT.md has both); int4 moves embeddings more without hurting
    ranking, so its floors are lower and the STS check is the real judge."""

    export_min_cosine: float = 0.9999  # back-end export vs torch
    float_min_cosine: float = 0.9999  # float rewrites (fusion) vs the fp32 graph: they reorder math only
    int8_min_cosine: float = 0.90
    int8_min_mean_cosine: float = 0.97
    # A step with a slower, closer alternative (dynamic int8 `activations="auto"`: per-row after
    # per-tensor) keeps the faster one only at this mean cosine or above (short_of_preferred).
    # Per-tensor int8 of MiniLM and its 16k-step students reaches 0.987-0.993; of a 32k-step student
    # 0.969-0.979, where it cost 0.066 neighbour recall against 0.008 per row (bench/REDUCE.md).
    int8_preferred_mean_cosine: float = 0.985
    int4_min_cosine: float = 0.75
    int4_min_mean_cosine: float = 0.90
    min_retained: float = 0.99  # STS Spearman retained vs the fp32 graph, when an STS file is given
    sts: str | None = None
    invariance_texts: int = 256
    invariance_batch: int = 32
    # A graph that claims batch invariance (static int8, per-row dynamic int8): every text alone vs
    # inside a mixed batch at least this cosine. Float reordering inside the kernels stays far above it.
    invariance_min_cosine: float = 0.9999
    # End-to-end graph (tokenizer inside): cosine vs the Encoder, one text per call, on every text whose
    # token ids match; at most this share of the STS sentences may tokenize differently.
    e2e_min_cosine: float = 0.9999
    e2e_max_token_mismatch_share: float = 0.001
    # A format conversion (.ort) must give the same numbers as its ONNX source.
    conversion_max_abs_diff: float = 1e-5

    def __post_init__(self) -> None:
        if not 0.0 < self.min_retained <= 1.0:
            raise InputError(f"min_retained must be in (0, 1], got {self.min_retained}")
        if self.invariance_texts < 1 or self.invariance_batch < 1:
            raise InputError("invariance_texts and invariance_batch must be >= 1")

    def floors(self, kind: str) -> tuple[float, float]:
        """(min cosine, min mean cosine) vs the fp32 graph for a step of this kind."""
        if kind == "float":
            return self.float_min_cosine, self.float_min_cosine
        if kind == "int8":
            return self.int8_min_cosine, self.int8_min_mean_cosine
        if kind == "int4":
            return self.int4_min_cosine, self.int4_min_mean_cosine
        raise InputError(f"unknown gate kind {kind!r}; choose from {', '.join(KINDS)}")

    def short_of_preferred(self, check: dict[str, Any]) -> str | None:
        """Why a step that passed (check_step's record) is below the preferred floor of its kind, or
        None: the build then tries the step's next alternative, if it has one."""
        if check.get("kind") == "int8" and not check["mean_cosine"] >= self.int8_preferred_mean_cosine:
            return f"mean cosine vs fp32 {check['mean_cosine']:.5f} < preferred {self.int8_preferred_mean_cosine}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_policy_sts(policy: GatePolicy) -> StsData | None:
    """The STS file the policy names, parsed (once per build; a bad file fails here, naming it)."""
    return load_sts(policy.sts) if policy.sts is not None else None


def check_export(reference: Encoder, candidate: Encoder, policy: GatePolicy, what: str) -> dict[str, Any]:
    """A back-end's graph vs the torch reference, at batch size 4 (padding inside batches exercised)."""
    sentences = validation_sentences(candidate.max_seq_length)
    ref = reference.encode(sentences, batch_size=4, normalize=False)
    agr = agreement(ref, candidate.encode(sentences, batch_size=4, normalize=False))
    if not np.isfinite(agr.min_cosine) or agr.min_cosine < policy.export_min_cosine:
        raise DriftError(
            f"{what} drifted from its reference: min cosine {agr.min_cosine:.6f} < {policy.export_min_cosine} "
            f"(mean {agr.mean_cosine:.6f}, max abs diff {agr.max_abs_diff:.3g} over {agr.n} sentences); "
            "nothing was written"
        )
    return {"reference": "torch fp32", "min_cosine_required": policy.export_min_cosine, **agr.to_dict()}


def check_step(
    reference: Encoder,
    candidate: Encoder,
    policy: GatePolicy,
    kind: str,
    what: str,
    *,
    sts: StsData | None,
) -> dict[str, Any]:
    """A step's graph vs the fp32 graph: cosine floors for its kind and, with an STS file, retention."""
    min_cos, min_mean = policy.floors(kind)
    texts = validation_sentences(candidate.max_seq_length)
    texts = list(dict.fromkeys([*texts, *(sts.sentences if sts else [])]))
    ref = reference.encode(texts, batch_size=32, normalize=False)
    cand = candidate.encode(texts, batch_size=32, normalize=False)
    agr = agreement(ref, cand)
    out: dict[str, Any] = {
        "reference": "fp32 graph",
        "kind": kind,
        **agr.to_dict(),
        "min_cosine_required": min_cos,
        "min_mean_cosine_required": min_mean,
    }
    if len(texts) >= YARDSTICK_MIN_TEXTS:
        y = within(ref, cand, YARDSTICK_QUERIES)
        out["neighbour_recall"] = {
            "recall_at_k": y.recall_at_k,
            "k": y.k,
            "queries": y.queries,
            "corpus": y.corpus,
        }
    drift = []
    if not np.isfinite(agr.min_cosine) or agr.min_cosine < min_cos:
        drift.append(f"min cosine vs fp32 {agr.min_cosine:.5f} < {min_cos}")
    if not agr.mean_cosine >= min_mean:
        drift.append(f"mean cosine vs fp32 {agr.mean_cosine:.5f} < {min_mean}")
    detail = ""
    retained = None
    if sts is not None:
        fp32_sts = sts_score(sts, dict(zip(texts, ref)))
        if not fp32_sts > 0:  # nan, 0 or negative: the reference does not rank these pairs at all
            raise InputError(
                f"{sts.path}: the reference model's STS Spearman is {fp32_sts:.2f} on it, so it cannot "
                "measure what a variant retains; gate with a real STS set (e.g. sts-dev.csv)"
            )
        var_sts = sts_score(sts, dict(zip(texts, cand)))
        retained = var_sts / fp32_sts
        out.update(sts_path=str(sts.path), sts_fp32=fp32_sts, sts=var_sts, sts_retained=retained)
        out["min_retained"] = policy.min_retained
        detail = f" (STS {var_sts:.2f} vs fp32 {fp32_sts:.2f})"
    tail = f"; mean cosine {agr.mean_cosine:.5f} over {agr.n} texts; nothing was written"
    if drift:
        raise DriftError(f"{what} failed validation: {'; '.join(drift)}{detail}{tail}")
    if retained is not None and not retained >= policy.min_retained:
        raise RetentionError(
            f"{what} failed validation: STS Spearman retained {retained:.4f} < min_retained "
            f"{policy.min_retained}{detail}{tail}"
        )
    return out


def batch_invariance(
    encoder: Encoder, policy: GatePolicy, *, sts: StsData | None, required: bool = False, what: str = "graph"
) -> dict[str, Any]:
    """Cosine of each text embedded alone vs inside a mixed-length batch (the STS sentences when given,
    else built-in texts of varied length). Per-tensor dynamic int8 is not invariant: its activation
    scales are computed per batch. `required`: the graph claims invariance, so a min cosine below
    policy.invariance_min_cosine raises DriftError."""
    if sts is not None:
        texts = sts.sentences[: policy.invariance_texts]
    else:
        texts = invariance_texts(policy.invariance_texts)
    alone = encoder.encode(texts, batch_size=1, normalize=True)
    size = policy.invariance_batch
    # One encode call per chunk: the chunk is one padded batch of mixed lengths, as a corpus job makes.
    mixed = np.concatenate(
        [
            encoder.encode(texts[i : i + size], batch_size=size, normalize=True)
            for i in range(0, len(texts), size)
        ]
    )
    cos = (alone * mixed).sum(axis=1)
    out = {
        "n": len(texts),
        "batch_size": size,
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
    }
    if required:
        out["min_cosine_required"] = policy.invariance_min_cosine
        worst = int(np.argmin(cos))
        if not cos[worst] >= policy.invariance_min_cosine:
            raise DriftError(
                f"{what} is not batch invariant: a text alone vs inside a batch of {size} has cosine "
                f"{cos[worst]:.6f} < {policy.invariance_min_cosine} (mean {out['mean_cosine']:.6f} over "
                f"{len(texts)} texts; worst: {texts[worst][:60]!r}); nothing was written"
            )
    return out


def summary(v: dict[str, Any]) -> str:
    """One line for the progress output."""
    text = f"mean cosine {v['mean_cosine']:.5f}, min {v['min_cosine']:.5f}"
    if "sts" in v:
        text += f"; STS {v['sts']:.2f} vs {v['sts_fp32']:.2f} ({100 * v['sts_retained']:.2f}% retained)"
    if "neighbour_recall" in v:
        text += f"; neighbour recall@{v['neighbour_recall']['k']} {v['neighbour_recall']['recall_at_k']:.3f}"
    return text


def gate_texts(max_seq_length: int, sts: StsData | None) -> list[str]:
    """The validation sentences plus, when given, the STS sentences."""
    texts = validation_sentences(max_seq_length)
    if sts is not None:
        texts = list(dict.fromkeys([*texts, *sts.sentences]))
    return texts


def check_end_to_end(
    reference: Encoder,
    candidate: Encoder,
    texts: list[str],
    mismatched: dict[int, Any],
    policy: GatePolicy,
    what: str,
    prepare: Any = None,
    *,
    sts: StsData | None,
) -> dict[str, Any]:
    """A strings-in graph vs the Encoder on the same artifact. `mismatched` maps the index of each text
    whose in-graph token ids differ to its record; those texts are listed, not compared. `prepare` maps a
    text to what the app feeds the graph (the reference gets the same). One text per call on both sides:
    dynamic int8 depends on the batch. The allowed mismatches are a share of the STS sentences."""
    prepare = prepare or (lambda t: t)
    sts_n = len(sts.sentences) if sts is not None else 0
    allowed = int(policy.e2e_max_token_mismatch_share * sts_n)
    if len(mismatched) > allowed:
        first = next(iter(mismatched.values()))
        raise DriftError(
            f"{what}: {len(mismatched)} texts tokenize differently in the graph (allowed {allowed}); first: "
            f"{first}; nothing was written"
        )
    cos = []
    for i, text in enumerate(texts):
        if i in mismatched:
            continue
        a = reference.encode([prepare(text)], batch_size=1, normalize=True)
        b = candidate.encode([text], batch_size=1, normalize=True)
        # agreement(): two zero vectors agree (an empty text is no token for a tokenizer without
        # special tokens, e.g. Qwen3's, and pools to zeros on both sides)
        cos.append(agreement(a.reshape(1, -1), b.reshape(1, -1)).min_cosine)
    worst = min(cos) if cos else 1.0
    if not worst >= policy.e2e_min_cosine:
        raise DriftError(
            f"{what}: min cosine vs the Encoder {worst:.6f} < {policy.e2e_min_cosine} over {len(cos)} texts; "
            "nothing was written"
        )
    return {
        "texts_checked": len(texts),
        "compared": len(cos),
        "min_cosine_vs_encoder": worst,
        "min_cosine_required": policy.e2e_min_cosine,
        "token_id_mismatches": list(mismatched.values()),
    }


def check_conversion(
    reference: Encoder, candidate: Encoder, texts: list[str], policy: GatePolicy, what: str
) -> dict[str, Any]:
    """A converted graph (e.g. .ort) vs its source: the same embeddings within conversion_max_abs_diff."""
    ref = reference.encode(texts, batch_size=1)  # the model's own output (an e2e graph normalizes)
    cand = candidate.encode(texts, batch_size=1)
    diff = float(np.abs(ref - cand).max())
    if not diff <= policy.conversion_max_abs_diff:
        raise DriftError(
            f"{what}: max abs diff {diff:.3g} > {policy.conversion_max_abs_diff} vs its ONNX source; nothing was written"
        )
    return {"max_abs_diff_vs_onnx": diff, "texts": len(texts)}


def check_sentence_graph(
    reference: Encoder,
    via_encoder: Encoder,
    sentence_output: Callable[[list[str]], np.ndarray],
    texts: list[str],
    policy: GatePolicy,
    what: str,
) -> dict[str, Any]:
    """A graph with both outputs (a static model's ONNX graph, a token graph carrying its head) vs the
    artifact's own Encoder: its token embeddings pooled by the Encoder (`via_encoder`), and its
    `sentence_embedding` output (`sentence_output(texts)`, rows in order), each within
    conversion_max_abs_diff. Dynamic int8 scales each batch's activations by its own range, so the
    sentence output must come in the Encoder's batches (batch 32) to be comparable."""
    ref = reference.encode(texts, batch_size=32)
    token_path = float(np.abs(ref - via_encoder.encode(texts, batch_size=32)).max())
    sentence = sentence_output(texts)
    sentence_path = float(np.abs(ref - sentence).max())
    worst = max(token_path, sentence_path)
    if not worst <= policy.conversion_max_abs_diff:
        raise DriftError(
            f"{what}: max abs diff vs the Encoder {worst:.3g} > {policy.conversion_max_abs_diff} "
            f"(token_embeddings pooled {token_path:.3g}, sentence_embedding {sentence_path:.3g}); "
            "nothing was written"
        )
    return {
        "reference": "the artifact's Encoder (static runtime)",
        "texts": len(texts),
        "max_abs_diff_token_embeddings": token_path,
        "max_abs_diff_sentence_embedding": sentence_path,
        "max_abs_diff_allowed": policy.conversion_max_abs_diff,
    }
