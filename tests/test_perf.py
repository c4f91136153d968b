"""Bounded batches (token budget) and the OpenVINO hint chosen from the batch size, on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from edgeembed import Encoder
from edgeembed.encoder import length_batches
from edgeembed.errors import InputError
from edgeembed.runtimes import RuntimeCapabilities, capabilities_of

WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "hello", "world", "edge", "stock", "market"]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 30)))) for _ in range(n)]


class Recording:
    """A runtime wrapper that records the shape of every batch it is given."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.input_names = inner.input_names
        # only the padding multiple: no row bucketing, one batch at a time (`run`)
        self.capabilities = RuntimeCapabilities(pad_to_multiple_of=capabilities_of(inner).pad_to_multiple_of)
        self.shapes: list[tuple[int, int]] = []

    def run(self, inputs):
        self.shapes.append(inputs["input_ids"].shape)
        return self.inner.run(inputs)


@pytest.fixture(scope="module")
def enc(tiny_artifact) -> Encoder:
    return Encoder.load(tiny_artifact)


def recording(enc: Encoder) -> tuple[Encoder, Recording]:
    rec = Recording(enc.runtime)
    return Encoder.from_parts(enc.path, rec, enc.head, enc.manifest, enc.tokenizer), rec


def test_length_batches_cover_every_index_once_within_budget():
    lengths = [5, 40, 1, 40, 17, 3, 0, 64, 9, 9]
    batches = length_batches(lengths, batch_size=4, max_tokens=80)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first, stable
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 80
    # a text longer than the budget still gets a batch of its own
    assert [len(b) for b in length_batches([100, 2], batch_size=8, max_tokens=10)] == [1, 1]
    # no budget: plain batch_size chunks
    assert [len(b) for b in length_batches(lengths, batch_size=4, max_tokens=None)] == [4, 4, 2]


@pytest.mark.parametrize(("batch_size", "max_tokens"), [(0, 10), (4, 0)])
def test_length_batches_refuse_bad_settings(enc, batch_size, max_tokens):
    with pytest.raises(InputError, match=r"batch_size|max_batch_tokens"):
        enc.encode(["x"], batch_size=batch_size, max_batch_tokens=max_tokens)


@pytest.mark.parametrize("budget", [24, 60, 200])
def test_token_budget_keeps_rows_and_embeddings(enc, budget):
    items = texts(50)
    budgeted, rec = recording(enc)
    out = budgeted.encode(items, batch_size=16, max_batch_tokens=budget)
    assert out.shape == (len(items), enc.dim)
    for rows, seq in rec.shapes:
        assert rows * seq <= budget or rows == 1
    assert sum(rows for rows, _ in rec.shapes) == len(items)
    alone = np.stack([enc.encode([t], max_batch_tokens=None)[0] for t in items])
    np.testing.assert_allclose(out, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_default_budget_cuts_only_long_batches(enc):
    from edgeembed.encoder import MAX_BATCH_TOKENS

    budgeted, rec = recording(enc)
    fits = MAX_BATCH_TOKENS // 32  # 32 texts of at most this many tokens fill a batch within the default
    short = [t for t in texts(400) if len(enc.tokenizer.encode([t])[0].ids) <= fits][:64]
    assert len(short) == 64
    budgeted.encode(short, batch_size=32)
    assert [rows for rows, _ in rec.shapes] == [32, 32]
    rec.shapes.clear()
    longer = [t for t in texts(400, seed=1) if len(enc.tokenizer.encode([t])[0].ids) > fits]
    budgeted.encode(longer, batch_size=32)
    assert max(rows * length for rows, length in rec.shapes) <= MAX_BATCH_TOKENS
    assert min(rows for rows, _ in rec.shapes) < 32


def test_hint_for_batch_size():
    ov = pytest.importorskip("edgeembed.runtimes.openvino")
    assert [ov.hint_for(b) for b in (1, 4, 7, 8, 32)] == ["latency"] * 3 + ["throughput"] * 2


@pytest.fixture(scope="module")
def tiny_ov(tiny_model, tmp_path_factory):
    pytest.importorskip("openvino")
    from edgeembed.build import export

    return export(tiny_model, tmp_path_factory.mktemp("tiny-ov") / "art", format="openvino").path


def test_openvino_hint_follows_batch_size_unless_set(tiny_ov, enc):
    from edgeembed.runtimes import RuntimeOptions

    items = texts(40, seed=1)
    auto = Encoder.load(tiny_ov)
    assert auto.runtime.hint == "latency"
    small = auto.encode(items, batch_size=2)
    assert auto.runtime.hint == "latency"
    large = auto.encode(items, batch_size=16)
    assert auto.runtime.hint == "throughput" and auto.runtime.parallel_requests >= 1
    assert auto.encode(items[:3], batch_size=1).shape == (3, enc.dim)
    assert auto.runtime.hint == "latency"
    reference = enc.encode(items, batch_size=16)  # the ONNX fp32 artifact of the same model
    np.testing.assert_allclose(small, reference, atol=1e-4)
    np.testing.assert_allclose(large, reference, atol=1e-4)
    fixed = Encoder.load(tiny_ov, options=RuntimeOptions(hint="latency"))
    fixed.encode(items, batch_size=16)
    assert fixed.runtime.hint == "latency"


def test_openvino_lengths_come_in_multiples(tiny_ov, enc):
    ov_enc = Encoder.load(tiny_ov)
    budgeted, rec = recording(ov_enc)
    items = texts(40, seed=2)
    out = budgeted.encode(items, batch_size=8)
    multiple = ov_enc.runtime.capabilities.pad_to_multiple_of
    # rounded up to the multiple, never past max_seq_length (24 on the tiny model)
    seqs = {seq for _, seq in rec.shapes}
    assert all(seq % multiple == 0 or seq == ov_enc.max_seq_length for seq in seqs), (seqs, multiple)
    assert max(seqs) <= ov_enc.max_seq_length
    np.testing.assert_allclose(out, enc.encode(items, batch_size=8), atol=1e-4)
