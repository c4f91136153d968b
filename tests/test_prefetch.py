"""encode(prefetch=True): the same numbers as the serial loop, the thread's errors raised unchanged, and
no prefetch thread left after encode returns or raises (tiny model; no timings here: bench/overlap.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeembed import Encoder
from edgeembed.encoder import PREFETCH_THREAD, Prefetch
from edgeembed.errors import InputError
from edgeembed.head import PoolingMode, normalize, pool
from edgeembed.tokenization import TextTokenizer

from conftest import WORDS


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(PREFETCH_THREAD)]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = np.random.default_rng(7)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 40)))) for _ in range(150)]


@pytest.fixture(scope="module")
def enc(tiny_artifact) -> Encoder:
    return Encoder.load(tiny_artifact)


class RecordingTokenizer(TextTokenizer):
    """Pads as usual, records which thread padded, and raises on pad call number `fail_at`."""

    def __init__(self, *args, fail_at: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail_at = fail_at
        self.threads: list[str] = []

    def pad(self, encodings, multiple_of=None):
        self.threads.append(threading.current_thread().name)
        if len(self.threads) == self.fail_at:
            raise InputError(f"batch {self.fail_at} cannot be padded")
        return super().pad(encodings, multiple_of)


class FailingRuntime:
    """Delegates to a real runtime; raises `error` on run call number `fail_at`."""

    def __init__(self, runtime, error: BaseException, fail_at: int) -> None:
        self.input_names = runtime.input_names
        self._runtime, self._error, self._fail_at, self.calls = runtime, error, fail_at, 0

    def run(self, inputs):
        self.calls += 1
        if self.calls == self._fail_at:
            raise self._error
        return self._runtime.run(inputs)


def with_parts(enc: Encoder, tiny_artifact, runtime=None, fail_at: int | None = None) -> Encoder:
    head = enc.head
    tok = RecordingTokenizer.from_file(
        tiny_artifact / "tokenizer.json", head.max_seq_length, head.do_lower_case, head.add_special_tokens
    )
    tok.fail_at = fail_at
    tok.threads = []
    return Encoder(runtime or enc.runtime, tok, head, enc.dense_layers, enc.manifest, enc.path)


@pytest.mark.parametrize(
    ("batch_size", "max_tokens", "kwargs"),
    [
        (32, 1024, {}),
        (1, 1024, {}),
        (7, 40, {}),
        (16, None, {"normalize": False}),
        (5, 64, {"prompt_name": "query"}),
    ],
)
def test_pipelined_equals_serial(enc, texts, batch_size, max_tokens, kwargs):
    serial = enc.encode(texts, batch_size=batch_size, max_batch_tokens=max_tokens, prefetch=False, **kwargs)
    piped = enc.encode(texts, batch_size=batch_size, max_batch_tokens=max_tokens, prefetch=True, **kwargs)
    assert np.array_equal(serial, piped)
    assert not prefetch_threads()


def test_pipelined_equals_serial_through_openvino_run_many(tiny_artifact, texts):
    pytest.importorskip("openvino")
    from edgeembed.runtimes import RuntimeOptions

    ov = Encoder.load(tiny_artifact, runtime="openvino", options=RuntimeOptions(threads=2, hint="throughput"))
    serial = ov.encode(texts, batch_size=8, prefetch=False)
    piped = ov.encode(texts, batch_size=8, prefetch=True)
    assert np.array_equal(serial, piped)
    assert not prefetch_threads()


def test_batches_are_padded_in_the_thread_only_when_asked(enc, tiny_artifact, texts):
    e = with_parts(enc, tiny_artifact)
    e.encode(texts, batch_size=16, prefetch=True)
    assert len(e.tokenizer.threads) == 10 and all(n.startswith(PREFETCH_THREAD) for n in e.tokenizer.threads)
    e.tokenizer.threads.clear()
    e.encode(texts, batch_size=16, prefetch=False)
    assert e.tokenizer.threads == [threading.main_thread().name] * 10
    e.tokenizer.threads.clear()
    e.encode(texts[:3], batch_size=16, prefetch=True)  # one batch: nothing to overlap, no thread
    assert e.tokenizer.threads == [threading.main_thread().name]


def test_an_error_in_the_thread_is_raised_unchanged(enc, tiny_artifact, texts):
    e = with_parts(enc, tiny_artifact, fail_at=3)
    with pytest.raises(InputError, match=r"^batch 3 cannot be padded$"):
        e.encode(texts, batch_size=16, prefetch=True)
    assert not prefetch_threads()
    assert len(e.tokenizer.threads) == 3  # nothing padded after the failure


@pytest.mark.parametrize("error", [RuntimeError("runtime broke"), KeyboardInterrupt()])
def test_runtime_failure_or_interrupt_leaves_no_thread(enc, tiny_artifact, texts, error):
    e = with_parts(enc, tiny_artifact, runtime=FailingRuntime(enc.runtime, error, fail_at=2))
    with pytest.raises(type(error)):
        e.encode(texts, batch_size=16, prefetch=True)
    assert not prefetch_threads()
    assert len(e.tokenizer.threads) <= 3  # at most one batch prepared beyond the one that failed


def test_prefetch_closed_early_joins_its_thread():
    made: list[int] = []
    items = list(range(10))
    it = iter(Prefetch(lambda i: made.append(i) or i * i, items))
    assert [next(it), next(it)] == [0, 1]
    assert prefetch_threads()
    it.close()  # generator close, e.g. a consumer that stops early
    assert not prefetch_threads()
    assert made in ([0, 1], [0, 1, 2])  # at most one item ahead (queued, or cancelled by close)
    with Prefetch(lambda i: i, items) as p:
        assert list(p) == items
    assert not prefetch_threads()


def test_pooling_and_normalize_in_place_give_the_old_numbers(rng):
    tok = rng.standard_normal((5, 9, 32)).astype(np.float32)
    mask = (np.arange(9)[None, :] < np.array([9, 1, 4, 0, 7])[:, None]).astype(np.int64)
    m = mask[..., None].astype(np.float32)
    old = (tok * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    np.testing.assert_allclose(pool((PoolingMode.MEAN,), tok, mask), old, rtol=0, atol=1e-6)
    copy = normalize(old)
    same = normalize(old, inplace=True)
    assert same is old and np.array_equal(copy, same)
