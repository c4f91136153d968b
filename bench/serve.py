"""Serving and pool bench (issue 20): `edgeembed serve` throughput and p50/p99 latency at 1, 8 and 64
concurrent clients (1-text and 32-text requests), a 2,048-request flood, the pool's scaling on
`edgeembed embed` (workers x threads), and the in-process batch-32 throughput they are compared with.

    python bench/serve.py --artifact /tmp/minilm-int8 --corpus ../shared/data/corpus/sentences.txt \
        --out bench/serve.json

Every number is stored with the 1-minute load average when it was taken: on a shared machine a high
load means the number is a floor, not the machine's. Clients are threads of this process (stdlib
http.client, keep-alive, base64 answers), so they share the cores with the server they measure.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeembed.encoder import Encoder  # noqa: E402
from edgeembed.sts import load_sts  # noqa: E402

STS = REPO.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def sentences() -> list[str]:
    data = load_sts(STS)
    return list(data.s1) + list(data.s2)


def in_process(artifact: str, texts: list[str], threads: int, repeats: int = 3) -> dict:
    enc = Encoder.load(artifact, threads=threads)
    enc.encode(texts[:256], batch_size=32)  # warm
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        enc.encode(texts, batch_size=32)
        best = max(best, len(texts) / (time.perf_counter() - t))
    return {
        "what": f"in-process Encoder, {threads} threads, batch 32",
        "texts_per_s": round(best, 1),
        "load": load(),
    }


def embed_cli(artifact: str, corpus: Path, out: Path, workers: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "edgeembed", "embed", artifact, str(corpus), "--out", str(out), "--overwrite",
           "--threads", str(threads), "--no-progress", "--workers", str(workers)]  # fmt: skip
    before = load()
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    seconds = time.perf_counter() - t
    rows = sum(1 for _ in corpus.open(encoding="utf-8"))
    return {
        "what": f"embed --workers {workers} --threads {threads}",
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds, 1),
        "load_before": before,
        "load_after": load(),
    }


class Server:
    def __init__(self, artifact: str, workers: int, threads: int, extra: tuple[str, ...] = ()) -> None:
        cmd = [sys.executable, "-m", "edgeembed", "serve", artifact, "--port", "0", "--workers", str(workers),
               "--threads", str(threads), *extra]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stderr.readline()
        m = re.search(r"http://([\d.]+):(\d+)", line)
        if not m:
            raise RuntimeError(f"server did not start: {line}{self.proc.stderr.read()}")
        self.host, self.port = m.group(1), int(m.group(2))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


class PeerServer(Server):
    """infinity-emb (its torch engine, on the CPU) serving the same model, from its own venv: the serving
    peer a user would pick. `threads` sets torch's intra-op threads (OMP_NUM_THREADS)."""

    def __init__(self, python: str, model_dir: str, threads: int, port: int = 7997) -> None:
        cmd = [python, "-m", "infinity_emb.cli", "v2", "--model-id", model_dir, "--served-model-name", "m",
               "--engine", "torch", "--device", "cpu", "--port", str(port), "--url-prefix", "/v1",
               "--batch-size", "32"]  # fmt: skip
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "HF_HUB_OFFLINE": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        }
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.host, self.port = "127.0.0.1", port
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"infinity-emb exited with {self.proc.returncode}: {' '.join(cmd)}")
            try:
                conn = HTTPConnection(self.host, port, timeout=5)
                conn.request("GET", "/v1/models")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError("infinity-emb did not answer within 300 s")


def post(conn: HTTPConnection, texts: list[str]) -> tuple[int, np.ndarray | None]:
    body = json.dumps({"input": texts, "model": "m", "encoding_format": "base64"})
    conn.request("POST", "/v1/embeddings", body=body, headers={"content-type": "application/json"})
    r = conn.getresponse()
    raw = r.read()
    if r.status != 200:
        return r.status, None
    data = json.loads(raw)["data"]
    return 200, np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])


def load_test(server: Server, texts: list[str], clients: int, per_request: int, requests_each: int) -> dict:
    rng = np.random.default_rng(clients * 100 + per_request)
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        conn = HTTPConnection(server.host, server.port, timeout=300)
        for _ in range(requests_each):
            start = int(rng.integers(0, len(texts) - per_request))
            t = time.perf_counter()
            status, _ = post(conn, texts[start : start + per_request])
            dt = time.perf_counter() - t
            with lock:
                latencies.append(dt)
                statuses.append(status)
        conn.close()

    before = load()
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(client, range(clients)))
    wall = time.perf_counter() - t
    ok = statuses.count(200)
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "texts_per_request": per_request,
        "requests": len(statuses),
        "ok": ok,
        "texts_per_s": round(ok * per_request / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "load_before": before,
        "load_after": load(),
    }


def flood(server: Server, n: int = 2048, clients: int = 128) -> dict:
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        conn = HTTPConnection(server.host, server.port, timeout=300)
        try:
            status, _ = post(conn, [f"flood text number {i}"] * 8)
        except OSError:
            status = -1
        conn.close()
        with lock:
            counts[status] = counts.get(status, 0) + 1

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(one, range(n)))
    return {"requests": n, "clients": clients, "statuses": counts, "seconds": round(time.perf_counter() - t, 1),
            "load": load()}  # fmt: skip


def serve_matrix(server: Server, name: str, texts: list[str], full: bool) -> list[dict]:
    rows = []
    post(HTTPConnection(server.host, server.port), texts[:64])  # warm
    for clients, each in ((1, 40), (8, 10), (64, 10)):
        for per in (1, 32):
            if not full and clients != 64:
                continue
            rows.append({"server": name, **load_test(server, texts, clients, per, each)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def peer(args: argparse.Namespace, texts: list[str], res: dict) -> None:
    """infinity-emb at 2 and 1 torch threads (all loads at its better one is read off the 64-client rows)."""
    res["peer"] = []
    for threads in (2, 1):
        server = PeerServer(args.peer_python, args.peer_model, threads)
        try:
            res["peer"] += serve_matrix(server, f"infinity-emb torch, {threads} threads", texts, threads == 2)
            if threads == 2:
                res["peer_flood"] = flood(server)
                print(json.dumps(res["peer_flood"]), flush=True)
        finally:
            server.close()
    base = res["in_process"][0]["texts_per_s"]
    for r in res["serve"] + res["peer"]:
        r["vs_in_process_batch32"] = round(r["texts_per_s"] / base, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--corpus", default=str(REPO.parent / "shared" / "data" / "corpus" / "sentences.txt"))
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--out", default=str(REPO / "bench" / "serve.json"))
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--skip-ours", action="store_true", help="only the peer (merged into an existing --out)")
    ap.add_argument("--peer-python", help="python of a venv with infinity-emb[torch,server]: serve it too")
    ap.add_argument("--peer-model", help="the Sentence-Transformers folder the artifact was exported from")
    args = ap.parse_args()
    texts = sentences()
    if args.skip_ours:
        report = json.loads(Path(args.out).read_text())
        res = report["results"]
        peer(args, texts, res)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    report: dict = {"artifact": args.artifact, "cores": len(os.sched_getaffinity(0)), "results": {}}
    res = report["results"]
    res["in_process"] = [in_process(args.artifact, texts, 2), in_process(args.artifact, texts, 1)]
    print(json.dumps(res["in_process"]), flush=True)

    if not args.skip_embed:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus.txt"
            with open(args.corpus, encoding="utf-8") as src, corpus.open("w", encoding="utf-8") as dst:
                for i, line in enumerate(src):
                    if i >= args.lines:
                        break
                    dst.write(line)
            runs = []
            for workers, threads in ((1, 2), (2, 1), (1, 2), (2, 1)):  # interleaved, twice
                runs.append(
                    embed_cli(
                        args.artifact, corpus, Path(tmp) / f"out-{workers}x{threads}.npy", workers, threads
                    )
                )
                print(json.dumps(runs[-1]), flush=True)
            one = np.load(Path(tmp) / "out-1x2.npy")
            two = np.load(Path(tmp) / "out-2x1.npy")
            best = {
                k: min(r["seconds"] for r in runs if r["what"].startswith(f"embed --workers {k}"))
                for k in (1, 2)
            }
            res["embed"] = {
                "runs": runs,
                "speedup_2x1_vs_1x2": round(best[1] / best[2], 3),
                "same_rows": bool(one.shape == two.shape),
                "same_bytes": bool(np.array_equal(one, two)),
            }
            print(json.dumps({k: v for k, v in res["embed"].items() if k != "runs"}), flush=True)

    res["serve"] = []
    for workers, threads in ((2, 1), (1, 2)):
        server = Server(args.artifact, workers, threads)
        try:
            res["serve"] += serve_matrix(
                server, f"{workers} workers x {threads} threads", texts, workers == 2
            )
        finally:
            server.close()
    server = Server(args.artifact, 2, 1, ("--max-queue-texts", "256"))
    try:
        res["flood"] = flood(server)
        print(json.dumps(res["flood"]), flush=True)
    finally:
        server.close()
    base = res["in_process"][0]["texts_per_s"]
    for r in res["serve"]:
        r["vs_in_process_batch32"] = round(r["texts_per_s"] / base, 3)
    if args.peer_python:
        peer(args, texts, res)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
