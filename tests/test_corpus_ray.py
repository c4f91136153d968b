"""Ray Data: a local instance started here, output compared row by row with the single-process job."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeembed import Encoder
from edgeembed.corpus import EmbedConfig, Source, embed_corpus

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_job_matches_single_process(local_ray, tiny_artifact, tmp_path):
    import pyarrow.parquet as pq

    from edgeembed.corpus.ray_job import embed_with_ray

    words = ["hello world", "the cat sat on the mat", "", "stock market fell", "a man \x0bplays"]
    rows = [{"t": f"{words[i % 5]} {i}" if i % 7 else None, "k": f"id{i}"} for i in range(90)]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = Source.open(src, column="t", id_column="k")
    for precision in ("float32",):  # int8 uses the same code path after calibration (tested single-process)
        config = EmbedConfig(shard_size=25, precision=precision, on_error="skip", calibration_size=50)
        single = tmp_path / f"single-{precision}.parquet"
        embed_corpus(Encoder.load(tiny_artifact), source, single, config)
        res = embed_with_ray(tiny_artifact, source, tmp_path / f"ray-{precision}", config, workers=2)
        assert res.skipped == 13 and res.rows == 77
        want = pq.read_table(single).sort_by("record")
        got = pq.read_table(tmp_path / f"ray-{precision}").sort_by("record")
        assert got.column("record").to_pylist() == want.column("record").to_pylist()
        assert got.column("id").to_pylist() == want.column("id").to_pylist()
        a = np.asarray(got.column("embedding").to_pylist())
        b = np.asarray(want.column("embedding").to_pylist())
        assert np.abs(a - b).max() <= 1e-6
        meta = json.loads((tmp_path / f"ray-{precision}" / "_edgeembed.json").read_text())
        assert meta["precision"] == precision


def test_embed_cli_with_ray_engine(local_ray, tiny_artifact, tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from edgeembed.cli import main

    src = tmp_path / "c.txt"
    src.write_text("hello world\n\nthe cat sat\n")
    out = tmp_path / "emb"
    args = ["embed", str(tiny_artifact), str(src), "--out", str(out), "--engine", "ray", "--workers", "1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    table = pq.read_table(out).sort_by("record")
    assert table.column("record").to_pylist() == [1, 2, 3]
    want = Encoder.load(tiny_artifact).encode(["hello world", "", "the cat sat"])
    assert np.abs(np.asarray(table.column("embedding").to_pylist()) - want).max() <= 1e-6
