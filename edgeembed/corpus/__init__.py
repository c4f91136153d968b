"""Corpus jobs above the Encoder: streaming readers/writers, the resumable embed job, embedding
quantization, rescored search, Ray Data. Uses only the public Encoder; nothing below imports this."""

from edgeembed.corpus.job import EmbedConfig, EmbedResult, embed_corpus, encode_source, encode_stream
from edgeembed.corpus.quantization import (
    PRECISIONS,
    calibrate_ranges,
    dequantize,
    quantize_embeddings,
)
from edgeembed.corpus.readers import Record, Source, count_records, read_records

__all__ = [
    "PRECISIONS",
    "EmbedConfig",
    "EmbedResult",
    "Record",
    "Source",
    "calibrate_ranges",
    "count_records",
    "dequantize",
    "embed_corpus",
    "encode_source",
    "encode_stream",
    "quantize_embeddings",
    "read_records",
]
