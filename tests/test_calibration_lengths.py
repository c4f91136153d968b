"""Length coverage: short calibration texts are completed, from themselves, up to max_seq_length and
down to the empty text; strata the sample already fills get nothing; seeded."""

from __future__ import annotations

import numpy as np
import pytest

from edgeembed.calibration import CalibrationConfig, CalibrationError, calibration_inputs
from edgeembed.calibration.lengths import cover_lengths, stratum_targets
from edgeembed.tokenization import TextTokenizer

from conftest import WORDS


@pytest.fixture(scope="module")
def tok(tiny_artifact) -> TextTokenizer:
    return TextTokenizer.from_file(tiny_artifact / "tokenizer.json", max_seq_length=48)


def _captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS[3:20], size=rng.integers(4, 7))) for _ in range(n)]


def test_short_texts_get_every_length_up_to_max_and_the_short_end(tok):
    texts = _captions(80)
    out, cov = cover_lengths(texts, tok, share=0.25, seed=0)
    assert set(texts) <= set(out) and len(out) > len(texts)
    assert cov.targets == stratum_targets(48) == (6, 12, 24, 48)
    lengths = np.array([len(e.ids) for e in tok.encode(out)])
    per = int(np.ceil(0.25 * 80 / 4))
    for target in (12, 24, 48):
        assert (lengths >= target).sum() >= per, target
    assert (lengths == 48).sum() >= per  # truncated at max_seq_length: truncation is calibrated too
    assert "" in out and (lengths <= 3).sum() >= per  # the empty text and one-word texts
    words = set(" ".join(texts).split())
    assert set(" ".join(out).split()) <= words  # nothing but the user's own text
    assert out == cover_lengths(texts, tok, share=0.25, seed=0)[0]  # seeded
    assert out != cover_lengths(texts, tok, share=0.25, seed=1)[0]


def test_covered_strata_get_nothing_and_zero_share_is_identity(tok):
    rng = np.random.default_rng(1)
    varied = [" ".join(rng.choice(WORDS[3:20], size=int(k))) for k in rng.integers(0, 60, size=200)]
    _, cov = cover_lengths(varied, tok, share=0.25, seed=0)  # empty texts up to past max_seq_length
    assert sum(cov.added.values()) < 0.25 * len(varied) / 2
    texts = _captions(20)
    assert cover_lengths(texts, tok, share=0.0)[0] == texts


def test_calibration_inputs_apply_coverage_and_check_it(tmp_path, tok):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(_captions(40)))
    plain = calibration_inputs(CalibrationConfig(str(src), size=40, length_coverage=0), tok, ("input_ids",))
    covered = calibration_inputs(CalibrationConfig(str(src), size=40), tok, ("input_ids",))
    assert max(d["input_ids"].shape[1] for d in plain) < 12
    assert max(d["input_ids"].shape[1] for d in covered) == 48 and len(covered) > len(plain)
    with pytest.raises(CalibrationError, match="length_coverage"):
        calibration_inputs(CalibrationConfig(str(src), length_coverage=2.0), tok, ("input_ids",))
