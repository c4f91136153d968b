"""nncf.quantize_with_accuracy_control as edgeembed drives it: a metric the int8 IR cannot keep makes
nncf revert quantizers to float; one it keeps leaves the IR fully quantized."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import WORDS

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from edgeembed.steps.nncf import (
    OpenVinoStaticConfig,
    quantize_static,
    quantize_with_accuracy_control,
    quantizer_count,
)
from edgeembed.tokenization import TextTokenizer


@pytest.fixture(scope="module")
def ir_and_inputs(tiny_model, tiny_artifact, tmp_path_factory):
    import openvino as ov

    from edgeembed.build import export

    art = export(tiny_model, tmp_path_factory.mktemp("ov") / "art", format="openvino")
    model = ov.Core().read_model(str(art.path / art.manifest.graph))
    tok = TextTokenizer.from_file(tiny_artifact / "tokenizer.json", max_seq_length=24)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS[:30], size=rng.integers(1, 20))) for _ in range(40)]
    inputs = [tok([t]).as_inputs(("input_ids", "attention_mask", "token_type_ids")) for t in texts]
    fp32 = ov.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = [fp32(x)[fp32.output(0)].mean(axis=1)[0] for x in inputs]
    return model, inputs, reference


def _agreement(reference):
    """Metric: mean cosine of each item's pooled output with the fp32 IR's (1.0 for fp32 itself)."""

    def validate(run, items):
        outs = [run(x).mean(axis=1)[0] for x, _ in items]
        cos = [
            float(o @ reference[i] / np.linalg.norm(o) / np.linalg.norm(reference[i]))
            for o, (_, i) in zip(outs, items)
        ]
        return float(np.mean(cos)), cos

    return validate


def test_unreachable_drop_reverts_quantizers_reachable_one_keeps_them(ir_and_inputs):
    model, inputs, reference = ir_and_inputs
    config = OpenVinoStaticConfig(subset_size=40)
    items = [(x, i) for i, x in enumerate(inputs[:12])]
    plain = quantizer_count(quantize_static(model, config, inputs))
    assert plain > 0
    loose = quantize_with_accuracy_control(model, config, inputs, items, _agreement(reference), 0.5)
    assert quantizer_count(loose) == plain
    strict = quantize_with_accuracy_control(
        model, config, inputs, items, _agreement(reference), 1e-7, max_reverts=3
    )
    assert quantizer_count(strict) < plain
    with pytest.raises(Exception, match="max_relative_drop"):
        quantize_with_accuracy_control(model, config, inputs, items, _agreement(reference), 1.5)
