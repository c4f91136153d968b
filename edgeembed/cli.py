"""Thin click layer over the library: parse, call, print; user mistakes exit 1 with one line."""

from __future__ import annotations

import errno
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import click

from edgeembed.errors import EdgeEmbedError


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so every `finally` (the export's
    temporary folder, its lock) runs; a BaseException so no `except Exception` in a library eats it."""


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
    raise _Terminated


_STREAM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}


def _one_line_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """A library warning on the command line: one line, without Python's file, line and source."""
    click.echo(f"warning: {message}", err=True)


def _stopped(ctx: click.Context) -> str:
    said = "stopped and cleaned up: no half-written output is left"
    if ctx.invoked_subcommand == "embed":  # the one command that keeps work to resume
        said += "; complete shards are kept: rerun the same command to resume"
    return said


class _Group(click.Group):
    """Turns edgeembed's own errors, SIGINT and SIGTERM into one line on stderr instead of a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
        try:
            with warnings.catch_warnings():  # restores Python's own display when the command ends
                warnings.showwarning = _one_line_warning
                return super().invoke(ctx)
        except EdgeEmbedError as exc:
            _fail(str(exc))
        except _Terminated:
            if ctx.invoked_subcommand == "serve":  # SIGTERM is how a server is stopped: not an error
                click.echo(
                    "edgeembed serve: stopped (SIGTERM) after answering the requests in flight", err=True
                )
                sys.exit(0)
            _fail(f"terminated (SIGTERM); {_stopped(ctx)}", 143)
        except KeyboardInterrupt:
            _fail(f"interrupted (SIGINT); {_stopped(ctx)}", 130)
        except BrokenPipeError:
            # stdout's reader went away (`| head`): stop quietly, as Unix tools do, and keep Python's
            # final flush from printing a second error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except OSError as exc:
            # files are named by the library's own errors; an unnamed one is a write to stdout or stderr
            if exc.filename is not None or exc.errno not in _STREAM_ERRNOS:
                raise
            _fail(f"writing to standard output failed: {exc.strerror or exc}")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


# Options several commands share, declared once; each command passes its own help where it differs.
def _out_option(help: str):
    return click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help=help)


def _overwrite_option(help: str):
    return click.option("--overwrite", is_flag=True, help=help)


def _threads_option(help: str | None = None, type: click.ParamType | None = None):
    return click.option("--threads", type=type or click.IntRange(min=1), default=None, help=help)


def _batch_size_option():
    return click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))


def _prompt_name_option(help: str):
    return click.option("--prompt-name", default=None, help=help)


def _json_option(help: str):
    return click.option("--json", "as_json", is_flag=True, help=help)


def _workers_option(more: str = ""):
    return click.option(
        "--workers",
        default=None,
        type=click.IntRange(min=1),
        help="Worker processes, each with its own runtime of --threads threads (EncoderPool; same output "
        f"as one process) [default: 1]{more}.",
    )


def _input_format_options(column_help: str, format_help: str):
    """--column and --format (the input's format) as the corpus commands take them."""

    def decorate(f):
        f = click.option(
            "--format",
            "fmt",
            type=click.Choice(["txt", "jsonl", "csv", "tsv", "parquet"]),
            default=None,
            help=format_help,
        )(f)
        return click.option("--column", default=None, help=column_help)(f)

    return decorate


def _open_encoder(artifact: Path, workers: int | None = None, **options):
    """The command's model: an Encoder in this process (workers None or 1) or an EncoderPool, with
    RuntimeOptions(**options), as a context manager that stops the pool's workers however the command
    ends."""
    import contextlib

    from edgeembed.runtimes import RuntimeOptions

    runtime_options = RuntimeOptions(**options)
    if workers is None or workers == 1:
        from edgeembed.encoder import Encoder

        return contextlib.nullcontext(Encoder.load(artifact, options=runtime_options))
    from edgeembed.pool import EncoderPool

    return EncoderPool(artifact, workers=workers, options=runtime_options)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeembed")
def main() -> None:
    """edgeembed: small, fast sentence embeddings on CPUs and edge devices.

    \b
    edgeembed export --out minilm-onnx                 # the default model, fp32 ONNX
    edgeembed encode minilm-onnx --input texts.txt --output emb.npy
    edgeembed info minilm-onnx
    """


@main.command()
@click.argument("model", required=False)
@_out_option("Artifact folder to create.")
@click.option(
    "--format",
    "fmt",
    default="onnx",
    show_default=True,
    type=click.Choice(["onnx", "openvino", "ort"]),
    help="ort: the ONNX graph converted to ONNX Runtime's mobile format, with required_operators.config.",
)
@click.option(
    "--end-to-end",
    is_flag=True,
    help="Also write <graph>_e2e (onnx/..._e2e.onnx, or openvino/..._e2e.xml with --format openvino): "
    "tokenizer + model + head in one graph, strings in, embeddings out (the 'mobile' extra).",
)
@click.option("--keep-onnx", is_flag=True, help="With --format ort: keep the .onnx files beside the .ort.")
@_overwrite_option(
    "Replace an existing artifact (a folder holding edgeembed.json); never another folder, the source or "
    "the current directory."
)
@_threads_option("Threads for validation runs.")
@click.option(
    "--optimize",
    type=click.Choice(["auto", "none", "basic", "all"]),
    default="auto",
    show_default=True,
    help="ONNX graph optimization. auto: transformer fusions (Attention, SkipLayerNorm, ...) when the model "
    "type supports them and the fused graph passes validation, else the plain graph (said in one line); "
    "all: fusions or fail; basic: ONNX Runtime's basic rewrites; none.",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", "dynamic", "static", "weights-int8", "weights-int4"]),
    default="none",
    show_default=True,
    help="int8: dynamic (onnx, no data needed), static (needs --calibration; batch invariant), "
    "weights-int8 / weights-int4 (openvino, weight-only compression).",
)
@click.option(
    "--isa",
    type=click.Choice(["auto", "avx512_vnni", "avx512", "avx2", "arm64"]),
    default="auto",
    show_default=True,
    help="CPU a static or dynamic int8 graph is tuned for (ONNX; OpenVINO static); auto = this machine's.",
)
@click.option(
    "--activations",
    type=click.Choice(["auto", "row", "tensor"]),
    default="auto",
    show_default=True,
    help="Dynamic int8 activation scales: tensor (one per batch, the fastest: a text's embedding depends on "
    "its neighbours) or row (each text's own, batch invariant, 0.7-0.8x the speed); auto = tensor unless "
    "it keeps less than the gate's preferred mean cosine to fp32 (0.985), then row.",
)
@click.option("--calibration", default=None, help="Calibration texts: .txt, .csv/.tsv/.jsonl or an STS tsv.")
@click.option("--calibration-column", default=None, help="Text column of a .csv/.tsv/.jsonl source.")
@click.option("--calibration-size", default=300, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--calibration-method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="minmax",
    show_default=True,
    help="ONNX static quantization's range estimator.",
)
@click.option("--sts", default=None, help="STS tsv: check the Spearman an int8 graph retains vs fp32.")
@click.option(
    "--min-retained",
    default=0.99,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Fail (write nothing) below this share of fp32 STS Spearman (with --sts).",
)
@click.option(
    "--precision",
    "export_precision",
    type=click.Choice(["f32", "bf16"]),
    default="f32",
    show_default=True,
    help="OpenVINO: float-op precision the artifact is validated with and runs with by default.",
)
def export(
    model: str | None,
    out: Path,
    fmt: str,
    end_to_end: bool,
    keep_onnx: bool,
    overwrite: bool,
    threads: int | None,
    optimize: str,
    quantize: str,
    isa: str,
    activations: str,
    calibration: str | None,
    calibration_column: str | None,
    calibration_size: int,
    calibration_method: str,
    sts: str | None,
    min_retained: float,
    export_precision: str,
) -> None:
    """Export MODEL (a Sentence-Transformers folder; default: all-MiniLM-L6-v2) to a validated artifact.

    \b
    Examples:
      edgeembed export --out minilm-onnx
      edgeembed export ./my-st-model --out my-model-onnx --overwrite
      edgeembed export --out minilm-int8 --quantize dynamic --sts sts-test.csv   # fused when supported
      edgeembed export --out minilm-static --quantize static --calibration texts.txt
      edgeembed export --format openvino --out minilm-ov
      edgeembed export --quantize dynamic --isa arm64 --format ort --end-to-end --out minilm-android
      edgeembed export --format openvino --quantize static --calibration texts.txt --out minilm-ov-int8
      edgeembed export --format openvino --quantize weights-int4 --sts sts-test.csv --out minilm-ov-int4
    """
    from edgeembed.build import export as run_export
    from edgeembed.calibration import CalibrationConfig

    _refuse_unused(
        ("isa", quantize != "none", "tunes an int8 graph: add --quantize"),
        ("min_retained", sts is not None, "is checked against an STS set: add --sts"),
        ("calibration_size", calibration is not None, "applies to --calibration texts"),
        ("calibration_column", calibration is not None, "applies to --calibration texts"),
        (
            "calibration_method",
            quantize == "static" and fmt in ("onnx", "ort"),
            "is ONNX static quantization's estimator: add --quantize static (ONNX)",
        ),
    )
    calib = None
    if calibration is not None:
        calib = CalibrationConfig(calibration, column=calibration_column, size=calibration_size)
    result = run_export(
        model,
        out,
        format=fmt,
        overwrite=overwrite,
        threads=threads,
        on_step=lambda msg: click.echo(f"· {msg}", err=True),
        optimize=optimize,
        quantize=_onnx_quantize(quantize, isa, calibration_method, activations)
        if fmt in ("onnx", "ort")
        else _openvino_quantize(quantize, isa),
        end_to_end=end_to_end,
        keep_onnx=keep_onnx,
        calibration=calib,
        sts=sts,
        min_retained=min_retained,
        precision=None if export_precision == "f32" else export_precision,
    )
    m = result.manifest
    v = m.validation
    size = sum((result.path / f).stat().st_size for f in m.files) / 1e6
    click.echo(f"artifact: {result.path}")
    click.echo(
        f"  {m.runtime} {m.precision}, dim {m.dim}, {size:.1f} MB; validation vs {v.get('reference')}: "
        f"min cosine {v['min_cosine']:.6f}, max abs diff {v['max_abs_diff']:.2e}"
    )
    if "sts_retained" in v:
        click.echo(
            f"  STS Spearman {v['sts']:.2f} vs fp32 {v['sts_fp32']:.2f} ({100 * v['sts_retained']:.2f}% retained)"
        )
    if "batch_invariance" in v:
        inv = v["batch_invariance"]
        click.echo(
            f"  batch invariance (alone vs in a mixed batch): mean cosine {inv['mean_cosine']:.5f}, min {inv['min_cosine']:.5f}"
        )


def _refuse_unused(*options: tuple[str, bool, str]) -> None:
    """An option the user typed that this run would ignore is a mistake to say, not to skip silently."""
    ctx = click.get_current_context()
    for name, applies, why in options:
        if not applies and ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            raise EdgeEmbedError(f"--{name.replace('_', '-')} {why}")


def _openvino_quantize(quantize: str, isa: str):
    """--quantize/--isa as an OpenVINO (nncf) config; the preset name when the ISA is this machine's."""
    if isa == "auto" or quantize == "none":
        return quantize
    from edgeembed.steps.nncf import resolve

    return resolve(quantize, isa)


def _onnx_quantize(quantize: str, isa: str, method: str, activations: str = "auto"):
    """--quantize/--isa/--calibration-method/--activations as one ONNX int8 config (None for none)."""
    if quantize in ("weights-int8", "weights-int4"):
        raise EdgeEmbedError(f"--quantize {quantize} is OpenVINO weight compression: add --format openvino")
    from edgeembed.steps.onnx_int8 import quantize_config

    if quantize == "none" and activations != "auto":
        raise EdgeEmbedError("--activations applies to --quantize dynamic")
    return quantize_config(quantize, isa=isa, method=method, activations=activations)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "-i",
    "source",
    default="-",
    show_default=True,
    help="UTF-8 text file, one text per line; - = stdin. Lines are split on \\n only (one trailing \\r "
    "is stripped; \\v, \\f, U+2028 etc. stay inside the text), so rows match lines one to one.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="FILE.npy (float32 matrix) or FILE.jsonl (one {text, embedding} per line); default: jsonl on stdout.",
)
@_batch_size_option()
@_prompt_name_option("A prompt the model defines (config_sentence_transformers.json).")
@_threads_option()
@click.option(
    "--hint",
    type=click.Choice(["latency", "throughput"]),
    default=None,
    help="OpenVINO PERFORMANCE_HINT (default: latency below batch 8, throughput from 8).",
)
@click.option("--streams", type=click.IntRange(min=1), default=None, help="OpenVINO streams.")
@click.option(
    "--precision",
    type=click.Choice(["f32", "bf16"]),
    default=None,
    help=(
        "OpenVINO float precision (default: the artifact's, else f32; bf16 is faster on CPUs that have "
        "it). An int8 artifact runs only with the precision its export validated."
    ),
)
@click.option(
    "--progress/--no-progress", default=None, help="Rate and ETA on stderr [default: when -o is given]."
)
@_overwrite_option("Replace an existing output file (never a folder, never the input).")
@_workers_option()
def encode(
    artifact: Path,
    source: str,
    output: Path | None,
    batch_size: int,
    prompt_name: str | None,
    threads: int | None,
    hint: str | None,
    streams: int | None,
    precision: str | None,
    progress: bool | None,
    overwrite: bool,
    workers: int | None,
) -> None:
    """Embed lines of text with ARTIFACT, streaming: memory holds one window of 10,000 lines.

    \b
    Examples:
      edgeembed encode minilm-onnx -i texts.txt -o emb.npy
      echo "hello world" | edgeembed encode minilm-onnx
    """
    from edgeembed.artifact import probe_lock
    from edgeembed.corpus.job import RateProgress, check_stream_output, encode_source
    from edgeembed.corpus.readers import Source

    src = Source.open(source, format="txt")
    if output is not None:
        check_stream_output(output, src, overwrite)  # before any work
        probe_lock(output, "encode")
    bar = RateProgress("encode", enabled=output is not None if progress is None else progress)
    try:
        with _open_encoder(
            artifact, workers, threads=threads, hint=hint, streams=streams, precision=precision
        ) as enc:
            rows = encode_source(
                enc,
                src,
                output,
                sys.stdout,
                batch_size=batch_size,
                prompt_name=prompt_name,
                progress=bar,
                overwrite=overwrite,
            )
    finally:
        bar.close()
    if output is not None:
        click.echo(f"wrote {rows} x {enc.dim} float32 to {output}", err=True)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("source", metavar="INPUT")
@_out_option("OUT.parquet or OUT.npy.")
@_input_format_options(
    "Text column of a .jsonl/.csv/.tsv/.parquet input.",
    "Input format [default: from the suffix]. txt: one text per line, split on \\n only.",
)
@click.option("--id-column", default=None, help="Column copied to the output's `id` (Parquet output).")
@click.option(
    "--precision",
    type=click.Choice(["float32", "int8", "uint8", "binary", "ubinary"]),
    default="float32",
    show_default=True,
    help="Embedding precision (int8/uint8 ranges are calibrated on a sample and stored with the output).",
)
@click.option("--keep-text", is_flag=True, help="Also store each text (Parquet output).")
@click.option(
    "--on-error",
    type=click.Choice(["stop", "skip"]),
    default="stop",
    show_default=True,
    help="A bad record stops the job, or is listed in OUT.errors.jsonl with the reason and skipped.",
)
@_batch_size_option()
@click.option(
    "--shard-size",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Records per shard: the unit of memory, of length sorting and of resuming.",
)
@click.option("--calibration-size", default=4096, show_default=True, type=click.IntRange(min=1))
@_prompt_name_option("A prompt the model defines.")
@_overwrite_option(
    "Replace an existing OUT; also discards an unfinished job on OUT that ran with other settings "
    "(one with the same settings is resumed: its shards are checked against the input)."
)
@_threads_option("Runtime threads per worker [default: the runtime's own].")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: Ray Data (read -> map_batches(Encoder actors) -> write_parquet); OUT is then a folder.",
)
@click.option(
    "--address", default=None, help="Ray cluster address (--engine ray) [default: start a local one]."
)
@_workers_option("; with --engine ray: Encoder actors")
@click.option("--progress/--no-progress", default=True, help="Rate and ETA on stderr.")
def embed(
    artifact: Path,
    source: str,
    out: Path,
    column: str | None,
    id_column: str | None,
    fmt: str | None,
    precision: str,
    keep_text: bool,
    on_error: str,
    batch_size: int,
    shard_size: int,
    calibration_size: int,
    prompt_name: str | None,
    overwrite: bool,
    threads: int | None,
    engine: str,
    address: str | None,
    workers: int | None,
    progress: bool,
) -> None:
    """Embed a corpus file INPUT with ARTIFACT into OUT, in bounded memory; rerun to resume.

    \b
    Rows match input records one to one (or the bad ones are listed in OUT.errors.jsonl with
    --on-error skip). An interrupted job continues from its last complete shard when rerun with the
    same arguments, and gives the same bytes as an uninterrupted run.
    \b
    Examples:
      edgeembed embed minilm-int8 sentences.txt --out emb.npy
      edgeembed embed minilm-int8 docs.jsonl --column body --id-column id --out emb.parquet
      edgeembed embed minilm-int8 docs.parquet --column text --precision int8 --out emb-int8.parquet
      edgeembed embed minilm-int8 docs.parquet --column text --engine ray --address auto --out emb-dir
    """
    from edgeembed.corpus import EmbedConfig, Source, embed_corpus
    from edgeembed.corpus.job import RateProgress

    src = Source.open(source, column=column, id_column=id_column, format=fmt)
    config = EmbedConfig(
        precision=precision,
        shard_size=shard_size,
        batch_size=batch_size,
        keep_text=keep_text,
        on_error=on_error,
        calibration_size=calibration_size,
        prompt_name=prompt_name,
    )
    if engine == "ray":
        from edgeembed.corpus.ray_job import embed_with_ray

        result = embed_with_ray(
            artifact, src, out, config, address=address, workers=workers, threads=threads, overwrite=overwrite
        )
        click.echo(f"wrote {result.rows} rows ({precision}) to {out} with Ray", err=True)
        return
    from edgeembed.artifact import probe_lock

    probe_lock(out, "embed")  # another run on OUT: refused before the model loads
    bar = RateProgress("embed", enabled=progress)
    try:
        with _open_encoder(artifact, workers, threads=threads) as enc:
            res = embed_corpus(enc, src, out, config, overwrite=overwrite, progress=bar)
    finally:
        bar.close()
    resumed = f", resumed after {res.resumed_shards} complete shards" if res.resumed_shards else ""
    click.echo(f"wrote {res.rows} rows ({res.precision}) to {res.out}{resumed}", err=True)
    if res.errors is not None:
        click.echo(f"skipped {res.skipped} bad records, listed in {res.errors}", err=True)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default)."
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes (EncoderPool); 1 runs the Encoder in the server's process.",
)
@_threads_option("Runtime threads per worker.")
@click.option("--runtime", default=None, help="Override the artifact's runtime (e.g. openvino).")
@click.option(
    "--model-name", default=None, help="The model id in responses and /v1/models [default: folder name]."
)
@click.option(
    "--api-key", envvar="EDGEEMBED_API_KEY", default=None, help="Require Authorization: Bearer KEY."
)
@click.option(
    "--matryoshka", is_flag=True, help="Allow `dimensions` below the model's (truncate, renormalize)."
)
@click.option("--max-queue-texts", default=8192, show_default=True, type=click.IntRange(min=1))
@click.option("--max-batch-tokens", default=16384, show_default=True, type=click.IntRange(min=1))
@click.option("--max-wait-ms", default=2.0, show_default=True, type=click.FloatRange(min=0))
@_batch_size_option()
def serve(
    artifact: Path,
    host: str,
    port: int,
    workers: int,
    threads: int | None,
    runtime: str | None,
    model_name: str | None,
    api_key: str | None,
    matryoshka: bool,
    max_queue_texts: int,
    max_batch_tokens: int,
    max_wait_ms: float,
    batch_size: int,
) -> None:
    """Serve ARTIFACT as an OpenAI-compatible embedding API (POST /v1/embeddings, GET /health,
    /metrics, /v1/models) until SIGINT/SIGTERM, which answer in-flight requests first.

    \b
    Example:
      edgeembed serve minilm-int8 --workers 2 --threads 1 --port 8000
    """
    from edgeembed.serve import BatcherConfig, ServeConfig
    from edgeembed.serve import serve as run_server

    config = ServeConfig(
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        runtime=runtime,
        model_name=model_name,
        api_key=api_key,
        matryoshka=matryoshka,
        batcher=BatcherConfig(
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            max_wait_s=max_wait_ms / 1000,
            max_queue_texts=max_queue_texts,
        ),
    )
    run_server(
        artifact, config, announce=lambda url: click.echo(f"edgeembed serve: listening on {url}", err=True)
    )


_FAISS_THREADS_HELP = (
    "faiss (OpenMP) threads for this process [default: all cores]; 1 avoids OpenMP's spinning on a "
    "busy shared machine."
)


def _faiss_threads(threads: int | None) -> None:
    """faiss's thread count is process-wide: the CLI owns its process, so it is set here, not in the
    library."""
    if threads is not None and importlib.util.find_spec("faiss") is not None:
        importlib.import_module("faiss").omp_set_num_threads(threads)


@main.group()
def index() -> None:
    """Build search indexes over corpus embeddings (see `edgeembed search`)."""


@index.command("build")
@click.argument("embeddings", type=click.Path(path_type=Path))
@_out_option("Index folder to create.")
@click.option(
    "--rescore-precision",
    type=click.Choice(["int8", "float32"]),
    default="int8",
    show_default=True,
    help="Vectors the first pass's candidates are rescored with (memory-mapped, read per query).",
)
@click.option(
    "--first-pass",
    type=click.Choice(["pq", "binary"]),
    default="pq",
    show_default=True,
    help="pq: faiss 4-bit product quantization scored with the float query (codebooks trained on the "
    "corpus, the `search` extra); binary: sentence-transformers' sign bits, Hamming distance. Both dim/8 "
    "bytes per vector.",
)
@_overwrite_option("Replace an index folder `index build` wrote (nothing else).")
@click.option(
    "--artifact",
    type=click.Path(path_type=Path),
    default=None,
    help="The artifact that made EMBEDDINGS, recorded so `search` can check its queries' model "
    "[default: the one the embeddings record; needed for a .npy from `encode`].",
)
@_threads_option(_FAISS_THREADS_HELP)
def index_build(
    embeddings: Path,
    out: Path,
    rescore_precision: str,
    first_pass: str,
    overwrite: bool,
    artifact: Path | None,
    threads: int | None,
) -> None:
    """Build a pq (or binary) + int8 index from float32 EMBEDDINGS (.npy or .parquet from `edgeembed embed`).

    \b
    Example:
      edgeembed embed minilm-int8 sentences.txt --out emb.npy
      edgeembed index build emb.npy --out emb-index
      edgeembed search emb-index minilm-int8 "a man plays the guitar" -k 10
    """
    from edgeembed.artifact import artifact_digest, read_manifest
    from edgeembed.corpus.search import UNKNOWN_ARTIFACT, Embeddings, SearchIndex

    _faiss_threads(threads)
    vectors = Embeddings.open(embeddings)
    named_dim = None if artifact is None else read_manifest(artifact).dim
    if named_dim is not None and named_dim != vectors.dim:
        raise EdgeEmbedError(
            f"{artifact} gives {named_dim}-d embeddings, {embeddings} holds {vectors.dim}-d ones: name the "
            "artifact that made them"
        )
    idx = SearchIndex.build(
        vectors,
        out,
        rescore_precision=rescore_precision,
        backend="faiss" if first_pass == "pq" else "numpy",
        overwrite=overwrite,
        first_pass=first_pass,
        artifact_sha256=None if artifact is None else artifact_digest(artifact),
    )
    if idx.artifact_sha256 == UNKNOWN_ARTIFACT:
        click.echo(
            f"warning: {embeddings} does not record the artifact that made it, so `search` cannot check "
            "its queries' model; pass --artifact to record it",
            err=True,
        )
    sizes = idx.size_bytes()
    click.echo(
        f"index {out}: {len(idx)} rows, {first_pass} first pass {sizes['first_pass'] / 1e6:.1f} MB (in memory), "
        f"{rescore_precision} rescoring store {sizes['rescore_store'] / 1e6:.1f} MB (memory-mapped)",
        err=True,
    )


@main.command()
@click.argument("index_path", metavar="INDEX", type=click.Path(path_type=Path))
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("queries", nargs=-1, required=True)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--rescore",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rescore k * RESCORE first-pass candidates with the float query (1 = first-pass order only).",
)
@click.option(
    "--backend",
    type=click.Choice(["faiss", "usearch", "numpy"]),
    default="faiss",
    show_default=True,
    help="Library of a binary first pass (faiss: the `search` extra; numpy: no extra, slower); "
    "a pq first pass always runs on faiss.",
)
@_prompt_name_option("Prompt for the queries (e.g. query).")
@_threads_option(_FAISS_THREADS_HELP)
@click.option(
    "--texts", default=None, help="The corpus file the embeddings were made from: print each hit's text."
)
@_input_format_options(
    "Text column of a .jsonl/.csv/.tsv/.parquet --texts file.",
    "Format of the --texts file [default: from the suffix].",
)
@click.option(
    "--allow-other-model",
    is_flag=True,
    help="Search even when ARTIFACT is not the artifact that embedded the indexed corpus (a warning).",
)
@_json_option("One JSON object per query.")
def search(
    index_path: Path,
    artifact: Path,
    queries: tuple[str, ...],
    k: int,
    rescore: int,
    backend: str,
    prompt_name: str | None,
    threads: int | None,
    texts: str | None,
    column: str | None,
    fmt: str | None,
    allow_other_model: bool,
    as_json: bool,
) -> None:
    """Search INDEX for QUERIES embedded with ARTIFACT: pq (or binary) first pass, int8 rescoring.

    \b
    Example:
      edgeembed search emb-index minilm-int8 "a man plays the guitar" --texts sentences.txt
    """
    from edgeembed.artifact import artifact_digest
    from edgeembed.corpus.readers import Source, read_records, surrogate_error
    from edgeembed.corpus.search import SearchIndex
    from edgeembed.encoder import Encoder

    for i, query in enumerate(queries, 1):
        # click decodes argv with surrogateescape: bytes that are not UTF-8 arrive as lone surrogates
        if surrogate_error(query) is not None:
            raise EdgeEmbedError(
                f"query {i} is not valid UTF-8 text; pass it in UTF-8 (check the terminal's locale)"
            )
    _faiss_threads(threads)
    text_source = None if texts is None else Source.open(texts, column=column, format=fmt)
    idx = SearchIndex.load(index_path, backend=backend)
    enc = Encoder.load(artifact)
    if enc.dim != idx.dim:
        raise EdgeEmbedError(f"{artifact} gives {enc.dim}-d embeddings, the index holds {idx.dim}-d ones")
    warning = idx.check_artifact(artifact_digest(artifact), allow_other=allow_other_model)
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)
    hits = idx.search(enc.encode(list(queries), prompt_name=prompt_name), k=k, rescore=rescore)
    wanted = set(hits.records.ravel().tolist())
    lookup: dict[int, str] = {}
    if text_source is not None:
        lookup = {r.number: r.text or "" for r in read_records(text_source) if r.number in wanted}
        if wanted - lookup.keys():
            raise EdgeEmbedError(
                f"{texts} has no record {min(wanted - lookup.keys())}, a hit of {index_path}: "
                "is it the corpus the embeddings were made from?"
            )
    for qi, query in enumerate(queries):
        rows = [
            {
                "record": int(rec),
                "score": round(float(sc), 6),
                **({"text": lookup.get(int(rec))} if lookup else {}),
            }
            for rec, sc in zip(hits.records[qi], hits.scores[qi])
        ]
        if as_json:
            click.echo(json.dumps({"query": query, "hits": rows}))
            continue
        click.echo(f"query: {query}")
        for rank, row in enumerate(rows, start=1):
            text = f"  {row['text']}" if "text" in row else ""
            click.echo(f"{rank:>4}. {row['score']:.4f}  record {row['record']}{text}")


def _outputs(details: dict) -> str:
    """The default graph's outputs as an app would ask for them (recorded since the head step; older
    artifacts: the token output alone)."""
    outputs = details.get("outputs")
    if not outputs:
        return "token embeddings"
    norm = " (normalized)" if details.get("normalized") else ""
    return ", ".join(f"{o}{norm}" if o == "sentence_embedding" else o for o in outputs)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@_json_option("Print the whole manifest as JSON.")
def info(artifact: Path, as_json: bool) -> None:
    """Show what an artifact is: runtime, precision, size, validation numbers, checksums status
    (exit status 1 when a file does not match its checksum)."""
    from edgeembed.artifact import artifact_size, read_manifest, verify_files

    m = read_manifest(artifact)
    try:
        verify_files(artifact, m)
        integrity = "ok"
    except EdgeEmbedError as exc:
        integrity = f"FAILED: {exc}"
    if as_json:
        click.echo(json.dumps({**m.to_dict(), "checksums_status": integrity}, indent=2, default=str))
        if integrity != "ok":
            sys.exit(1)  # a script can tell a damaged artifact from a sound one
        return
    size = artifact_size(artifact, m) / 1e6
    h = m.head
    rows = [
        ("format version", m.format_version),
        ("runtime", m.runtime),
        ("precision", m.precision),
        ("graph", m.graph),
        ("inputs", ", ".join(m.inputs)),
        ("outputs", _outputs(m.graphs[0].details)),
        ("dim", m.dim),
        ("max_seq_length", h.max_seq_length),
        (
            "pooling",
            "+".join(p.value for p in h.pooling) + ("" if h.include_prompt else " (prompt excluded)"),
        ),
        ("dense", len(h.dense)),
        ("normalize", h.normalize),
        ("prompts", ", ".join(h.prompts) or "-"),
        ("size", f"{size:.1f} MB in {len(m.files)} files"),
        ("source", m.source.get("path")),
        (
            "validation",
            ", ".join(
                f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.validation.items()
            ),
        ),
        ("quantization", json.dumps(m.quantization) if m.quantization else "-"),
        ("runtime options", json.dumps(m.runtime_options) if m.runtime_options else "-"),
        ("checksums", integrity),
        ("created", m.created),
    ]
    for i, g in enumerate(m.graphs[1:], start=1):  # the other graphs: strings-in, a static model's ONNX
        outputs = g.details.get("outputs") or [g.details.get("output", "-")]
        rows.insert(3 + i, (f"graph {i}", f"{g.file} ({g.runtime}, {g.input} in -> {', '.join(outputs)})"))
    for key, value in rows:
        click.echo(f"{key:>15}: {value}")
    from edgeembed.shippable import shippable_files

    click.echo(f"{'files to ship':>15}:")
    for f in shippable_files(artifact):
        click.echo(f"{'':>17}{f.path}  {f.size / 1e6:.1f} MB{'  (' + f.note + ')' if f.note else ''}")
        for domain, ops in f.operators.items():
            click.echo(f"{'':>19}{domain}: {', '.join(ops)}")
    if integrity != "ok":
        _fail(f"{artifact} is damaged ({integrity[len('FAILED: ') :]}); export it again", 1)


@main.command("reduce")
@click.argument("teacher", required=False)
@_out_option("Model folder to create.")
@click.option("--layers", type=click.IntRange(min=1), default=None, help="Keep this many transformer layers.")
@click.option("--keep", default="auto", show_default=True, help="Which layers: auto (by agreement) or 0,2,4.")
@click.option("--dim", type=click.IntRange(min=1), default=None, help="PCA to this many dimensions.")
@click.option("--static", "static", is_flag=True, help="Distill a static embedding model (model2vec method).")
@click.option("--corpus", default=None, help="Texts to learn from, one per line (.txt).")
@click.option("--sts", default=None, help="STS file (e.g. sts-dev.csv): a second signal in the curve.")
@click.option("--sts-test", default=None, help="STS file only reported in reduce.json (e.g. sts-test.csv).")
@click.option(
    "--preset",
    default="default",
    show_default=True,
    type=click.Choice(["default", "quick", "sts", "short", "long", "no-training"]),
    help="Training settings. Distillation: default (16,000 steps, at most 60 min), quick, sts (the first "
    "default: 600 steps, best by STS dev), short (8,000 steps), long (32,000). --static: default, quick "
    "(40k texts x 4 epochs), sts, no-training.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to train: auto = cuda when torch sees one, else cpu.",
)
@click.option(
    "--train-texts", type=click.IntRange(min=1), default=None, help="Distinct corpus texts to train on."
)
@click.option(
    "--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Training-time budget."
)
@click.option(
    "--vocab-words",
    type=click.IntRange(min=0),
    default=None,
    help="--static: give this many frequent corpus words their own rows (WordPiece vocabularies).",
)
@click.option(
    "--head-hidden",
    type=click.IntRange(min=0),
    default=None,
    help="--static: width of the two-layer ReLU head after the mean (a deep averaging network); "
    "default 4 x dim (1024), 0 for the plain mean.",
)
@click.option(
    "--yardstick",
    "yardstick_corpus",
    default=None,
    help="Corpus file whose lines 50,001-100,000 are searched by --sts-test's sentences: neighbour "
    "recall@10 and mean cosine to the teacher go to reduce.json (never trained on).",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=None, help="Training steps (overrides the preset)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None, help="Peak learning rate (AdamW).")
@click.option("--eval-every", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run (same arguments).")
@_overwrite_option("Replace a non-empty output folder.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Teacher embedding cache.")
def reduce_command(
    teacher: str | None,
    out: Path,
    layers: int | None,
    keep: str,
    dim: int | None,
    static: bool,
    corpus: str | None,
    sts: str | None,
    sts_test: str | None,
    preset: str,
    device: str,
    train_texts: int | None,
    max_minutes: float | None,
    vocab_words: int | None,
    head_hidden: int | None,
    yardstick_corpus: str | None,
    steps: int | None,
    batch_size: int | None,
    lr: float | None,
    eval_every: int | None,
    seed: int,
    resume: bool,
    overwrite: bool,
    cache_dir: Path | None,
) -> None:
    """Make a smaller model from TEACHER (a Sentence-Transformers folder; default all-MiniLM-L6-v2).

    \b
    The output is a model folder (plus reduce.json); export it like any model:
      edgeembed reduce --layers 4 --corpus sentences.txt --sts sts-dev.csv --out minilm-l4
      edgeembed reduce --layers 3 --dim 128 --corpus sentences.txt --out minilm-l3-128
      edgeembed reduce --dim 128 --corpus sentences.txt --out minilm-128
      edgeembed reduce --static --corpus sentences.txt --sts sts-dev.csv --out minilm-static
      edgeembed export minilm-l4 --out minilm-l4-int8 --optimize all --quantize dynamic
    Ctrl-C during training writes the best model so far; --resume continues.
    """
    from dataclasses import replace

    from edgeembed.reduce import DISTILL_PRESETS, STATIC_PRESETS, ReducePlan, reduce

    overrides = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "eval_every": eval_every,
        "train_texts": train_texts,
        "max_minutes": max_minutes,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    static_config = None
    static_only = {"vocab_words": vocab_words, "head_hidden": head_hidden}
    static_given = {k: v for k, v in static_only.items() if v is not None}
    if static_given and not static:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in static_given)
        raise EdgeEmbedError(f"{names} shape a static model: use with --static")
    if static:
        if preset not in STATIC_PRESETS:
            raise EdgeEmbedError(
                f"--preset {preset} is a distillation preset; with --static choose from {sorted(STATIC_PRESETS)}"
            )
        distill_only = sorted(
            f"--{k.replace('_', '-')}" for k in given if k in ("steps", "eval_every", "max_minutes")
        )
        if distill_only:
            raise EdgeEmbedError(
                f"{', '.join(distill_only)} set distillation, not --static (its table trains in epochs)"
            )
        static_config = replace(STATIC_PRESETS[preset], **given, **static_given)
        config = DISTILL_PRESETS["default"]
    else:
        if preset not in DISTILL_PRESETS:
            raise EdgeEmbedError(
                f"--preset {preset} is a --static preset; for distillation choose from {sorted(DISTILL_PRESETS)}"
            )
        config = replace(DISTILL_PRESETS[preset], device=device, **given)
    yardstick = None
    if yardstick_corpus is not None:
        from edgeembed.yardstick import load_texts

        if sts_test is None:
            raise EdgeEmbedError("--yardstick takes its queries from --sts-test: give both")
        yardstick = load_texts(yardstick_corpus, sts_test)
    plan = ReducePlan(
        layers=layers,
        keep=keep,
        dim=dim,
        static=static,
        distill=config,
        static_config=static_config or "default",
        seed=seed,
    )
    result = reduce(
        teacher,
        out,
        plan,
        corpus=corpus,
        sts=sts,
        sts_test=sts_test,
        overwrite=overwrite,
        resume=resume,
        cache_dir=cache_dir,
        show_progress=True,
        on_step=lambda msg: click.echo(f"· {msg}", err=True),
        yardstick=yardstick,
    )
    click.echo(f"model: {result.path}")
    if "yardstick" in result.record:
        y = result.record["yardstick"]
        cos = "–" if y["mean_cosine"] is None else f"{y['mean_cosine']:.4f}"
        click.echo(f"  agreement with the teacher: recall@{y['k']} {y['recall_at_k']:.3f}, mean cosine {cos}")
    for split, scores in result.record.get("sts", {}).items():
        click.echo(f"  STS {split}: teacher {scores['teacher']:.2f}, student {scores['student']:.2f}")
    if result.interrupted:
        click.echo("  interrupted: this is the best state so far; run again with --resume to continue")


@main.command()
@click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--sts",
    "sts_path",
    required=True,
    type=click.Path(path_type=Path),
    help="STS file (STS-b tsv or s1<TAB>s2<TAB>score).",
)
@_batch_size_option()
@_threads_option("Threads for every variant [default: physical cores].")
@click.option(
    "--runs",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Fresh processes per variant, interleaved.",
)
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), default=None, help="Folder for report.{md,json,csv,png}."
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Export every variant this install can make from MODEL (the argument), then bench them.",
)
@click.option("--calibration", default=None, help="Calibration source for static int8 variants (--sweep).")
@click.option(
    "--recall-corpus",
    default=None,
    help="Text file whose lines 50,001-100,000 the STS sentences search: the recall@10 column "
    "(each variant's top-10 vs its fp32 reference's).",
)
@click.option(
    "--recall-docs",
    type=click.IntRange(min=11),
    default=None,
    help="Search a seeded sample of this many lines.",
)
@click.option(
    "--recall-reference", default=None, help="Variant every recall is measured against (e.g. the teacher)."
)
def bench(
    artifacts: tuple[Path, ...],
    sts_path: Path,
    batch_size: int,
    threads: int | None,
    runs: int,
    out: Path | None,
    sweep: bool,
    calibration: str | None,
    recall_corpus: str | None,
    recall_docs: int | None,
    recall_reference: str | None,
) -> None:
    """Measure artifacts side by side: sentences/s, batch-1 latency, cold start, peak RSS, size, STS quality.

    \b
    Examples:
      edgeembed bench minilm-onnx minilm-int8 --sts sts-test.csv --out bench-report
      edgeembed bench --sweep --sts sts-test.csv --calibration sts-train.csv --out sweep
    """
    from edgeembed.bench.cli import BenchCommand, run_bench_command

    run_bench_command(
        BenchCommand(
            artifacts,
            sts_path,
            batch_size,
            threads,
            runs,
            out,
            sweep,
            calibration,
            recall_corpus,
            recall_docs,
            recall_reference,
        )
    )


if __name__ == "__main__":
    main()
