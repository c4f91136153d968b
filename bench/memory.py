"""Peak RSS and cold start per artifact and setting, each in a fresh process, as the bench measures them.

Every measurement runs edgeembed/bench/worker.py (the bench's own worker): interpreter start, import,
`Encoder.load(threads=2)`, one sentence at batch 1 (= cold start), warm-up, the STS-b test sentences at
batch 32, then the batch-1 latency loop; peak RSS is VmHWM at the end. Settings are RuntimeOptions fields
(JSON; `max_batch_tokens` goes to every encode call instead) and optionally another checkout's code
(`--code NAME=PATH`, e.g. main's, for a before/after), run interleaved (round 1 of every pair, then
round 2, ...), median over rounds. Quiet machine wanted for cold start; RSS does not depend on load.

    python bench/memory.py /tmp/mem/ov-int8 /tmp/mem/onnx-fp32 --rounds 5
    python bench/memory.py /tmp/mem/ov-int8 --setting cached='{"cache_dir": "/tmp/mem/ovcache"}' \
        --code main=/work/main --code branch=.
    python bench/memory.py /tmp/mem/ov-int8 --setting b512='{}' --setting b256='{"max_batch_tokens": 256}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "edgeembed" / "bench" / "worker.py"
STS = Path("/work/shared/data/stsbenchmark/sts-test.csv")
# Setting keys that go to every `Encoder.encode` call instead of RuntimeOptions.
ENCODE_KEYS = ("max_batch_tokens",)


def sentences(sts: Path) -> list[str]:
    sys.path.insert(0, str(REPO))
    from edgeembed.sts import load_sts

    return load_sts(sts).sentences


def run_one(
    artifact: Path, options: dict, code: Path, tmp: Path, tag: str, sents: Path, threads: int, latency: int
) -> dict:
    n = len(json.loads(sents.read_text(encoding="utf-8")))
    options = dict(options)
    encode_options = {k: options.pop(k) for k in ENCODE_KEYS if k in options}
    job = {
        "kind": "edgeembed",
        "path": str(artifact),
        "threads": threads,
        "options": options,
        "encode_options": encode_options,
        "import_path": str(code),
        "sentences": str(sents),
        "latency_indices": sorted({int(i * (n - 1) / max(latency - 1, 1)) for i in range(latency)}),
        "batch_size": 32,
        "warmup_batches": 2,
        "result": str(tmp / f"{tag}.json"),
        "embeddings": None,
    }
    job_path = tmp / f"{tag}.job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[key] = str(threads)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(job_path), repr(t0)],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{artifact} {options}: worker failed: {proc.stderr.strip().splitlines()[-3:]}")
    return json.loads(Path(job["result"]).read_text(encoding="utf-8"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument(
        "--setting",
        action="append",
        default=[],
        help="NAME=JSON RuntimeOptions fields and `max_batch_tokens` (the Encoder's token budget), e.g. "
        'cached=\'{"cache_dir": "/tmp/c"}\'; default: one setting "default" = {}',
    )
    ap.add_argument(
        "--code", action="append", default=[], help="NAME=PATH of an edgeembed checkout (default: this one)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-sentences", type=int, default=50)
    ap.add_argument("--sts", type=Path, default=STS)
    ap.add_argument("--json", type=Path, help="also write every raw result here")
    args = ap.parse_args()
    settings = [s.split("=", 1) for s in args.setting] or [["default", "{}"]]
    try:
        settings = [(name, json.loads(js)) for name, js in settings]
        if not all(isinstance(opts, dict) for _, opts in settings):
            raise TypeError("a setting is not a JSON object")
    except (ValueError, TypeError):  # ValueError: NAME without =JSON, or not JSON
        raise SystemExit(f"--setting wants NAME=JSON (an object), got {args.setting}") from None
    codes = [c.split("=", 1) for c in args.code] or [["this", str(REPO)]]
    codes = [(name, Path(p).resolve()) for name, p in codes]
    cells = [(a, s, c) for a in args.artifacts for s in settings for c in codes]
    raw: dict[int, list[dict]] = {i: [] for i in range(len(cells))}
    with tempfile.TemporaryDirectory(prefix="edgeembed-memory-") as tmp_name:
        tmp = Path(tmp_name)
        sents = tmp / "sentences.json"
        sents.write_text(json.dumps(sentences(args.sts)), encoding="utf-8")
        for r in range(args.rounds):
            for i, (artifact, (sname, opts), (cname, code)) in enumerate(cells):
                res = run_one(
                    artifact, opts, code, tmp, f"c{i}r{r}", sents, args.threads, args.latency_sentences
                )
                raw[i].append(res)
                print(
                    f"round {r + 1} {artifact.name} {sname} {cname}: cold {res['cold_start_s']:.3f} s, "
                    f"peak {res['peak_rss_mb']:.0f} MB, {res['throughput']:.0f} sent/s, "
                    f"load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                )
    print(
        f"\nmedian of {args.rounds} fresh processes per cell, {args.threads} threads, batch 32; "
        f"load average now {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| artifact | setting | code | cold start s | load s | RSS at first embedding MB | peak RSS MB | sent/s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for i, (artifact, (sname, _), (cname, _)) in enumerate(cells):
        rs = raw[i]

        def med(key: str, rs: list[dict] = rs) -> float:
            return statistics.median(x[key] for x in rs)

        print(
            f"| {artifact.name} | {sname} | {cname} | {med('cold_start_s'):.3f} | {med('load_s'):.3f} | "
            f"{med('rss_at_first_embedding_mb'):.0f} | {med('peak_rss_mb'):.0f} | {med('throughput'):.0f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {"artifact": str(a), "setting": s[0], "options": s[1], "code": c[0], "runs": raw[i]}
                    for i, (a, s, c) in enumerate(cells)
                ],
                indent=1,
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
