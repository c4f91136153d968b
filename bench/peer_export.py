"""Export the peer's variants with sentence-transformers' own functions. Runs in the PEER venv.

    peer-venv/bin/python bench/peer_export.py SOURCE_MODEL OUT_DIR CALIBRATION_DIR

SOURCE_MODEL is copied to OUT_DIR, then sentence-transformers exports into it (its documented file
layout): onnx/model.onnx, onnx/model_O3.onnx, onnx/model_qint8_avx512_vnni.onnx,
openvino/openvino_model.xml, openvino/openvino_model_qint8_quantized.xml. CALIBRATION_DIR is a local
dataset folder with train.csv (column `sentence`) for the static OpenVINO int8 model.

A peer venv without optimum's ONNX back-end (sentence-transformers 6 with transformers 5: optimum-onnx
0.1.0 pins transformers<4.58) gets the OpenVINO files only.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path


def main(source: str, out: str, calibration_dir: str) -> None:
    from sentence_transformers import SentenceTransformer, export_static_quantized_openvino_model

    root = Path(out)
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(source, root)
    path = str(root)

    if importlib.util.find_spec("optimum.onnxruntime") is not None:
        from sentence_transformers import export_dynamic_quantized_onnx_model, export_optimized_onnx_model

        print("peer: ONNX export (backend='onnx')", flush=True)
        onnx_model = SentenceTransformer(path, device="cpu", backend="onnx")
        onnx_model.transformers_model.save_pretrained(path)  # -> onnx/model.onnx
        print("peer: O3 optimization", flush=True)
        export_optimized_onnx_model(onnx_model, "O3", path)
        print("peer: dynamic int8 (avx512_vnni)", flush=True)
        export_dynamic_quantized_onnx_model(onnx_model, "avx512_vnni", path)
    else:
        print("peer: no optimum ONNX back-end in this venv: OpenVINO variants only", flush=True)

    print("peer: OpenVINO export (backend='openvino')", flush=True)
    ov_model = SentenceTransformer(path, device="cpu", backend="openvino")
    ov_model.transformers_model.save_pretrained(path)  # -> openvino/openvino_model.xml
    print("peer: static int8 OpenVINO, calibrated on STS-b train sentences", flush=True)
    export_static_quantized_openvino_model(
        ov_model,
        None,
        path,
        dataset_name=calibration_dir,
        dataset_config_name="default",
        dataset_split="train",
        column_name="sentence",
    )
    for f in sorted(root.rglob("*")):
        if f.suffix in (".onnx", ".xml", ".safetensors"):
            print(f"peer: {f.relative_to(root)} {f.stat().st_size / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: peer_export.py SOURCE_MODEL OUT_DIR CALIBRATION_DIR")
    main(*sys.argv[1:])
