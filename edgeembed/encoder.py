"""The Encoder: text in, embeddings out, for any artifact and runtime. No torch on this path."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from edgeembed._progress import progress_bar
from edgeembed.artifact import Manifest, read_manifest, verify_files
from edgeembed.errors import ArtifactError, EdgeEmbedError, InputError
from edgeembed.pooling import dense, pool
from edgeembed.pooling import normalize as l2_normalize
from edgeembed.runtimes import EXTRAS, Runtime, RuntimeOptions, load_runtime
from edgeembed.source import Head
from edgeembed.tokenization import Batch, TextTokenizer

TOKENIZER_FILE = "tokenizer.json"


def _load_dense(root: Path, head: Head) -> list[tuple[np.ndarray, np.ndarray | None]]:
    from safetensors.numpy import load_file

    layers = []
    for d in head.dense:
        path = root / d.path / "model.safetensors"
        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise ArtifactError(f"cannot read Dense weights {path}: {exc}") from None
        weight = tensors["linear.weight"].astype(np.float32)
        bias = tensors["linear.bias"].astype(np.float32) if d.bias else None
        if weight.shape != (d.out_features, d.in_features):
            raise ArtifactError(
                f"Dense weights {path} have shape {weight.shape}, expected {(d.out_features, d.in_features)}"
            )
        layers.append((weight, bias))
    return layers


def _check_texts(texts: object) -> list[str]:
    if texts is None or isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    items = list(texts)  # type: ignore[call-overload]
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return items


class Encoder:
    """Tokenize -> runtime -> pool -> Dense -> normalize, batched by length, results in input order."""

    def __init__(
        self,
        runtime: Runtime,
        tokenizer: TextTokenizer,
        head: Head,
        dense_layers: list[tuple[np.ndarray, np.ndarray | None]] | None = None,
        manifest: Manifest | None = None,
        path: Path | None = None,
    ) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.head = head
        self.manifest = manifest
        self.path = path
        self._dense = dense_layers or []
        if len(self._dense) != len(head.dense):
            raise ValueError("one (weight, bias) pair is needed per Dense module")

    @classmethod
    def load(
        cls,
        path: str | Path,
        runtime: str | None = None,
        threads: int | None = None,
        verify: bool = True,
        options: RuntimeOptions | None = None,
    ) -> Encoder:
        """Open an artifact folder. Checks format version and (unless verify=False) every checksum."""
        root = Path(path).expanduser()
        manifest = read_manifest(root)
        if verify:
            verify_files(root, manifest)
        if manifest.quantization:
            from edgeembed.quantize import check_isa

            check_isa(manifest.quantization, root)
        name = runtime or manifest.runtime
        if options is not None and threads is not None and options.threads != threads:
            raise InputError("pass threads either directly or inside options, not both")
        opts = _merge_options(manifest.runtime_options, options or RuntimeOptions(threads=threads))
        try:
            rt = load_runtime(name, root / manifest.graph, opts)
        except ImportError as exc:
            extra = EXTRAS.get(name, name)
            raise EdgeEmbedError(
                f'the artifact {root} needs the {name} runtime: pip install "edgeembed[{extra}]" ({exc})'
            ) from None
        tokenizer = TextTokenizer.from_file(
            root / TOKENIZER_FILE, manifest.head.max_seq_length, manifest.head.do_lower_case
        )
        return cls(rt, tokenizer, manifest.head, _load_dense(root, manifest.head), manifest, root)

    @property
    def dim(self) -> int:
        return self.head.dim

    @property
    def max_seq_length(self) -> int:
        return self.head.max_seq_length

    def _prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None and prompt_name is not None:
            raise InputError("pass prompt or prompt_name, not both")
        if prompt is not None:
            return prompt
        name = prompt_name or self.head.default_prompt_name
        if name is None:
            return ""
        if name not in self.head.prompts:
            raise InputError(f"unknown prompt_name {name!r}; this model has {sorted(self.head.prompts)}")
        return self.head.prompts[name]

    def encode(
        self,
        texts: Sequence[str] | str,
        batch_size: int = 32,
        normalize: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed texts: float32 (n, dim) in input order; a single str gives shape (dim,).

        `normalize=None` follows the model (its Normalize module); True/False forces it.
        A text holding a lone surrogate (e.g. '\\ud800') raises InputError naming its index: it is not
        valid Unicode, and it is never silently replaced.
        """
        single = isinstance(texts, str)
        items = [texts] if single else _check_texts(texts)
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        prefix = self._prompt(prompt_name, prompt)
        prompt_length = 0
        if prefix:
            items = [prefix + t for t in items]
            if not self.head.include_prompt:
                prompt_length = self.tokenizer.prompt_length(prefix)
        do_norm = self.head.normalize if normalize is None else normalize

        try:
            encodings = self.tokenizer.encode(items)
        except (TypeError, UnicodeEncodeError):
            _raise_unencodable(items, len(prefix))
            raise
        # Longest first, as sentence-transformers does, so that padding per batch is minimal.
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        batches = (self.tokenizer.pad([encodings[i] for i in idx]) for idx in chunks)
        progress = progress_bar(len(items), show_progress, unit="text", desc="encode")
        for idx, (batch, tokens) in zip(chunks, self._run(batches)):
            emb = pool(self.head.pooling, tokens, batch.attention_mask, prompt_length)
            for (weight, bias), spec in zip(self._dense, self.head.dense):
                emb = dense(emb, weight, bias, spec.activation)
            out[idx] = l2_normalize(emb) if do_norm else emb
            if progress is not None:
                progress.update(len(idx))
        if progress is not None:
            progress.close()
        return out[0] if single else out

    def _run(self, batches: Iterator[Batch]) -> Iterator[tuple[Batch, np.ndarray]]:
        """(batch, token embeddings) in order; a runtime with `run_many` gets the whole stream so it
        can keep several batches in flight (OpenVINO throughput streams)."""
        names = self.runtime.input_names
        run_many = getattr(self.runtime, "run_many", None)
        if run_many is None:
            for batch in batches:
                yield batch, self.runtime.run(batch.as_inputs(names))
            return
        in_flight: deque[Batch] = deque()

        def feed() -> Iterator[dict[str, np.ndarray]]:
            for batch in batches:
                in_flight.append(batch)
                yield batch.as_inputs(names)

        for tokens in run_many(feed()):
            yield in_flight.popleft(), tokens

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise scores between rows of a and b with the model's similarity function."""
        a2, b2 = np.atleast_2d(a).astype(np.float32), np.atleast_2d(b).astype(np.float32)
        fn = self.head.similarity_fn
        if fn == "cosine":
            return l2_normalize(a2) @ l2_normalize(b2).T
        if fn == "dot":
            return a2 @ b2.T
        if fn == "euclidean":
            return -np.linalg.norm(a2[:, None, :] - b2[None, :, :], axis=-1)
        if fn == "manhattan":
            return -np.abs(a2[:, None, :] - b2[None, :, :]).sum(axis=-1)
        raise InputError(f"unknown similarity function {fn!r}")

    def __repr__(self) -> str:
        where = f"{self.path}, " if self.path else ""
        return f"Encoder({where}runtime={type(self.runtime).__name__}, dim={self.dim})"


def _raise_unencodable(items: list[str], prefix_length: int) -> None:
    """Name the text (and character) the tokenizer cannot take: a lone surrogate is not Unicode text."""
    for i, text in enumerate(items):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            pos = exc.start - prefix_length
            raise InputError(
                f"texts[{i}] holds a lone surrogate {text[exc.start]!r} at character {pos}, which is not "
                "valid Unicode text; fix the source, or replace it: text.encode('utf-8', 'replace').decode()"
            ) from None


def _merge_options(defaults: dict, given: RuntimeOptions) -> RuntimeOptions:
    """The caller's settings win; the ones it leaves None come from the artifact (what it was validated
    with, e.g. OpenVINO bf16)."""
    known = {f.name for f in fields(RuntimeOptions)}
    base = RuntimeOptions(**{k: v for k, v in defaults.items() if k in known})
    return replace(
        base, **{f.name: getattr(given, f.name) for f in fields(given) if getattr(given, f.name) is not None}
    )
