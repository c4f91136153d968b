"""The golden test of the one head: numpy (the Encoder) == ONNX (run by onnxruntime; the strings-in and
static graphs) == torch (reduce's training) == sentence-transformers' own Pooling, Dense and Normalize
modules, for every pooling mode, left and right padding, prompt exclusion and every activation of the
table, with and without Normalize."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeembed.head import ACTIVATIONS, HeadModel, PoolingMode, activation_name
from edgeembed.head import numpy as np_head

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
st_modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
st_base = pytest.importorskip("sentence_transformers.base.modules")

from edgeembed.head import onnx as onnx_head  # noqa: E402
from edgeembed.head import torch as torch_head  # noqa: E402

# float32 through different summation orders (einsum, ReduceSum, torch.sum) and erf/exp implementations:
# a few ulps of values of order 1-10. Wider than that means a different formula, not rounding.
ATOL = 1e-5
RTOL = 1e-5
MODES = tuple(PoolingMode)
PROMPT = 2


def make_batch(rng: np.random.Generator, lengths: list[int], seq: int, hidden: int, left: bool):
    tok = rng.normal(size=(len(lengths), seq, hidden)).astype(np.float32)
    mask = np.zeros((len(lengths), seq), dtype=np.int64)
    for i, n in enumerate(lengths):
        if left:
            mask[i, seq - n :] = 1
        else:
            mask[i, :n] = 1
    return tok, mask


def run_numpy(head: HeadModel, tok, mask, prompt_length: int = 0) -> np.ndarray:
    return np_head.run(head, tok, mask, prompt_length)


def run_onnx(head: HeadModel, tok, mask, prompt_length: int = 0, opset: int = 17) -> np.ndarray:
    model = onnx_head.head_model(head, opset)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {onnx_head.TOKENS_INPUT: tok, onnx_head.MASK_INPUT: mask}
    if not head.include_prompt:
        feeds[onnx_head.PROMPT_LENGTH_INPUT] = np.array(prompt_length, dtype=np.int64)
    return sess.run(None, feeds)[0]


def run_torch(head: HeadModel, tok, mask, prompt_length: int = 0) -> np.ndarray:
    with torch.inference_mode():
        return torch_head.TorchHead(head)(
            torch.from_numpy(tok), torch.from_numpy(mask), prompt_length
        ).numpy()


def run_sentence_transformers(head: HeadModel, tok, mask, prompt_length: int = 0) -> np.ndarray:
    """sentence-transformers' modules, built as its Dense.load builds them from a saved config."""
    modes = tuple(m.value for m in head.pooling)
    modules = [
        st_modules.Pooling(
            head.hidden_size,
            pooling_mode=modes[0] if len(modes) == 1 else modes,
            include_prompt=head.include_prompt,
        )
    ]
    for d in head.dense:
        modules.append(
            st_base.Dense(
                d.weight.shape[1],
                d.weight.shape[0],
                bias=d.bias is not None,
                activation_function=torch_head.activation_module(d.activation),
                init_weight=torch.from_numpy(d.weight.copy()),
                init_bias=None if d.bias is None else torch.from_numpy(d.bias.copy()),
            )
        )
    if head.normalize:
        modules.append(st_base.Normalize())
    features = {"token_embeddings": torch.from_numpy(tok), "attention_mask": torch.from_numpy(mask)}
    if prompt_length:
        features["prompt_length"] = prompt_length
    with torch.inference_mode():
        for module in modules:
            features = module(features)
    return features["sentence_embedding"].numpy()


TARGETS = {"onnx": run_onnx, "torch": run_torch, "sentence-transformers": run_sentence_transformers}


def assert_all_agree(head: HeadModel, tok, mask, prompt_length: int = 0) -> np.ndarray:
    ours = run_numpy(head, tok, mask, prompt_length)
    assert ours.shape == (tok.shape[0], head.dim) and ours.dtype == np.float32
    for name, target in TARGETS.items():
        np.testing.assert_allclose(
            target(head, tok, mask, prompt_length), ours, rtol=RTOL, atol=ATOL, err_msg=f"numpy vs {name}"
        )
    return ours


def dense_layer(rng: np.random.Generator, n_in: int, n_out: int, activation: str, bias: bool = True):
    from edgeembed.head import DenseLayer

    weight = (rng.normal(size=(n_out, n_in)) * 0.5).astype(np.float32)
    return DenseLayer(weight, (rng.normal(size=n_out) * 0.5).astype(np.float32) if bias else None, activation)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("include_prompt", [True, False], ids=["prompt-pooled", "prompt-excluded"])
def test_every_pooling_mode_on_every_target(mode, left, include_prompt, rng):
    tok, mask = make_batch(rng, [7, 3, 1, 5, 4], seq=7, hidden=6, left=left)
    head = HeadModel(6, (mode,), include_prompt=include_prompt)
    ours = assert_all_agree(head, tok, mask, PROMPT)
    if not include_prompt and mode != PoolingMode.LASTTOKEN:  # the last token is never the prompt here
        assert not np.allclose(ours, run_numpy(HeadModel(6, (mode,)), tok, mask)), "the prompt was pooled"


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_all_modes_concatenated_in_order(left, rng):
    tok, mask = make_batch(rng, [6, 2, 1, 6], seq=6, hidden=4, left=left)
    head = HeadModel(4, MODES)
    ours = assert_all_agree(head, tok, mask)
    assert ours.shape == (4, 4 * len(MODES))
    for i, mode in enumerate(MODES):
        np.testing.assert_array_equal(
            ours[:, 4 * i : 4 * (i + 1)], run_numpy(HeadModel(4, (mode,)), tok, mask)
        )


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_every_activation_with_and_without_normalize(activation, normalize, rng):
    tok, mask = make_batch(rng, [5, 2, 1], seq=5, hidden=6, left=False)
    # Two layers (the second without bias) so the activation sees negative, small and large inputs.
    head = HeadModel(
        6,
        (PoolingMode.MEAN, PoolingMode.CLS),
        dense=(dense_layer(rng, 12, 9, activation), dense_layer(rng, 9, 4, activation, bias=False)),
        normalize=normalize,
    )
    ours = assert_all_agree(head, tok * 4, mask)  # scaled: the pooled values reach well beyond [-3, 3]
    if normalize:  # unit rows, or zero rows where the activation zeroed everything (relu of negatives)
        norms = np.linalg.norm(ours, axis=1)
        assert np.all(np.isclose(norms, 1.0, atol=1e-6) | (norms == 0)), norms


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_blas_head_matches_the_einsum_head(activation, rng):
    """The static runtime's head (`blas=True`, numpy's `@`) and every other runtime's (einsum) are one
    formula: the same numbers to rounding, for each activation, at the static model's shapes too."""
    pooled = rng.normal(size=(33, 12)).astype(np.float32) * 4
    head = HeadModel(
        12,
        (PoolingMode.MEAN,),
        dense=(dense_layer(rng, 12, 40, activation), dense_layer(rng, 40, 12, activation, bias=False)),
        normalize=True,
    )
    einsum = np_head.project(head, pooled.copy())
    blas = np_head.project(head, pooled.copy(), blas=True)
    assert blas.dtype == np.float32 and blas.shape == einsum.shape
    np.testing.assert_allclose(blas, einsum, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_onnx_reduce_forms_of_each_opset(opset, rng):
    """Reduce* axes are attributes before opset 18 and inputs from it: both forms give the same numbers."""
    tok, mask = make_batch(rng, [4, 1, 3], seq=4, hidden=5, left=True)
    head = HeadModel(5, MODES, include_prompt=False, dense=(dense_layer(rng, 30, 7, "gelu"),), normalize=True)
    np.testing.assert_allclose(
        run_onnx(head, tok, mask, 1, opset=opset), run_numpy(head, tok, mask, 1), rtol=RTOL, atol=ATOL
    )


def test_normalize_keeps_a_zero_row_zero(rng):
    head = HeadModel(3, (PoolingMode.MEAN,), normalize=True)
    tok = np.zeros((2, 3, 3), np.float32)
    tok[0] = rng.normal(size=(3, 3))
    mask = np.ones((2, 3), np.int64)
    ours = assert_all_agree(head, tok, mask)
    assert np.all(ours[1] == 0) and np.isfinite(ours).all()


@pytest.mark.parametrize("mode", [PoolingMode.MEAN, PoolingMode.MEAN_SQRT_LEN_TOKENS], ids=lambda m: m.value)
def test_zero_length_batch_gives_zeros(mode):
    """A batch of texts with no tokens at all (a static model has no [CLS]/[SEP]): zeros, not an error."""
    tok, mask = np.zeros((2, 0, 3), np.float32), np.zeros((2, 0), np.int64)
    ours = assert_all_agree(HeadModel(3, (mode,), normalize=True), tok, mask)
    assert np.all(ours == 0)


def test_table_round_trips_sentence_transformers_configs():
    """Every activation is written as the torch.nn class sentence-transformers loads without
    trust_remote_code, and that class name reads back as the same table entry."""
    for name, act in ACTIVATIONS.items():
        assert act.torch_class.startswith("torch.nn.")
        assert isinstance(torch_head.activation_module(name), torch.nn.Module)
        assert activation_name(act.torch_class) == name
        assert activation_name("torch.nn." + act.torch_class.rsplit(".", 1)[1]) == name
    assert activation_name(None) == "tanh"  # sentence-transformers' default
    assert activation_name("torch.nn.modules.activation.Softmax") is None


def test_torch_head_passes_gradients(rng):
    tok, mask = make_batch(rng, [4, 2], seq=4, hidden=3, left=False)
    head = HeadModel(3, MODES, dense=(dense_layer(rng, 18, 5, "gelu"),), normalize=True)
    x = torch.from_numpy(tok).requires_grad_(True)
    torch_head.TorchHead(head)(x, torch.from_numpy(mask)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_onnx_head_under_openvino(left, rng, tmp_path):
    """The strings-in OpenVINO model converts the ONNX head (steps/e2e_openvino.py): every mode and
    activation gives numpy's numbers there too (f32 inference; bf16 is a user's opt-in)."""
    ov = pytest.importorskip("openvino")
    import onnx

    core = ov.Core()
    for i, activation in enumerate(sorted(ACTIVATIONS)):
        tok, mask = make_batch(rng, [7, 3, 4, 5], seq=7, hidden=4, left=left)
        dense = (dense_layer(rng, 4 * len(MODES), 5, activation),)
        head = HeadModel(4, MODES, include_prompt=left, dense=dense, normalize=i % 2 == 0)
        path = tmp_path / f"{activation}.onnx"
        onnx.save(onnx_head.head_model(head), str(path))
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        feeds = {onnx_head.TOKENS_INPUT: tok * 3, onnx_head.MASK_INPUT: mask}
        prompt = 0 if left else PROMPT
        if prompt:
            feeds[onnx_head.PROMPT_LENGTH_INPUT] = np.array(prompt, dtype=np.int64)
        np.testing.assert_allclose(
            compiled(feeds)[0],
            run_numpy(head, tok * 3, mask, prompt),
            rtol=RTOL,
            atol=ATOL,
            err_msg=activation,
        )


@st.composite
def batches(draw):
    seq = draw(st.integers(1, 9))
    lengths = draw(st.lists(st.integers(1, seq), min_size=1, max_size=4))
    left = draw(st.booleans())
    modes = tuple(draw(st.lists(st.sampled_from(MODES), min_size=1, max_size=3, unique=True)))
    prompt = draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    return seq, lengths, left, modes, prompt, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches())
def test_any_shape_and_mask(case):
    """Random shapes and masks, either padding side, a prompt that may cover a whole row."""
    seq, lengths, left, modes, prompt, seed = case
    rng = np.random.default_rng(seed)
    tok, mask = make_batch(rng, lengths, seq, hidden=3, left=left)
    head = HeadModel(3, modes, include_prompt=prompt == 0)
    assert_all_agree(head, tok, mask, prompt)
