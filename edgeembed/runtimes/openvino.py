"""OpenVINO on CPU: an IR compiled with dynamic batch and sequence axes.

`hint` maps to PERFORMANCE_HINT: "latency" (one stream uses every thread, best at batch 1) or
"throughput" (several streams, one request in flight per stream). `run_many` keeps every stream busy
while returning outputs in input order, which is what the Encoder needs for a long list of batches.
Unset, the hint follows the batch size the Encoder runs (`hint_for`): the model is compiled for latency
at load and recompiled (replacing it, so one compiled model is held) when a batch size needs the other.

The CPU plugin keeps memory per input shape it has seen (MiniLM int8 on the 2552 STS-b sentences: peak
406 MB with every length, 224 MB with one shape), so the runtime asks the Encoder for lengths rounded up
to a multiple of PAD_TO_MULTIPLE_OF. 8 rather than 16: on an AMX Xeon, 16 made 31 % of the positions
padding and ran 5 % slower than 8 for 6 MB less peak (bench/PROFILE.md section 11); no padding at all
costs memory (278 MB) for no speed.

The runtime maps an IR's weights file itself and hands OpenVINO the mapping as a shared tensor, instead of
letting `compile_model(path)` map it. At a stream's first inference the CPU plugin repacks (or converts)
the matrix weights into its own memory; the file pages it read them from would stay resident as long as
the model lives, though never read again (MiniLM static int8: ~10 MB of the 23 MB file; bf16: ~20 MB of
43). Owning the mapping, the runtime drops them after each stream's first inference (madvise DONTNEED:
the pages stay in the page cache, and any page still read, such as a lookup table gathered in place,
faults back in from it).
"""

from __future__ import annotations

import mmap
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import ArtifactError, InputError
from edgeembed.runtimes import RuntimeCapabilities, RuntimeOptions

ov = require("openvino", "openvino")

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
DEVICE = "CPU"


PRECISIONS = ("f32", "bf16")  # inference precision of float ops
# From this batch size on, an unset hint means throughput (streams); below it, latency.
THROUGHPUT_MIN_BATCH = 8
PAD_TO_MULTIPLE_OF = 8


def hint_for(batch_size: int) -> str:
    """The PERFORMANCE_HINT a batch size calls for when the user sets none: one request at a time at small
    batches (latency: all threads on it), several in flight at larger ones (throughput: streams)."""
    return "latency" if batch_size < THROUGHPUT_MIN_BATCH else "throughput"


_SOURCE_LINE = re.compile(r"^(Exception from |Check '.*' failed at )?\S+\.(cpp|hpp|h):\d+:?")


def load_error(path: Path, exc: Exception) -> ArtifactError:
    """One line from OpenVINO's exception text, which stacks C++ source locations over the reason."""
    text = str(exc)
    ops = re.search(r"No conversion rule found for operations: ([^\n]+)", text)
    if ops:
        return ArtifactError(
            f"OpenVINO cannot load {path}: it holds operators OpenVINO does not have ({ops.group(1).strip()}), "
            "ONNX Runtime's fused ones; run it with ONNX Runtime, or export with --format openvino"
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _SOURCE_LINE.match(ln.strip())]
    reason = " ".join(lines) or text.strip()
    return ArtifactError(f"OpenVINO cannot load {path}: {reason[:400]}")


def compile_config(options: RuntimeOptions) -> dict[str, str]:
    """OpenVINO properties for the options. Inference precision defaults to f32: on CPUs with
    avx512_bf16 or AMX OpenVINO otherwise runs float ops in bf16 (cosine ~0.99996 vs torch on MiniLM),
    and an artifact should give what its validation measured unless the caller opts in. Integer kernels
    of an int8 IR are used either way."""
    hint = (options.hint or "latency").lower()
    if hint not in HINTS:
        raise InputError(f"unknown OpenVINO hint {options.hint!r}; choose from {', '.join(HINTS)}")
    precision = options.precision or "f32"
    if precision not in PRECISIONS:
        raise InputError(f"unknown OpenVINO precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    # Denormals flushed to zero (FTZ/DAZ on the plugin's threads): without it the CPU plugin scans the
    # weights for denormals and keeps a cleaned copy, ~60 MB for MiniLM fp32 (compile RSS 217 -> 158 MB);
    # MiniLM's outputs are bit-identical either way (bench/PROFILE.md section 5).
    config = {
        "PERFORMANCE_HINT": HINTS[hint],
        "INFERENCE_PRECISION_HINT": precision,
        "CPU_DENORMALS_OPTIMIZATION": "NO" if options.flush_denormals is False else "YES",
    }
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(options.threads)
    if options.streams:
        config["NUM_STREAMS"] = str(options.streams)
    return config


def compile_apart(core: Any, model: Any, config: dict[str, str]) -> Any:
    """`core.compile_model(model, CPU, config)` in a thread of its own. With CPU_DENORMALS_OPTIMIZATION,
    compile_model sets flush-to-zero and denormals-are-zero on the calling thread's FPU, which would
    silently change every later float computation of the caller (numpy's subnormals become 0; tests check
    they do not). Inference threads are OpenVINO's own; an infer call leaves the caller's FPU alone.
    A RuntimeError of OpenVINO's is raised here unchanged."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["compiled"] = core.compile_model(model, DEVICE, config)
        except RuntimeError as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, name="edgeembed-openvino-compile")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["compiled"]


def map_weights(graph: Path) -> mmap.mmap | None:
    """The IR's weights file mapped for this runtime (see the module docstring), or None where OpenVINO
    should map it itself: no .bin beside the graph (an ONNX file), an empty one, no madvise to drop pages
    with (Windows), or a mapping the OS refuses (strict overcommit and a writable private mapping).
    Copy-on-write, as OpenVINO takes only a writable buffer; nothing writes to it, so every page stays
    the file's."""
    weights = graph.with_suffix(".bin")
    if graph.suffix != ".xml" or not hasattr(mmap, "MADV_DONTNEED") or not weights.is_file():
        return None
    try:
        with open(weights, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):  # ValueError: an empty file
        return None


class Requests:
    """Infer requests of one compiled model, lent one caller at a time: a thread takes a free one (or a new
    one when all are busy) and gives it back, so concurrent callers never share a request. The compiled
    model and its requests stay together: a caller still holding a request of a replaced model keeps
    that model alive until it gives the request back, which then is dropped."""

    def __init__(self, compiled: Any, count: int = 1) -> None:
        self.compiled = compiled
        self.count = max(1, count)
        self._lock = threading.Lock()
        self._free = [compiled.create_infer_request() for _ in range(self.count)]
        # Inferences left after which the runtime drops the mapped weights' pages: a stream's first
        # inference is when the plugin repacks the weights for it, and `count` requests in flight at once
        # (run_many) put one on every stream.
        self.drops_left = self.count

    def take(self) -> Any:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self.compiled.create_infer_request()

    def give(self, request: Any) -> None:
        with self._lock:
            if len(self._free) < self.count:  # a burst of callers does not keep its extra requests
                self._free.append(request)


# Few input shapes (padded lengths, bucketed rows: the plugin keeps memory per shape), several batches in
# flight (run_many), the hint set per batch size (use_batch_size); thread-safe: a request per caller
# (Requests), and recompiling lets the old model go first, new callers wait for the new one, and callers
# of the old one finish on theirs. OpenVINO reads ONNX too, so it runs an artifact's onnxruntime graph.
CAPABILITIES = RuntimeCapabilities(
    pad_to_multiple_of=PAD_TO_MULTIPLE_OF,
    bucket_rows=True,
    streams=True,
    batch_size_hint=True,
    thread_safe=True,
    opens=("onnxruntime",),
)


class OpenVinoRuntime:
    capabilities = CAPABILITIES

    def __init__(self, graph: Path, options: RuntimeOptions) -> None:
        if not Path(graph).is_file():
            raise ArtifactError(f"OpenVINO IR not found: {graph}")
        self._core = ov.Core()
        if options.cache_dir:
            # This Core's own setting (no process-wide state): compiled models are exported to and imported
            # from there, keyed by OpenVINO on the model, the config, its version and the device.
            try:
                Path(options.cache_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"OpenVINO cache_dir {options.cache_dir} cannot be created: {exc}") from None
            self._core.set_property({"CACHE_DIR": str(options.cache_dir)})
        self._graph = Path(graph)
        self._options = options
        compile_config(options)  # a bad hint or precision fails here, before anything is compiled
        # Not with cache_dir: a model imported from the cache does not read the weights, and the cache is
        # keyed on the file.
        self._weights = None if options.cache_dir else map_weights(self._graph)
        self._lock = threading.Lock()  # one recompilation at a time
        self.hint = (options.hint or "latency").lower()
        self._requests = self._compile(self.hint)
        self.input_names = tuple(i.get_any_name() for i in self._requests.compiled.inputs)

    def _compile(self, hint: str) -> Requests:
        # The weights are memory-mapped (this runtime's mapping, or OpenVINO's own when it compiles from
        # the path), never read into memory first. The IR keeps batch and sequence dynamic, so no shape
        # ever recompiles.
        try:
            model: Any = str(self._graph)
            if self._weights is not None:
                weights = ov.Tensor(np.frombuffer(self._weights, dtype=np.uint8), shared_memory=True)
                model = self._core.read_model(self._graph.read_bytes(), weights)
            compiled = compile_apart(self._core, model, compile_config(replace(self._options, hint=hint)))
        except RuntimeError as exc:
            raise load_error(self._graph, exc) from None
        return Requests(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    def use_batch_size(self, batch_size: int) -> None:
        """Recompile for the hint `batch_size` calls for (`hint_for`), unless the user set one.

        The old model is let go before the new one is compiled, so the two are never held at once (the
        overlap raised the process's peak; bench/PROFILE.md section 9 has what it saves).
        Callers arriving meanwhile wait for the new model (`_current`); callers already running finish
        on the old one, which they keep alive. Callers with other batch sizes at the same time can make
        it recompile back and forth; a server should set the hint (RuntimeOptions.hint) to avoid that."""
        if self._options.hint is not None:
            return
        hint = hint_for(batch_size)
        with self._lock:
            if hint != self.hint:
                self._requests = None
                try:
                    self._requests = self._compile(hint)
                    self.hint = hint
                except BaseException:
                    # Back to the model that worked, so calls go on; if even that fails, callers get
                    # this error rather than a model-less runtime (see _current).
                    self._requests = self._compile(self.hint)
                    raise

    def _current(self) -> Requests:
        """The compiled model's requests; during a recompilation, wait for the new ones."""
        requests = self._requests
        if requests is None:
            with self._lock:
                requests = self._requests
        if requests is None:  # a recompilation and its fallback both failed
            raise ArtifactError(f"OpenVINO could not recompile {self._graph}; load the Encoder again")
        return requests

    @property
    def parallel_requests(self) -> int:
        """How many requests run_many keeps in flight (the compiled streams)."""
        return self._current().count

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: inputs[k] for k in self.input_names}

    def _ran(self, requests: Requests) -> None:
        """After each of a compiled model's first inferences, one per stream (so again after a recompile):
        the plugin has repacked what it repacks, so the mapped weights' resident pages are dropped; those
        still read fault back in from the page cache."""
        if requests.drops_left > 0:
            requests.drops_left -= 1  # two threads may both drop once more: harmless
            if self._weights is not None:
                self._weights.madvise(mmap.MADV_DONTNEED)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        requests = self._current()  # this call's model, even if another call recompiles meanwhile
        request = requests.take()
        try:
            request.infer(self._feed(inputs))
            out = request.get_output_tensor(0).data.copy()
        finally:
            requests.give(request)
        self._ran(requests)
        return out

    def run_many(self, batches: Iterable[dict[str, np.ndarray]]) -> Iterator[np.ndarray]:
        """Token embeddings for each batch, in input order, with up to `parallel_requests` in flight.

        Requests are reused round-robin: the oldest is awaited (and its output yielded) before it takes
        the next batch, so order is kept and at most that many batches are held in memory.
        """
        requests = self._current()  # this call's set, even if another call recompiles meanwhile
        if requests.count == 1:
            for inputs in batches:
                yield self.run(inputs)
            return
        mine = [requests.take() for _ in range(requests.count)]
        free = list(mine)
        pending: deque = deque()
        try:
            for inputs in batches:
                if not free:
                    request = pending.popleft()
                    request.wait()
                    out = request.get_output_tensor(0).data.copy()
                    free.append(request)
                    self._ran(requests)
                    yield out
                request = free.pop()
                request.start_async(self._feed(inputs))  # inputs are copied (share_inputs=False)
                pending.append(request)
            while pending:
                request = pending.popleft()
                request.wait()
                out = request.get_output_tensor(0).data.copy()
                self._ran(requests)
                yield out
        finally:
            for request in pending:  # a consumer that stopped early leaves no request running
                request.wait()
            for request in mine:
                requests.give(request)


def load(graph: Path, options: RuntimeOptions) -> OpenVinoRuntime:
    return OpenVinoRuntime(graph, options)
