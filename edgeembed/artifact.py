"""The artifact: a folder sentence-transformers can load, plus `edgeembed.json`, its manifest.

Written atomically: everything goes into a hidden temporary sibling folder, the manifest (with the
sha256 of every file) last, and only then is the folder renamed into place. A failure anywhere leaves
the target as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeembed.errors import ArtifactError, EdgeEmbedError
from edgeembed.source import Head

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "edgeembed.json"


@dataclass(frozen=True)
class Manifest:
    """What an artifact is, where it came from, and how well it matched its source at export time."""

    runtime: str
    precision: str
    graph: str
    inputs: tuple[str, ...]
    head: Head
    source: dict[str, Any]
    validation: dict[str, Any]
    format_version: int = FORMAT_VERSION
    optimization: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    # RuntimeOptions the artifact was validated with (e.g. OpenVINO bf16); the Encoder's defaults.
    runtime_options: dict[str, Any] = field(default_factory=dict)
    # reduce.json of a model made smaller by `edgeembed reduce` (teacher, layers kept, corpus, scores).
    lineage: dict[str, Any] | None = None
    # How it was built: format, the gate policy, the steps planned.
    build: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""

    @property
    def dim(self) -> int:
        return self.head.dim

    @property
    def max_seq_length(self) -> int:
        return self.head.max_seq_length

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["inputs"] = list(self.inputs)
        d["head"] = self.head.to_dict()
        d["dim"] = self.dim  # convenience for readers that do not parse `head`
        d["max_seq_length"] = self.max_seq_length
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["inputs"] = tuple(d["inputs"])
        kwargs["head"] = Head.from_dict(d["head"])
        return cls(**kwargs)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
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


def write_manifest(root: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False, default=_json_default)
    (root / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "value"):
        return obj.value
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty target early, before any expensive work."""
    if out.exists() and not out.is_dir():
        raise EdgeEmbedError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise EdgeEmbedError(f"output folder is not empty: {out} (pass --overwrite / overwrite=True)")


@contextmanager
def atomic_folder(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `out`, on failure it is removed."""
    out = Path(out).expanduser().absolute()
    check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; an artifact is meant to be shared
    try:
        yield tmp
        backup = None
        if out.exists():
            backup = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, backup)
        try:
            os.replace(tmp, out)
        except BaseException:
            if backup is not None:
                os.replace(backup, out)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_artifact(out: Path, build: Callable[[Path], Manifest], overwrite: bool = False) -> Manifest:
    """Run `build(tmp)` to fill a temporary folder, add checksums and the manifest, then move into place."""
    with atomic_folder(out, overwrite) as tmp:
        manifest = build(tmp)
        manifest = Manifest.from_dict({**manifest.to_dict(), "files": checksums(tmp)})
        write_manifest(tmp, manifest)
    return manifest


def read_manifest(root: Path) -> Manifest:
    """Parse and version-check edgeembed.json, naming the file on any problem."""
    root = Path(root).expanduser()
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ArtifactError(f"artifact folder not found: {root}")
    if not path.is_file():
        raise ArtifactError(f"not an edgeembed artifact: {path} is missing (run `edgeembed export` first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"corrupt manifest {path}: {exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ArtifactError(
            f"{path} has format version {version!r}; this edgeembed reads versions "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))} (upgrade edgeembed or re-export)"
        )
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"corrupt manifest {path}: {exc!r}") from None


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every file the manifest lists must exist with its recorded sha256."""
    for rel, digest in manifest.files.items():
        p = root / rel
        if not p.is_file():
            raise ArtifactError(f"artifact file missing: {p}")
        if sha256_file(p) != digest:
            raise ArtifactError(f"checksum mismatch for {p}: the file was changed or corrupted after export")
    if manifest.graph not in manifest.files:
        raise ArtifactError(f"the graph {manifest.graph} is not among the artifact's checksummed files")
