"""Embedding quantization with sentence-transformers' `quantize_embeddings` semantics, numpy only.

int8/uint8: 256 buckets per dimension between a calibrated (min, max) per dimension; `ranges` is that
(2, dim) array and is stored with the output so queries are quantized the same way. binary/ubinary:
the sign bits (x > 0) packed 8 per byte; binary is ubinary - 128 as int8. As in sentence-transformers 6:
bucket = floor((x - min) / step) clipped to [0, 255] (values outside the calibrated range land in the end
buckets), a constant dimension has step 1, and dequantizing gives min + bucket * step.
"""

from __future__ import annotations

import numpy as np

from edgeembed.errors import InputError

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
DTYPES = {
    "float32": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "binary": np.int8,
    "ubinary": np.uint8,
}


def needs_ranges(precision: str) -> bool:
    return precision in ("int8", "uint8")


def stored_dim(precision: str, dim: int) -> int:
    """Columns of the quantized matrix: dim, or dim/8 rounded up for the packed binary forms."""
    check_precision(precision)
    return (dim + 7) // 8 if precision in ("binary", "ubinary") else dim


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")


def calibrate_ranges(embeddings: np.ndarray) -> np.ndarray:
    """Per-dimension (min, max) of a sample of the corpus, shape (2, dim), float32."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or len(emb) == 0:
        raise InputError("calibration needs a non-empty (n, dim) matrix of float embeddings")
    return np.vstack((emb.min(axis=0), emb.max(axis=0))).astype(np.float32)


def quantize_embeddings(
    embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None
) -> np.ndarray:
    """float (n, dim) -> the precision's dtype; int8/uint8 need `ranges` from `calibrate_ranges`."""
    check_precision(precision)
    emb = np.atleast_2d(np.asarray(embeddings))
    if emb.dtype.kind != "f":
        raise InputError(f"embeddings to quantize must be float, got {emb.dtype}")
    if precision == "float32":
        return emb.astype(np.float32)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(emb > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        raise InputError(f"{precision} quantization needs calibrated ranges (calibrate_ranges on a sample)")
    ranges = np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, emb.shape[1]):
        raise InputError(f"ranges must have shape (2, {emb.shape[1]}), got {ranges.shape}")
    starts = ranges[0]
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, np.float32(1.0), steps)
    buckets = np.clip(np.floor((emb - starts) / steps), 0, 255)
    if precision == "uint8":
        return buckets.astype(np.uint8)
    return (buckets - 128).astype(np.int8)


def dequantize(quantized: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Back to float32: bucket floors for int8/uint8, ±1 per bit for binary/ubinary (for rescoring)."""
    check_precision(precision)
    q = np.atleast_2d(np.asarray(quantized))
    if precision == "float32":
        return q.astype(np.float32)
    if precision in ("binary", "ubinary"):
        bits = q.astype(np.int16) + 128 if precision == "binary" else q
        return np.unpackbits(bits.astype(np.uint8), axis=-1).astype(np.float32) * 2 - 1
    if ranges is None:
        raise InputError(f"{precision} embeddings need their ranges to be dequantized")
    ranges = np.asarray(ranges, dtype=np.float32)
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, np.float32(1.0), steps)
    buckets = q.astype(np.float32) + (128 if precision == "int8" else 0)
    return ranges[0] + buckets * steps
