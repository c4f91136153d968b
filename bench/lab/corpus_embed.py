"""Corpus bench: `edgeembed embed` vs the Encoder's in-memory throughput, and peak RSS of embed / encode.

Each measurement runs in a fresh process (peak RSS = that process's ru_maxrss); in-memory and streaming
runs are interleaved so that a busy machine slows both alike and the ratio stays meaningful.

    python bench/lab/corpus_embed.py throughput ARTIFACT CORPUS --lines 20000 --repeats 2
    python bench/lab/corpus_embed.py rss ARTIFACT CORPUS --lines 100000 --what embed
    python bench/lab/corpus_embed.py rss ARTIFACT CORPUS --lines 100000 --what encode --cwd-of /work/main

Prints one JSON line per measurement (append them to a .jsonl; bench/CORPUS.md is written from them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _head(corpus: Path, lines: int, dest: Path) -> Path:
    with corpus.open("rb") as src, dest.open("wb") as out:
        out.writelines(itertools.islice(src, lines))
    return dest


def worker(mode: str, artifact: str, corpus: str, out: str) -> None:
    """One measurement inside this process."""
    from edgeembed import Encoder

    enc = Encoder.load(artifact)
    t0 = time.perf_counter()
    if mode == "inmemory":
        texts = Path(corpus).read_text(encoding="utf-8").split("\n")
        if texts and texts[-1] == "":
            texts.pop()
        emb = enc.encode(texts, batch_size=32)
        rows = len(emb)
    else:
        from edgeembed.corpus import EmbedConfig, Source, embed_corpus

        rows = embed_corpus(enc, Source.open(corpus), Path(out), EmbedConfig(), overwrite=True).rows
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"mode": mode, "rows": rows, "seconds": seconds, "rate": rows / seconds, "peak_rss_mb": peak}
        )
    )


def _run(args: list[str], cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    res = subprocess.run(args, capture_output=True, text=True, cwd=cwd, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def throughput(artifact: str, corpus: Path, lines: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        part = _head(corpus, lines, Path(tmp) / "part.txt")
        rates: dict[str, list[float]] = {"inmemory": [], "embed": []}
        for _ in range(repeats):
            for mode in ("inmemory", "embed"):
                r = _run(
                    [sys.executable, __file__, "worker", mode, artifact, str(part), str(Path(tmp) / "o.npy")],
                    REPO,
                )
                rates[mode].append(r["rate"])
                print(json.dumps({"kind": "throughput_run", "lines": lines, **r}), flush=True)
        best = {m: max(v) for m, v in rates.items()}
        print(
            json.dumps(
                {
                    "kind": "throughput",
                    "lines": lines,
                    **{f"{m}_rate": v for m, v in best.items()},
                    "ratio": best["embed"] / best["inmemory"],
                }
            ),
            flush=True,
        )


def rss(artifact: str, corpus: Path, lines: int, what: str, python: str, cwd: Path) -> None:
    """Peak RSS and wall time of a CLI run, measured by /usr/bin/time -v."""
    with tempfile.TemporaryDirectory() as tmp:
        part = corpus if lines <= 0 else _head(corpus, lines, Path(tmp) / "part.txt")
        out = Path(tmp) / "o.npy"
        if what == "embed":
            cli = ["embed", artifact, str(part), "--out", str(out), "--no-progress"]
        else:
            cli = ["encode", artifact, "-i", str(part), "-o", str(out)]
        t0 = time.perf_counter()
        res = subprocess.run(
            ["/usr/bin/time", "-v", python, "-m", "edgeembed", *cli],
            capture_output=True,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(cwd)},
        )
        seconds = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(res.stderr[-2000:])
        peak_kb = next(int(x.split()[-1]) for x in res.stderr.splitlines() if "Maximum resident" in x)
        rows = sum(1 for _ in part.open("rb"))
        print(
            json.dumps(
                {
                    "kind": "rss",
                    "what": what,
                    "code": str(cwd),
                    "lines": rows,
                    "seconds": seconds,
                    "rate": rows / seconds,
                    "peak_rss_mb": peak_kb / 1024,
                }
            ),
            flush=True,
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["throughput", "rss"])
    ap.add_argument("artifact")
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--lines", type=int, default=20_000, help="first N lines; 0 = all (rss)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--what", choices=["embed", "encode"], default="embed")
    ap.add_argument("--cwd-of", default=str(REPO), help="run the CLI from this checkout (e.g. /work/main)")
    args = ap.parse_args()
    if args.kind == "throughput":
        throughput(args.artifact, args.corpus, args.lines, args.repeats)
    else:
        rss(args.artifact, args.corpus, args.lines, args.what, sys.executable, Path(args.cwd_of))


if __name__ == "__main__":
    main()
