"""Tokenizer adapters for the strings-in graphs: one per tokenizer family (WordPiece, Unigram, byte-level BPE).

Why: a strings-in graph carries its tokenizer as graph ops (onnxruntime-extensions for ONNX,
openvino-tokenizers for OpenVINO), and each family maps onto those ops differently, or not at all. An
adapter says, from tokenizer.json alone and before any export work, whether it can build the in-graph
tokenizer for a format (`supports_onnx` / `supports_openvino`: None or the one-line reason), and builds it.
The build's gate then checks the built graph token-for-token against `tokenizers`.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeembed._imports import require
from edgeembed.errors import InputError
from edgeembed.source import Head


def read_tokenizer_json(tokenizer_json: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read tokenizer {tokenizer_json}: {exc}") from None


def _head_refusal(head: Head) -> str | None:
    """What no strings-in graph can express, whatever the tokenizer."""
    if head.prompts and not head.include_prompt:
        return (
            "this model pools without its prompt tokens (include_prompt=False); the end-to-end graph pools "
            "every token, so it would embed prompted texts differently: use the token-level graph"
        )
    return None


def _hf_tokenizer(tokenizer_json: Path) -> Any:
    transformers = require("transformers", "export")
    folder = Path(tokenizer_json).parent
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise InputError(f"transformers cannot load the tokenizer in {folder}: {exc}") from None


@dataclass(frozen=True)
class WordPieceAdapter:
    """BERT-style WordPiece (BERT, MiniLM, DistilBERT, MPNet): the extensions' BertTokenizer op (ONNX) and
    openvino-tokenizers (OpenVINO), both exact after the ONNX graph's character rewrites."""

    family: str = "wordpiece"

    def supports_onnx(self, tokenizer_json: Path, head: Head) -> str | None:
        from edgeembed.steps.e2e_onnx import tokenizer_settings

        try:
            tokenizer_settings(tokenizer_json, head)
        except InputError as exc:
            return str(exc)
        return None

    def supports_openvino(self, tokenizer_json: Path, head: Head) -> str | None:
        return None

    def build_openvino(self, tokenizer_json: Path, head: Head) -> Any:
        return _convert(tokenizer_json, head)


@dataclass(frozen=True)
class UnigramAdapter:
    """SentencePiece Unigram (XLM-R, multilingual-e5, bge-m3, T5) in tokenizer.json form.

    OpenVINO: openvino-tokenizers' pipeline with two corrections towards `tokenizers` (the reference
    every other path uses): its precompiled-charsmap step keeps leading/trailing whitespace (SentencePiece
    strips it; `tokenizers` makes a final "▁" of it), and a grapheme whose first character the charsmap
    rewrites loses its combining marks first (`tokenizers`' Precompiled normalizer rewrites a whole
    grapheme of under 6 bytes by its first character's entry; SentencePiece keeps the marks).
    ONNX: refused (see supports_onnx)."""

    family: str = "unigram"

    def supports_onnx(self, tokenizer_json: Path, head: Head) -> str | None:
        return (
            f"{tokenizer_json}: a Unigram (SentencePiece) tokenizer has no onnxruntime-extensions equivalent "
            "from tokenizer.json (its SentencepieceTokenizer op needs the original sentencepiece model "
            "file): use --format openvino --end-to-end, or the token-level graph"
        )

    def supports_openvino(self, tokenizer_json: Path, head: Head) -> str | None:
        cfg = read_tokenizer_json(tokenizer_json)
        pre = cfg.get("pre_tokenizer") or {}
        kinds = {p.get("type") for p in pre.get("pretokenizers", [pre])}
        if "Metaspace" not in kinds:
            return f"{tokenizer_json}: a Unigram tokenizer without a Metaspace pre-tokenizer is not supported"
        return None

    def build_openvino(self, tokenizer_json: Path, head: Head) -> Any:
        return _convert(tokenizer_json, head, _unigram_fixes(tokenizer_json))


@dataclass(frozen=True)
class ByteLevelBpeAdapter:
    """Byte-level BPE (RoBERTa, ModernBERT, Qwen3): openvino-tokenizers converts it as it is (OpenVINO);
    ONNX is refused (see supports_onnx)."""

    family: str = "bpe"

    def supports_onnx(self, tokenizer_json: Path, head: Head) -> str | None:
        return (
            f"{tokenizer_json}: a byte-level BPE tokenizer has no onnxruntime-extensions equivalent wired "
            "here yet (its GPT2/Roberta tokenizer ops are not gated against `tokenizers`): use --format "
            "openvino --end-to-end, or the token-level graph"
        )

    def supports_openvino(self, tokenizer_json: Path, head: Head) -> str | None:
        cfg = read_tokenizer_json(tokenizer_json)
        pre = cfg.get("pre_tokenizer") or {}
        kinds = {p.get("type") for p in pre.get("pretokenizers", [pre])}
        if "ByteLevel" not in kinds:
            return (
                f"{tokenizer_json}: a BPE tokenizer without a ByteLevel pre-tokenizer (e.g. SentencePiece "
                "BPE) is not supported for strings-in graphs"
            )
        return None

    def build_openvino(self, tokenizer_json: Path, head: Head) -> Any:
        return _convert(tokenizer_json, head)


ADAPTERS: dict[str, Any] = {
    "WordPiece": WordPieceAdapter(),
    "Unigram": UnigramAdapter(),
    "BPE": ByteLevelBpeAdapter(),
}


def adapter_for(tokenizer_json: Path) -> Any:
    """The adapter of this tokenizer's model type; InputError (one line) when there is none."""
    kind = (read_tokenizer_json(tokenizer_json).get("model") or {}).get("type")
    if kind not in ADAPTERS:
        raise InputError(
            f"{tokenizer_json}: tokenizer model {kind!r} has no strings-in adapter "
            f"(supported: {', '.join(ADAPTERS)})"
        )
    return ADAPTERS[kind]


def check_support(tokenizer_json: Path, head: Head, format: str) -> Any:
    """Refuse (InputError, one line) a strings-in graph this format cannot build, before any export work.
    Returns the adapter."""
    refusal = _head_refusal(head)
    if refusal:
        raise InputError(refusal)
    adapter = adapter_for(tokenizer_json)
    if format == "openvino":
        require("openvino_tokenizers", "mobile")
        refusal = adapter.supports_openvino(tokenizer_json, head)
    else:
        refusal = adapter.supports_onnx(tokenizer_json, head)
    if refusal:
        raise InputError(refusal)
    return adapter


# ------------------------------------------------------------------------------------------- OpenVINO
@dataclass(frozen=True)
class OpenVinoFixes:
    """Changes to openvino-tokenizers' pipeline so its ids match `tokenizers` (Unigram only)."""

    keep_whitespace: bool = False  # the charsmap step keeps leading/trailing whitespace
    patterns: tuple[str, ...] = ()  # regex rewrites ("$1$2") run before the charsmap step


def _convert(tokenizer_json: Path, head: Head, fixes: OpenVinoFixes | None = None) -> Any:
    """openvino-tokenizers' model of this tokenizer (text in; input_ids, attention_mask out, int64),
    truncated to max_seq_length."""
    ovt = require("openvino_tokenizers", "mobile")
    hf = _hf_tokenizer(tokenizer_json)
    if head.do_lower_case and not getattr(hf, "do_lower_case", False):
        raise InputError(
            f"{tokenizer_json}: the model lower-cases texts (do_lower_case) but its tokenizer does not; "
            "the OpenVINO tokenizer cannot add that step"
        )
    try:
        if fixes is None:
            return ovt.convert_tokenizer(hf, max_length=head.max_seq_length, truncation=True)
        return _convert_pipeline(hf, head, fixes)
    except InputError:
        raise
    except Exception as exc:  # openvino_tokenizers raises OVTypeError / NotImplementedError per piece
        raise InputError(f"{tokenizer_json}: openvino-tokenizers cannot convert it: {exc}") from None


def _convert_pipeline(hf: Any, head: Head, fixes: OpenVinoFixes) -> Any:
    """`convert_tokenizer`'s fast-tokenizer path with the fixes applied to its pipeline steps (the
    pipeline classes are openvino-tokenizers' own; nothing of the library is patched)."""
    ov = require("openvino", "openvino")
    from openvino_tokenizers.hf_parser import TransformersTokenizerPipelineParser
    from openvino_tokenizers.tokenizer_pipeline import CharsmapStep, RegexNormalizationStep
    from openvino_tokenizers.utils import TokenzierConversionParams, change_outputs_type

    params = TokenzierConversionParams(max_length=head.max_seq_length, truncation=True)
    hf.model_max_length = head.max_seq_length  # what convert_tokenizer does with max_length
    pipeline = TransformersTokenizerPipelineParser(hf, params).parse()
    at = next((i for i, s in enumerate(pipeline.steps) if isinstance(s, CharsmapStep)), None)
    if at is None:
        raise InputError("openvino-tokenizers' pipeline has no charsmap step to correct")
    if fixes.keep_whitespace:
        pipeline.steps[at].remove_extra_whitespaces = False
    # twice each: a match consumes the character after the grapheme, which may start the next one
    added = [
        RegexNormalizationStep(regex_search_pattern=p, replace_term="$1$2")
        for p in fixes.patterns
        for _ in range(2)
    ]
    for step in added:
        step.set_pipeline(pipeline)
    pipeline.steps[at:at] = added
    tokenizer = pipeline.get_tokenizer_ov_subgraph()
    outputs = []
    for name in ("input_ids", "attention_mask"):
        output = next((o for o in tokenizer.outputs if name in o.names), None)
        if output is None:
            raise InputError(f"openvino-tokenizers' pipeline has no {name} output")
        outputs.append(output)
    model = ov.Model(outputs, tokenizer.get_parameters(), "tokenizer")
    model.add_sinks(tokenizer.get_sinks())
    return change_outputs_type(model, ov.Type.i64)


def _grapheme_marks() -> str:
    """Characters that extend a grapheme cluster (what `tokenizers`' Precompiled normalizer segments by):
    marks, ZWNJ/ZWJ, emoji skin-tone modifiers and tag characters."""
    marks = [chr(c) for c in range(0x300, 0x110000) if unicodedata.category(chr(c)).startswith("M")]
    extra = [chr(c) for c in (0x200C, 0x200D, *range(0x1F3FB, 0x1F400), *range(0xE0020, 0xE0080))]
    return "".join(marks + extra)


def _starts_grapheme(ch: str) -> bool:
    """Whether marks after `ch` join its grapheme: not after controls, format characters (bar ZWNJ/ZWJ)
    and line/paragraph separators, which end a grapheme (UAX #29, GB4)."""
    return unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp") or ch in "\u200c\u200d"


def _unigram_fixes(tokenizer_json: Path) -> OpenVinoFixes | None:
    """The regex rewrites that drop a grapheme's marks where `tokenizers` does: a first character the
    charsmap changes, followed by marks, the grapheme under 6 bytes (UTF-8), the next character no mark."""
    from tokenizers import Tokenizer

    from edgeembed.steps.e2e_onnx import char_class

    cfg = read_tokenizer_json(tokenizer_json)
    norm = cfg.get("normalizer") or {}
    parts = norm.get("normalizers", [norm])
    if not any(p.get("type") == "Precompiled" for p in parts):
        return None
    ref = Tokenizer.from_file(str(tokenizer_json))
    changed = []
    codes = [c for c in range(0x01, 0x110000) if not 0xD800 <= c < 0xE000 and c != ord("|")]
    for i in range(0, len(codes), 4096):
        chars = [chr(c) for c in codes[i : i + 4096]]
        normal = ref.normalizer.normalize_str("|".join(chars)).split("|")
        if len(normal) != len(chars):  # a character maps to or from '|': one at a time
            normal = [ref.normalizer.normalize_str(ch) for ch in chars]
        changed.extend(ch for ch, n in zip(chars, normal) if n != ch and _starts_grapheme(ch))
    marks = _grapheme_marks()

    def of_size(chars: str | list[str], n: int) -> str:
        return "".join(c for c in chars if len(c.encode("utf-8")) == n)

    m2, m3, m4 = (char_class(of_size(marks, n)) for n in (2, 3, 4))
    tails = {1: f"(?:{m2}{m2}|{m2}|{m3}|{m4})", 2: f"(?:{m2}|{m3})", 3: m2}
    end = f"({char_class(marks, negate=True)}|$)"
    patterns = tuple(
        f"({char_class(of_size(changed, n))}){tail}{end}" for n, tail in tails.items() if of_size(changed, n)
    )
    return OpenVinoFixes(keep_whitespace=True, patterns=patterns)
