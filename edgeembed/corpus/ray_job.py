"""The embed job on Ray Data, for corpora past one machine:

    records -> ray.data.from_arrow(blocks) -> map_batches(EncoderActor, concurrency=N) -> write_parquet(OUT/)

One Encoder per actor, loaded once in the actor's constructor (Ray's stateful batch-inference pattern).
Records are read on the driver by edgeembed's own readers, not `ray.data.read_text`: Ray's text reader
splits with str.splitlines() (so \\v, \\f, U+2028... would add rows) and drops empty lines, and rows must
match records one to one. Reading is ~1M lines/s, embedding ~1k/s per worker, so the driver is not the
bottleneck; the blocks live in Ray's object store (spilled to disk when large).

Output: a Parquet dataset folder with the same columns as the single-process job (record, [id], [text],
embedding as a fixed-size list) and the same quantization (ranges calibrated once, on the driver). Row
order across files is Ray's; sort by `record` to line rows up with the input.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.corpus.job import EmbedConfig, calibrate_source
from edgeembed.corpus.quantization import needs_ranges, quantize_embeddings
from edgeembed.corpus.readers import Source, batched, id_spec, read_records
from edgeembed.corpus.writers import embedding_table, write_json, write_jsonl
from edgeembed.encoder import Encoder
from edgeembed.errors import InputError


@dataclass(frozen=True)
class RayResult:
    out: Path
    rows: int
    skipped: int
    errors: Path | None
    metadata: dict


class EncoderActor:
    """A Ray Data callable class: loads the artifact once, then embeds + quantizes each batch."""

    def __init__(
        self,
        artifact: str,
        precision: str,
        ranges: list | None,
        batch_size: int,
        prompt_name: str | None,
        threads: int,
        keep_text: bool,
    ) -> None:
        self.encoder = Encoder.load(artifact, threads=threads)
        self.precision, self.batch_size, self.prompt_name = precision, batch_size, prompt_name
        self.ranges = None if ranges is None else np.asarray(ranges, dtype=np.float32)
        self.keep_text = keep_text

    def __call__(self, batch: Any) -> Any:
        texts = batch.column("text").to_pylist()
        emb = self.encoder.encode(texts, batch_size=self.batch_size, prompt_name=self.prompt_name)
        block = quantize_embeddings(emb, self.precision, self.ranges)
        ids = batch.column("id").to_pylist() if "id" in batch.column_names else None
        id_type = batch.column("id").type if ids is not None else None
        return embedding_table(
            block, batch.column("record").to_pylist(), ids, texts if self.keep_text else None, id_type
        )


def embed_with_ray(
    artifact: str | Path,
    source: Source,
    out: str | Path,
    config: EmbedConfig | None = None,
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    overwrite: bool = False,
) -> RayResult:
    """Run the embed job on a Ray cluster (`address`, e.g. "auto" or "ray://host:10001") or on a local
    instance started (and shut down) here. OUT is a folder of Parquet files plus _edgeembed.json."""
    ray = require("ray", "ray")
    pa = require("pyarrow", "ray")
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise InputError(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    if not out.expanduser().resolve().parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist; create it first")
    artifact = str(Path(artifact).expanduser().resolve())
    ranges = None
    if needs_ranges(config.precision):
        ranges = calibrate_source(Encoder.load(artifact, threads=threads), source, config)

    bad: list[dict] = []
    blocks = []
    ids = id_spec(source)
    for chunk in batched(read_records(source), config.shard_size):
        for r in chunk:
            if r.error is None:
                continue
            if config.on_error == "stop":
                raise InputError(f"{source.name} {r.where}: {r.error}; fix it, or pass --on-error skip")
            bad.append({"record": r.number, "where": r.where, "reason": r.error})
        good = [r for r in chunk if r.error is None]
        columns = {"record": pa.array([r.number for r in good], pa.int64()), "text": [r.text for r in good]}
        if source.id_column:
            columns["id"] = pa.array(ids.values(r.id for r in good), ids.arrow_type())  # type: ignore[union-attr]
        blocks.append(pa.table(columns))

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False)
    try:
        n_workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = (
            ray.data.from_arrow(blocks)
            if blocks
            else ray.data.from_arrow([pa.table({"record": [], "text": []})])
        )
        ds = ds.map_batches(
            EncoderActor,
            fn_constructor_kwargs={
                "artifact": artifact,
                "precision": config.precision,
                "ranges": None if ranges is None else ranges.tolist(),
                "batch_size": config.batch_size,
                "prompt_name": config.prompt_name,
                "threads": threads or 1,
                "keep_text": config.keep_text,
            },
            batch_size=config.shard_size,
            batch_format="pyarrow",
            concurrency=n_workers,
            num_cpus=threads or 1,
        )
        ds.write_parquet(str(out))
    finally:
        if started:
            ray.shutdown()
    metadata = {
        "artifact": artifact,
        "input": source.name,
        "column": source.column,
        "precision": config.precision,
        "ranges": None if ranges is None else ranges.tolist(),
        "prompt_name": config.prompt_name,
        "skipped": len(bad),
        "engine": "ray",
    }
    write_json(out / "_edgeembed.json", metadata)
    errors = None
    if bad:
        errors = out / "_errors.jsonl"
        write_jsonl(errors, bad)
    rows = sum(len(b) for b in blocks)
    return RayResult(out, rows, len(bad), errors, json.loads(json.dumps(metadata)))
