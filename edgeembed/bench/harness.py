"""Measure variants side by side: one fresh worker process per variant and run, interleaved runs.

Every variant, ours or the peer's, goes through the same worker (`worker.py`), so the numbers are
comparable: same sentences, batch size, threads, warm-up, timers. Runs are interleaved (run 1 of every
variant, then run 2, ...) so that drift on a shared machine hits all variants alike. Quality (STS
Spearman, cosine to the fp32 reference) comes from the embeddings of the first run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.artifact import MANIFEST_NAME, read_manifest
from edgeembed.bench.machine import machine_facts
from edgeembed.errors import EdgeEmbedError
from edgeembed.head import normalize as l2_normalize
from edgeembed.sts import StsData, sts_score
from edgeembed.yardstick import CORPUS_LINES, QUERIES, SEED, neighbour_recall, read_lines, top_k

WORKER = Path(__file__).with_name("worker.py")
KINDS = ("edgeembed", "sentence-transformers")

# progress(done, total, label)
Progress = Callable[[int, int, str], None]


class BenchError(EdgeEmbedError):
    """A variant could not be measured (its worker failed) or the bench was set up wrongly."""


@dataclass(frozen=True)
class BenchConfig:
    """How every variant is measured; the same settings apply to all of them."""

    batch_size: int = 32
    threads: int = 2
    runs: int = 5
    latency_sentences: int = 200  # batch-1 latency on this many sentences, spread over the STS set
    warmup_batches: int = 2
    timeout_s: float = 3600.0
    # Neighbour recall@10 (edgeembed.yardstick): `recall_queries` seeded STS sentences searching corpus
    # lines [start, stop) of `recall_corpus` (`recall_docs` of them, seeded, when set), each variant vs
    # `recall_reference` (a variant's name) or else its group's fp32 reference. No corpus: no column.
    recall_corpus: str | None = None
    recall_lines: tuple[int, int] = CORPUS_LINES
    recall_docs: int | None = None
    recall_queries: int = QUERIES
    recall_reference: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "threads", "runs", "latency_sentences"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.recall_docs is not None and self.recall_docs <= 10:
            # Fewer than 11 docs: a top-10 is most of them, the recall says nothing.
            raise BenchError(f"recall_docs must be > 10, got {self.recall_docs}")


@dataclass(frozen=True)
class Variant:
    """One thing to measure: an edgeembed artifact, or a sentence-transformers model folder + backend.

    `source` groups variants of the same model; within a group, quality is compared with the variant
    marked `reference` (the fp32 one). `python` runs the worker under another interpreter (the peer's
    venv). `files` limits "size on disk" to what this variant loads (None: every file of the folder).
    """

    name: str
    path: Path
    kind: str = "edgeembed"
    description: str = ""
    backend: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    python: str | None = None
    peer: bool = False
    source: str | None = None
    reference: bool = False
    files: tuple[str, ...] | None = None
    # sentence-transformers only: torch's intra-op threads (None: the bench's thread count). With
    # backend onnx/openvino torch's pool still exists and competes with the runtime's on few cores.
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BenchError(f"variant {self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def from_artifact(cls, path: str | Path, name: str | None = None) -> Variant:
        """Describe an edgeembed artifact from its manifest; fp32 without optimization is a reference."""
        root = Path(path).expanduser().absolute()
        m = read_manifest(root)
        extras = []
        if m.optimization and m.optimization.get("applied", True):
            extras.append(str(m.optimization.get("level") or m.optimization.get("name") or "optimized"))
        if m.quantization:
            extras.append(str(m.quantization.get("preset") or m.quantization.get("mode") or "quantized"))
            if m.quantization.get("activations") == "row":
                extras.append("per-row activation scales")
        if m.runtime_options.get("precision"):
            extras.append(f"{m.runtime_options['precision']} inference")
        desc = f"{m.runtime} {m.precision}" + (f" ({', '.join(extras)})" if extras else "")
        return cls(
            name=name or root.name,
            path=root,
            description=desc,
            source=str(m.source.get("weights_sha256") or m.source.get("path") or root),
            reference=m.precision == "fp32"
            and not (m.quantization or m.runtime_options)
            and not (m.optimization and m.optimization.get("applied", True)),
            files=(*m.files, MANIFEST_NAME),
        )

    def size_bytes(self) -> int:
        if self.files is not None:
            return sum((self.path / f).stat().st_size for f in self.files if (self.path / f).is_file())
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class VariantResult:
    """Aggregated numbers for one variant (medians over runs unless named otherwise)."""

    name: str
    description: str
    kind: str
    peer: bool
    path: str
    runs: int
    throughput: float  # sentences/s at the batch size, median over runs
    throughput_min: float
    throughput_max: float
    throughput_spread_pct: float  # (max - min) / median
    latency_p50_ms: float  # batch 1, all runs pooled
    latency_p95_ms: float
    cold_start_s: float  # process start -> first embedding, median
    cold_start_min_s: float
    cold_start_interpreter_s: float  # of which: interpreter + numpy up to the model import
    cold_start_load_s: float  # library imports + model load
    cold_start_first_call_s: float  # the first embedding itself
    peak_rss_mb: float  # median over runs
    rss_at_first_embedding_mb: float
    size_mb: float
    sts_spearman: float  # x100, cosine vs gold
    reference: str | None  # the fp32 variant quality is compared with
    sts_retained_pct: float | None
    cosine_to_reference_mean: float | None
    cosine_to_reference_min: float | None
    torch_loaded: bool
    versions: dict[str, str]
    recall_at_10: float | None = None  # vs `recall_reference`, or the group's reference
    recall_reference: str | None = None


@dataclass(frozen=True)
class VariantFailure:
    """A variant that has no numbers: `stage` "not run" (this install or these inputs cannot make it),
    "export" or "measure" (it raised: the bench exits non-zero)."""

    name: str
    stage: str
    error: str

    @property
    def failed(self) -> bool:
        return self.stage != "not run"


@dataclass(frozen=True)
class Report:
    machine: dict[str, Any]
    config: BenchConfig
    sts: dict[str, Any]
    results: tuple[VariantResult, ...]
    notes: tuple[str, ...] = ()
    failures: tuple[VariantFailure, ...] = ()

    @property
    def failed(self) -> tuple[VariantFailure, ...]:
        return tuple(f for f in self.failures if f.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "config": asdict(self.config),
            "sts": self.sts,
            "results": [asdict(r) for r in self.results],
            "notes": list(self.notes),
            "failures": [asdict(f) for f in self.failures],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        """Read back report.json (to re-render it); fields a older report lacks become NaN."""
        names = [f.name for f in fields(VariantResult)]
        optional = {"recall_at_10", "recall_reference"}  # absent from reports made before the column
        results = tuple(
            VariantResult(**{k: r.get(k, None if k in optional else float("nan")) for k in names})
            for r in d["results"]
        )
        failures = tuple(VariantFailure(**f) for f in d.get("failures", ()))
        return cls(
            d["machine"], BenchConfig(**d["config"]), d["sts"], results, tuple(d.get("notes", ())), failures
        )

    def result(self, name: str) -> VariantResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)


def latency_indices(n_sentences: int, k: int) -> list[int]:
    """A fixed, evenly spread subset, so short and long sentences are both in it."""
    k = min(k, n_sentences)
    return sorted({int(i) for i in np.linspace(0, n_sentences - 1, k)})


def _import_path() -> str:
    import edgeembed

    return str(Path(edgeembed.__file__).resolve().parent.parent)


def _child_env(threads: int) -> dict[str, str]:
    """The worker's environment: same thread caps for every library, and never the network."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[key] = str(threads)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    return env


def _run_worker(
    variant: Variant,
    common: dict[str, Any],
    tmp: Path,
    tag: str,
    save_embeddings: bool,
    cfg: BenchConfig,
    save_recall: bool = True,
) -> dict[str, Any]:
    job = {
        **common,
        "kind": variant.kind,
        "path": str(variant.path),
        "backend": variant.backend,
        "model_kwargs": dict(variant.model_kwargs),
        "torch_threads": variant.torch_threads,
        "result": str(tmp / f"{tag}.result.json"),
        "embeddings": str(tmp / f"{tag}.npy") if save_embeddings else None,
        "recall_embeddings": str(tmp / f"{tag}.recall.npy") if save_embeddings and save_recall else None,
    }
    job_path = tmp / f"{tag}.job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    cmd = [variant.python or sys.executable, str(WORKER), str(job_path)]
    t0 = time.time()
    try:
        proc = subprocess.run(
            [*cmd, repr(t0)],
            env=_child_env(cfg.threads),
            capture_output=True,
            text=True,
            timeout=cfg.timeout_s,
            cwd=tmp,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"variant {variant.name}: worker timed out after {cfg.timeout_s:.0f} s") from None
    except OSError as exc:
        raise BenchError(f"variant {variant.name}: cannot start {cmd[0]}: {exc}") from None
    if proc.returncode != 0:
        tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-3:])
        raise BenchError(f"variant {variant.name}: worker failed (exit {proc.returncode}): {tail}")
    return json.loads(Path(job["result"]).read_text(encoding="utf-8"))


def same_output(a: Variant, b: Variant) -> bool:
    """Whether two variants compute the same embeddings (up to float rounding): the same model, runtime and
    settings, differing at most in torch's own thread pool, which edgeembed never uses and the onnx and
    openvino back-ends run only pooling on. The recall column's corpus pass (a minute or more per variant)
    then runs once for both."""
    return (
        (a.kind, a.path, a.backend, a.python) == (b.kind, b.path, b.backend, b.python)
        and json.dumps(dict(a.model_kwargs), sort_keys=True, default=str)
        == json.dumps(dict(b.model_kwargs), sort_keys=True, default=str)
        and (a.torch_threads == b.torch_threads or a.kind == "edgeembed" or a.backend in ("onnx", "openvino"))
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (l2_normalize(a) * l2_normalize(b)).sum(axis=1)


def _references(variants: Sequence[Variant]) -> dict[str, int]:
    """Group key -> index of its reference: the first variant marked `reference` in that group."""
    refs: dict[str, int] = {}
    for i, v in enumerate(variants):
        if v.reference and v.source is not None:
            refs.setdefault(v.source, i)
    return refs


def _unique_names(variants: Sequence[Variant]) -> None:
    seen: set[str] = set()
    for v in variants:
        if v.name in seen:
            raise BenchError(f"two variants are named {v.name!r}; names must be unique")
        seen.add(v.name)


def run_bench(
    variants: Sequence[Variant],
    sts: StsData,
    config: BenchConfig = BenchConfig(),
    progress: Progress | None = None,
    notes: Sequence[str] = (),
    failures: Sequence[VariantFailure] = (),
) -> Report:
    """Measure every variant `config.runs` times, interleaved, and aggregate into a Report.

    A variant whose worker fails is recorded in `Report.failures` with its error (and measured no
    further); the others go on."""
    if not variants:
        raise BenchError("nothing to benchmark: give at least one variant")
    _unique_names(variants)
    if config.recall_reference is not None and config.recall_reference not in {v.name for v in variants}:
        raise BenchError(f"--recall-reference {config.recall_reference!r} is not one of the variants")
    for v in variants:
        if not v.path.exists():
            raise BenchError(f"variant {v.name}: {v.path} does not exist")
    load_start = _loadavg()
    sentences = sts.sentences
    lat_idx = latency_indices(len(sentences), config.latency_sentences)
    total = config.runs * len(variants)
    raw: list[list[dict[str, Any]]] = [[] for _ in variants]
    embeddings: dict[int, np.ndarray] = {}
    recall_docs = _recall_docs(config)
    recall_emb: dict[int, np.ndarray] = {}
    failed: dict[int, VariantFailure] = {}
    with tempfile.TemporaryDirectory(prefix="edgeembed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sentences_file = tmp / "sentences.json"
        sentences_file.write_text(json.dumps(sentences), encoding="utf-8")
        common = {
            "sentences": str(sentences_file),
            "latency_indices": lat_idx,
            "batch_size": config.batch_size,
            "threads": config.threads,
            "warmup_batches": config.warmup_batches,
            "import_path": _import_path(),
        }
        if recall_docs:
            (tmp / "recall.json").write_text(json.dumps(recall_docs), encoding="utf-8")
            common["recall_texts"] = str(tmp / "recall.json")
        done = 0
        for run in range(config.runs):
            for i, v in enumerate(variants):
                done += 1
                if i in failed:
                    continue
                if progress:
                    progress(done - 1, total, f"run {run + 1}/{config.runs}: {v.name}")
                twin = next((j for j in recall_emb if same_output(variants[j], v)), None)
                try:
                    raw[i].append(
                        _run_worker(
                            v, common, tmp, f"v{i}-r{run}", run == 0, config, save_recall=twin is None
                        )
                    )
                    if run == 0:
                        embeddings[i] = np.load(tmp / f"v{i}-r0.npy")
                        if recall_docs:
                            recall_emb[i] = (
                                recall_emb[twin] if twin is not None else np.load(tmp / f"v{i}-r0.recall.npy")
                            )
                        if embeddings[i].shape[0] != len(sentences):
                            raise BenchError(
                                f"variant {v.name}: {embeddings[i].shape[0]} embeddings for {len(sentences)} sentences"
                            )
                except BenchError as exc:
                    failed[i] = VariantFailure(v.name, "measure", str(exc))
        if progress:
            progress(done, total, "done")

    refs = {k: i for k, i in _references([v for v in variants]).items() if i not in failed}
    spearman = {i: sts_score(sts, e) for i, e in embeddings.items() if i not in failed}
    recall = _recalls(variants, refs, embeddings, recall_emb, failed, config)
    results = []
    for i, v in enumerate(variants):
        if i in failed:
            continue
        runs = raw[i]
        tput = np.array([r["throughput"] for r in runs])
        lat = np.concatenate([r["latencies_s"] for r in runs]) * 1000.0
        ref = refs.get(v.source) if v.source is not None else None
        retained = cos_mean = cos_min = None
        if ref is not None:
            retained = 100.0 * spearman[i] / spearman[ref]
        if ref is not None and embeddings[i].shape == embeddings[ref].shape:  # not for a smaller dim (PCA)
            cos = _cosines(embeddings[i].astype(np.float64), embeddings[ref].astype(np.float64))
            cos_mean, cos_min = float(cos.mean()), float(cos.min())
        med = float(np.median(tput))
        results.append(
            VariantResult(
                name=v.name,
                description=v.description,
                kind=v.kind,
                peer=v.peer,
                path=str(v.path),
                runs=len(runs),
                throughput=med,
                throughput_min=float(tput.min()),
                throughput_max=float(tput.max()),
                throughput_spread_pct=float(100.0 * (tput.max() - tput.min()) / med),
                latency_p50_ms=float(np.percentile(lat, 50)),
                latency_p95_ms=float(np.percentile(lat, 95)),
                cold_start_s=float(np.median([r["cold_start_s"] for r in runs])),
                cold_start_min_s=float(min(r["cold_start_s"] for r in runs)),
                cold_start_interpreter_s=float(np.median([r["startup_s"] for r in runs])),
                cold_start_load_s=float(np.median([r["load_s"] for r in runs])),
                cold_start_first_call_s=float(np.median([r["first_embedding_s"] for r in runs])),
                peak_rss_mb=float(np.median([r["peak_rss_mb"] for r in runs])),
                rss_at_first_embedding_mb=float(np.median([r["rss_at_first_embedding_mb"] for r in runs])),
                size_mb=v.size_bytes() / 1e6,
                sts_spearman=spearman[i],
                reference=variants[ref].name if ref is not None else None,
                sts_retained_pct=retained,
                cosine_to_reference_mean=cos_mean,
                cosine_to_reference_min=cos_min,
                torch_loaded=any(r["torch_loaded"] for r in runs),
                versions=runs[0]["versions"],
                recall_at_10=recall.get(i, (None, None))[0],
                recall_reference=recall.get(i, (None, None))[1],
            )
        )
    all_notes = list(notes)
    grouped = {v.source for v in variants if v.source is not None}
    for key in sorted(grouped - set(refs)):
        names = ", ".join(v.name for v in variants if v.source == key)
        all_notes.append(f"no fp32 reference among {names}: STS retained and cosine are left empty")
    sts_info = {"path": str(sts.path), "pairs": len(sts.scores), "unique_sentences": len(sentences)}
    machine = {
        **machine_facts(config.threads),
        "load_average_start": load_start,
        "load_average_end": _loadavg(),
    }
    return Report(machine, config, sts_info, tuple(results), tuple(all_notes), (*failures, *failed.values()))


def _recall_docs(config: BenchConfig) -> list[str]:
    if config.recall_corpus is None:
        return []
    docs = read_lines(config.recall_corpus, *config.recall_lines)
    if config.recall_docs is not None and config.recall_docs < len(docs):
        rng = np.random.default_rng(SEED)
        docs = [docs[i] for i in sorted(rng.permutation(len(docs))[: config.recall_docs])]
    if len(docs) <= 10:
        raise BenchError(
            f"--recall-corpus {config.recall_corpus}: {len(docs)} texts in the lines asked; need > 10"
        )
    return docs


def _recalls(
    variants: Sequence[Variant],
    refs: dict[str, int],
    sts_emb: dict[int, np.ndarray],
    doc_emb: dict[int, np.ndarray],
    failed: Mapping[int, VariantFailure],
    config: BenchConfig,
) -> dict[int, tuple[float, str]]:
    """Variant index -> (neighbour recall@10 vs its reference, the reference's name)."""
    if not doc_emb:
        return {}
    names = [v.name for v in variants]
    fixed = None
    if config.recall_reference is not None:
        if config.recall_reference not in names:
            raise BenchError(f"--recall-reference {config.recall_reference!r} is not one of the variants")
        fixed = names.index(config.recall_reference)
        if fixed in failed:
            return {}
    n = len(next(iter(sts_emb.values())))
    qi = np.sort(np.random.default_rng(SEED).permutation(n)[: config.recall_queries])
    tops = {i: top_k(sts_emb[i][qi], doc_emb[i]) for i in doc_emb if i not in failed}
    out = {}
    for i, v in enumerate(variants):
        ref = fixed if fixed is not None else (refs.get(v.source) if v.source is not None else None)
        if i in tops and ref is not None and ref in tops:
            out[i] = (neighbour_recall(tops[ref], tops[i]), names[ref])
    return out


def _loadavg() -> float | None:
    """1-minute load average: how busy the machine was (other work skews timings)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None
