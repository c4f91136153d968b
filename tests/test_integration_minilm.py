"""The real all-MiniLM-L6-v2: parity with sentence-transformers and STS-b accuracy through the Encoder."""

from __future__ import annotations

import numpy as np
import pytest

from edgeembed import Encoder
from edgeembed.sts import load_sts, sts_score

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sts(sts_test_path):
    return load_sts(sts_test_path)


@pytest.fixture(scope="module")
def fp32_embeddings(minilm_artifact, sts):
    return Encoder.load(minilm_artifact, threads=2).encode(sts.sentences, batch_size=32)


def test_matches_sentence_transformers_on_sts_sentences(fp32_embeddings, sts):
    st = pytest.importorskip("sentence_transformers")
    from edgeembed.source import default_model_path

    model = st.SentenceTransformer(str(default_model_path()), device="cpu")
    theirs = model.encode(sts.sentences, batch_size=32)
    cos = (fp32_embeddings * theirs).sum(axis=1)
    assert cos.min() >= 0.9999, f"min cosine {cos.min():.6f}"


def test_sts_spearman_floor(fp32_embeddings, sts):
    score = sts_score(sts, fp32_embeddings)
    assert score >= 81.9, f"STS-b Spearman {score:.2f} < 81.9 (reference 82.03)"


def test_manifest_validation_recorded(minilm_artifact):
    enc = Encoder.load(minilm_artifact)
    v = enc.manifest.validation
    assert v["min_cosine"] >= 0.9999 and v["max_abs_diff"] < 1e-3
    assert enc.manifest.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert enc.dim == 384 and enc.max_seq_length == 256


def test_truncates_like_sentence_transformers(minilm_artifact):
    enc = Encoder.load(minilm_artifact)
    long_text = "word " * 1000
    batch = enc.tokenizer([long_text, "short"])
    assert batch.input_ids.shape == (2, 256)
    assert np.isfinite(enc.encode([long_text])).all()
