"""Training steps/s of a distilled student by how the step runs (bench/REDUCE.md, "Faster training
steps?"): eager fp32 (what `reduce` runs), bf16 autocast, or torch.compile. One mode per process (compile
state does not mix); batches as `reduce` makes them (length buckets of corpus texts), random unit targets.

    python bench/lab/train_step_speed.py eager; python bench/lab/train_step_speed.py bf16 10
    python bench/lab/train_step_speed.py compile
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import CORPUS

from edgeembed.reduce.distill import length_buckets
from edgeembed.reduce.student import (
    SentenceModel,
    keep_layers,
    load_dense_torch,
    load_tokenizer,
    load_transformer,
    to_torch,
    torch,
)
from edgeembed.source import load_source

KEEP = [0, 2, 4, 5]
ROUNDS = 3


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "eager"
    round_steps = int(sys.argv[2]) if len(sys.argv) > 2 else 60  # bf16 without hardware bf16: use 10
    warm = min(20, round_steps)
    torch.set_num_threads(2)
    spec = load_source(None)
    tok = load_tokenizer(spec, 128)
    with CORPUS.open(encoding="utf-8") as f:
        texts = [line.strip() for _, line in zip(range(64 * 400), f) if line.strip()]
    enc = tok.encode(texts)
    batches = length_buckets(np.array([len(e.ids) for e in enc]), 64, 32, 0)
    targets = torch.nn.functional.normalize(torch.randn(len(texts), spec.dim), dim=-1)
    torch.manual_seed(0)
    model = SentenceModel(
        keep_layers(load_transformer(spec.transformer_dir), KEEP), spec, load_dense_torch(spec)
    )
    model.train(False)
    model.transformer.get_input_embeddings().weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    forward = torch.compile(model, dynamic=True) if mode == "compile" else model

    def run(chunk: list[np.ndarray]) -> float:
        t0 = time.perf_counter()
        for idx in chunk:
            inputs = to_torch(tok.pad([enc[i] for i in idx]), model.input_names)
            if mode == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    pred = forward(inputs)
                pred = pred.float()
            else:
                pred = forward(inputs)
            loss = ((pred - targets[torch.from_numpy(idx)]) ** 2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return len(chunk) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    rate = run(batches[:warm])
    print(f"{mode}: warm-up {warm} steps in {time.perf_counter() - t0:.0f} s ({rate:.2f} steps/s)")
    for r in range(ROUNDS):
        chunk = batches[warm + r * round_steps : warm + (r + 1) * round_steps]
        print(f"{mode}: {run(chunk):.2f} steps/s", flush=True)


if __name__ == "__main__":
    main()
