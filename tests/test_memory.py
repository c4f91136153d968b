"""Memory settings of the OpenVINO runtime (bench/PROFILE.md section 5), on the tiny model: row buckets,
the opt-in compiled-model cache. Behaviour only; the megabytes are bench/memory.py's business."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edgeembed import Encoder
from edgeembed.encoder import length_batches
from edgeembed.runtimes import RuntimeCapabilities, RuntimeOptions

WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "hello", "world", "edge", "stock", "market"]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 30)))) for _ in range(n)]


@pytest.mark.parametrize(("batch_size", "max_tokens"), [(32, 80), (24, 100), (8, None), (5, 40)])
def test_bucketed_rows_are_powers_of_two_or_the_batch_size(batch_size, max_tokens):
    lengths = [int(x) for x in np.random.default_rng(1).integers(0, 40, size=203)]
    batches = length_batches(lengths, batch_size, max_tokens, bucket_rows=True)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every index once
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    allowed = {batch_size} | {1 << k for k in range(batch_size.bit_length()) if 1 << k < batch_size}
    assert {len(b) for b in batches} <= allowed
    for b in batches:
        assert max_tokens is None or len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens


class Recording:
    """Wraps a runtime, records batch shapes; `bucket_rows` as given (the OpenVINO runtime's or not)."""

    def __init__(self, inner, bucket_rows: bool) -> None:
        self.inner = inner
        self.input_names = inner.input_names
        self.capabilities = RuntimeCapabilities(
            pad_to_multiple_of=inner.capabilities.pad_to_multiple_of, bucket_rows=bucket_rows
        )
        self.shapes: list[tuple[int, int]] = []

    def run(self, inputs):
        self.shapes.append(inputs["input_ids"].shape)
        return self.inner.run(inputs)


@pytest.fixture(scope="module")
def tiny_ov(tiny_model, tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    from edgeembed.build import export

    return export(tiny_model, tmp_path_factory.mktemp("mem-ov") / "art", format="openvino").path


def test_openvino_asks_for_bucketed_rows_and_embeddings_do_not_change(tiny_ov):
    enc = Encoder.load(tiny_ov, options=RuntimeOptions(hint="latency"))
    assert enc.runtime.capabilities.bucket_rows is True
    items = texts(77, seed=3)
    outs, shapes = [], []
    for bucket in (True, False):
        rec = Recording(enc.runtime, bucket)
        wrapped = Encoder.from_parts(enc.path, rec, enc.head, enc.manifest, enc.tokenizer)
        outs.append(wrapped.encode(items, batch_size=16, max_batch_tokens=150))
        shapes.append(rec.shapes)
    assert {rows for rows, _ in shapes[0]} <= {1, 2, 4, 8, 16}
    assert {rows for rows, _ in shapes[1]} - {1, 2, 4, 8, 16}  # the unbucketed run had other counts
    assert sum(rows for rows, _ in shapes[0]) == len(items)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_compiled_model_cache_is_opt_in_outside_the_artifact_and_survives_a_bad_blob(tiny_ov, tmp_path):
    before = _tree_digest(tiny_ov)
    items = texts(10, seed=4)
    plain = Encoder.load(tiny_ov).encode(items, batch_size=4)
    cache = tmp_path / "ov-cache"
    first = Encoder.load(tiny_ov, options=RuntimeOptions(cache_dir=str(cache))).encode(items, batch_size=4)
    blobs = [p for p in cache.rglob("*") if p.is_file()]
    assert blobs, "the compiled model was not written to the cache folder"
    again = Encoder.load(tiny_ov, options=RuntimeOptions(cache_dir=str(cache))).encode(items, batch_size=4)
    # A blob another OpenVINO (or a crash) left unreadable: OpenVINO compiles the IR again.
    for p in blobs:
        p.write_bytes(b"not a compiled model")
    broken = Encoder.load(tiny_ov, options=RuntimeOptions(cache_dir=str(cache))).encode(items, batch_size=4)
    for out in (first, again, broken):
        np.testing.assert_allclose(out, plain, atol=1e-5)
    assert _tree_digest(tiny_ov) == before  # nothing written into the artifact
    assert Encoder.load(tiny_ov).runtime is not None  # and a load without the option still works
