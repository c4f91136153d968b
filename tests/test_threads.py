"""Every runtime is safe to call from many threads: 8 threads on one Encoder give the serial results."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edgeembed.encoder import Encoder
from edgeembed.runtimes import REGISTRY

from conftest import WORDS

THREADS = 8
ROUNDS = 3


def texts_for(seed: int, n: int = 40) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 20)))) for _ in range(n)]


@pytest.fixture(scope="module")
def artifacts(tiny_model, tiny_artifact, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """runtime name -> (artifact, runtime): every registered runtime but torch (the reference)."""
    from test_static_export import build_static_folder

    from edgeembed.build import export

    root = tmp_path_factory.mktemp("threads")
    out = {"onnxruntime": (tiny_artifact, "onnxruntime")}
    e2e = export(tiny_model, root / "e2e", optimize="none", end_to_end=True).path
    out["onnxruntime-e2e"] = (e2e, "onnxruntime-e2e")
    pytest.importorskip("openvino")
    ov_e2e = export(tiny_model, root / "ov", format="openvino", end_to_end=True).path
    out["openvino"] = (ov_e2e, "openvino")
    out["openvino-e2e"] = (ov_e2e, "openvino-e2e")
    static = export(build_static_folder(root / "static-src"), root / "static").path
    out["static"] = (static, "static")
    return out


def test_every_runtime_declares_thread_safety(artifacts):
    for name, (path, runtime) in artifacts.items():
        assert Encoder.load(path, runtime=runtime).capabilities.thread_safe is True, name
    assert set(REGISTRY) - set(artifacts) == {"torch"}  # a new runtime joins this test


@pytest.mark.parametrize("name", ["onnxruntime", "onnxruntime-e2e", "openvino", "openvino-e2e", "static"])
def test_eight_threads_on_one_encoder_give_the_serial_results(artifacts, name):
    """Threads share one Encoder with batch sizes that make OpenVINO recompile (latency below 8,
    throughput from 8) while others are running; each must get what a serial call gives."""
    path, runtime = artifacts[name]
    enc = Encoder.load(path, runtime=runtime)
    jobs = [(texts_for(i), (1, 4, 8, 32)[i % 4]) for i in range(THREADS)]
    expected = [enc.encode(texts, batch_size=bs) for texts, bs in jobs]
    got: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(i: int) -> None:
        texts, bs = jobs[i]
        try:
            start.wait(timeout=30)
            for r in range(ROUNDS):
                got[i, r] = enc.encode(texts, batch_size=bs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    for (i, _r), emb in got.items():
        np.testing.assert_allclose(emb, expected[i], atol=1e-5, rtol=0)
    assert len(got) == THREADS * ROUNDS
