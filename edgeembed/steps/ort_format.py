"""ONNX -> ONNX Runtime's mobile format (.ort) plus the `required_operators.config` of a reduced build.

Why: ONNX Runtime Mobile and minimal builds load only .ort files, and a build reduced to the operators a
model needs (`build.sh --include_ops_by_config required_operators.config`) is several MB smaller. The
conversion itself is ONNX Runtime's own tool (`onnxruntime.tools.convert_onnx_models_to_ort`); this
module only picks its settings and puts the files where the artifact wants them. No validation here.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeembed._imports import require
from edgeembed.errors import InputError
from edgeembed.shippable import CONFIG_NAME, external_files

TARGETS = ("arm", "amd64")


@dataclass(frozen=True)
class OrtFiles:
    """The .ort files (one per input graph, same stem) and the one operator config covering all."""

    models: tuple[Path, ...]
    config: Path


def needs_extensions(graph: Path) -> bool:
    """Whether a graph uses onnxruntime-extensions' custom ops (the end-to-end graph does)."""
    onnx = require("onnx", "export")
    model = onnx.load(str(graph), load_external_data=False)
    return any(o.domain == "ai.onnx.contrib" for o in model.opset_import)


def convert_to_ort(graphs: Sequence[Path], out_dir: Path, target_platform: str = "arm") -> OrtFiles:
    """Convert each graph to `out_dir/<stem>.ort` (ORT's fixed optimizations at level `all`, minus the
    x86-only NCHWc layout for `arm`) and write one `required_operators.config` for all of them."""
    if target_platform not in TARGETS:
        raise InputError(f"unknown target platform {target_platform!r}; choose from {', '.join(TARGETS)}")
    if not graphs:
        raise InputError("no graphs to convert to .ort")
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    library = None
    if any(needs_extensions(g) for g in graphs):
        library = Path(require("onnxruntime_extensions", "mobile").get_library_path())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = []
    with tempfile.TemporaryDirectory(prefix=".ort-", dir=out_dir) as tmp:
        for graph in graphs:
            work = Path(tmp) / Path(graph).stem
            work.mkdir()
            src = work / Path(graph).name
            shutil.copy2(graph, src)  # the tool converts every .onnx in a folder and writes beside it
            for data in external_files(Path(graph)):  # weights kept beside the graph (external data)
                shutil.copy2(Path(graph).parent / data, work / data)
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(
                    src,
                    output_dir=work / "out",
                    optimization_styles=[OptimizationStyle.Fixed],
                    custom_op_library_path=library,
                    target_platform=target_platform,
                )
            produced = work / "out" / f"{Path(graph).stem}.ort"
            target = out_dir / produced.name
            shutil.move(str(produced), target)
            models.append(target)
        config = out_dir / CONFIG_NAME
        with contextlib.redirect_stdout(io.StringIO()):
            create_config_from_models(models, config, False)
    return OrtFiles(tuple(models), config)
