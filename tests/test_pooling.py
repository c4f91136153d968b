"""numpy pooling/Dense/normalize against sentence-transformers' own torch modules."""

from __future__ import annotations

import numpy as np
import pytest

from edgeembed.head import PoolingMode, dense, normalize, pool

torch = pytest.importorskip("torch")
st_modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")


def _batch(rng: np.random.Generator, left_pad: bool = False):
    tok = rng.normal(size=(4, 7, 5)).astype(np.float32)
    lengths = [7, 3, 1, 5]
    mask = np.zeros((4, 7), dtype=np.int64)
    for i, n in enumerate(lengths):
        if left_pad:
            mask[i, 7 - n :] = 1
        else:
            mask[i, :n] = 1
    return tok, mask


def _st_pool(modes, tok, mask, include_prompt=True, prompt_length=None):
    module = st_modules.Pooling(
        5, pooling_mode=modes if len(modes) > 1 else modes[0], include_prompt=include_prompt
    )
    feats = {"token_embeddings": torch.from_numpy(tok), "attention_mask": torch.from_numpy(mask)}
    if prompt_length is not None:
        feats["prompt_length"] = prompt_length
    return module(feats)["sentence_embedding"].numpy()


@pytest.mark.parametrize("mode", list(PoolingMode))
@pytest.mark.parametrize("left_pad", [False, True])
def test_each_mode_matches_sentence_transformers(mode, left_pad, rng):
    tok, mask = _batch(rng, left_pad)
    ours = pool((mode,), tok, mask)
    np.testing.assert_allclose(ours, _st_pool((mode.value,), tok, mask), rtol=1e-5, atol=1e-6)


def test_combined_modes_concatenate_in_order(rng):
    tok, mask = _batch(rng)
    modes = (PoolingMode.CLS, PoolingMode.MAX, PoolingMode.MEAN)
    ours = pool(modes, tok, mask)
    assert ours.shape == (4, 15)
    np.testing.assert_allclose(ours, _st_pool(tuple(m.value for m in modes), tok, mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [PoolingMode.MEAN, PoolingMode.WEIGHTEDMEAN, PoolingMode.MAX])
def test_prompt_excluded_from_pooling(mode, rng):
    tok, mask = _batch(rng)
    ours = pool((mode,), tok, mask, prompt_length=2)
    theirs = _st_pool((mode.value,), tok, mask, include_prompt=False, prompt_length=2)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours, pool((mode,), tok, mask))


@pytest.mark.parametrize(
    ("activation", "torch_act"),
    [
        ("tanh", "Tanh"),
        ("identity", "Identity"),
        ("relu", "ReLU"),
        ("gelu", "GELU"),
        ("sigmoid", "Sigmoid"),
        ("silu", "SiLU"),
    ],
)
def test_dense_matches_torch(activation, torch_act, rng):
    x = rng.normal(size=(3, 6)).astype(np.float32)
    layer = torch.nn.Linear(6, 4)
    act = getattr(torch.nn, torch_act)()
    expected = act(layer(torch.from_numpy(x))).detach().numpy()
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    np.testing.assert_allclose(dense(x, w, b, activation), expected, rtol=1e-5, atol=1e-6)


def test_normalize_unit_rows_and_zero_rows_stay_finite():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = normalize(x)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    assert np.all(out[1] == 0) and np.isfinite(out).all()
