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
    op on a model proto written from tokenizer.json; OpenVINO: openvino-tokenizers' pipeline), with
    corrections towards `tokenizers` (the reference every other path uses): whitespace that ends the
    normalized text becomes a final "▁" token (SentencePiece strips it); the charsmap and two regex passes
    of `unigram_characters` make SentencePiece's longest-match normalizer rewrite graphemes as
    `tokenizers`' Precompiled normalizer does; and the piece scores are put on the grid of
    `quantized_score`, so that equal-score segmentations tie in float32 as they do in `tokenizers`.
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
        chars = unigram_characters(tokenizer_json)
        fixes = None if chars is None else OpenVinoFixes(True, tuple(chars.rewrites(True)), chars.charsmap)
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
    rewrites: tuple[tuple[str, str], ...] = ()  # (regex, "$1..." rewrite) run before the charsmap step
    charsmap: bytes | None = None  # the charsmap step's map instead of tokenizer.json's (and scores on
    # the grid of `quantized_score`)


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
    from openvino_tokenizers.tokenizer_pipeline import CharsmapStep, RegexNormalizationStep, UnigramModelStep
    from openvino_tokenizers.utils import TokenzierConversionParams, change_outputs_type

    params = TokenzierConversionParams(max_length=head.max_seq_length, truncation=True)
    hf.model_max_length = head.max_seq_length  # what convert_tokenizer does with max_length
    pipeline = TransformersTokenizerPipelineParser(hf, params).parse()
    at = next((i for i, s in enumerate(pipeline.steps) if isinstance(s, CharsmapStep)), None)
    if at is None:
        raise InputError("openvino-tokenizers' pipeline has no charsmap step to correct")
    if fixes.keep_whitespace:
        pipeline.steps[at].remove_extra_whitespaces = False
    if fixes.charsmap is not None:
        pipeline.steps[at].charsmap = fixes.charsmap
        for step in pipeline.steps:
            if isinstance(step, UnigramModelStep):
                step.vocab_logprobs = [quantized_score(s) for s in step.vocab_logprobs]
    added = [RegexNormalizationStep(regex_search_pattern=p, replace_term=r) for p, r in fixes.rewrites]
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


# ------------------------------------------------------------------------------------ Unigram characters
_SCORE_GRID = 1024.0  # scores on a 2^-10 grid: float32 sums of up to 2^14 in magnitude are then exact
_PROBE = "A\u0301"  # a two-character charsmap key ("Á") whose composition shows where graphemes end
_PROBE_NORMAL = "\u00c1"


def quantized_score(score: float) -> float:
    """A piece score on the 2^-10 grid. `tokenizers` sums scores in float64 (exact: equal segmentations
    tie and the first found wins); SentencePiece and openvino-tokenizers sum in float32, whose rounding
    picks among equal ones. On the grid float32 sums are exact while they stay under 2^14 (over a thousand
    pieces, more than the pieces that survive truncation), and both Viterbis then keep the first found
    path on a tie, as `tokenizers` does. Rounding moves a score by at most 2^-11: it can only reorder
    segmentations that far apart."""
    return round(float(score) * _SCORE_GRID) / _SCORE_GRID


def _decode_charsmap(blob: bytes, max_bytes: int = 5) -> dict[str, str]:
    """The Precompiled charsmap's entries (key -> normal form) of keys up to `max_bytes` long (UTF-8): a
    darts-clone double array over the keys' bytes, then the NUL-terminated normal forms it points into."""
    import struct

    import numpy as np

    size = struct.unpack_from("<I", blob)[0]
    units = np.frombuffer(blob, dtype="<u4", count=size // 4, offset=4).astype(np.int64)
    normals = blob[4 + size :]
    offsets = (units >> 10) << ((units & (1 << 9)) >> 6)
    labels = np.arange(1, 256)
    out: dict[str, str] = {}
    stack = [(0, b"")]
    while stack:
        pos, key = stack.pop()
        children = (pos ^ offsets[pos]) ^ labels
        inside = children < len(units)
        found = labels[inside][(units[children[inside]] & ((1 << 31) | 0xFF)) == labels[inside]]
        for label in found.tolist():
            child = int((pos ^ offsets[pos]) ^ label)
            name = key + bytes([label])
            if (units[child] >> 8) & 1:
                value = int(units[child ^ offsets[child]] & ((1 << 31) - 1))
                out[name.decode("utf-8", "replace")] = normals[value : normals.index(b"\0", value)].decode(
                    "utf-8", "replace"
                )
            if len(name) < max_bytes:
                stack.append((child, name))
    return out


def _encode_charsmap(entries: dict[str, str]) -> bytes:
    """The inverse of `_decode_charsmap`: a darts-clone double array (each node's children at base ^
    label, bases unique, a key's value at its node's base) and the normal forms."""
    import struct

    normals = bytearray()
    where: dict[str, int] = {}
    for normal in sorted(set(entries.values())):
        where[normal] = len(normals)
        normals += normal.encode("utf-8") + b"\0"
    root: dict[int, Any] = {}
    for key, normal in entries.items():
        node = root
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[-1] = where[normal]
    units = [0] * 1024
    used = bytearray(1024)
    used[0] = 1
    bases: set[int] = set()
    first_free = 1
    queue = [(root, 0, 0)]  # node, its position, its label
    while queue:
        node, pos, label = queue.pop()
        slots = sorted(k for k in node if k >= 0) + ([0] if -1 in node else [])
        base = None
        if slots:
            free = used.find(0, first_free)
            free = first_free = len(used) if free < 0 else free
            while True:  # try the free slots in order for the first label
                candidate = free ^ slots[0]
                if len(used) <= (candidate | 0xFF):
                    grow = (candidate | 0xFF) + 1 - len(used) + 4096
                    used.extend(bytes(grow))
                    units.extend([0] * grow)
                if candidate > 0 and candidate not in bases and all(not used[candidate ^ x] for x in slots):
                    break
                free = used.find(0, free + 1)
                if free < 0:
                    free = len(used)
            base = candidate
            bases.add(base)
            for x in slots:
                used[base ^ x] = 1
        offset = 0 if base is None else pos ^ base
        if offset >= 1 << 21:  # pragma: no cover - a charsmap of over two million units
            raise InputError("charsmap too large to write as a double array")
        units[pos] = label | (0x100 if -1 in node else 0) | (offset << 10)
        if -1 in node:
            units[base] = (1 << 31) | node[-1]
        for x in slots:
            if x:
                queue.append((node[x], base ^ x, x))
    array = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(array)) + array + bytes(normals)


def _normalize_all(ref: Any, texts: list[str]) -> list[str]:
    """`tokenizers`' normal form of each text, 4096 texts per call ('|' joins them; each text alone where
    the charsmap touches '|')."""
    out: list[str] = []
    for i in range(0, len(texts), 4096):
        chunk = texts[i : i + 4096]
        normal = ref.normalizer.normalize_str("|".join(chunk)).split("|")
        if len(normal) != len(chunk):
            normal = [ref.normalizer.normalize_str(t) for t in chunk]
        out.extend(normal)
    return out


@dataclass(frozen=True)
class UnigramCharacters:
    """What makes SentencePiece's normalizer (longest charsmap match at each character) give `tokenizers`'
    Precompiled normal form (each extended grapheme of under 6 bytes rewritten by the entry of its shortest
    prefix that is a key, longer graphemes and the rest character by character):

    charsmap: the entries `tokenizers` can apply (single characters, and keys of at most 5 bytes that are
    one grapheme and have no shorter key as a prefix), so that a longest match is never longer than
    `tokenizers`' match. pattern/rewrite: one regex, run once over the text before the charsmap step, that
    matches whole graphemes from their first character on: it drops the rest of a short grapheme after its
    key prefix, and puts `blocker` (a character the charsmap deletes, a grapheme of its own) where a key
    must not match: after the first character of a long grapheme, after a Prepend character's grapheme
    start. spaces/dropped: characters the charsmap turns into whitespace / deletes.
    """

    charsmap: bytes
    # per pass: its alternatives (each with the same number of groups) and the rewrite (group numbers
    # and literal text, in order)
    patterns: tuple[tuple[tuple[str, ...], tuple[int | str, ...]], ...]
    spaces: str
    dropped: str
    guard: str = ""  # a lookahead (PCRE2 only) that every match passes

    def rewrites(self, pcre: bool) -> list[tuple[str, str]]:
        """(regex, rewrite) per pass. PCRE2 (openvino-tokenizers) refuses a rewrite naming a group that did
        not match: its alternatives share their groups ("(?|...)"). RE2 (the extensions) has no such
        syntax but rewrites an unmatched group as empty: each alternative's groups are numbered on, and the
        rewrite names the j-th group of every alternative where it names group j."""
        out = []
        for alternatives, rewrite in self.patterns:
            if pcre:
                regex = self.guard + "(?|" + "|".join(alternatives) + ")"
                text = "".join(f"${p}" if isinstance(p, int) else p for p in rewrite)
            else:
                k = max(p for p in rewrite if isinstance(p, int))
                regex = "|".join(alternatives)
                text = "".join(
                    "".join(f"\\{i * k + p}" for i in range(len(alternatives))) if isinstance(p, int) else p
                    for p in rewrite
                )
            out.append((regex, text))
        return out


def _size(ch: str) -> int:
    return len(ch.encode("utf-8"))


def _literal(text: str) -> str:
    return "".join(f"\\x{{{ord(c):x}}}" for c in text)


def _joined_graphemes(codes: list[str]) -> tuple[tuple[str, str], set[str]]:
    """Regexes (one group each) of the grapheme rules that join two base characters, an emoji ZWJ sequence
    (GB11) and an Indic conjunct (GB9c), from the `regex` module's Unicode properties; and the characters
    that such a rule may join to the one before."""
    from edgeembed.steps.e2e_onnx import char_class

    regex = require("regex", "mobile")

    def having(prop: str) -> str:
        pattern = regex.compile(rf"\p{{{prop}}}")
        return "".join(ch for ch in codes if pattern.match(ch))

    pictographic, consonant = having("Extended_Pictographic"), having("InCB=Consonant")
    extend, linker = char_class(having("Grapheme_Cluster_Break=Extend")), char_class(having("InCB=Linker"))
    between = char_class(having("InCB=Extend"))[:-1] + linker[1:]
    picto, cons = char_class(pictographic), char_class(consonant)
    return (
        f"({picto}(?:{extend}*\\x{{200d}}{picto})+)",
        f"({cons}(?:{between}*{linker}{between}*{cons})+)",
    ), set(pictographic + consonant)


def unigram_characters(tokenizer_json: Path) -> UnigramCharacters | None:
    """The charsmap and the grapheme regexes of this tokenizer's Precompiled normalizer; None without one,
    or where the charsmap lacks what they rely on (then the op runs the charsmap as it is). Where graphemes
    end comes from `tokenizers` itself (its unicode-segmentation tables), probed with the key "A" U+0301
    (-> U+00C1): a character extends a grapheme when "A" U+0301 before it no longer composes, and is a
    Prepend when "A" U+0301 after it no longer composes."""
    import base64

    from tokenizers import Tokenizer

    from edgeembed.steps.e2e_onnx import char_class

    cfg = read_tokenizer_json(tokenizer_json)
    norm = cfg.get("normalizer") or {}
    blob = next(
        (
            base64.b64decode(p["precompiled_charsmap"])
            for p in norm.get("normalizers", [norm])
            if p.get("type") == "Precompiled"
        ),
        None,
    )
    if blob is None:
        return None
    keys = _decode_charsmap(blob)
    ref = Tokenizer.from_file(str(tokenizer_json))
    singles = {k: v for k, v in keys.items() if len(k) == 1}
    candidates = [
        k
        for k, v in keys.items()
        if len(k) > 1 and _size(k) <= 5 and not any(k[:i] in keys for i in range(1, len(k)))
    ]
    multi = {k: keys[k] for k, n in zip(candidates, _normalize_all(ref, candidates)) if n == keys[k]}
    if keys.get(_PROBE) != _PROBE_NORMAL or _PROBE[0] in keys:
        return None
    # planes 4-13 hold no character in any Unicode version, planes 15-16 only private use (no grapheme
    # property): neither is probed
    codes = [
        chr(c)
        for c in (*range(0x01, 0x40000), *range(0xE0000, 0xF0000))
        if not 0xD800 <= c < 0xE000 and c != ord("|")
    ]
    # probe, x, x, x, probe: the first probe stays uncomposed when x extends it (a grapheme of 6 bytes
    # or more is rewritten character by character), the second when x is a Prepend that joins it
    probes = _normalize_all(ref, [_PROBE + ch * 3 + _PROBE for ch in codes])
    extends = {ch for ch, n in zip(codes, probes) if not n.startswith(_PROBE_NORMAL)}
    prepends = {
        ch
        for ch, n in zip(codes, probes)
        if n.startswith(_PROBE_NORMAL) and not n.endswith(_PROBE_NORMAL) and unicodedata.category(ch) != "Cc"
    }
    controls = {
        ch
        for ch in codes
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in extends | prepends
    }
    blocker = next(
        (ch for ch, n in sorted(singles.items()) if n == "" and ch in controls and ch not in "\t\n\r"),
        None,
    )
    starters = {k[0] for k in multi}
    # the regexes assume a Prepend grapheme is rewritten character by character (no Prepend is a key)
    # and that every key of several characters starts with a base character
    if blocker is None or any(ch in singles for ch in prepends) or starters & extends:
        return None
    any_ext = char_class("".join(extends))

    def extenders(sizes: tuple[int, ...]) -> str:
        return char_class("".join(ch for ch in extends if _size(ch) in sizes))

    def at_least(k: int) -> str:  # a run of extenders of at least k bytes (its shortest such start)
        if k <= 0:
            return ""
        if k <= 2:
            return any_ext
        rests: dict[str, tuple[int, ...]] = {}
        for n in (2, 3, 4):  # the first extender's size, then what the rest must add
            rest = at_least(k - n)
            rests[rest] = (*rests.get(rest, ()), n)
        return "(?:" + "|".join(f"{extenders(sizes)}{rest}" for rest, sizes in rests.items()) + ")"

    # the first character of a grapheme by its UTF-8 size; any character will do where the text is kept
    sized = {
        1: "[\\x{1}-\\x{7f}]",
        2: "[\\x{80}-\\x{7ff}]",
        3: "[\\x{800}-\\x{ffff}]",
        4: "[\\x{10000}-\\x{10ffff}]",
    }
    base_keys = {c for c in singles if c not in extends and c not in controls}  # controls end graphemes
    mark_keys = {c for c in singles if c in extends}
    ctrl = "(?:^|" + char_class("".join(controls)) + ")"
    prepend = f"({char_class(''.join(prepends))}+{char_class(''.join(controls), negate=True)})"
    # keys of two characters by the set of their second characters, longer ones as they are
    seconds: dict[str, set[str]] = {}
    for k in multi:
        if len(k) == 2:
            seconds.setdefault(k[0], set()).add(k[1])
    firsts: dict[frozenset[str], str] = {}
    for first, second in seconds.items():
        firsts[frozenset(second)] = firsts.get(frozenset(second), "") + first
    key_prefix = "|".join(
        [
            char_class("".join(base_keys)),
            *(f"{char_class(f)}{char_class(''.join(second))}" for second, f in firsts.items()),
            *(_literal(k) for k in sorted(multi) if len(k) > 2),
        ]
    )
    joined, _ = _joined_graphemes(codes)
    drop = (
        prepend,  # a Prepend grapheme: character by character
        *joined,  # emoji ZWJ sequences, Indic conjuncts: their later characters start no grapheme
        f"({ctrl}{at_least(6)})",  # a long grapheme starting with a mark: kept
        f"({ctrl}{char_class(''.join(mark_keys))}){any_ext}+",  # short: the mark's entry only
        "(" + "|".join(f"{c}{at_least(6 - n)}" for n, c in sized.items()) + ")",  # long: kept
        f"({key_prefix}){any_ext}+",  # short: its shortest key prefix only
    )
    block_sizes = sorted({_size(k[0]) for k in multi})
    if len(block_sizes) > 3:  # pragma: no cover - RE2 rewrites name groups 1-9 only
        return None
    block = (f"{prepend}()", *(f"({sized[n]})({at_least(6 - n)})" for n in block_sizes))
    # PCRE2 tries the alternatives one by one: most positions (no extender next) are ruled out first
    seconds_all = extends | {k[1] for k in multi}
    guard = f"(?={char_class(''.join(prepends))}|[\\s\\S]?{char_class(''.join(seconds_all))})"
    pruned = {**singles, **multi}
    return UnigramCharacters(
        charsmap=_encode_charsmap(pruned),
        patterns=((drop, (1,)), (block, (1, blocker, 2))),
        guard=guard,
        spaces=" " + "".join(c for c, n in singles.items() if n and not n.strip()),
        dropped="".join(c for c, n in singles.items() if n == ""),
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


def sentencepiece_model(cfg: dict[str, Any], charsmap: bytes | None = None) -> bytes:
    """A serialized sentencepiece ModelProto (Unigram) from tokenizer.json: the pieces in id order with
    their scores on the grid of `quantized_score` (the unk piece UNKNOWN, special added tokens CONTROL),
    and `charsmap` (default: the Precompiled one) as its normalizer (dummy prefix, whitespace escaped and
    collapsed). Ids are then tokenizer.json's ids.
    Written by hand (field numbers of sentencepiece_model.proto): no `sentencepiece` package needed."""
    import base64

    model = cfg["model"]
    unk = int(model["unk_id"])
    specials = {t["content"] for t in cfg.get("added_tokens", []) if t.get("special")}
    ids = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    pieces = b"".join(
        _field(1, _field(1, piece.encode("utf-8")) + _field(2, quantized_score(score)) + _field(3, kind))
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
    if charsmap is None:
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
    chars = unigram_characters(tokenizer_json) if fix_characters else None
    proto = sentencepiece_model(cfg, chars.charsmap if chars else None)
    vocab = {piece: i for i, (piece, _) in enumerate(cfg["model"]["vocab"])}
    space_id = vocab.get("▁", int(cfg["model"]["unk_id"]))
    patterns = chars.rewrites(False) if chars else []
    # whitespace that ends the normalized text: characters normalized to spaces, then dropped ones
    spaces = chars.spaces if chars else " "
    dropped = chars.dropped if chars else ""
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
        for pattern, replacement in patterns:
            texts = _regex(b, texts, pattern, replacement)
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
