"""Static-embedding throughput: our Encoder (numpy `static` runtime, core install) vs model2vec on the
same table and tokenizer, interleaved in fresh processes. model2vec runs in its own venv (0.10 pins
transformers<5.4 for distillation; encoding needs only numpy + tokenizers):

    python -m venv /tmp/m2v && /tmp/m2v/bin/pip install model2vec==0.10
    python bench/lab/static_speed.py ARTIFACT --m2v-python /tmp/m2v/bin/python --rounds 5

ARTIFACT is a static artifact (`edgeembed export` of an `edgeembed reduce --static` folder). Texts: the
STS-b test sentences x4 (10,208), as bench/lab/reduce_measure.py. Each round starts one process per
contender (warm-up on 256 texts, then the median of 3 passes); rounds alternate the order; the result
is the median over rounds, with the load average at each round. The machine may be shared: compare
within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import STS_TEST as STS
from common import median_rate, use_repo

# name -> (interpreter option, worker mode)
CONTENDERS = {
    "edgeembed Encoder, batch 32": ("ours", "ours:32"),
    "edgeembed Encoder, batch 1024": ("ours", "ours:1024"),
    "edgeembed Encoder, runtime onnxruntime (model.onnx), batch 32": ("ours", "ours-onnx:32"),
    "model2vec 0.10 encode() defaults": ("m2v", "m2v:default"),
    "model2vec 0.10, one process": ("m2v", "m2v:single"),
}


def worker(mode: str, artifact: Path, texts_file: Path, check_file: Path | None) -> None:
    import numpy as np

    texts = json.loads(texts_file.read_text(encoding="utf-8"))
    kind, setting = mode.split(":")
    if kind.startswith("ours"):
        use_repo()
        from edgeembed import Encoder

        enc = Encoder.load(artifact, runtime="onnxruntime" if kind == "ours-onnx" else None)
        rate = median_rate(lambda t: enc.encode(t, batch_size=int(setting)), texts)
        emb = enc.encode(texts[:2000])
    else:
        from model2vec import StaticModel
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        table = load_file(str(artifact / "model.safetensors"))["embedding.weight"].astype(np.float32)
        tok = Tokenizer.from_file(str(artifact / "tokenizer.json"))
        tok.no_padding()
        model = StaticModel(vectors=table, tokenizer=tok, normalize=True, max_length=512)
        kwargs = {} if setting == "default" else {"use_multiprocessing": False}
        rate = median_rate(lambda t: model.encode(t, **kwargs), texts)
        emb = model.encode(texts[:2000], use_multiprocessing=False)
    if check_file is not None:
        np.save(check_file, emb)
    print(json.dumps({"rate": rate}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--m2v-python", help="python of a venv with model2vec 0.10 (omit: ours only)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sts", type=Path, default=STS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--check", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    artifact = args.artifact.resolve()
    if args.worker:
        worker(args.worker, artifact, args.texts, args.check)
        return
    use_repo()
    import numpy as np

    from edgeembed.sts import load_sts

    pythons = {"ours": sys.executable, "m2v": args.m2v_python}
    names = [n for n, (py, _) in CONTENDERS.items() if pythons[py]]
    rates: dict[str, list[float]] = {n: [] for n in names}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(load_sts(args.sts).sentences * 4), encoding="utf-8")
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for name in names if r % 2 == 0 else names[::-1]:
                py, mode = CONTENDERS[name]
                check = Path(tmp) / f"{mode.replace(':', '-')}.npy"
                cmd = [pythons[py], __file__, str(artifact), "--worker", mode, "--texts", str(texts_file)]
                out = subprocess.run([*cmd, "--check", str(check)], capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{name} failed:\n{out.stderr[-2000:]}")
                rates[name].append(json.loads(out.stdout.strip().splitlines()[-1])["rate"])
            print(
                f"round {r + 1}: load {loads[-1]:.2f} " + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names)
            )
        embs = {p.stem: np.load(p) for p in Path(tmp).glob("*.npy")}
    ours = embs["ours-32"]
    for key, e in embs.items():
        cos = (ours * e).sum(1) / np.maximum(np.linalg.norm(ours, axis=1) * np.linalg.norm(e, axis=1), 1e-12)
        print(f"agreement with ours ({key}): min cosine {cos.min():.7f} over {len(cos)} texts")
    print(f"\nload average per round: {', '.join(f'{x:.2f}' for x in loads)}")
    print("| contender | sent/s (median over rounds) | min–max |\n|---|---:|---:|")
    for n in names:
        print(f"| {n} | {statistics.median(rates[n]):.0f} | {min(rates[n]):.0f}–{max(rates[n]):.0f} |")


if __name__ == "__main__":
    main()
