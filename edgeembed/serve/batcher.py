"""Dynamic batching: texts of concurrent requests are embedded together, in bounded memory.

Requests wait in one queue. Each consumer thread (one per pool worker, or one for an in-process Encoder,
whose runtime has its own threads) takes the oldest request, then more while they fit a token budget,
waiting at most `max_wait_s` for company, and embeds them in one `encode` call (which sorts by length
and cuts batches of `batch_size`). A queue holding `max_queue_texts` texts refuses new requests at once
(Overloaded), so a flood is answered, never left hanging. Modelled on text-embeddings-inference's queue
(token budget per batch) and infinity-emb's batch handler.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Encodes(Protocol):
    """An Encoder or an EncoderPool."""

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


class Overloaded(Exception):
    """The queue is full: the caller should answer 429 with Retry-After."""


class Stopping(Exception):
    """The server is shutting down and takes no new work: 503."""


@dataclass
class Job:
    texts: list[str]
    tokens: int
    done: Callable[[np.ndarray | None, BaseException | None], None]
    queued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # nobody waits for it any more (client gone, shutdown past its grace)


# Texts per encode call inside one batch: between two chunks a consumer checks whether anyone still
# waits, so a huge request whose client is gone (or a server past its shutdown grace) stops within one
# chunk instead of running to the end while the process is meant to exit.
CHUNK_TEXTS = 256


@dataclass(frozen=True)
class BatcherConfig:
    batch_size: int = 32  # rows per runtime batch inside one encode call
    max_batch_tokens: int = 16_384  # estimated tokens one encode call takes from the queue
    max_wait_s: float = 0.002  # how long a consumer waits for more requests once it has one
    max_queue_texts: int = 8_192  # texts waiting, beyond which new requests are refused


class Batcher:
    """Requests in (`submit`, from any thread or `embed` from asyncio), embeddings out, in order per
    request. `on_batch(texts, seconds)` and `queue_depth` feed the metrics."""

    def __init__(
        self,
        encoder: Encodes,
        consumers: int = 1,
        config: BatcherConfig | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.config = config or BatcherConfig()
        self._on_batch = on_batch
        self._jobs: deque[Job] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._consume, name=f"edgeembed-batcher-{i}", daemon=True)
            for i in range(max(1, consumers))
        ]
        for t in self._threads:
            t.start()

    @property
    def queue_depth(self) -> int:
        """Texts waiting (not yet taken by a consumer)."""
        return self._queued_texts

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise Stopping("the server is shutting down")
            if self._queued_texts and self._queued_texts + len(job.texts) > self.config.max_queue_texts:
                raise Overloaded(f"{self._queued_texts} texts are waiting; retry shortly")
            self._jobs.append(job)
            self._queued_texts += len(job.texts)
            self._cond.notify()

    async def embed(self, texts: list[str], tokens: int) -> np.ndarray:
        """Embeddings of `texts` (float32, (n, dim)) once a consumer has run them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def settle(emb: np.ndarray | None, exc: BaseException | None) -> None:
            if future.done():  # the client went away
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(emb)

        def done(emb: np.ndarray | None, exc: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, emb, exc)

        job = Job(texts, tokens, done)
        self.submit(job)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(job)
            raise

    def cancel(self, job: Job) -> None:
        """Nobody waits for `job` any more: drop it from the queue, or stop its batch between chunks."""
        with self._cond:
            job.cancelled = True
            if job in self._jobs:
                self._jobs.remove(job)
                self._queued_texts -= len(job.texts)

    def _take(self) -> list[Job] | None:
        cfg = self.config
        with self._cond:
            while not self._jobs:
                if self._stopping:
                    return None
                self._cond.wait()
            jobs = [self._jobs.popleft()]
            tokens = jobs[0].tokens
            deadline = time.monotonic() + cfg.max_wait_s
            while tokens < cfg.max_batch_tokens:
                if self._jobs:
                    if tokens + self._jobs[0].tokens > cfg.max_batch_tokens:
                        break
                    job = self._jobs.popleft()
                    jobs.append(job)
                    tokens += job.tokens
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            self._queued_texts -= sum(len(j.texts) for j in jobs)
            return jobs

    def _consume(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            texts = [t for j in jobs for t in j.texts]
            start = time.perf_counter()
            try:
                parts = []
                for at in range(0, len(texts), CHUNK_TEXTS):
                    if all(j.cancelled for j in jobs):
                        break
                    chunk = texts[at : at + CHUNK_TEXTS]
                    parts.append(self.encoder.encode(chunk, batch_size=self.config.batch_size))
                if all(j.cancelled for j in jobs):
                    continue
                emb = np.concatenate(parts) if len(parts) > 1 else parts[0]
            except Exception:
                # One request's texts must not fail the others': run each alone, so only the bad one
                # gets the error.
                self._one_by_one(jobs)
                continue
            if self._on_batch is not None:
                self._on_batch(len(texts), time.perf_counter() - start)
            at = 0
            for j in jobs:
                j.done(emb[at : at + len(j.texts)], None)
                at += len(j.texts)

    def _one_by_one(self, jobs: list[Job]) -> None:
        for j in jobs:
            try:
                j.done(self.encoder.encode(j.texts, batch_size=self.config.batch_size), None)
            except Exception as exc:
                j.done(None, exc)

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new work, embed what is queued, and end the consumer threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)


def estimate_tokens(text: str, max_seq_length: int) -> int:
    """A cheap upper-ish estimate of a text's tokens (about 4 characters a word piece, plus [CLS]/[SEP]),
    for the batch budget only."""
    return min(max_seq_length, len(text) // 4 + 2)
