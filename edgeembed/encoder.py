"""The Encoder: text in, embeddings out, for any artifact and runtime. No torch on this path."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Mapping, MappingView, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import fields, replace
from numbers import Integral
from pathlib import Path
from types import TracebackType
from typing import Generic, TypeVar

import numpy as np

from edgeembed._progress import progress_bar
from edgeembed.artifact import (
    ArtifactGraph,
    Manifest,
    artifact_path,
    check_tree,
    position_limit,
    read_manifest,
    verify_files,
)
from edgeembed.errors import ArtifactError, InputError
from edgeembed.head import SENTENCE_OUTPUT, HeadModel, PoolingMode, pool_tokens, project
from edgeembed.head import normalize as l2_normalize
from edgeembed.isa import check_isa
from edgeembed.runtimes import REGISTRY as RUNTIMES
from edgeembed.runtimes import (
    Runtime,
    RuntimeOptions,
    capabilities_of,
    declared_capabilities,
    load_runtime,
)
from edgeembed.source import Head
from edgeembed.tokenization import Batch, TextTokenizer

TOKENIZER_FILE = "tokenizer.json"
# Padded tokens (rows x longest) a batch may hold by default: batch 32 of texts up to 16 tokens runs
# unchanged, a batch of longer texts is cut smaller, so the runtime's working memory (which ONNX Runtime's
# arena keeps at its peak, and which grows with the padded tokens of a batch) stays bounded by the budget
# instead of by batch_size x max_seq_length. A larger budget buys no speed once a batch fills the cores,
# and costs memory (numbers: bench/NOTES.md).
MAX_BATCH_TOKENS = 512
# Pad the next batch in a background thread while the runtime runs the current one (`encode(prefetch=)`).
# Off by default: host work (tokenize, pad, head) is a small share of an encode, so overlapping it can win
# little, and the extra thread competes with the runtime's own for the same cores (bench/NOTES.md).
PREFETCH = False
# Name prefix of the one prefetch thread (it never outlives the encode call that started it).
PREFETCH_THREAD = "edgeembed-prefetch"

T = TypeVar("T")
R = TypeVar("R")


class Prefetch(Generic[T, R]):
    """`make(item)` for each item, in order, computed one item ahead in one background thread.

    While the caller uses result k (e.g. the runtime runs batch k, which releases the GIL), the thread
    computes result k+1. An exception in `make` is raised unchanged by the iteration that reaches it.
    Use it as a context manager: leaving the block (return, exception, KeyboardInterrupt) cancels what is
    queued and joins the thread, so no thread outlives it. `enabled=False` computes each result inline
    when asked, with no thread: the serial loop, same results in the same order.
    """

    def __init__(self, make: Callable[[T], R], items: Sequence[T], enabled: bool = True) -> None:
        self._make = make
        self._items = items
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=PREFETCH_THREAD) if enabled else None

    def __iter__(self) -> Iterator[R]:
        if self._pool is None:
            for item in self._items:
                yield self._make(item)
            return
        pool = self._pool
        items = iter(self._items)

        def submit() -> Future[R] | None:
            for item in items:
                return pool.submit(self._make, item)
            return None

        try:
            ahead = submit()
            while ahead is not None:
                result = ahead.result()  # the thread's exception, if any, is raised here
                ahead = submit()  # k+1 starts before the caller gets k
                yield result
        finally:  # exhausted, failed or closed early (generator close): the thread ends with it
            self.close()

    def close(self) -> None:
        """Cancel what is queued and wait for the thread (at most one `make` call) to end."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetch[T, R]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def check_batching(batch_size: int, max_tokens: int | None) -> None:
    """The batching arguments, checked before any work (a bad one fails with one line naming it)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"max_batch_tokens must be >= 1 (or None for no budget), got {max_tokens}")


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None, bucket_rows: bool = False
) -> list[np.ndarray]:
    """Indices of each batch, longest texts first (as sentence-transformers sorts, so padding is minimal),
    at most `batch_size` rows and, when `max_tokens` is set, at most `max_tokens` padded tokens
    (rows x the batch's longest length); a text longer than the budget still gets a batch of its own.
    `bucket_rows` rounds each batch's rows down to `batch_size` or a power of two below it, so a runtime
    that keeps memory per input shape (OpenVINO's CPU plugin) sees a few row counts, not every one the
    budget and the stream's tail would give."""
    check_batching(batch_size, max_tokens)
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    sizes = np.asarray(lengths, dtype=np.int64)[order]
    batches, start = [], 0
    while start < len(order):
        rows = batch_size
        if max_tokens is not None:
            rows = max(1, min(batch_size, max_tokens // max(int(sizes[start]), 1)))
        rows = min(rows, len(order) - start)
        if bucket_rows and rows < batch_size:
            rows = 1 << (rows.bit_length() - 1)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def load_dense(root: Path, head: Head) -> list[tuple[np.ndarray, np.ndarray | None]]:
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


def tokenizer_for(root: Path, head: Head) -> TextTokenizer:
    """The artifact's tokenizer.json set up as the head says (truncation, lower-casing, special tokens)."""
    return TextTokenizer.from_file(
        Path(root) / TOKENIZER_FILE, head.max_seq_length, head.do_lower_case, head.add_special_tokens
    )


def _check_texts(texts: object) -> list[str]:
    """The texts as a list, in the caller's order. Unordered collections (a set, a dict or its views)
    are refused: row i of the result must be text i, and they have no order to keep."""
    if isinstance(texts, (AbstractSet, Mapping, MappingView)):
        raise TypeError(
            f"texts must be a str or an ordered sequence of str (list, tuple, ...), not a {type(texts).__name__}: "
            "row i is text i, and a set has no order (pass a list, e.g. sorted(texts))"
        )
    if texts is None or isinstance(texts, (bytes, bytearray)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    items = list(texts)  # type: ignore[call-overload]
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return items


def _check_int(name: str, value: object, optional: bool = False) -> None:
    """An int argument (numpy ints too; not bool, float or str), named in the error."""
    if value is None and optional:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r:.40}")


def _check_options(
    batch_size: object, normalize: object, prompt_name: object, prompt: object, max_batch_tokens: object
) -> None:
    """Encode's arguments by type, each error naming its argument: a str `normalize` would otherwise be
    truthy, a float batch size would silently work, and an int prompt would fail deep inside."""
    _check_int("batch_size", batch_size)
    _check_int("max_batch_tokens", max_batch_tokens, optional=True)
    if normalize is not None and not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(
            f"normalize must be True, False or None, got {type(normalize).__name__} {normalize!r:.40}"
        )
    for name, value in (("prompt_name", prompt_name), ("prompt", prompt)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str or None, got {type(value).__name__} {value!r:.40}")


def prompt_prefix(head: Head, prompt_name: str | None, prompt: str | None) -> str:
    """The text put before each input: `prompt`, or the model's prompt named `prompt_name` (or its default);
    shared by the Encoder and the pools built on it so both resolve prompts the same way."""
    if prompt is not None and prompt_name is not None:
        raise InputError("pass prompt or prompt_name, not both")
    if prompt is not None:
        return prompt
    name = prompt_name or head.default_prompt_name
    if name is None:
        return ""
    if name not in head.prompts:
        raise InputError(f"unknown prompt_name {name!r}; this model has {sorted(head.prompts)}")
    return head.prompts[name]


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
        graph: ArtifactGraph | None = None,
    ) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.head = head
        self.manifest = manifest
        self.path = path
        self._dense = dense_layers or []
        if len(self._dense) != len(head.dense):
            raise ValueError("one (weight, bias) pair is needed per Dense module")
        self._head = HeadModel.from_head(head, self._dense)
        self.capabilities = capabilities_of(runtime)
        # The graph's own sentence output (the head inside the graph), when its manifest entry lists one
        # and the runtime can be asked for it by name; None: pool the token embeddings here.
        self.sentence_output: str | None = None
        self._sentence_normalized = False
        outputs = graph.details.get("outputs", []) if graph is not None else []
        if self.capabilities.named_outputs and len(outputs) > 1 and outputs[1] == SENTENCE_OUTPUT:
            self.sentence_output = SENTENCE_OUTPUT
            self._sentence_normalized = bool(graph.details.get("normalized"))  # type: ignore[union-attr]

    @classmethod
    def from_parts(
        cls,
        root: str | Path,
        runtime: Runtime,
        head: Head,
        manifest: Manifest | None = None,
        tokenizer: TextTokenizer | None = None,
        graph: ArtifactGraph | None = None,
    ) -> Encoder:
        """The one way to assemble an Encoder: a folder holding tokenizer.json (and any Dense weights),
        a runtime, and the head that turns its token embeddings into sentence embeddings. `tokenizer`:
        one already read from that folder (so it is not read twice). `graph`: the manifest entry of the
        graph the runtime runs; when it lists a gated `sentence_embedding` output, the Encoder asks for
        it instead of pooling (without it, the token path: what the gate's own checks run)."""
        root = Path(root)
        tokenizer = tokenizer or tokenizer_for(root, head)
        return cls(runtime, tokenizer, head, load_dense(root, head), manifest, root, graph)

    @classmethod
    def load(
        cls,
        path: str | Path,
        runtime: str | None = None,
        threads: int | None = None,
        verify: bool = True,
        options: RuntimeOptions | None = None,
    ) -> Encoder:
        """Open an artifact folder. Checks format version and (unless verify=False) every checksum.

        `runtime` picks the artifact graph to run: the first one validated with that runtime, else one the
        runtime can also open (e.g. "openvino" runs the ONNX graph); None runs the default graph."""
        root = Path(path).expanduser()
        manifest = read_manifest(root)
        root = root.resolve()
        # Paths are checked (inside the folder, no symlink) before anything is opened, verified or not.
        check_tree(root)
        for g in manifest.graphs:
            artifact_path(root, g.file, "graph")
        artifact_path(root, TOKENIZER_FILE, "tokenizer")
        for d in manifest.head.dense:
            artifact_path(
                root, f"{d.path}/model.safetensors" if d.path else "model.safetensors", "Dense path"
            )
        if manifest.quantization:
            check_isa(manifest.quantization, root)
        name = runtime or manifest.runtime
        if options is not None and threads is not None and options.threads != threads:
            raise InputError("pass threads either directly or inside options, not both")
        opts = _merge_options(manifest.runtime_options, options or RuntimeOptions(threads=threads))
        # A missing runtime raises MissingExtraError naming the extra to install.
        if name not in RUNTIMES:
            known = ", ".join(sorted(RUNTIMES))
            if runtime is not None:
                raise InputError(f"unknown runtime {name!r}; known: {known}")
            raise ArtifactError(
                f"{root / 'edgeembed.json'} names an unknown runtime {name!r}; known: {known}"
            )
        entry = select_graph(root, manifest, name)
        graph = artifact_path(root, entry.file, "graph")
        _check_precision(root, manifest, entry, opts)
        if (entry.input == "text") != declared_capabilities(name).takes_text:
            raise ArtifactError(
                f"{root / 'edgeembed.json'}: the graph {entry.file} takes {entry.input}, which runtime {name!r} "
                "does not (re-export the artifact)"
            )
        head = manifest.head
        # The runtime loads (ONNX Runtime and OpenVINO parse and compile in native code, without the GIL)
        # while the files are hashed and the tokenizer is read, so the two overlap instead of adding up.
        # A failed checksum still decides: its error is raised once the load has ended, the runtime dropped.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeembed-load") as pool:
            loading = pool.submit(load_runtime, name, graph, opts)
            try:
                if verify:
                    verify_files(root, manifest)
                tokenizer = tokenizer_for(root, head)  # read once: for the probe, then the Encoder
            except BaseException:
                _wait_quietly(loading)
                raise
            rt = loading.result()
        _check_limits(root, manifest)
        if entry.input == "tokens":  # a strings-in graph has no token inputs to probe
            _check_graph(root, graph, rt, tokenizer, manifest, entry)  # before the Dense weights: clearer
        return cls.from_parts(root, rt, head, manifest, tokenizer, entry)

    @property
    def dim(self) -> int:
        return self.head.dim

    @property
    def dense_layers(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(weight, bias) of each Dense module, in order, as numpy arrays."""
        return list(self._dense)

    @property
    def max_seq_length(self) -> int:
        return self.head.max_seq_length

    def encode(
        self,
        texts: Sequence[str] | str,
        batch_size: int = 32,
        normalize: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        show_progress: bool = False,
        max_batch_tokens: int | None = MAX_BATCH_TOKENS,
        prefetch: bool = PREFETCH,
    ) -> np.ndarray:
        """Embed texts: float32 (n, dim) in input order; a single str gives shape (dim,).

        `normalize=None` follows the model (its Normalize module); True/False forces it.
        `max_batch_tokens` caps a batch's padded tokens (rows x longest), which bounds the runtime's
        memory on long texts; None lets every batch have `batch_size` rows.
        `prefetch=True` pads the next batch in one background thread while the runtime runs the current
        one (same batches, same order, same numbers; the thread ends before encode returns or raises).
        A text holding a lone surrogate (e.g. '\\ud800') raises InputError naming its index: it is not
        valid Unicode, and it is never silently replaced. `texts` must keep an order (a set is refused
        with TypeError); a wrongly typed argument raises TypeError naming it.
        """
        _check_options(batch_size, normalize, prompt_name, prompt, max_batch_tokens)
        single = isinstance(texts, str)
        items = [texts] if single else _check_texts(texts)
        check_batching(batch_size, max_batch_tokens)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        prefix = prompt_prefix(self.head, prompt_name, prompt)
        prompt_length = 0
        if prefix:
            items = [prefix + t for t in items]
            if not self.head.include_prompt:
                prompt_length = self.tokenizer.prompt_length(prefix)
        do_norm = self.head.normalize if normalize is None else bool(normalize)
        caps = self.capabilities
        if caps.takes_text:
            if prompt_length:
                raise InputError(
                    "this model pools without its prompt (include_prompt=False), which the end-to-end "
                    "graph cannot do; use the token-level runtime for prompts"
                )
            try:
                self._encode_texts(items, out, batch_size, do_norm, show_progress, max_batch_tokens)
            except (TypeError, UnicodeEncodeError):
                _raise_unencodable(items, len(prefix))
                raise
            return out[0] if single else out

        try:
            encodings = self.tokenizer.encode(items)
        except (TypeError, UnicodeEncodeError):
            _raise_unencodable(items, len(prefix))
            raise
        if caps.mean_of_ids and not prompt_length and tuple(self.head.pooling) == (PoolingMode.MEAN,):
            mean_of_ids = self.runtime.mean_of_ids  # type: ignore[attr-defined]
            self._encode_ids([e.ids for e in encodings], mean_of_ids, out, batch_size, do_norm, show_progress)
            return out[0] if single else out
        # A runtime that keeps memory per input shape asks for row counts in powers of two and for lengths
        # rounded up to a multiple; the extra positions are masked padding, so the embeddings do not change.
        # One text (a query, a server's request): one batch, nothing to sort.
        chunks = (
            [np.zeros(1, dtype=np.intp)]
            if len(encodings) == 1
            else length_batches(
                [len(e.ids) for e in encodings], batch_size, max_batch_tokens, caps.bucket_rows
            )
        )
        multiple = caps.pad_to_multiple_of
        # The graph pools when it has the head as an output and this call pools every token; it
        # normalizes as the model does, so normalize=False on a normalizing model pools here.
        in_graph = (
            self.sentence_output is not None
            and not prompt_length
            and (do_norm or not self._sentence_normalized)
        )
        renorm = in_graph and do_norm and not self._sentence_normalized
        if caps.batch_size_hint:
            self.runtime.use_batch_size(batch_size)  # type: ignore[attr-defined]

        def prepare(idx: np.ndarray) -> Batch:
            return self.tokenizer.pad([encodings[i] for i in idx], multiple)

        progress = progress_bar(len(items), show_progress, unit="text", desc="encode")
        # A thread only when there is a next batch to prepare. Leaving the blocks closes the runtime's
        # stream first (OpenVINO: no request left running), then joins the prefetch thread.
        with (
            Prefetch(prepare, chunks, enabled=prefetch and len(chunks) > 1) as batches,
            closing(self._run(iter(batches), self.sentence_output if in_graph else None)) as results,
        ):
            for idx, (batch, result) in zip(chunks, results):
                if in_graph:
                    out[idx] = l2_normalize(result) if renorm else result
                else:
                    emb = pool_tokens(self._head, result, batch.attention_mask, prompt_length)
                    out[idx] = self._apply_head(emb, do_norm, owned=True)
                if progress is not None:
                    progress.update(len(idx))
        if progress is not None:
            progress.close()
        return out[0] if single else out

    def _apply_head(self, emb: np.ndarray, do_norm: bool, owned: bool = False) -> np.ndarray:
        """Pooled vectors -> the model's Dense chain -> L2 normalization when asked. `owned`: emb is a
        fresh array of this call (pooling's), so normalization may divide it in place; the Dense chain
        always makes its own."""
        return project(self._head, emb, do_norm, owned, self.capabilities.blas_head)

    def _encode_ids(
        self,
        ids: list[list[int]],
        mean_of_ids: Callable[[list[list[int]]], np.ndarray],
        out: np.ndarray,
        batch_size: int,
        do_norm: bool,
        show_progress: bool,
    ) -> None:
        """A static table's fast path: each text's mean row straight from its token ids (no padded
        batch, no mask), then the head; the same numbers as the padded path."""
        order = np.argsort([-len(i) for i in ids], kind="stable")
        progress = progress_bar(len(ids), show_progress, unit="text", desc="encode")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._apply_head(mean_of_ids([ids[i] for i in idx]), do_norm)
            if progress is not None:
                progress.update(len(idx))
        if progress is not None:
            progress.close()

    def _encode_texts(
        self,
        items: list[str],
        out: np.ndarray,
        batch_size: int,
        do_norm: bool,
        show_progress: bool,
        max_batch_tokens: int | None,
    ) -> None:
        """A strings-in runtime (end-to-end graph): the graph tokenizes; the Encoder only batches. It
        batches by token count, as the token path does: character counts are a poor proxy for token counts,
        so batches sorted by characters pad more tokens and run slower (bench/MOBILE.md), and counting with
        `tokenizers` (in Rust) costs little. Texts `tokenizers` refuses (lone surrogates, which the graph's
        clean-up drops) fall back to character counts."""
        normalized = self.capabilities.normalized
        if normalized and not do_norm:
            raise InputError(
                "this end-to-end graph normalizes its output; normalize=False needs the token graph"
            )
        lengths = [len(t) for t in items]
        if len(items) > 1:  # one text: nothing to sort, no need to count
            try:
                lengths = [len(e.ids) for e in self.tokenizer.encode(items)]
            except (TypeError, UnicodeEncodeError):
                pass
        progress = progress_bar(len(items), show_progress, unit="text", desc="encode")
        for idx in length_batches(lengths, batch_size, max_batch_tokens):
            emb = self.runtime.run({"text": np.array([items[i] for i in idx], dtype=object)})
            out[idx] = l2_normalize(emb) if do_norm and not normalized else emb
            if progress is not None:
                progress.update(len(idx))
        if progress is not None:
            progress.close()

    def _run(self, batches: Iterator[Batch], output: str | None = None) -> Iterator[tuple[Batch, np.ndarray]]:
        """(batch, token embeddings, or the graph's `output`) in order; a runtime with `run_many` gets the
        whole stream so it can keep several batches in flight (OpenVINO throughput streams)."""
        names = self.runtime.input_names
        if not self.capabilities.streams:
            run = self.runtime.run
            for batch in batches:
                inputs = batch.as_inputs(names)
                yield batch, (run(inputs, output=output) if output else run(inputs))  # type: ignore[call-arg]
            return
        if output is not None:  # pragma: no cover - no streaming runtime declares named_outputs
            raise ValueError("a streaming runtime returns its first output only")
        in_flight: deque[Batch] = deque()

        def feed() -> Iterator[dict[str, np.ndarray]]:
            for batch in batches:
                in_flight.append(batch)
                yield batch.as_inputs(names)

        for tokens in self.runtime.run_many(feed()):  # type: ignore[attr-defined]
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


def select_graph(root: Path, manifest: Manifest, runtime: str) -> ArtifactGraph:
    """The artifact graph `runtime` runs: the first one validated with it, else the first one made for a
    runtime it declares it can open (OpenVINO opens ONNX graphs); none: one line naming what there is."""
    entry = manifest.graph_for(runtime)
    if entry is not None:
        return entry
    opens = declared_capabilities(runtime).opens
    entry = next((g for g in manifest.graphs if g.runtime in opens), None)
    if entry is not None:
        return entry
    have = ", ".join(dict.fromkeys(repr(g.runtime) for g in manifest.graphs))
    raise ArtifactError(
        f"{root / 'edgeembed.json'} has no graph runtime {runtime!r} can run (its graphs run with {have}); "
        "use one of those, or re-export the artifact with that graph (e.g. --end-to-end)"
    )


def _check_limits(root: Path, manifest: Manifest) -> None:
    """The head must fit the model: a Dense chain that connects, and max_seq_length within the position
    embeddings (from the manifest, or for a version-1 artifact from its config.json)."""
    head, where = manifest.head, root / "edgeembed.json"
    width = head.hidden_size * len(head.pooling)
    for d in head.dense:
        if d.in_features != width:
            raise ArtifactError(
                f"{where}: Dense {d.path!r} takes {d.in_features} inputs but the head gives it {width}"
            )
        width = d.out_features
    limit = manifest.max_positions
    config_file = artifact_path(root, "config.json", "model config")
    if limit is None and config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ArtifactError(f"cannot read {config_file}: {exc}") from None
        limit = position_limit(config) if isinstance(config, dict) else None
    if limit is not None and head.max_seq_length > limit:
        raise ArtifactError(
            f"{where}: max_seq_length {head.max_seq_length} exceeds the model's {limit} position embeddings "
            f"(set it to at most {limit}, or re-export)"
        )


def _wait_quietly(future: Future) -> None:
    """Wait for a background load whose result no longer matters; its own error is not the one to show."""
    try:
        future.result()
    except BaseException:  # the caller raises the error that decided
        pass


def _check_graph(
    root: Path, graph: Path, rt: Runtime, tokenizer: TextTokenizer, manifest: Manifest, entry: ArtifactGraph
) -> None:
    """One short probe run: the graph must take the manifest's inputs and give (batch, seq, hidden_size)
    token embeddings, so a manifest that does not match its graph fails here with one line, not later in
    the runtime or in numpy."""
    where = root / "edgeembed.json"
    if sorted(rt.input_names) != sorted(entry.inputs):
        raise ArtifactError(
            f"{where}: the graph {graph} takes inputs {list(rt.input_names)}, "
            f"the manifest lists {list(entry.inputs)} (re-export the artifact)"
        )
    try:
        out = np.asarray(rt.run(tokenizer(["probe"]).as_inputs(rt.input_names)))
    except Exception as exc:  # the runtimes raise their own types
        raise ArtifactError(f"the graph {graph} does not run on a one-word input: {exc}") from None
    if out.ndim != 3 or out.shape[-1] != manifest.head.hidden_size:
        raise ArtifactError(
            f"{where}: head.hidden_size is {manifest.head.hidden_size} but the graph {graph} gives "
            f"token embeddings of shape {tuple(out.shape)} (re-export the artifact)"
        )


def _check_precision(root: Path, manifest: Manifest, entry: ArtifactGraph, opts: RuntimeOptions) -> None:
    """Refuse a float-op precision the int8 graph was not validated with. bf16 float ops around int8
    kernels are not a safe approximation: OpenVINO's int8 attention ran with bf16 lets masked padding
    through (MiniLM static int8 on STS-b dev: mean cosine 0.969, min 0.50 vs f32; bench/PROFILE.md
    section 11), while a float graph in bf16 stays at cosine 0.9999. The export gate is what checks a
    precision, so the fix offered is an export with it."""
    validated = manifest.runtime_options.get("precision") or "f32"
    if entry.precision == "int8" and opts.precision not in (None, "f32", validated):
        raise InputError(
            f"{root}: the int8 graph {entry.file} was validated with {validated} float ops, not "
            f"{opts.precision} (bf16 around int8 kernels can give wrong embeddings); leave the precision "
            f"unset, or export the artifact with --precision {opts.precision} so the gate checks it"
        )


def _merge_options(defaults: dict, given: RuntimeOptions) -> RuntimeOptions:
    """The caller's settings win; the ones it leaves None come from the artifact (what it was validated
    with, e.g. OpenVINO bf16)."""
    known = {f.name for f in fields(RuntimeOptions)}
    base = RuntimeOptions(**{k: v for k, v in defaults.items() if k in known})
    return replace(
        base, **{f.name: getattr(given, f.name) for f in fields(given) if getattr(given, f.name) is not None}
    )
