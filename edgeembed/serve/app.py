"""The OpenAI-compatible embedding API as a Starlette app over a Batcher.

POST /v1/embeddings takes what the `openai` client sends ({input, model, encoding_format, dimensions,
user}) and answers its shapes; errors are {"error": {"message", "type", "param", "code"}} with 400
(bad JSON or input), 401 (api key), 404, 413 (too large), 422 (wrong types), 429 (queue full, with
Retry-After) or 503 (shutting down, with Retry-After). GET /health, /metrics (Prometheus), /v1/models.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import InputError
from edgeembed.serve.batcher import Batcher, Overloaded, Stopping, estimate_tokens

require("starlette", "serve")
require("prometheus_client", "serve")

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest  # noqa: E402
from prometheus_client.exposition import CONTENT_TYPE_LATEST  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402


@dataclass(frozen=True)
class Limits:
    """What one request may hold; past them it gets 413 before any work."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_texts: int = 2048  # OpenAI's own limit per request
    max_text_chars: int = 100_000


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_response(
    status: int, message: str, kind: str, param: str | None = None, **headers: str
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers or None)


class Metrics:
    """Prometheus series of one app (its own registry, so two apps in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edgeembed_requests", "HTTP requests answered", ["path", "status"], registry=r
        )
        self.texts = Counter("edgeembed_texts", "Texts embedded", registry=r)
        self.batch_texts = Histogram(
            "edgeembed_batch_texts",
            "Texts per encode call (dynamic batch)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
            registry=r,
        )
        self.batch_seconds = Histogram("edgeembed_batch_seconds", "Seconds per encode call", registry=r)
        self.queue_depth = Gauge("edgeembed_queue_texts", "Texts waiting for a batch", registry=r)
        self.latency = Histogram(
            "edgeembed_request_seconds",
            "Seconds from request to response, /v1/embeddings",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )

    def on_batch(self, texts: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_seconds.observe(seconds)


def parse_input(body: Any, limits: Limits, dim: int, matryoshka: bool) -> tuple[list[str], str, int | None]:
    """(texts, encoding_format, dimensions) from a request body, or ApiError."""
    if not isinstance(body, dict):
        raise ApiError(422, "the request body must be a JSON object")
    if "input" not in body:
        raise ApiError(422, "'input' is required", param="input")
    raw = body["input"]
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = raw
    elif isinstance(raw, list) and not raw:
        raise ApiError(400, "'input' must not be an empty list", param="input")
    elif isinstance(raw, list) and all(isinstance(t, (int, list)) for t in raw):
        raise ApiError(422, "'input' as token ids is not supported; send strings", param="input")
    else:
        raise ApiError(422, "'input' must be a string or a list of strings", param="input")
    if len(texts) > limits.max_texts:
        raise ApiError(413, f"'input' holds {len(texts)} texts; at most {limits.max_texts}", param="input")
    for i, t in enumerate(texts):
        if len(t) > limits.max_text_chars:
            raise ApiError(
                413, f"input[{i}] has {len(t)} characters; at most {limits.max_text_chars}", param="input"
            )
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400, f"input[{i}] holds a lone surrogate, which is not text", param="input"
            ) from None
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(422, "'model' must be a string", param="model")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dims = body.get("dimensions")
    if dims is not None:
        if not isinstance(dims, int) or isinstance(dims, bool):
            raise ApiError(422, "'dimensions' must be an integer", param="dimensions")
        if dims != dim and not (matryoshka and 1 <= dims < dim):
            what = f"1 to {dim} (Matryoshka)" if matryoshka else f"only {dim} (this model is not Matryoshka)"
            raise ApiError(400, f"'dimensions' {dims} is not available: {what}", param="dimensions")
        if dims == dim:
            dims = None
    return texts, fmt, dims


def create_app(
    batcher: Batcher,
    model_name: str,
    dim: int,
    max_seq_length: int,
    metrics: Metrics,
    api_key: str | None = None,
    limits: Limits | None = None,
    matryoshka: bool = False,
    count_tokens: Callable[[list[str]], int] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> Starlette:
    """The app; `on_shutdown` runs after the server has answered its in-flight requests."""
    limits = limits or Limits()
    expected = f"Bearer {api_key}".encode() if api_key else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    def guarded(
        path: str, handler: Callable[[Request], Awaitable[Response]], open_: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                if not open_ and not authorized(request):
                    raise ApiError(
                        401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error"
                    )
                response = await handler(request)
            except ApiError as exc:
                response = error_response(exc.status, exc.message, exc.kind, exc.param)
            except Overloaded as exc:
                response = error_response(
                    429, f"server overloaded: {exc}", "rate_limit_error", **{"Retry-After": "1"}
                )
            except (InputError, TypeError) as exc:  # what the Encoder refuses in a text that got past us
                response = error_response(400, str(exc), "invalid_request_error", "input")
            except Stopping as exc:
                response = error_response(503, str(exc), "server_error", **{"Retry-After": "1"})
            except asyncio.CancelledError:
                # The server stops past its grace period: answer in OpenAI's shape rather than let the
                # cancellation become a plain-text 500 and a traceback in the log.
                response = error_response(
                    503, "the server stopped before this request finished; retry", "server_error",
                    **{"Retry-After": "1"},
                )  # fmt: skip
            except Exception as exc:  # the server stays up; the client gets one line
                response = error_response(500, f"{type(exc).__name__}: {exc}", "server_error")
            metrics.requests.labels(path, str(response.status_code)).inc()
            return response

        return endpoint

    async def embeddings(request: Request) -> Response:
        start = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limits.max_body_bytes:
                raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not JSON: {exc}") from None
        except RecursionError:
            raise ApiError(400, "the request body nests JSON too deeply") from None
        texts, fmt, dims = parse_input(body, limits, dim, matryoshka)
        tokens = [estimate_tokens(t, max_seq_length) for t in texts]
        emb = await batcher.embed(texts, sum(tokens))
        if dims is not None:  # Matryoshka: the first dims components, renormalized
            emb = emb[:, :dims]
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        emb = np.ascontiguousarray(emb, dtype="<f4")
        if fmt == "base64":
            data = [base64.b64encode(row.tobytes()).decode("ascii") for row in emb]
        else:
            data = emb.tolist()
        used = count_tokens(texts) if count_tokens is not None else sum(tokens)
        metrics.texts.inc(len(texts))
        metrics.latency.observe(time.perf_counter() - start)
        return JSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
                "model": body.get("model") or model_name,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "model": model_name, "dim": dim, "queue_texts": batcher.queue_depth}
        )

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "edgeembed"}],
            }
        )

    async def prometheus(request: Request) -> Response:
        metrics.queue_depth.set(batcher.queue_depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return error_response(
            status, f"{request.method} {request.url.path}: not found or not allowed", "invalid_request_error"
        )

    routes = [
        Route("/v1/embeddings", guarded("/v1/embeddings", embeddings), methods=["POST"]),
        Route("/embeddings", guarded("/v1/embeddings", embeddings), methods=["POST"]),
        Route("/health", guarded("/health", health, open_=True), methods=["GET"]),
        Route("/metrics", guarded("/metrics", prometheus), methods=["GET"]),
        Route("/v1/models", guarded("/v1/models", models), methods=["GET"]),
    ]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        if on_shutdown is not None:
            on_shutdown()

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)
