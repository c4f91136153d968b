"""`edgeembed serve`: the real `openai` client against servers started here, on loopback only."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from edgeembed.encoder import Encoder  # noqa: E402
from edgeembed.serve import BatcherConfig, ServeConfig, bind, build_app  # noqa: E402
from edgeembed.serve.app import Metrics, create_app  # noqa: E402
from edgeembed.serve.batcher import Batcher  # noqa: E402

from conftest import WORDS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def texts_for(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 20)))) for _ in range(n)]


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve `app` in a thread of this process on an ephemeral loopback port; stop it on exit."""
    import uvicorn

    sock = bind(HOST, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://{HOST}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def http(method: str, url: str, body: bytes | None = None, json_body=None, timeout: float = 120) -> Reply:
    """One request with the standard library (a connection of its own: safe from any thread)."""
    parts = urllib.parse.urlsplit(url)
    if json_body is not None:
        body = json.dumps(json_body).encode()
    conn = HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path, body=body, headers={"content-type": "application/json"})
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def server(tiny_artifact) -> Iterator[str]:
    with running(build_app(tiny_artifact, ServeConfig(max_texts=64, max_body_bytes=200_000))) as url:
        yield url


def test_openai_client_gets_the_encoders_embeddings(server, tiny_artifact):
    enc = Encoder.load(tiny_artifact)
    texts = texts_for(20)
    c = client(server)
    ref = enc.encode(texts)
    for fmt in ("float", "base64"):
        res = c.embeddings.create(input=texts, model="tiny", encoding_format=fmt)
        if fmt == "base64":  # asked for explicitly, the client hands the string over as it came
            got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in res.data])
        else:
            got = np.array([d.embedding for d in res.data], dtype=np.float32)
        assert [d.index for d in res.data] == list(range(len(texts)))
        np.testing.assert_allclose(got, ref, atol=1e-6)
        assert res.usage.prompt_tokens == sum(len(e.ids) for e in enc.tokenizer.encode(texts))
    default = c.embeddings.create(input="hello world", model="tiny")  # the client asks for base64
    np.testing.assert_allclose(default.data[0].embedding, enc.encode("hello world"), atol=1e-6)
    assert [m.id for m in c.models.list().data] == [tiny_artifact.name]


def test_raw_base64_is_little_endian_float32(server, tiny_artifact):
    enc = Encoder.load(tiny_artifact)
    r = http("POST", f"{server}/v1/embeddings", json_body={"input": ["a cat"], "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, enc.encode("a cat"), atol=1e-6)


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 400),
        (b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),  # was a 500 (RecursionError)
        (b'"a string"', 422),
        (b"{}", 422),
        (b'{"input": 3}', 422),
        (b'{"input": []}', 400),
        (b'{"input": [1, 2, 3]}', 422),
        (b'{"input": ["ok", null]}', 422),
        (b'{"input": "x", "model": 5}', 422),
        (b'{"input": "x", "encoding_format": "int8"}', 400),
        (b'{"input": "x", "dimensions": 8}', 400),  # not a Matryoshka model
        (b'{"input": "x", "dimensions": "8"}', 422),
        (b'{"input": "bad \\ud800 text"}', 400),
        (b'{"input": [' + b",".join([b'"t"'] * 65) + b"]}", 413),
        (b'{"input": "' + b"w " * 150_000 + b'"}', 413),
    ],
)
def test_bad_requests_get_4xx_in_openai_shape_and_the_server_lives(server, body, status):
    r = http("POST", f"{server}/v1/embeddings", body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    assert http("GET", f"{server}/health").json()["status"] == "ok"


def test_openai_client_raises_its_own_errors(server):
    c = client(server)
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        c.embeddings.create(input="x", model="tiny", dimensions=4)
    with pytest.raises(openai.UnprocessableEntityError):
        c.embeddings.create(input=[[1, 2]], model="tiny")
    assert http("GET", f"{server}/nothing").status_code == 404
    assert http("GET", f"{server}/v1/embeddings").status_code == 405


def test_metrics_count_requests_texts_batches(server):
    client(server).embeddings.create(input=["one", "two", "three"], model="tiny")
    text = http("GET", f"{server}/metrics").text
    for series in ("edgeembed_requests_total", "edgeembed_texts_total", "edgeembed_batch_texts_bucket",
                   "edgeembed_queue_texts", "edgeembed_request_seconds_bucket"):  # fmt: skip
        assert series in text
    assert float(re.search(r"^edgeembed_texts_total (\S+)", text, re.M).group(1)) >= 3


def test_matryoshka_dimensions_truncate_and_renormalize(tiny_artifact):
    enc = Encoder.load(tiny_artifact)
    with running(build_app(tiny_artifact, ServeConfig(matryoshka=True))) as url:
        res = client(url).embeddings.create(input=["a dog sat"], model="tiny", dimensions=8)
    full = enc.encode("a dog sat")
    cut = full[:8] / np.linalg.norm(full[:8])
    np.testing.assert_allclose(res.data[0].embedding, cut, atol=1e-6)


def test_api_key_is_required_when_set(tiny_artifact):
    with running(build_app(tiny_artifact, ServeConfig(api_key="s3cret"))) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").embeddings.create(input="x", model="tiny")
        assert client(url, "s3cret").embeddings.create(input="x", model="tiny").data
        assert http("GET", f"{url}/health").status_code == 200  # probes need no key
        assert http("GET", f"{url}/metrics").status_code == 401


def test_many_concurrent_clients_on_a_pool_lose_nothing(tiny_artifact):
    """64 clients x 3 requests (1 or 32 texts) against two worker processes: every answer is the
    Encoder's, for its own texts."""
    enc = Encoder.load(tiny_artifact)
    with running(build_app(tiny_artifact, ServeConfig(workers=2, threads=1))) as url:
        c = client(url)

        def one_client(i: int) -> int:
            ok = 0
            for r in range(3):
                texts = texts_for(1 if (i + r) % 2 else 32, seed=i * 10 + r)
                got = c.embeddings.create(input=texts, model="tiny", encoding_format="float")
                emb = np.array([d.embedding for d in got.data], dtype=np.float32)
                np.testing.assert_allclose(emb, enc.encode(texts), atol=1e-5)
                ok += 1
            return ok

        with ThreadPoolExecutor(64) as ex:
            assert sum(ex.map(one_client, range(64))) == 64 * 3


class SlowEncoder:
    """Takes 50 ms per encode call, so a queue fills under a flood."""

    def __init__(self, dim: int = 4) -> None:
        self.dim = dim

    def encode(self, texts, batch_size: int = 32) -> np.ndarray:
        time.sleep(0.05)
        return np.ones((len(texts), self.dim), dtype=np.float32)


class CountingEncoder(SlowEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def encode(self, texts, batch_size: int = 32) -> np.ndarray:
        self.texts += list(texts)
        return super().encode(texts, batch_size)


def test_a_request_nobody_waits_for_stops_within_a_chunk():
    """A huge request whose client went away (or a server past its shutdown grace) used to run to its
    end, keeping the consumer busy while the process was meant to exit (then an abort at exit)."""
    import asyncio

    from edgeembed.serve.batcher import CHUNK_TEXTS

    enc = CountingEncoder()
    batcher = Batcher(enc, config=BatcherConfig(max_queue_texts=100_000, max_batch_tokens=10**9))
    big = ["t"] * (CHUNK_TEXTS * 20)

    async def give_up() -> int:
        task = asyncio.ensure_future(batcher.embed(big, len(big)))
        deadline = time.monotonic() + 30
        while not enc.texts and time.monotonic() < deadline:  # the consumer is on its first chunk
            await asyncio.sleep(0.005)
        seen = len(enc.texts)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return seen

    seen = asyncio.run(give_up())
    batcher.close(timeout=10)
    # at most the chunk running when it was cancelled, and one the consumer had just begun, follow
    assert 0 < seen <= len(enc.texts) <= seen + 2 * CHUNK_TEXTS < len(big)


def test_a_flood_gets_only_200_or_429_with_retry_after():
    batcher = Batcher(SlowEncoder(), config=BatcherConfig(max_queue_texts=8, max_batch_tokens=8))
    app = create_app(batcher, "slow", 4, 16, Metrics(), on_shutdown=batcher.close)
    with running(app) as url:

        def post(i: int) -> tuple[int, str | None]:
            r = http("POST", f"{url}/v1/embeddings", json_body={"input": ["a", "b"]})
            return r.status_code, r.headers.get("retry-after")

        with ThreadPoolExecutor(32) as ex:
            results = list(ex.map(post, range(256)))
        codes = {c for c, _ in results}
        assert codes <= {200, 429}, codes
        assert 200 in codes and 429 in codes
        assert all(ra == "1" for c, ra in results if c == 429)
        assert http("GET", f"{url}/health").status_code == 200


def test_sigterm_answers_in_flight_requests_then_exits(tiny_artifact):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeembed", "serve", str(tiny_artifact), "--port", "0", "--workers", "2",
         "--threads", "1"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        texts = texts_for(3600, seed=1)
        with ThreadPoolExecutor(12) as ex:
            futures = [
                ex.submit(
                    http, "POST", f"{url}/v1/embeddings", json_body={"input": texts[i * 300 : (i + 1) * 300]}
                )
                for i in range(12)
            ]
            deadline = time.monotonic() + 60  # the first answer: the others are queued or running
            while time.monotonic() < deadline and not any(f.done() for f in futures):
                time.sleep(0.005)
            in_flight = sum(not f.done() for f in futures)
            proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert in_flight >= 1
        assert [a.status_code for a in answers] == [200] * 12
        assert all(len(a.json()["data"]) == 300 for a in answers)
        proc.wait(timeout=60)
        assert proc.returncode == 0  # SIGTERM is how a server is stopped
        assert "error" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_minilm_fp32_through_the_openai_client(minilm_artifact, sts_test_path):
    from edgeembed.sts import load_sts

    texts = list(load_sts(sts_test_path).s1[:200])
    enc = Encoder.load(minilm_artifact)
    with running(build_app(minilm_artifact, ServeConfig())) as url:
        res = client(url).embeddings.create(input=texts, model="minilm", encoding_format="float")
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    ref = enc.encode(texts)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999


def test_listening_socket_is_tcp_so_asyncio_turns_nagle_off():
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; without it a keep-alive
    client (the openai client) waits for a delayed ACK on every response."""
    import socket

    sock = bind(HOST, 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == HOST
    finally:
        sock.close()
