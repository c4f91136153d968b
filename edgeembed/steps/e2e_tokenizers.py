"""Tokenizer adapters for the strings-in graphs, one per family (WordPiece, Unigram, byte-level BPE).

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


def _lowercase_refusal(tokenizer_json: Path, head: Head) -> str | None:
    """openvino-tokenizers converts the tokenizer as it is: it cannot add the head's lower-casing."""
    if not head.do_lower_case:
        return None
    norm = read_tokenizer_json(tokenizer_json).get("normalizer") or {}
    for part in norm.get("normalizers", [norm]) if norm else []:
        if part.get("type") == "Lowercase" or (
            part.get("type") == "BertNormalizer" and part.get("lowercase")
        ):
            return None
    return (
        f"{tokenizer_json}: the model lower-cases texts (do_lower_case) but its tokenizer does not; the "
        "OpenVINO tokenizer cannot add that step"
    )


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
    onnx_op: str = "BertTokenizer"

    def supports_onnx(self, tokenizer_json: Path, head: Head) -> str | None:
        from edgeembed.steps.e2e_onnx import tokenizer_settings

        try:
            tokenizer_settings(tokenizer_json, head)
        except InputError as exc:
            return str(exc)
        return None

    def supports_openvino(self, tokenizer_json: Path, head: Head) -> str | None:
        return None

    def build_onnx(self, tokenizer_json: Path, head: Head, fix_characters: bool = True) -> Any:
        from edgeembed.steps.e2e_onnx import wordpiece_tokenizer

        return wordpiece_tokenizer(tokenizer_json, head, fix_characters)

    def build_openvino(self, tokenizer_json: Path, head: Head) -> Any:
        return _convert(tokenizer_json, head)


@dataclass(frozen=True)
class UnigramAdapter:
    """SentencePiece Unigram (XLM-R, multilingual-e5, bge-m3, T5) in tokenizer.json form.

    Both formats run SentencePiece's normalizer and Unigram (ONNX: the extensions' SentencepieceTokenizer
    op on a model proto written from tokenizer.json; OpenVINO: openvino-tokenizers' pipeline), with two
    corrections towards `tokenizers` (the reference every other path uses): whitespace that ends the
    normalized text becomes a final "▁" token (SentencePiece strips it), and a grapheme whose first
    character the charsmap rewrites loses its combining marks first (`tokenizers`' Precompiled normalizer
    rewrites a whole grapheme of under 6 bytes by its first character's entry; SentencePiece keeps them).
    """

    family: str = "unigram"
    onnx_op: str = "SentencepieceTokenizer"

    def supports_onnx(self, tokenizer_json: Path, head: Head) -> str | None:
        cfg = read_tokenizer_json(tokenizer_json)
        where = f"{tokenizer_json}: Unigram"
        model = cfg.get("model") or {}
        if model.get("byte_fallback"):
            return f"{where} with byte_fallback has no SentencepieceTokenizer equivalent written here"
        if model.get("unk_id") is None:
            return f"{where} without an unk token cannot be written as a sentencepiece model"
        refusal = _metaspace_refusal(cfg, where)
        if refusal:
            return refusal
        norm = cfg.get("normalizer") or {}
        for part in norm.get("normalizers", [norm]) if norm else []:
            kind = part.get("type")
            if kind == "Replace" and _collapses_spaces(part):
                continue
            if kind != "Precompiled":
                return (
                    f"{where}: normalizer {kind!r} has no equivalent in a sentencepiece model (supported: "
                    "Precompiled, Replace of space runs)"
                )
        return _template_refusal(cfg, where)

    def supports_openvino(self, tokenizer_json: Path, head: Head) -> str | None:
        cfg = read_tokenizer_json(tokenizer_json)
        pre = cfg.get("pre_tokenizer") or {}
        kinds = {p.get("type") for p in pre.get("pretokenizers", [pre])}
        if "Metaspace" not in kinds:
            return (
                f"{tokenizer_json}: Unigram with pre-tokenizer {pre.get('type')!r} (no Metaspace) is not "
                "supported by openvino-tokenizers' conversion here"
            )
        norm = cfg.get("normalizer") or {}
        parts = norm.get("normalizers", [norm]) if norm else []
        if not any(p.get("type") == "Replace" and _collapses_spaces(p) for p in parts):
            # SentencePiece models (all converted XLM-R/e5/T5 tokenizers) collapse runs of spaces in
            # their normalizer; openvino-tokenizers' conversion assumes it, so a tokenizer that keeps
            # them tokenizes "a   b" differently in the graph (found by the export's id check).
            return (
                f"{tokenizer_json}: Unigram keeps runs of spaces (its normalizer has no Replace of space "
                "runs, as SentencePiece models have); openvino-tokenizers' conversion collapses them"
            )
        return None

    def build_onnx(self, tokenizer_json: Path, head: Head, fix_characters: bool = True) -> Any:
        return _unigram_onnx(tokenizer_json, head, fix_characters)

    def build_openvino(self, tokenizer_json: Path, head: Head) -> Any:
        forms = _normal_forms(tokenizer_json)
        fixes = None if forms is None else OpenVinoFixes(True, _grapheme_patterns(forms))
        return _convert(tokenizer_json, head, fixes)


@dataclass(frozen=True)
class ByteLevelBpeAdapter:
    """Byte-level BPE (RoBERTa, ModernBERT, Qwen3): the extensions' GPT2Tokenizer op on tokenizer.json's
    vocabulary and merges (ONNX, GPT-2's pre-tokenizer regex only), openvino-tokenizers as it converts it
    (OpenVINO)."""

    family: str = "bpe"
    onnx_op: str = "GPT2Tokenizer"

    def supports_onnx(self, tokenizer_json: Path, head: Head) -> str | None:
        cfg = read_tokenizer_json(tokenizer_json)
        where = f"{tokenizer_json}: BPE"
        model = cfg.get("model") or {}
        for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                return f"{where} with {key} has no GPT2Tokenizer equivalent"
        if model.get("byte_fallback") or model.get("ignore_merges"):
            return f"{where} with byte_fallback or ignore_merges has no GPT2Tokenizer equivalent"
        if cfg.get("normalizer"):
            return f"{where}: normalizer {cfg['normalizer'].get('type')!r} has no GPT2Tokenizer equivalent"
        pre = cfg.get("pre_tokenizer") or {}
        if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
            return (
                f"{where}: pre-tokenizer {pre.get('type')!r} is not GPT-2's (ByteLevel with its regex, no prefix "
                "space), which is all the GPT2Tokenizer op splits by (e.g. Qwen's Split regex differs)"
            )
        return _template_refusal(cfg, where)

    def supports_openvino(self, tokenizer_json: Path, head: Head) -> str | None:
        cfg = read_tokenizer_json(tokenizer_json)
        pre = cfg.get("pre_tokenizer") or {}
        kinds = {p.get("type") for p in pre.get("pretokenizers", [pre])}
        if "ByteLevel" not in kinds:
            return (
                f"{tokenizer_json}: BPE with pre-tokenizer {pre.get('type')!r} (not byte-level, e.g. "
                "SentencePiece BPE) is not supported for strings-in graphs"
            )
        return None

    def build_onnx(self, tokenizer_json: Path, head: Head, fix_characters: bool = True) -> Any:
        return _bpe_onnx(tokenizer_json, head)

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
        refusal = _lowercase_refusal(tokenizer_json, head) or adapter.supports_openvino(tokenizer_json, head)
    else:
        refusal = adapter.supports_onnx(tokenizer_json, head)
        if refusal and adapter.supports_openvino(tokenizer_json, head) is None:
            refusal += "; --format openvino --end-to-end can build it"
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


def _normal_forms(tokenizer_json: Path) -> list[tuple[str, str]] | None:
    """(character, its normal form) for every code point the Precompiled normalizer changes; None without
    a Precompiled normalizer. One normalizer call per 4096 code points ('|' joins them)."""
    from tokenizers import Tokenizer

    cfg = read_tokenizer_json(tokenizer_json)
    norm = cfg.get("normalizer") or {}
    if not any(p.get("type") == "Precompiled" for p in norm.get("normalizers", [norm])):
        return None
    ref = Tokenizer.from_file(str(tokenizer_json))
    out = []
    codes = [c for c in range(0x01, 0x110000) if not 0xD800 <= c < 0xE000 and c != ord("|")]
    for i in range(0, len(codes), 4096):
        chars = [chr(c) for c in codes[i : i + 4096]]
        normal = ref.normalizer.normalize_str("|".join(chars)).split("|")
        if len(normal) != len(chars):  # a character maps to or from '|': one at a time
            normal = [ref.normalizer.normalize_str(ch) for ch in chars]
        out.extend((ch, n) for ch, n in zip(chars, normal) if n != ch)
    return out


def _grapheme_patterns(forms: list[tuple[str, str]]) -> tuple[str, ...]:
    """Regexes (RE2 and PCRE2 alike; replacement: groups 1 and 2) that drop a grapheme's marks where
    `tokenizers` does: a first character the charsmap changes, then marks, the grapheme under 6 bytes
    (UTF-8), the next character no mark."""
    from edgeembed.steps.e2e_onnx import char_class

    changed = [ch for ch, _ in forms if _starts_grapheme(ch)]
    marks = _grapheme_marks()

    def of_size(chars: str | list[str], n: int) -> str:
        return "".join(c for c in chars if len(c.encode("utf-8")) == n)

    m2, m3, m4 = (char_class(of_size(marks, n)) for n in (2, 3, 4))
    tails = {1: f"(?:{m2}{m2}|{m2}|{m3}|{m4})", 2: f"(?:{m2}|{m3})", 3: m2}
    end = f"({char_class(marks, negate=True)}|$)"
    return tuple(
        f"({char_class(of_size(changed, n))}){tail}{end}" for n, tail in tails.items() if of_size(changed, n)
    )


# ----------------------------------------------------------------------------------------------- ONNX
def _collapses_spaces(part: dict[str, Any]) -> bool:
    pattern = part.get("pattern") or {}
    return pattern.get("Regex") == " {2,}" and part.get("content") == " "


def _metaspace_refusal(cfg: dict[str, Any], where: str) -> str | None:
    pre = cfg.get("pre_tokenizer") or {}
    prepends = pre.get("add_prefix_space") or pre.get("prepend_scheme") == "always"
    if pre.get("type") != "Metaspace" or not prepends or not pre.get("split", True):
        return (
            f"{where}: pre-tokenizer {pre.get('type')!r} is not SentencePiece's (Metaspace, prefix always, "
            "split)"
        )
    if pre.get("replacement", "▁") != "▁":
        return f"{where}: Metaspace replacement {pre['replacement']!r} is not SentencePiece's '▁'"
    return None


def _template(cfg: dict[str, Any]) -> tuple[list[int], list[int]] | str:
    """(special ids before, after) the text of the single-text template, or why there is none."""
    post = cfg.get("post_processor") or {}
    kind = post.get("type")
    if kind == "Sequence":
        found = [p for p in post.get("processors", []) if p.get("type") != "ByteLevel"]
        if len(found) > 1:
            return "a post-processor sequence of more than one template"
        post = found[0] if found else {}
        kind = post.get("type")
    if kind in (None, "ByteLevel"):
        return [], []
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [int(post["cls"][1])], [int(post["sep"][1])]
    if kind == "TemplateProcessing":
        before: list[int] = []
        after: list[int] = []
        seen = False
        for piece in post.get("single", []):
            if "Sequence" in piece:
                seen = True
                continue
            ids = post["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            (after if seen else before).extend(int(i) for i in ids)
        return before, after
    return f"post-processor {kind!r}"


def _template_refusal(cfg: dict[str, Any], where: str) -> str | None:
    found = _template(cfg)
    return (
        f"{where}: {found} has no single-text template to write in ONNX ops"
        if isinstance(found, str)
        else None
    )


def _with_specials(body: Any, content: str, cfg: dict[str, Any], max_length: int) -> str:
    """The template's special ids around `content` (int64, (n,)), cut as `tokenizers` truncates."""
    import numpy as np

    found = _template(cfg)
    assert not isinstance(found, str)  # supports_onnx refused it
    before, after = found
    keep = max(max_length - len(before) - len(after), 0)
    zero = body.const(np.array([0], np.int64))
    content = body.op("Slice", [content, zero, body.const(np.array([keep], np.int64)), zero])
    parts = [
        *([body.const(np.array(before, np.int64))] if before else []),
        content,
        *([body.const(np.array(after, np.int64))] if after else []),
    ]
    return body.op("Concat", parts, axis=0) if len(parts) > 1 else content


def _regex(where: Any, x: str, pattern: str, rewrite: str) -> str:
    import numpy as np

    from edgeembed.steps.e2e_onnx import CONTRIB_DOMAIN

    return where.op(
        "StringRegexReplace",
        [x, where.const(np.array([pattern], dtype=object)), where.const(np.array([rewrite], dtype=object))],
        domain=CONTRIB_DOMAIN,
        global_replace=1,
    )


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 fields are written as 10-byte varints
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | int | float) -> bytes:
    """One protobuf field: bytes (length-delimited), int (varint), float (fixed32)."""
    import struct

    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3) + _varint(value)


def sentencepiece_model(cfg: dict[str, Any]) -> bytes:
    """A serialized sentencepiece ModelProto (Unigram) from tokenizer.json: the pieces in id order with
    their scores (the unk piece UNKNOWN, special added tokens CONTROL), and the Precompiled charsmap as its
    normalizer (dummy prefix, whitespace escaped and collapsed). Ids are then tokenizer.json's ids.
    Written by hand (field numbers of sentencepiece_model.proto): no `sentencepiece` package needed."""
    import base64

    model = cfg["model"]
    unk = int(model["unk_id"])
    specials = {t["content"] for t in cfg.get("added_tokens", []) if t.get("special")}
    ids = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    pieces = b"".join(
        _field(1, _field(1, piece.encode("utf-8")) + _field(2, float(score)) + _field(3, kind))
        for i, (piece, score) in enumerate(model["vocab"])
        for kind in [2 if i == unk else 3 if piece in specials else 1]  # UNKNOWN, CONTROL, NORMAL
    )
    special_ids = [ids.get(t, -1) for t in ("<s>", "</s>", "<pad>")]
    trainer = b"".join(
        [
            _field(3, 1),
            _field(40, unk),
            _field(41, special_ids[0]),
            _field(42, special_ids[1]),
            _field(43, special_ids[2]),
        ]
    )  # model_type UNIGRAM, unk/bos/eos/pad ids
    norm = cfg.get("normalizer") or {}
    charsmap = next(
        (
            base64.b64decode(p["precompiled_charsmap"])
            for p in norm.get("normalizers", [norm])
            if p.get("type") == "Precompiled"
        ),
        b"",
    )
    normalizer = b"".join(
        [
            _field(1, b"nmt_nfkc" if charsmap else b"identity"),
            *([_field(2, charsmap)] if charsmap else []),
            _field(3, 1),
            _field(4, 1),
            _field(5, 1),
        ]
    )
    return pieces + _field(2, trainer) + _field(3, normalizer)


def _unigram_onnx(tokenizer_json: Path, head: Head, fix_characters: bool) -> Any:
    import numpy as np

    from edgeembed.steps.e2e_onnx import CONTRIB_DOMAIN, InGraphTokenizer, char_class

    cfg = read_tokenizer_json(tokenizer_json)
    proto = sentencepiece_model(cfg)
    vocab = {piece: i for i, (piece, _) in enumerate(cfg["model"]["vocab"])}
    space_id = vocab.get("▁", int(cfg["model"]["unk_id"]))
    forms = (_normal_forms(tokenizer_json) or []) if fix_characters else []
    patterns = _grapheme_patterns(forms) if forms else ()
    # whitespace that ends the normalized text: characters normalized to spaces, then dropped ones
    spaces = " " + "".join(ch for ch, n in forms if n and not n.strip())
    dropped = "".join(ch for ch, n in forms if n == "")
    tail = f"{char_class(spaces)}{char_class(spaces + dropped)}*$" if fix_characters else ""

    def emit(body: Any, text_1: str) -> str:
        helper = body._h
        tokens, rows = body.name("spm_ids"), body.name("spm_rows")
        no = body.const(np.array([False]))
        inputs = [text_1, body.const(np.array([0], np.int64)), body.const(np.array([0.0], np.float32))]
        body.nodes.append(
            helper.make_node(
                "SentencepieceTokenizer",
                [*inputs, no, no, no, no],  # add_bos, add_eos, reverse, fairseq: ids as written
                [tokens, rows],
                name=tokens,
                domain=CONTRIB_DOMAIN,
                model=proto,
            )
        )
        ids = body.op("Cast", [tokens], to=7)
        if tail:  # SentencePiece strips it; `tokenizers` keeps one "▁"
            kept = _regex(body, text_1, tail, "")
            length = body.op("StringLength", [text_1], domain=CONTRIB_DOMAIN)
            ends = body.op("Less", [body.op("StringLength", [kept], domain=CONTRIB_DOMAIN), length])
            n = body.op("Cast", [ends], to=7)
            zero = body.const(np.array([0], np.int64))
            space = body.op("Slice", [body.const(np.array([space_id], np.int64)), zero, n, zero])
            ids = body.op("Concat", [ids, space], axis=0)
        return _with_specials(body, ids, cfg, head.max_seq_length)

    def rewrite(b: Any, texts: str) -> str:
        for pattern in patterns:
            for _ in range(2):  # a match consumes the character after the grapheme
                texts = _regex(b, texts, pattern, "\\1\\2")
        return texts

    return InGraphTokenizer(
        emit, rewrite if patterns else None, "SentencepieceTokenizer (onnxruntime-extensions)"
    )


def _bpe_onnx(tokenizer_json: Path, head: Head) -> Any:
    import numpy as np

    from edgeembed.steps.e2e_onnx import CONTRIB_DOMAIN, InGraphTokenizer

    cfg = read_tokenizer_json(tokenizer_json)
    model = cfg["model"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges", [])]
    attrs = {
        "vocab": json.dumps(model["vocab"], separators=(",", ":"), ensure_ascii=False),
        "merges": "\n".join(merges),
    }
    added = [f"{t['content']}={t['id']}" for t in cfg.get("added_tokens", []) if "\n" not in t["content"]]
    if added:
        attrs["added_token"] = "\n".join(added)

    def emit(body: Any, text_1: str) -> str:
        helper = body._h
        ids, mask = body.name("bpe_ids"), body.name("bpe_mask")
        body.nodes.append(
            helper.make_node("GPT2Tokenizer", [text_1], [ids, mask], name=ids, domain=CONTRIB_DOMAIN, **attrs)
        )
        flat = body.op("Reshape", [ids, body.const(np.array([-1], np.int64))])
        return _with_specials(body, flat, cfg, head.max_seq_length)

    return InGraphTokenizer(emit, None, "GPT2Tokenizer (onnxruntime-extensions)")
