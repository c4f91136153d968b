"""The artifact: a folder sentence-transformers can load, plus `edgeembed.json`, its manifest.

Written atomically under a lock: one export at a time may write a target (an exclusive `flock` on
`.OUT.lock` beside it, holding the writer's pid); everything goes into a hidden temporary sibling folder,
the manifest (with the sha256 of every file, and a digest of its own content) last, and only then is the
folder renamed into place. A failure, SIGINT/SIGTERM or SIGKILL anywhere leaves the target as it was;
temporary folders of a killed export are removed by the next export to the same target (holding the
lock proves their writer is gone).

Read defensively: every path the manifest names must be a relative path inside the folder with no
symlink on the way, checked before anything is opened; the manifest's digest must match its content.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

from edgeembed.arch import REGISTRY
from edgeembed.errors import ArtifactError, EdgeEmbedError
from edgeembed.head import ACTIVATIONS, PoolingMode
from edgeembed.runtimes import REGISTRY as RUNTIMES
from edgeembed.source import DenseSpec, Head

try:
    import fcntl
except ImportError:  # Windows: no flock; exports are then not protected against a concurrent writer
    fcntl = None  # type: ignore[assignment]

# 3: the artifact's graphs are a typed list (`graphs`: file, runtime, input kind, precision, validation)
# instead of `graph` + `runtime` and the `end_to_end` / `onnx_graph` side entries; versions 1 and 2 still
# load, read into that list (`legacy_graphs`), so an older edgeembed refuses a version-3 manifest by its
# version instead of failing on a missing key.
# 2: the manifest carries `manifest_sha256` (a digest of its own canonical JSON) and `max_positions`;
# paths are relative POSIX paths inside the folder. Version-1 manifests (no digest) still load, with the
# same containment and file checksums, because the files they list are checksummed all the same.
FORMAT_VERSION = 3
SUPPORTED_FORMAT_VERSIONS = (1, 2, 3)
MANIFEST_NAME = "edgeembed.json"
DIGEST_KEY = "manifest_sha256"
LOCK_RETRY_SECONDS = 0.25  # outlasts a check_target probe, far shorter than any real export
# Known values of manifest fields (what build.py writes); anything else is a damaged or edited manifest.
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
# What a graph takes: token ids (the Encoder tokenizes and applies the head) or text (both inside).
GRAPH_INPUTS = ("tokens", "text")
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")  # sentence-transformers' names
MAX_SIZE = 1 << 20  # bound for widths and lengths: far above any real model, far below an absurd one


class TargetBusyError(EdgeEmbedError):
    """Another process is exporting to the same target folder."""


@dataclass(frozen=True)
class ArtifactGraph:
    """One graph of an artifact and how to run it: its `file`, the `runtime` it was validated with, what it
    takes (`input` "tokens": token ids named by `inputs` in, token embeddings out, the Encoder's tokenizer
    and head around it; "text": strings in, sentence embeddings out), its weights' `precision`, its gate
    record (`validation`) and what the stage that made it recorded (`details`: outputs, tokenizer op,
    operators)."""

    file: str
    runtime: str
    input: str = "tokens"
    precision: str = "fp32"
    inputs: tuple[str, ...] = ()
    validation: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "runtime": self.runtime,
            "input": self.input,
            "precision": self.precision,
            "inputs": list(self.inputs),
            "validation": self.validation,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactGraph:
        return cls(**{**d, "inputs": tuple(d.get("inputs", ()))})


# Keys of a version-2 `end_to_end` record that describe the graph rather than its check.
_E2E_DETAILS = ("output", "tokenizer_op", "operators")
_ONNX_GRAPH_DETAILS = ("outputs", "normalized", "table", "operators")


def legacy_graphs(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The typed graph list of a version-1/2 manifest: `graph` + `runtime` (the default), then its
    `end_to_end` graph (strings in) and a static model's `onnx_graph`, each record split into its check
    (`validation`) and its description (`details`). The fields must already be schema-checked."""
    graphs = [
        {
            "file": d["graph"],
            "runtime": d["runtime"],
            "input": "tokens",
            "precision": d["precision"],
            "inputs": list(d["inputs"]),
            "validation": d.get("validation") or {},
        }
    ]
    e2e = d.get("end_to_end")
    if e2e:
        graphs.append(
            {
                "file": e2e["graph"],
                "runtime": e2e.get("runtime", "onnxruntime-e2e"),
                "input": "text",
                "precision": d["precision"],
                "inputs": ["text"],
                "validation": {
                    k: v for k, v in e2e.items() if k not in ("graph", "runtime", "input", *_E2E_DETAILS)
                },
                "details": {k: e2e[k] for k in _E2E_DETAILS if k in e2e},
            }
        )
    onnx_graph = d.get("onnx_graph")
    if onnx_graph:
        table = onnx_graph.get("table")
        graphs.append(
            {
                "file": onnx_graph["graph"],
                "runtime": "onnxruntime",
                "input": "tokens",
                "precision": table.get("precision", d["precision"])
                if isinstance(table, dict)
                else d["precision"],
                "inputs": list(onnx_graph.get("inputs", d["inputs"])),
                "validation": {
                    k: v for k, v in onnx_graph.items() if k not in ("graph", "inputs", *_ONNX_GRAPH_DETAILS)
                },
                "details": {k: onnx_graph[k] for k in _ONNX_GRAPH_DETAILS if k in onnx_graph},
            }
        )
    return graphs


@dataclass(frozen=True)
class Manifest:
    """What an artifact is, where it came from, and how well it matched its source at export time.

    `graphs`: the artifact's graphs, the default (what `Encoder.load` runs unless asked for another
    runtime) first; `runtime`, `graph`, `precision`, `inputs` and `validation` are the default graph's."""

    graphs: tuple[ArtifactGraph, ...]
    head: Head
    source: dict[str, Any]
    format_version: int = FORMAT_VERSION
    optimization: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    # RuntimeOptions the artifact was validated with (e.g. OpenVINO bf16); the Encoder's defaults.
    runtime_options: dict[str, Any] = field(default_factory=dict)
    # reduce.json of a model made smaller by `edgeembed reduce` (teacher, layers kept, corpus, scores).
    lineage: dict[str, Any] | None = None
    # Packaging for apps: the .ort conversion (target platform, required_operators.config, its checks);
    # the converted files are among `graphs`.
    ort: dict[str, Any] | None = None
    # How it was built: format, the gate policy, the steps planned.
    build: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    # Longest token sequence the graph's position embeddings take (None: unknown); save_artifact fills it
    # from the artifact's config.json when the orchestrator leaves it None.
    max_positions: int | None = None

    @property
    def dim(self) -> int:
        return self.head.dim

    @property
    def max_seq_length(self) -> int:
        return self.head.max_seq_length

    @property
    def default_graph(self) -> ArtifactGraph:
        return self.graphs[0]

    @property
    def runtime(self) -> str:
        return self.graphs[0].runtime

    @property
    def graph(self) -> str:
        return self.graphs[0].file

    @property
    def precision(self) -> str:
        return self.graphs[0].precision

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.graphs[0].inputs

    @property
    def validation(self) -> dict[str, Any]:
        return self.graphs[0].validation

    def graph_for(self, runtime: str) -> ArtifactGraph | None:
        """The first graph validated with `runtime`, if any."""
        return next((g for g in self.graphs if g.runtime == runtime), None)

    @property
    def end_to_end(self) -> dict[str, Any] | None:
        """The first strings-in graph as one flat record (graph, runtime, input, its details and checks),
        the shape version-2 manifests stored; None without one."""
        g = next((g for g in self.graphs if g.input == "text"), None)
        if g is None:
            return None
        return {"graph": g.file, "runtime": g.runtime, "input": g.input, **g.details, **g.validation}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["graphs"] = [g.to_dict() for g in self.graphs]
        d["head"] = self.head.to_dict()
        d["dim"] = self.dim  # convenience for readers that do not parse `head`
        d["max_seq_length"] = self.max_seq_length
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """A manifest from its JSON (a version-1/2 one's graphs read by `legacy_graphs`)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        graphs = d["graphs"] if "graphs" in d else legacy_graphs(d)
        kwargs["graphs"] = tuple(ArtifactGraph.from_dict(g) for g in graphs)
        kwargs["head"] = Head.from_dict(d["head"])
        return cls(**kwargs)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file, opened without following a final symlink."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    h = hashlib.sha256()
    with os.fdopen(os.open(path, flags), "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file below root except the manifest, keyed by POSIX relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def manifest_digest(data: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no whitespace), its own digest left out.

    It makes an edited manifest (a changed path, checksum, head or limit) fail to load. It is not a
    signature: whoever can rewrite the folder can recompute it.
    """
    body = {k: v for k, v in data.items() if k != DIGEST_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_manifest(root: Path, manifest: Manifest) -> None:
    data = json.loads(json.dumps(manifest.to_dict(), default=_json_default))  # plain JSON types only
    data[DIGEST_KEY] = manifest_digest(data)
    text = json.dumps(data, indent=2, sort_keys=False)
    (root / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "value"):
        return obj.value
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def position_limit(config: dict[str, Any]) -> int | None:
    """Longest sequence a transformer's position embeddings take, from its HF config.json (None when
    the config does not say). RoBERTa-style models start positions at padding_idx + 1."""
    pos = config.get("max_position_embeddings")
    if not isinstance(pos, int) or isinstance(pos, bool) or pos <= 0:
        return None
    arch = REGISTRY.get(str(config.get("model_type")))
    return pos - (arch.position_offset if arch is not None else 0)


# ------------------------------------------------------------------------------------------ writing
def _target(out: Path | str) -> Path:
    return Path(out).expanduser().absolute()


def lock_file(out: Path | str) -> Path:
    """The lock file of a target folder: `.NAME.lock` beside it."""
    out = _target(out)
    return out.parent / f".{out.name}.lock"


@dataclass(frozen=True)
class TargetLock:
    """Proof that this process holds the export lock of `target` (pass it on to save_artifact)."""

    target: Path
    path: Path
    fd: int


def _holder(fd: int, what: str) -> str:
    """Who holds a lock, from what its file records ("KIND PID on HOST"); `what` when it records no kind."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    found = re.fullmatch(r"(.*?)\s*(\d+ on .*)", text)
    kind, rest = (found.group(1) or what, found.group(2)) if found else (what, "")
    return f"another {kind} (process {rest})" if rest else f"another {what} (another process)"


def _busy(out: Path, holder: str) -> TargetBusyError:
    return TargetBusyError(
        f"{out} is being written by {holder}; wait for it to finish or choose another --out"
    )


@contextmanager
def target_lock(out: Path | str, what: str = "export") -> Iterator[TargetLock]:
    """Hold the exclusive export lock of `out` (flock on `.NAME.lock`, which records our pid and host);
    `what` names the kind of run; the lock file records it, so a refused run names the one holding it.

    A second export fails at once with TargetBusyError naming the holder. The lock dies with its process
    (SIGKILL included), so a stale lock file never blocks anyone. The file is removed on release.
    """
    out = _target(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeEmbedError(
            f"cannot create {out.parent} for the output {out}: {exc.strerror or exc} (choose another --out)"
        ) from None
    path = lock_file(out)
    if fcntl is None:
        yield TargetLock(out, path, -1)
        return
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise EdgeEmbedError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if time.monotonic() < deadline:  # maybe a check_target probe: it lets go within microseconds
                os.close(fd)
                time.sleep(0.02)
                continue
            holder = _holder(fd, what)
            os.close(fd)
            raise _busy(out, holder) from None
        # The previous holder unlinks the file on release: make sure ours is still the one at `path`.
        try:
            on_disk = os.stat(path)
            mine = os.fstat(fd)
            same = (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield TargetLock(out, path, fd)
    finally:
        try:
            os.unlink(path)  # still holding the lock: nobody can have taken it in between
        except FileNotFoundError:
            pass
        os.close(fd)


def probe_lock(out: Path | str, what: str = "export") -> None:
    """Fail early when another process holds the target's lock (without creating anything)."""
    out = _target(out)
    if fcntl is None:
        return
    try:
        fd = os.open(lock_file(out), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return  # no lock file: nobody is writing
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise _busy(out, _holder(fd, what)) from None
    finally:
        os.close(fd)  # also releases the probe's shared lock


def check_target(
    out: Path, overwrite: bool, keep: tuple[Path, ...] = (), artifact_only: bool = False
) -> None:
    """Refuse a non-empty target or one another export is writing, early, before any expensive work.

    Never replaced, --overwrite or not: the current directory or a folder holding it, and the inputs in
    `keep` (a source model) or a folder holding one. `artifact_only`: --overwrite replaces only a folder
    holding an edgeembed manifest (so a user's folder of other files is never deleted)."""
    out = _target(out)
    _check_contents(out, overwrite, keep, artifact_only)
    probe_lock(out)


def stale_siblings(out: Path | str) -> list[Path]:
    """Temporary (`.NAME.tmp-*`) and backup (`.NAME.old-*`) folders an export of `out` leaves while it
    runs; found beside the target while holding its lock, they belong to a killed export."""
    out = _target(out)
    if not out.parent.is_dir():
        return []
    prefixes = (f".{out.name}.tmp-", f".{out.name}.old-")
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefixes))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(lock: TargetLock) -> list[Path]:
    """Remove what killed exports of this target left behind; returns what was removed.

    A backup (`.NAME.old-PID`) exists only between the two renames of an overwrite: if the process died
    there, the target is missing and the backup is the previous complete artifact, so it is restored.
    """
    removed = []
    for p in stale_siblings(lock.target):
        if p.name.startswith(f".{lock.target.name}.old-") and not lock.target.exists() and p.is_dir():
            os.replace(p, lock.target)
            continue
        _remove(p)
        removed.append(p)
    return removed


@contextmanager
def atomic_folder(
    out: Path,
    overwrite: bool = False,
    lock: TargetLock | None = None,
    keep: tuple[Path, ...] = (),
    artifact_only: bool = False,
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `out`, on failure it is removed.

    Holds the target's lock throughout (or uses `lock`, taken by a caller that holds it for a whole
    export) and first removes the debris of killed exports. Every scratch file belongs in the yielded
    folder, so that nothing survives a failure elsewhere. `keep` and `artifact_only` as in check_target,
    checked again under the lock.
    """
    out = _target(out)
    if lock is None:
        with target_lock(out) as own, atomic_folder(out, overwrite, own, keep, artifact_only) as tmp:
            yield tmp
        return
    if lock.target != out:
        raise ValueError(f"the lock is for {lock.target}, not {out}")
    clean_stale(lock)
    _check_contents(out, overwrite, keep, artifact_only)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise EdgeEmbedError(f"cannot write beside {out}: {exc.strerror or exc}") from None
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; an artifact is meant to be shared
    try:
        yield tmp
        backup = None
        if out.exists():
            backup = out.parent / f".{out.name}.old-{os.getpid()}"
            try:
                os.replace(out, backup)
            except OSError as exc:
                raise EdgeEmbedError(f"cannot move the old {out} aside: {exc.strerror or exc}") from None
        try:
            os.replace(tmp, out)
        except BaseException as exc:
            if backup is not None:
                os.replace(backup, out)
            if isinstance(exc, OSError):
                raise EdgeEmbedError(f"cannot put {out} in place: {exc.strerror or exc}") from None
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_artifact(folder: Path) -> bool:
    """Whether `folder` holds an edgeembed manifest (a regular edgeembed.json holding a JSON object with
    a format version): the one kind of folder an export's --overwrite may replace."""
    path = Path(folder) / MANIFEST_NAME
    if path.is_symlink() or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "format_version" in data


def _refuse(out: Path, why: str) -> EdgeEmbedError:
    return EdgeEmbedError(f"refusing to write {out}: {why}; choose another --out")


def _check_contents(
    out: Path, overwrite: bool, keep: tuple[Path, ...] = (), artifact_only: bool = False
) -> None:
    """check_target without the lock probe (the caller holds the lock)."""
    if out.is_symlink():
        raise EdgeEmbedError(
            f"output path {out} is a symbolic link; give the folder it points to, or another --out"
        )
    if out.exists() and not out.is_dir():
        raise EdgeEmbedError(f"output path exists and is not a folder: {out}")
    if not out.exists():
        return
    if os.path.ismount(out):
        raise _refuse(
            out,
            "it is a mount point, and an output folder is replaced by a rename, which a mount "
            f"point cannot take; write into a folder inside it (e.g. {out / 'model'})",
        )
    # The output is replaced by a rename: never the folder the shell stands in, one that holds it, or one
    # that holds (or is) an input of this run, whatever --overwrite says.
    real = out.resolve()
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current directory was removed
        cwd = None
    if cwd is not None and cwd.is_relative_to(real):
        raise _refuse(out, "it is the current directory or holds it")
    for path in keep:
        kept = Path(path).expanduser().resolve()
        if kept == real:
            raise _refuse(out, f"it is the input {path} itself")
        if kept.is_relative_to(real):
            raise _refuse(out, f"it holds the input {path}")
    try:
        non_empty = any(out.iterdir())
    except OSError as exc:
        raise EdgeEmbedError(f"cannot read the output folder {out}: {exc.strerror or exc}") from None
    if non_empty and not overwrite:
        raise EdgeEmbedError(f"output folder is not empty: {out} (pass --overwrite / overwrite=True)")
    if non_empty and artifact_only and not is_artifact(out):
        raise _refuse(
            out,
            f"--overwrite replaces only an edgeembed artifact and it is a non-empty folder without "
            f"{MANIFEST_NAME}",
        )
    if non_empty and artifact_only:
        foreign = foreign_files(out)
        if foreign:
            raise EdgeEmbedError(
                f"refusing to replace {out}: it holds {len(foreign)} file(s) edgeembed did not write "
                f"({', '.join(foreign[:3])}{', …' if len(foreign) > 3 else ''}), which --overwrite would "
                "delete; move them out, or choose another --out"
            )


def foreign_files(folder: Path) -> list[str]:
    """What an artifact folder holds beyond its manifest's file list (a user's notes, an `encode -o`
    output saved inside it): the paths, relative, that replacing the folder would delete."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        listed = set(data.get("files") or {}) | {MANIFEST_NAME}
    except (OSError, ValueError, AttributeError, TypeError):
        return []  # not readable as a manifest: is_artifact refuses such a folder already
    dirs = {parent.as_posix() for name in listed for parent in PurePosixPath(name).parents}
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_dir() and not p.is_symlink():
            if rel not in dirs:
                out.append(rel + "/")
        elif rel not in listed:
            out.append(rel)
    return [r for r in out if not any(r.startswith(d) for d in out if d.endswith("/") and d != r)]


def save_artifact(
    out: Path,
    build: Callable[[Path], Manifest],
    overwrite: bool = False,
    lock: TargetLock | None = None,
    keep: tuple[Path, ...] = (),
) -> Manifest:
    """Run `build(tmp)` to fill a temporary folder, add checksums and the manifest, then move into place.
    It replaces only an artifact (see check_target; `keep`: inputs never to replace)."""
    with atomic_folder(out, overwrite, lock, keep, artifact_only=True) as tmp:
        manifest = build(tmp)
        data = manifest.to_dict()
        if manifest.max_positions is None and (tmp / "config.json").is_file():
            config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            data["max_positions"] = position_limit(config if isinstance(config, dict) else {})
        manifest = Manifest.from_dict({**data, "files": checksums(tmp)})
        write_manifest(tmp, manifest)
    return manifest


# ------------------------------------------------------------------------------------------ reading
def _outside(root: Path, rel: Any, what: str) -> ArtifactError:
    return ArtifactError(
        f"{root / MANIFEST_NAME}: {what} {rel!r} is not a relative path inside the artifact folder; "
        "refusing to open it (re-export the artifact)"
    )


def artifact_path(root: Path, rel: Any, what: str = "file") -> Path:
    """`root/rel` after checking, without opening anything, that `rel` is a relative POSIX path that
    stays inside `root` and that no component on the way is a symlink. A missing path is returned as
    is (the caller reports it); `root` itself may be a symlink (it is resolved)."""
    root = Path(root).expanduser().resolve()
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or ":" in rel:
        raise _outside(root, rel, what)
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or pure.parts in ((), (".",)):
        raise _outside(root, rel, what)
    current = root
    for part in pure.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return root / pure
        except OSError as exc:
            raise ArtifactError(f"cannot inspect {current}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(mode):
            raise ArtifactError(
                f"{current} is a symbolic link; an artifact holds regular files only (re-export it)"
            )
    return root / pure


def check_tree(root: Path) -> None:
    """No symlink anywhere inside the artifact folder (none is ever written; one is a tampering sign)."""
    root = Path(root).expanduser().resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in (*dirnames, *filenames):
            p = Path(dirpath) / name
            if p.is_symlink():
                raise ArtifactError(
                    f"{p} is a symbolic link; an artifact holds regular files only (re-export it)"
                )


def _is_int(v: Any, low: int = 1, high: int = MAX_SIZE) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _check_schema(path: Path, data: dict[str, Any]) -> None:
    """Types, ranges and known values of every field the Encoder or `info` reads, so that a manifest
    edited with a recomputed digest fails here with one line naming the field, not later in numpy or
    with a traceback (or, worse, silently: a string `normalize` is truthy)."""

    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"corrupt manifest {path}: {what} (re-export the artifact)")

    if "graphs" in data:
        # A version-3 manifest names every field it has: one that a version-2 reader would take for the
        # graph's (a top-level `runtime`, `precision`, `graph`) would be ignored here, so it is refused.
        known = {f.name for f in fields(Manifest)} | {"dim", "max_seq_length", DIGEST_KEY}
        unknown = sorted(set(data) - known)
        if unknown:
            raise bad(f"unknown field {unknown[0]!r} (a version-3 manifest lists its graphs in 'graphs')")
        _check_graphs(data["graphs"], bad)
    else:
        _check_legacy_graph(data, bad)
    files = data.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items()
    ):
        raise bad("'files' must map relative paths to sha256 hex digests")
    head = data.get("head")
    if not isinstance(head, dict):
        raise bad("'head' must be an object")
    width = _check_head(head, bad)
    pos = data.get("max_positions")
    if pos is not None and not _is_int(pos):
        raise bad(f"max_positions must be a positive integer or null, got {pos!r}")
    for key in ("source", "runtime_options", "versions", "build"):
        if key in data and not isinstance(data[key], dict):
            raise bad(f"{key!r} must be an object, got {type(data[key]).__name__}")
    for key in ("optimization", "quantization", "lineage", "ort"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise bad(f"{key!r} must be an object or null, got {data[key]!r:.60}")
    if "created" in data and not isinstance(data["created"], str):
        raise bad("'created' must be a string")
    # Copies of head values for readers that do not parse `head`: they must agree with it.
    if "dim" in data and data["dim"] != width:
        raise bad(f"dim {data['dim']!r:.30} disagrees with the head's output width {width}")
    if "max_seq_length" in data and data["max_seq_length"] != head["max_seq_length"]:
        raise bad(f"max_seq_length {data['max_seq_length']!r:.30} disagrees with head.max_seq_length")


def _names(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, str) and x for x in v)


def _check_graphs(graphs: Any, bad: Callable[[str], ArtifactError]) -> None:
    """The typed graph list: each entry's fields, types and known values."""
    if not isinstance(graphs, list) or not graphs or not all(isinstance(g, dict) for g in graphs):
        raise bad("'graphs' must be a non-empty list of objects")
    known = {f.name for f in fields(ArtifactGraph)}
    for i, g in enumerate(graphs):
        where = f"graphs[{i}]"
        unknown = sorted(set(g) - known)
        if unknown:
            raise bad(f"{where} has unknown field {unknown[0]!r}")
        for key in ("file", "runtime"):
            if not isinstance(g.get(key), str) or not g.get(key):
                raise bad(f"{where}.{key} must be a non-empty string")
        if g["runtime"] not in RUNTIMES:
            raise bad(f"{where}.runtime {g['runtime']!r:.40} is not one of {', '.join(sorted(RUNTIMES))}")
        if g.get("input", "tokens") not in GRAPH_INPUTS:
            raise bad(f"{where}.input {g.get('input')!r:.30} is not one of {', '.join(GRAPH_INPUTS)}")
        if g.get("precision", "fp32") not in PRECISIONS:
            raise bad(f"{where}.precision {g.get('precision')!r:.30} is not one of {', '.join(PRECISIONS)}")
        if not _names(g.get("inputs")):
            raise bad(f"{where}.inputs must be a non-empty list of input names")
        for key in ("validation", "details"):
            if key in g and not isinstance(g[key], dict):
                raise bad(f"{where}.{key} must be an object, got {type(g[key]).__name__}")


def _check_legacy_graph(data: dict[str, Any], bad: Callable[[str], ArtifactError]) -> None:
    """A version-1/2 manifest's graph fields, before `legacy_graphs` reads them."""
    for key in ("runtime", "precision", "graph"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise bad(f"{key!r} must be a non-empty string")
    if data["runtime"] not in RUNTIMES:
        raise bad(f"runtime {data['runtime']!r} is not one of {', '.join(sorted(RUNTIMES))}")
    if data["precision"] not in PRECISIONS:
        raise bad(f"precision {data['precision']!r} is not one of {', '.join(PRECISIONS)}")
    if not _names(data.get("inputs")):
        raise bad("'inputs' must be a non-empty list of input names")
    if "validation" in data and not isinstance(data["validation"], dict):
        raise bad(f"'validation' must be an object, got {type(data['validation']).__name__}")
    for key in ("end_to_end", "onnx_graph"):
        record = data.get(key)
        if record is None:
            continue
        if not isinstance(record, dict):
            raise bad(f"{key!r} must be an object or null, got {record!r:.60}")
        if not isinstance(record.get("graph"), str) or not record["graph"]:
            raise bad(f"{key}.graph must be a non-empty string")
        if record.get("runtime", "onnxruntime-e2e") not in RUNTIMES:
            raise bad(f"{key}.runtime {record.get('runtime')!r:.40} is not a known runtime")
        if key == "onnx_graph" and "inputs" in record and not _names(record["inputs"]):
            raise bad("onnx_graph.inputs must be a non-empty list of input names")


def _check_head(head: dict[str, Any], bad: Callable[[str], ArtifactError]) -> int:
    """Check the head's fields; returns its output width (the embedding dimension)."""
    known = {f.name for f in fields(Head)} | {"dim"}
    unknown = sorted(set(head) - known)
    if unknown:
        raise bad(f"head has unknown field {unknown[0]!r}")
    for key in ("hidden_size", "max_seq_length"):
        v = head.get(key)
        if not _is_int(v):
            raise bad(f"head.{key} must be an integer from 1 to {MAX_SIZE}, got {v!r:.30}")
    pooling = head.get("pooling")
    modes = {m.value for m in PoolingMode}
    if not isinstance(pooling, list) or not pooling or not all(m in modes for m in pooling):
        raise bad(f"head.pooling must be a non-empty list of {', '.join(sorted(modes))}; got {pooling!r:.60}")
    for key in ("include_prompt", "normalize", "do_lower_case", "add_special_tokens"):
        if key in head and not isinstance(head[key], bool):
            raise bad(f"head.{key} must be true or false, got {head[key]!r:.30}")
    prompts = head.get("prompts", {})
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise bad(f"head.prompts must map names to prompt strings, got {prompts!r:.60}")
    name = head.get("default_prompt_name")
    if name is not None and (not isinstance(name, str) or name not in prompts):
        raise bad(f"head.default_prompt_name {name!r:.30} is not one of the prompts")
    if head.get("similarity_fn", "cosine") not in SIMILARITY_FUNCTIONS:
        raise bad(
            f"head.similarity_fn {head.get('similarity_fn')!r:.30} is not one of {', '.join(SIMILARITY_FUNCTIONS)}"
        )
    dense = head.get("dense", [])
    if not isinstance(dense, list) or not all(isinstance(d, dict) for d in dense):
        raise bad("head.dense must be a list of objects")
    width = head["hidden_size"] * len(pooling)
    dense_fields = {f.name for f in fields(DenseSpec)}
    for d in dense:
        where = f"head.dense {d.get('path')!r:.40}"
        if set(d) != dense_fields:
            raise bad(f"{where} must have exactly the fields {', '.join(sorted(dense_fields))}")
        for key in ("in_features", "out_features"):
            if not _is_int(d[key]):
                raise bad(f"{where}: {key} must be an integer from 1 to {MAX_SIZE}, got {d[key]!r:.30}")
        if not isinstance(d["path"], str) or not isinstance(d["bias"], bool):
            raise bad(f"{where}: path must be a string and bias true or false")
        if d["activation"] not in ACTIVATIONS:
            raise bad(f"{where}: activation {d['activation']!r:.30} is not one of {', '.join(ACTIVATIONS)}")
        if d["in_features"] != width:
            raise bad(f"{where} takes {d['in_features']} inputs but the head gives it {width}")
        width = d["out_features"]
    if "dim" in head and head["dim"] != width:
        raise bad(f"head.dim {head['dim']!r:.30} disagrees with the head's output width {width}")
    return width


def read_manifest(root: Path) -> Manifest:
    """Parse, version-check and digest-check edgeembed.json, naming the file on any problem."""
    root = Path(root).expanduser()
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ArtifactError(f"artifact folder not found: {root}")
    if path.is_symlink():
        raise ArtifactError(f"{path} is a symbolic link; an artifact holds regular files only (re-export it)")
    if not path.is_file():
        raise ArtifactError(f"not an edgeembed artifact: {path} is missing (run `edgeembed export` first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"corrupt manifest {path}: {exc}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version not in SUPPORTED_FORMAT_VERSIONS or isinstance(version, bool):
        raise ArtifactError(
            f"{path} has format version {version!r}; this edgeembed reads versions "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))} (upgrade edgeembed or re-export)"
        )
    recorded = data.get(DIGEST_KEY)
    if version >= 2 or recorded is not None:
        try:
            expected = manifest_digest(data)
        except ValueError as exc:  # NaN/Infinity in a manifest
            raise ArtifactError(f"corrupt manifest {path}: {exc}") from None
        if recorded != expected:
            what = "has no digest" if recorded is None else "does not match its digest"
            raise ArtifactError(
                f"{path} {what}: the manifest was edited or damaged after export (re-export the artifact)"
            )
    _check_schema(path, data)
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"corrupt manifest {path}: {exc!r}") from None


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every file the manifest lists lies inside the folder (no symlink, checked before opening) and
    has its recorded sha256; the graph and the Dense weights are among them."""
    check_tree(root)
    paths = {rel: artifact_path(root, rel) for rel in manifest.files}  # all checked before any is opened
    for d in manifest.head.dense:
        artifact_path(root, f"{d.path}/model.safetensors" if d.path else "model.safetensors", "Dense path")
    for g in manifest.graphs:
        artifact_path(root, g.file, "graph")
    for rel, digest in manifest.files.items():
        p = paths[rel]
        if not p.is_file():
            raise ArtifactError(f"artifact file missing: {p}")
        if sha256_file(p) != digest:
            raise ArtifactError(f"checksum mismatch for {p}: the file was changed or corrupted after export")
    for g in manifest.graphs:
        if g.file not in manifest.files:
            raise ArtifactError(f"the graph {g.file} is not among the artifact's checksummed files")


def artifact_size(root: Path, manifest: Manifest) -> int:
    """Bytes of the listed files that are really inside the folder (for `info`; never follows a link)."""
    total = 0
    for rel in manifest.files:
        try:
            p = artifact_path(root, rel)
        except ArtifactError:
            continue
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def artifact_digest(root: Path | str) -> str:
    """An artifact's identity: the digest of its manifest (recorded in it since format 2, computed for a
    version-1 one), after read_manifest's checks. Corpus embeddings and indexes record it so that a
    search can tell whether its queries come from the model that embedded the corpus."""
    root = Path(root).expanduser()
    read_manifest(root)
    data = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    recorded = data.get(DIGEST_KEY)
    return recorded if isinstance(recorded, str) else manifest_digest(data)
