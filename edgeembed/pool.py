"""EncoderPool: the Encoder's `encode` over worker processes, each holding its own runtime.

One process scales badly across many cores (MiniLM int8 on a 16-core Xeon, batch 32: 1 thread 985
sentences/s, 16 threads 2,275), while independent processes scale almost linearly (16 x 1 thread:
10,182/s; 8 x 2: 7,626/s). The pool therefore runs `workers` processes with `threads` runtime threads
each, one artifact load per worker.

Results are the one-process Encoder's, byte for byte (fp32, static int8): the parent tokenizes once to cut
the texts into the exact length-sorted batches `Encoder.encode` would make, and hands each worker whole
runs of those batches (chunks), which its own Encoder batches again the same way. Workers are fresh
interpreters (a fork would copy the runtimes' thread pools in an undefined state; multiprocessing's spawn
would import the caller's `__main__` again), ignore SIGINT (the parent decides), and die with the parent
(PR_SET_PDEATHSIG on Linux; otherwise when their socket closes).
A worker that dies fails the call that used it with one WorkerError line and is started again on the next
call. `encode` may be called from several threads at once: each call borrows idle workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

import edgeembed.errors as errors
from edgeembed.artifact import read_manifest
from edgeembed.encoder import (
    MAX_BATCH_TOKENS,
    Encoder,
    check_batching,
    length_batches,
    prompt_prefix,
    tokenizer_for,
)
from edgeembed.errors import EdgeEmbedError, InputError, WorkerError
from edgeembed.head import PoolingMode
from edgeembed.runtimes import RuntimeCapabilities, RuntimeOptions

# Rows a chunk aims at: a few chunks per worker, so a slow chunk (the longest texts come first) does not
# leave the others idle at the end, and large enough that pickling and a pipe round trip stay small
# next to the work.
CHUNKS_PER_WORKER = 4
MAX_CHUNK_ROWS = 2048
START_TIMEOUT_S = 300.0  # loading an artifact (checksums, compile) on a busy machine
STOP_TIMEOUT_S = 5.0
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
WORKER_CODE = "from edgeembed.pool import worker_entry; worker_entry()"


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_split(cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) for `cores`: one single-threaded worker per core. Processes scale
    nearly linearly where one process's threads do not (a batch's threads wait for each other at every
    operator; separate processes never do); memory grows by one runtime per worker, so pass fewer
    workers and more threads where memory is short."""
    return max(1, cores or cpu_count()), 1


def _die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGKILL when its parent dies, however it dies. The kernel
    means the parent *thread*, so the pool asks for it only for workers started by the main thread (one
    started by a short-lived caller thread would die with that thread); the others end when their
    socket reports EOF, at the latest after the chunk they are running."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # elsewhere: the worker ends when its pipe closes
        return


def worker_entry() -> None:
    """A worker process's main: `python -c "from edgeembed.pool import worker_entry; worker_entry()"
    FD PARENT_PID DEATHSIG`. A plain interpreter, not multiprocessing's spawn, so the caller's `__main__`
    is never imported again (a script without a `__main__` guard works)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    if sys.argv[3] == "1":
        _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        return
    conn = Connection(fd)
    try:
        path, runtime, options, verify = conn.recv()
        enc = Encoder.load(path, runtime=runtime, options=options, verify=verify)
    except (EOFError, OSError):
        return
    except BaseException as exc:
        conn.send(("failed", type(exc).__name__, str(exc)))
        return
    conn.send(("ready", enc.capabilities))  # how the parent plans batches as this Encoder would
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if message is None:
            return
        tag, texts, kwargs = message
        try:
            reply = (tag, "ok", enc.encode(texts, **kwargs))
        except Exception as exc:
            reply = (tag, "error", (type(exc).__name__, str(exc)))
        try:
            conn.send(reply)
        except OSError:
            return


def _rebuild_error(kind: str, message: str) -> BaseException:
    """The worker's exception as the same edgeembed error class where there is one (InputError ...)."""
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, EdgeEmbedError):
        return cls(message)
    if kind in ("TypeError", "ValueError"):
        return {"TypeError": TypeError, "ValueError": ValueError}[kind](message)
    return WorkerError(f"a worker failed: {kind}: {message}")


class _Worker:
    """One worker process and the parent's end of its socket; (re)started on demand. The worker's end
    closing (it exited, was killed) makes the parent's end readable with EOF: no call waits on a dead
    worker."""

    def __init__(self, pool: EncoderPool, slot: int) -> None:
        self.pool = pool
        self.slot = slot
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.info: RuntimeCapabilities | None = None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        p = self.pool
        env = dict(os.environ)
        deathsig = "1" if threading.current_thread() is threading.main_thread() else "0"
        # the same edgeembed as the caller's, wherever it was imported from
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
        # numpy's BLAS (a static model's Dense head) gets the worker's share of the cores, not all of them
        # in every worker; a caller's own setting wins.
        env.setdefault("OPENBLAS_NUM_THREADS", str(p.threads))
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER_CODE, str(theirs.fileno()), str(os.getpid()), deathsig],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=2,  # never into the caller's stdout (`encode` writes embeddings there)
            )
        finally:
            theirs.close()  # only the worker holds it now
        self.conn = Connection(ours.detach())
        self.info = None
        self.conn.send((str(p.path), p._runtime, p._options, p._verify))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> None:
        """Start the process if it is not running, and wait until its artifact is loaded."""
        if self.info is not None and self.alive():
            return
        if self.conn is None or (self.info is not None and not self.alive()):
            self.stop()
            self.start()
        assert self.conn is not None and self.process is not None
        message = None
        if self.conn.poll(START_TIMEOUT_S):
            with contextlib.suppress(EOFError, OSError):
                message = self.conn.recv()
        else:
            self.stop()
            raise WorkerError(f"a worker did not load {self.pool.path} within {START_TIMEOUT_S:.0f} s")
        if message and message[0] == "ready":
            self.info = message[1]
            return
        code = self.process.poll() if message else _wait_exit(self.process)
        self.stop()
        if message and message[0] == "failed":
            raise _rebuild_error(message[1], message[2])
        raise WorkerError(f"a worker exited while loading {self.pool.path} ({_exit_text(code)})")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Ask the worker to end, then terminate it, then kill it; nothing is left running."""
        process, conn = self.process, self.conn
        self.process, self.conn, self.info = None, None, None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        if process is not None:
            for step in (None, process.terminate, process.kill):
                if step is not None:
                    with contextlib.suppress(OSError):
                        step()
                try:
                    process.wait(timeout if step is None else 1.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if conn is not None:
            conn.close()


def _wait_exit(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(1.0)
    except subprocess.TimeoutExpired:
        return None


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _close_all(workers: list[_Worker]) -> None:
    for w in workers:
        w.stop(timeout=1.0)


class EncoderPool:
    """`encode` like the Encoder, run by `workers` processes of `threads` runtime threads each.

    Use it as a context manager, or call `close()`: the workers stop (and are killed if they do not),
    also at interpreter exit. `dim`, `path`, `head` and `manifest` are the artifact's, so the corpus job
    and the server take a pool wherever they take an Encoder.
    """

    def __init__(
        self,
        path: str | Path,
        workers: int | None = None,
        threads: int | None = None,
        runtime: str | None = None,
        options: RuntimeOptions | None = None,
        verify: bool = True,
    ) -> None:
        auto_workers, auto_threads = default_split()
        if workers is None and threads:  # the cores shared among workers of `threads` threads
            auto_workers = max(1, cpu_count() // threads)
        self.workers = auto_workers if workers is None else workers
        if self.workers < 1:
            raise InputError(f"workers must be >= 1, got {self.workers}")
        if threads is not None and threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        if options is not None and threads is not None and options.threads not in (None, threads):
            raise InputError("pass threads either directly or inside options, not both")
        self.threads = threads or (options.threads if options else None) or auto_threads
        root = Path(path).expanduser()
        self.manifest = read_manifest(root)  # a missing or foreign folder fails here, in one line
        self.path = root.resolve()
        self.head = self.manifest.head
        self._runtime = runtime
        self._options = RuntimeOptions(threads=self.threads) if options is None else options
        if self._options.threads is None:
            from dataclasses import replace

            self._options = replace(self._options, threads=self.threads)
        self._verify = verify
        self._tags = itertools.count()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all = [_Worker(self, i) for i in range(self.workers)]
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_all, self._all)
        try:
            for w in self._all:
                w.start()
            self.tokenizer = tokenizer_for(self.path, self.head)  # while the workers load
            for w in self._all:
                w.ready()
                self._idle.put(w)
        except BaseException:
            self.close()
            raise
        self._caps = self._all[0].info or RuntimeCapabilities()

    @property
    def dim(self) -> int:
        return self.head.dim

    @property
    def max_seq_length(self) -> int:
        return self.head.max_seq_length

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers (for monitoring)."""
        return [w.process.pid for w in self._all if w.process is not None]

    def plan(
        self, texts: Sequence[str], batch_size: int, max_batch_tokens: int | None, prefix: str = ""
    ) -> list[np.ndarray]:
        """Indices of each chunk: whole runs of the batches `Encoder.encode` would make, in its order."""
        n = len(texts)
        if n == 0:
            return []
        mean_path = (
            self._caps.mean_of_ids
            and tuple(self.head.pooling) == (PoolingMode.MEAN,)
            and not (prefix and not self.head.include_prompt)
        )
        try:
            lengths = [len(e.ids) for e in self.tokenizer.encode([prefix + t for t in texts])]
        except (TypeError, UnicodeEncodeError):  # one chunk: the worker's Encoder says what is wrong
            return [np.arange(n)]
        if mean_path:
            batches = length_batches(lengths, batch_size, None)
        else:
            bucket = self._caps.bucket_rows and not self._caps.takes_text
            batches = length_batches(lengths, batch_size, max_batch_tokens, bucket)
        target = min(MAX_CHUNK_ROWS, max(batch_size, -(-n // (self.workers * CHUNKS_PER_WORKER))))
        chunks, current, rows = [], [], 0
        for b in batches:
            current.append(b)
            rows += len(b)
            if rows >= target:
                chunks.append(np.concatenate(current))
                current, rows = [], 0
        if current:
            chunks.append(np.concatenate(current))
        return chunks

    def encode(
        self,
        texts: Sequence[str] | str,
        batch_size: int = 32,
        normalize: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        show_progress: bool = False,
        max_batch_tokens: int | None = MAX_BATCH_TOKENS,
    ) -> np.ndarray:
        """`Encoder.encode` over the workers: float32 (n, dim) in input order, the same numbers."""
        if self._closed:
            raise InputError("this EncoderPool is closed")
        single = isinstance(texts, str)
        items = [texts] if single else _check_texts(texts)
        check_batching(batch_size, max_batch_tokens)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        prefix = prompt_prefix(self.head, prompt_name, prompt)
        kwargs = {
            "batch_size": batch_size,
            "normalize": normalize,
            "prompt_name": prompt_name,
            "prompt": prompt,
            "max_batch_tokens": max_batch_tokens,
        }
        chunks = deque(self.plan(items, batch_size, max_batch_tokens, prefix))
        bar = None
        if show_progress:
            from edgeembed._progress import progress_bar

            bar = progress_bar(len(items), True, unit="text", desc="encode")
        self._run(items, chunks, kwargs, out, bar)
        if bar is not None:
            bar.close()
        return out[0] if single else out

    def _take(self, block: bool) -> _Worker | None:
        try:
            w = self._idle.get(block=block)
        except queue.Empty:
            return None
        try:
            w.ready()
        except BaseException:
            self._idle.put(w)  # started again by the next call that takes it
            raise
        return w

    def _run(self, items: list[str], chunks: deque, kwargs: dict, out: np.ndarray, bar: Any) -> None:
        held: dict[_Worker, tuple[int, np.ndarray]] = {}
        failure: BaseException | None = None

        def send(w: _Worker, idx: np.ndarray) -> None:
            tag = next(self._tags)
            held[w] = (tag, idx)
            assert w.conn is not None
            w.conn.send((tag, [items[i] for i in idx], kwargs))

        try:
            while held or (chunks and failure is None):
                while chunks and failure is None:
                    w = self._take(block=not held)
                    if w is None:
                        break
                    try:
                        send(w, chunks.popleft())
                    except (BrokenPipeError, OSError):
                        failure = self._lost(w, held.pop(w)[1])
                if not held:
                    break
                by_handle: dict[Any, _Worker] = {w.conn: w for w in held}
                for handle in wait(list(by_handle)):
                    w = by_handle[handle]
                    if w not in held:
                        continue
                    tag, idx = held[w]
                    message = None
                    if w.conn is not None and w.conn.poll():
                        with contextlib.suppress(EOFError, OSError):
                            message = w.conn.recv()
                    if message is None:
                        held.pop(w)
                        failure = failure or self._lost(w, idx)
                        continue
                    if message[0] != tag:  # not this call's (cannot happen: one call per worker)
                        continue
                    held.pop(w)
                    if message[1] == "ok":
                        out[idx] = message[2]
                        if bar is not None:
                            bar.update(len(idx))
                    else:
                        failure = failure or _rebuild_error(*message[2])
                    if chunks and failure is None:
                        send(w, chunks.popleft())
                    else:
                        self._idle.put(w)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM in the CLI) or a bug: the workers still busy hold results
            # nobody will read, so they are stopped; the next call starts them again.
            for w in held:
                w.stop(timeout=0.5)
                self._idle.put(w)
            raise
        if failure is not None:
            raise failure

    def _lost(self, w: _Worker, idx: np.ndarray) -> WorkerError:
        code = _wait_exit(w.process) if w.process is not None else None
        pid = w.process.pid if w.process is not None else None
        w.stop(timeout=0.5)
        self._idle.put(w)  # started again when next taken
        return WorkerError(
            f"worker {w.slot} (pid {pid}) died ({_exit_text(code)}) while embedding {len(idx)} texts; "
            "it is started again for the next call"
        )

    def close(self) -> None:
        """Stop every worker; idempotent."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EncoderPool({self.path}, workers={self.workers}, threads={self.threads}, dim={self.dim})"


def _check_texts(texts: object) -> list[str]:
    if texts is None or isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    items = list(texts)  # type: ignore[call-overload]
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return items
