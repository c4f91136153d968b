"""Peak RSS of one OpenVINO artifact by the Encoder's token budget and hint, in a fresh process per call
(bench/PROFILE.md section 15): load, one sentence, the STS-b test sentences at batch 32 twice (the second
timed), 50 at batch 1; prints VmHWM and sent/s as one JSON line.

    for b in 512 256 1024; do for h in default latency; do
        python bench/lab/ov_budget.py ART $b $h; done; done
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import sts_sentences

from edgeembed import Encoder
from edgeembed.runtimes import RuntimeOptions


def peak_mb() -> int:
    """VmHWM, read here: edgeembed.bench.worker's reader comes with the edgeembed.bench package, whose
    import (matplotlib among it) adds ~20 MB to the very peak this probe measures."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmHWM"))


def main() -> None:
    art, budget, hint = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    options = RuntimeOptions(threads=2) if hint == "default" else RuntimeOptions(threads=2, hint=hint)
    enc = Encoder.load(art, options=options)
    sents = sts_sentences()
    enc.encode(sents[:1])
    enc.encode(sents, batch_size=32, max_batch_tokens=budget)
    t0 = time.perf_counter()
    enc.encode(sents, batch_size=32, max_batch_tokens=budget)
    seconds = time.perf_counter() - t0
    for text in sents[:50]:
        enc.encode([text])
    print(
        json.dumps(
            {
                "artifact": Path(art).name,
                "budget": budget,
                "hint": hint,
                "peak_mb": peak_mb(),
                "sent_s": round(len(sents) / seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
