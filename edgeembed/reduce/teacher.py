"""The teacher's sentence embeddings of corpus texts: computed once, cached on disk.

The cache is keyed by teacher (weights + head, and the length its input is cut at) and corpus (file
sha256 and the texts left out for evaluation, sample seed) and holds the embeddings of the first n texts
of the seeded sample, so a longer run extends a shorter one's cache. A fixed text set (the yardstick's)
is cached whole under its digest.
Embeddings are the head's output before normalization (what a PCA Dense module receives); the loss
normalizes when the model does.

The teacher runs through our own ONNX Runtime export when there are many texts (measured on MiniLM:
faster than torch eager, cosine 1.0 to it; checked on every run) and through torch otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgeembed.errors import InputError
from edgeembed.reduce.corpus import Corpus
from edgeembed.reduce.student import SentenceModel, encode
from edgeembed.source import ModelSpec
from edgeembed.tokenization import TextTokenizer

ONNX_MIN_TEXTS = 5000  # below this, exporting the teacher costs more than it saves
ONNX_MIN_COSINE = 0.9999
Embed = Callable[[Sequence[str]], np.ndarray]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeembed" / "reduce"


def teacher_sha256(spec: ModelSpec) -> str:
    """Hash of the teacher's weights and head: the part of the cache key that names the teacher."""
    h = hashlib.sha256(json.dumps(spec.head.to_dict(), sort_keys=True, default=str).encode())
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = spec.transformer_dir / name
        if p.is_file():
            with p.open("rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            break
    for d in spec.head.dense:
        for p in sorted((spec.path / d.path).glob("*")):
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def torch_embedder(model: SentenceModel, tokenizer: TextTokenizer) -> Embed:
    return lambda texts: encode(model, tokenizer, texts, batch_size=64, normalize=False)


def onnx_embedder(
    model: SentenceModel, tokenizer: TextTokenizer, spec: ModelSpec, work: Path
) -> Embed | None:
    """The teacher exported to ONNX and run by our Encoder; None when it does not match torch."""
    from edgeembed.backends import onnx as onnx_backend
    from edgeembed.context import BuildContext
    from edgeembed.encoder import Encoder
    from edgeembed.runtimes import load_runtime
    from edgeembed.torch_model import TokenEmbeddings

    # The build's ONNX back-end (dynamo export), on the teacher module held in memory.
    ctx = BuildContext(
        spec=spec,
        reference=TokenEmbeddings(model.transformer, model.input_names).eval(),
        tokenizer=tokenizer,
        root=work,
        work_dir=work,
    )
    graph = onnx_backend.export(ctx, onnx_backend.Config()).path
    runtime = load_runtime("onnxruntime", graph)
    dense = [(w.numpy(), None if b is None else b.numpy()) for w, b, _ in model.dense]
    encoder = Encoder(runtime, tokenizer, spec.head, dense)
    probe = ["", "a", "The cat sat on the mat.", "A man is playing a guitar on stage. " * 8]
    a = encoder.encode(probe, normalize=True)
    b = encode(model, tokenizer, probe, normalize=True)
    if float((a * b).sum(1).min()) < ONNX_MIN_COSINE:
        return None
    return lambda texts: encoder.encode(list(texts), batch_size=64, normalize=False)


def cached_embeddings(
    corpus: Corpus,
    n: int,
    teacher_hash: str,
    cache_dir: Path,
    make_embedder: Callable[[int], Embed],
    chunk: int = 8192,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Teacher embeddings of corpus.sample(0, n), computing only what the cache lacks.

    `make_embedder(count)` builds the embedder for `count` missing texts (so it can pick a runtime).
    Each chunk is its own file, written atomically: an interrupt loses at most one chunk.
    """
    folder = _cache_folder(cache_dir / f"{teacher_hash[:16]}-{corpus.key[:16]}-seed{corpus.seed}")
    parts: list[np.ndarray] = []
    done = 0
    for shard in sorted(folder.glob("*.npy")):
        start, _, stop = shard.stem.partition("-")
        if int(start) != done:
            break
        parts.append(np.load(shard))
        done = int(stop)
        if done >= n:
            break
    if done < n:
        texts = corpus.sample(done, n)
        embed = make_embedder(len(texts))
        for offset in range(0, len(texts), chunk):
            emb = embed(texts[offset : offset + chunk]).astype(np.float32)
            start, stop = done + offset, done + offset + len(emb)
            _save_npy(emb, folder / f"{start:09d}-{stop:09d}.npy")
            parts.append(emb)
            if progress is not None:
                progress(offset + len(emb), len(texts))  # (computed, to compute): an ETA
    return np.concatenate(parts)[:n]


def cached_text_embeddings(
    texts: Sequence[str],
    digest: str,
    teacher_hash: str,
    cache_dir: Path,
    make_embedder: Callable[[int], Embed],
) -> np.ndarray:
    """Teacher embeddings of a fixed text set (the yardstick's 51,000 texts), kept whole under the
    texts' `digest`: every run that measures against it would otherwise embed them again (minutes)."""
    path = _cache_folder(cache_dir) / f"{teacher_hash[:16]}-texts-{digest[:16]}.npy"
    if path.is_file():
        try:
            emb = np.load(path)
        except (OSError, ValueError):  # a damaged file is recomputed, never trusted
            emb = None
        if emb is not None and emb.shape[0] == len(texts):
            return emb
    emb = make_embedder(len(texts))(texts).astype(np.float32)
    _save_npy(emb, path)
    return emb


def _save_npy(array: np.ndarray, path: Path) -> None:
    """Written beside `path` and renamed into place: a kill or a full disk never leaves half a file
    under a name the cache would read back (the temporary is removed on failure)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    except OSError as exc:
        raise _cache_error(path.parent, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _cache_error(path.parent, exc) from exc
        raise


def _cache_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cache_error(folder, exc) from exc
    return folder


def _cache_error(folder: Path, exc: OSError) -> InputError:
    """A cache that cannot be written (read-only, full disk, a file in the way) is one line, not a
    traceback; nothing under its names is half-written."""
    return InputError(
        f"cannot write the teacher-embedding cache {folder}: {exc.strerror or exc}; "
        "point --cache-dir at a writable folder with free space"
    )
