"""Which of an OpenVINO IR's mapped weight pages are still read after the runtime drops them
(bench/PROFILE.md section 16): the runtime maps the .bin itself and drops its resident pages after a
compiled model's first inference; whatever is resident later was read again (a table gathered in place,
or weights the plugin reads in place instead of repacking). Prints the .bin mapping's resident MB and
VmRSS/VmHWM after load, one sentence, the STS-b test sentences at batch 32 (throughput recompile), and
50 at batch 1, as JSON lines.

    python bench/lab/ov_residency.py ART      # e.g. a bf16 IR on an AMX host: ~23 MB (the table) or ~45?
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import sts_sentences

from edgeembed import Encoder
from edgeembed.runtimes import RuntimeOptions


def state(stage: str, weights: Path) -> dict:
    target, mine, resident_kb = str(weights.resolve()), False, 0
    with open("/proc/self/smaps", encoding="utf-8") as f:
        for line in f:
            header = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
            if header:
                mine = header.group(1).strip() == target
            elif mine and line.startswith("Rss:"):
                resident_kb += int(line.split()[1])
    with open("/proc/self/status", encoding="ascii") as f:
        status = {
            k: int(v.split()[0]) // 1024
            for k, _, v in (x.partition(":") for x in f)
            if k in ("VmRSS", "VmHWM")
        }
    return {"stage": stage, "bin_resident_mb": round(resident_kb / 1024, 1), **status}


def main() -> None:
    art = Path(sys.argv[1])
    weights = next((art / "openvino").glob("*.bin"))
    enc = Encoder.load(art, options=RuntimeOptions(threads=2))
    print(json.dumps({"artifact": art.name, "bin_mb": round(weights.stat().st_size / 2**20, 1)}))
    print(json.dumps(state("load", weights)))
    sents = sts_sentences()
    enc.encode(sents[:1])
    print(json.dumps(state("first sentence", weights)))
    enc.encode(sents, batch_size=32)
    print(json.dumps(state("STS-b at batch 32", weights)))
    for text in sents[:50]:
        enc.encode([text])
    print(json.dumps(state("50 at batch 1", weights)))


if __name__ == "__main__":
    main()
