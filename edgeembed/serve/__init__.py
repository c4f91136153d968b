"""`edgeembed serve`: an OpenAI-compatible embedding server (the `serve` extra: starlette, uvicorn,
prometheus-client) over an in-process Encoder (workers=1) or an EncoderPool, with dynamic batching."""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeembed._imports import require
from edgeembed.errors import InputError
from edgeembed.runtimes import RuntimeOptions
from edgeembed.serve.batcher import Batcher, BatcherConfig

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeConfig:
    host: str = LOOPBACK
    port: int = 8000
    workers: int = 1
    threads: int | None = None
    runtime: str | None = None
    model_name: str | None = None  # default: the artifact folder's name
    api_key: str | None = None
    matryoshka: bool = False  # `dimensions` below the model's: truncate + renormalize
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    max_texts: int = 2048
    max_text_chars: int = 100_000
    max_body_bytes: int = 16 * 1024 * 1024
    graceful_s: float = 30.0  # SIGTERM: how long in-flight requests may take to finish


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(artifact: str | Path, config: ServeConfig):
    """The app with its encoder (or pool) loaded and its batcher running; closing it (the app's shutdown)
    stops both."""
    from edgeembed.serve.app import Limits, Metrics, create_app

    if config.workers < 1:
        raise InputError(f"workers must be >= 1, got {config.workers}")
    options = RuntimeOptions(threads=config.threads)
    if config.workers == 1:
        from edgeembed.encoder import Encoder

        encoder = Encoder.load(artifact, runtime=config.runtime, options=options)
        close_encoder: Callable[[], None] = lambda: None  # noqa: E731
    else:
        from edgeembed.pool import EncoderPool

        encoder = EncoderPool(artifact, workers=config.workers, runtime=config.runtime, options=options)
        close_encoder = encoder.close
    metrics = Metrics()
    batcher = Batcher(encoder, consumers=config.workers, config=config.batcher, on_batch=metrics.on_batch)
    tokenizer = encoder.tokenizer

    def count_tokens(texts: list[str]) -> int:
        return sum(len(e.ids) for e in tokenizer.encode(texts))

    def shutdown() -> None:
        batcher.close()
        close_encoder()

    name = config.model_name or Path(artifact).expanduser().resolve().name
    limits = Limits(config.max_body_bytes, config.max_texts, config.max_text_chars)
    return create_app(
        batcher,
        name,
        encoder.dim,
        encoder.max_seq_length,
        metrics,
        api_key=config.api_key,
        limits=limits,
        matryoshka=config.matryoshka,
        count_tokens=count_tokens,
        on_shutdown=shutdown,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: an ephemeral one), bound before the model loads so a wrong address
    fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP; with
    # proto 0, a keep-alive client waits ~40 ms per response (Nagle vs delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def serve(
    artifact: str | Path,
    config: ServeConfig | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve ARTIFACT until SIGINT/SIGTERM: in-flight requests are answered, then the workers stop.
    `announce(url)` is called once the socket listens (the URL has the real port when port is 0)."""
    config = config or ServeConfig()
    uvicorn = require("uvicorn", "serve")
    if not is_loopback(config.host) and not config.api_key:
        print(
            f"warning: serving on {config.host} without --api-key: anyone who can reach it may use it",
            file=sys.stderr,
        )
    sock = bind(config.host, config.port)
    try:
        app = build_app(artifact, config)
        host, port = sock.getsockname()[:2]
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        if announce is not None:
            announce(url)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                timeout_graceful_shutdown=config.graceful_s,
                lifespan="on",
                access_log=False,
            )
        )
        server.run(sockets=[sock])
    finally:
        sock.close()


__all__ = ["Batcher", "BatcherConfig", "ServeConfig", "build_app", "serve"]
