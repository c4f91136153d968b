"""Token-id mismatches of the strings-in tokenizers (ONNX and OpenVINO) vs `tokenizers`, each shrunk to
its shortest failing piece, so that they can be sorted into classes.

    python bench/lab/tokenizer_classes.py TOKENIZER_JSON[.gz] [--texts 4000] [--seed 0] [--format onnx]

Texts: STS-b test, the hard cases and `--texts` random Unicode texts (tests/test_e2e_families.py's
generator). Prints, per format, the number of mismatches per text set and, for each mismatch, the
shortest substring that still mismatches (characters removed one at a time while it does), with its code
points and Unicode categories.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
import common

common.use_repo()
sys.path.insert(0, str(common.REPO / "tests"))

import numpy as np  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from edgeembed.head import PoolingMode  # noqa: E402
from edgeembed.runtimes.onnxruntime_e2e import clean_text  # noqa: E402
from edgeembed.source import Head  # noqa: E402
from edgeembed.steps.e2e_onnx import HARD_CASES  # noqa: E402


def ids_function(tokenizer_json: Path, head: Head, format: str):
    """text -> in-graph ids, for one format."""
    if format == "openvino":
        import openvino as ov

        from edgeembed.steps.e2e_tokenizers import check_support

        model = check_support(tokenizer_json, head, "openvino").build_openvino(tokenizer_json, head)
        compiled = ov.compile_model(model, "CPU")
        return lambda text: compiled([text])["input_ids"][0].tolist()
    from edgeembed.steps.e2e_onnx import _tokenizer_session, tokenizer_graph

    session, name = _tokenizer_session(tokenizer_graph(tokenizer_json, head))
    return lambda text: session.run(None, {name: np.array([text], dtype=object)})[0][0].tolist()


def shrink(text: str, fails) -> str:
    """The text with characters removed one at a time while it still fails."""
    changed = True
    while changed:
        changed = False
        for i in range(len(text)):
            shorter = text[:i] + text[i + 1 :]
            if fails(shorter):
                text, changed = shorter, True
                break
    return text


def describe(text: str) -> str:
    return " ".join(f"U+{ord(c):04X}({unicodedata.category(c)})" for c in text)


def main() -> None:
    from test_e2e_families import MULTILINGUAL, random_texts

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tokenizer", type=Path)
    ap.add_argument("--texts", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", choices=("onnx", "openvino", "both"), default="both")
    ap.add_argument("--max-seq", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_json = Path(tmp) / "tokenizer.json"
        raw = args.tokenizer.read_bytes()
        tokenizer_json.write_bytes(gzip.decompress(raw) if args.tokenizer.suffix == ".gz" else raw)
        head = Head(hidden_size=8, pooling=(PoolingMode("mean"),), max_seq_length=args.max_seq)
        ref = Tokenizer.from_file(str(tokenizer_json))
        ref.no_padding()
        ref.enable_truncation(max_length=args.max_seq)
        sets = {
            "sts+hard": [*common.sts_sentences(), *HARD_CASES, *MULTILINGUAL],
            "random": random_texts(args.texts, seed=args.seed),
        }
        formats = ("onnx", "openvino") if args.format == "both" else (args.format,)
        for format in formats:
            got = ids_function(tokenizer_json, head, format)

            def fails(text: str, got=got) -> bool:
                text = clean_text(text)
                return got(text) != ref.encode(text).ids

            for name, texts in sets.items():
                bad = [t for t in texts if fails(t)]
                print(f"## {format} {name}: {len(bad)} of {len(texts)} mismatch", flush=True)
                for t in bad:
                    piece = shrink(t, fails)
                    norm = ref.normalizer.normalize_str(clean_text(piece)) if ref.normalizer else piece
                    print(f"  {piece!r}: {describe(piece)} | hf norm {norm!r}", flush=True)
                    print(f"     hf {ref.encode(clean_text(piece)).ids} graph {got(clean_text(piece))}")


if __name__ == "__main__":
    main()
