"""Encoder behaviour on the tiny model: parity with sentence-transformers, order, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgeembed import Encoder
from edgeembed.errors import InputError

TEXTS = [
    "the cat sat on the mat",
    "hello world",
    "",
    "   ",
    "a man is playing guitar on stage and the crowd sings along with him",
    "edge " * 100,  # far past max_seq_length (24)
    "stock market fell",
]


@pytest.fixture(scope="module")
def enc(tiny_artifact) -> Encoder:
    return Encoder.load(tiny_artifact)


@pytest.fixture(scope="module")
def st_model(tiny_model):
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(tiny_model), device="cpu")


def test_matches_sentence_transformers(enc, st_model):
    ours = enc.encode(TEXTS, batch_size=3)
    theirs = st_model.encode(TEXTS, batch_size=3)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


@pytest.mark.parametrize("prompt_name", ["query", "passage"])
def test_prompts_match_sentence_transformers(enc, st_model, prompt_name):
    np.testing.assert_allclose(
        enc.encode(TEXTS, prompt_name=prompt_name), st_model.encode(TEXTS, prompt_name=prompt_name), atol=2e-5
    )
    assert not np.allclose(enc.encode(TEXTS[:1], prompt_name=prompt_name), enc.encode(TEXTS[:1]))


def test_tokenization_matches_sentence_transformers(enc, st_model):
    theirs = st_model.tokenize(TEXTS)
    ours = enc.tokenizer(TEXTS)
    np.testing.assert_array_equal(ours.input_ids, theirs["input_ids"].numpy())
    np.testing.assert_array_equal(ours.attention_mask, theirs["attention_mask"].numpy())
    assert ours.input_ids.shape[1] == 24  # truncated to max_seq_length, not the file's fixed 16/128


def test_input_order_and_batch_size_do_not_matter(enc):
    together = enc.encode(TEXTS, batch_size=32)
    one_by_one = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    rev = enc.encode(TEXTS[::-1], batch_size=2)
    np.testing.assert_allclose(rev[::-1], together, atol=1e-5)


def test_single_string_gives_a_vector(enc):
    v = enc.encode("hello world")
    assert v.shape == (16,)
    np.testing.assert_allclose(v, enc.encode(["hello world"])[0])


def test_empty_list_and_whitespace(enc):
    assert enc.encode([]).shape == (0, 16)
    v = enc.encode(["", "   "])
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_normalize_override(enc):
    raw = enc.encode(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), enc.encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (["ok", None], r"texts\[1\] is NoneType"),
        ([1.5], r"texts\[0\] is float"),
        (None, "got NoneType"),
        (b"bytes", "got bytes"),
    ],
)
def test_bad_texts_raise_type_error_naming_the_index(enc, bad, where):
    with pytest.raises(TypeError, match=where):
        enc.encode(bad)


def test_bad_arguments(enc):
    with pytest.raises(InputError, match="unknown prompt_name 'nope'"):
        enc.encode(["x"], prompt_name="nope")
    with pytest.raises(InputError, match="batch_size"):
        enc.encode(["x"], batch_size=0)


def test_similarity_and_properties(enc):
    a = enc.encode(["the cat sat on the mat", "stock market fell"])
    sim = enc.similarity(a, a)
    assert sim.shape == (2, 2)
    np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-5)
    assert enc.dim == 16 and enc.max_seq_length == 24


def test_generator_input_accepted(enc):
    out = enc.encode(t for t in TEXTS[:3])
    np.testing.assert_allclose(out, enc.encode(TEXTS[:3]), atol=1e-6)
