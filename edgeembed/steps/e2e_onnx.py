"""One ONNX graph from strings to sentence embeddings: tokenizer, transformer, pooling, Dense, Normalize.

Why: an Android/iOS/C++ app cannot run our Python tokenizer and numpy head; with this file it needs only
ONNX Runtime and the onnxruntime-extensions custom-op library.

The tokenizer is onnxruntime-extensions' `BertTokenizer` op (made by `gen_processing_models`). That op
takes one text per call, so it runs inside a `Loop` over the input strings; the token ids of all texts are
then padded into one (batch, seq) tensor in ONNX ops and the transformer runs once on the whole batch.
Plain functions on files: no validation policy and no manifest here (the build's gate decides).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed._imports import require
from edgeembed.errors import InputError
from edgeembed.head import HeadModel
from edgeembed.head import onnx as onnx_head
from edgeembed.runtimes.onnxruntime_e2e import NORMALIZE_KEY, TEXT_INPUT, clean_text
from edgeembed.source import Head
from edgeembed.steps import onnx_opset, sentence_output

EMBEDDING_OUTPUT = "sentence_embedding"
CONTRIB_DOMAIN = "ai.onnx.contrib"
_P = "e2e/"  # prefix of every name this module adds, so nothing clashes with the transformer's names
_TOKENIZER_OP = "BertTokenizer"

# Texts the token-id comparison always includes besides the caller's (the hard cases).
HARD_CASES: tuple[str, ...] = (
    "",
    "   ",
    "\t\n ",
    "naïve café résumé",
    "NAÏVE CAFÉ RÉSUMÉ",
    "Ünïcödé Äccents ÀÉÎÕÜ",
    "Latin Extended: ė Ŕ ő ł ž",
    "漢字と日本語のテキスト",
    "中文句子测试",
    "emoji 🙂🚀 in text 👍🏽",
    "emoji stuck to words👍 like😍😍 this, 👍too",
    "voiced kana です ガギグ パピプ, Ελληνικά τόνοι, йогурт ёлка, Tiếng Việt",
    "한국어 문장입니다 갂갃",
    "ภาษาไทยเป็นภาษาที่ไม่มีการเว้นวรรคระหว่างคำ",
    "العربية لغة جميلة، أليس كذلك؟",
    "हिन्दी भाषा देवनागरी लिपि में लिखी जाती है।",
    "family 👨\u200d👩\u200d👧 flag 🇯🇵 keycap 1\ufe0f\u20e3",
    "trailing space ",
    "  leading and   inner   spaces",
    "control\x00chars\x07here\x1b",
    "a lone surrogate \udc00 removed",
    "replacement character \ufffd dropped",
    "word " * 20_000,
)


@dataclass(frozen=True)
class TokenizerSettings:
    """What the in-graph tokenizer is told, read from tokenizer.json and the model head."""

    lowercase: bool
    strip_accents: bool
    max_length: int
    pad_id: int
    unk_token: str
    cls_token: str
    sep_token: str


@dataclass(frozen=True)
class TokenMismatch:
    """One text whose in-graph token ids differ from `tokenizers`' ids."""

    index: int
    text: str
    expected: tuple[int, ...]
    got: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text[:200], "expected": self.expected, "got": self.got}


def tokenizer_settings(tokenizer_json: Path, head: Head) -> TokenizerSettings:
    """Read and check tokenizer.json: only what the extensions' BertTokenizer op can express passes.

    Raises InputError naming the first unsupported piece (e.g. a Metaspace pre-tokenizer).
    """
    try:
        cfg = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read tokenizer {tokenizer_json}: {exc}") from None
    where = f"{tokenizer_json}"
    model = cfg.get("model") or {}
    if model.get("type") != "WordPiece":
        raise InputError(
            f"{where}: tokenizer model {model.get('type')!r} has no onnxruntime-extensions equivalent for an "
            "end-to-end graph (supported: WordPiece with BertNormalizer and BertPreTokenizer)"
        )
    if model.get("continuing_subword_prefix", "##") != "##":
        raise InputError(f"{where}: WordPiece prefix {model['continuing_subword_prefix']!r} is not supported")
    norm = cfg.get("normalizer") or {}
    if norm.get("type") != "BertNormalizer":
        raise InputError(
            f"{where}: normalizer {norm.get('type')!r} has no equivalent in the BertTokenizer op "
            "(supported: BertNormalizer)"
        )
    if not norm.get("handle_chinese_chars", True) or not norm.get("clean_text", True):
        raise InputError(
            f"{where}: BertNormalizer with clean_text or handle_chinese_chars off is not supported"
        )
    pre = (cfg.get("pre_tokenizer") or {}).get("type")
    if pre != "BertPreTokenizer":
        raise InputError(
            f"{where}: pre-tokenizer {pre!r} has no equivalent op in onnxruntime-extensions' BertTokenizer "
            "(supported: BertPreTokenizer)"
        )
    cls_token, sep_token = _special_tokens(cfg, where)
    vocab = model.get("vocab") or {}
    unk = model.get("unk_token", "[UNK]")
    if unk not in vocab:
        raise InputError(f"{where}: unk token {unk!r} is not in the vocabulary")
    lowercase = bool(norm.get("lowercase", True)) or head.do_lower_case
    strip = norm.get("strip_accents")
    # BERT's rule: strip_accents=None means "strip when lower-casing" (the extensions' converter sets 0).
    strip_accents = bool(norm.get("lowercase", True)) if strip is None else bool(strip)
    pad = cfg.get("padding") or {}
    pad_id = pad.get("pad_id", vocab.get("[PAD]", 0))
    return TokenizerSettings(
        lowercase=lowercase,
        strip_accents=strip_accents,
        max_length=head.max_seq_length,
        pad_id=int(pad_id),
        unk_token=unk,
        cls_token=cls_token,
        sep_token=sep_token,
    )


def _special_tokens(cfg: dict[str, Any], where: str) -> tuple[str, str]:
    post = cfg.get("post_processor") or {}
    kind = post.get("type")
    # RobertaProcessing (MPNet's WordPiece tokenizers) has the same single-text shape: <s> A </s>
    if kind in ("BertProcessing", "RobertaProcessing"):
        return post["cls"][0], post["sep"][0]
    if kind == "TemplateProcessing":
        single = post.get("single") or []
        names = [p.get("SpecialToken", {}).get("id") if "SpecialToken" in p else "$A" for p in single]
        if len(names) == 3 and names[1] == "$A" and None not in names:
            return names[0], names[2]
    raise InputError(
        f"{where}: post-processor {kind!r} does not have the '[CLS] text [SEP]' shape the BertTokenizer op "
        "produces"
    )


def _present(vocab: dict[str, int], names: tuple[str, ...], fallback: str) -> str:
    return next((name for name in names if name in vocab), fallback)


def tokenizer_model(tokenizer_json: Path, head: Head) -> Any:
    """The extensions' tokenizer graph (one text in; input_ids, token_type_ids, attention_mask out).

    Built from tokenizer.json's vocabulary as `gen_processing_models` builds it for a BertTokenizer, but
    without its lookup by transformers class name, which knows BERT and DistilBERT only (MPNet's
    WordPiece tokenizer is the same op)."""
    settings = tokenizer_settings(tokenizer_json, head)
    onnx = require("onnx", "export")
    require("onnxruntime_extensions", "mobile")
    vocab = (json.loads(Path(tokenizer_json).read_text(encoding="utf-8")).get("model") or {})["vocab"]
    ordered = sorted(vocab.items(), key=lambda item: int(item[1]))
    if [i for _, i in ordered] != list(range(len(ordered))):
        raise InputError(
            f"{tokenizer_json}: WordPiece ids are not 0..n-1; the BertTokenizer op numbers lines"
        )
    helper = onnx.helper
    outputs = ("input_ids", "token_type_ids", "attention_mask", "offset_mapping")
    node = helper.make_node(
        _TOKENIZER_OP,
        ["text"],
        list(outputs),
        name=f"{_TOKENIZER_OP}_0",
        domain=CONTRIB_DOMAIN,
        vocab_file="\n".join(token for token, _ in ordered),
        do_lower_case=int(settings.lowercase),
        strip_accents=int(settings.strip_accents),
        max_length=settings.max_length,
        unk_token=settings.unk_token,
        cls_token=settings.cls_token,
        sep_token=settings.sep_token,
        # The op also looks its pad and mask tokens up (default "[PAD]"/"[MASK]") and fails to load
        # without them; MPNet's vocabulary names them "<pad>"/"<mask>". It never emits either for text.
        pad_token=_present(vocab, ("[PAD]", "<pad>"), settings.unk_token),
        mask_token=_present(vocab, ("[MASK]", "<mask>"), settings.unk_token),
    )
    graph = helper.make_graph(
        [node],
        "tokenizer",
        [helper.make_tensor_value_info("text", onnx.TensorProto.STRING, [None])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.INT64, None) for n in outputs],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(CONTRIB_DOMAIN, 1)]
    )


# Characters probed when the tokenizer has no normalizer to ask (then only these ranges can differ):
# Latin-1 and Latin Extended, combining marks, Greek, Cyrillic, zero-width characters.
_CANDIDATE_RANGES = ((0x80, 0x250), (0x300, 0x370), (0x370, 0x530), (0x1E00, 0x1F00), (0x200B, 0x2010))
_EXTRA_CANDIDATES = (0xFEFF, 0xFFFD)
# Code points probed one by one through the op; above, only deletions and unknown characters are taken,
# from the normalizer alone (no punctuation, whitespace or CJK there by BERT's definitions).
_PROBE_END = 0x30000

# ASCII punctuation (BERT splits at every non-alphanumeric printable ASCII character), as an RE2 class body.
_ASCII_PUNCTUATION = "!-/:-@\\[-`{-~"


@dataclass(frozen=True)
class CharacterFixes:
    """What the graph rewrites before the extensions' tokenizer op so its ids match `tokenizers`.

    table: {replacement: characters}, for characters the op normalizes differently (accents it does not
    strip, marks and private-use characters it keeps, letters it does not lower-case).
    unknown: characters that make any word holding them a single [UNK] in `tokenizers`' WordPiece (no
    vocabulary entry has them); the op instead keeps the word's known prefix ("job👍" -> job [UNK]), so
    the graph replaces such a word by one of these characters first.
    split: non-ASCII punctuation and CJK ideographs (those the normalizer pads with spaces), where
    `tokenizers` splits words and the op may not (it knows fewer): the graph puts spaces around them and
    around ASCII punctuation (a no-op for BERT's pre-tokenizer), so words are then runs of non-space
    characters.
    """

    table: dict[str, str]
    unknown: str
    split: str = ""

    def __bool__(self) -> bool:
        return bool(self.table or self.unknown or self.split)


def _vocabulary_characters(ref: Any) -> set[str]:
    """Every character some vocabulary entry holds (WordPiece's "##" marker aside)."""
    return {ch for token in ref.get_vocab() for ch in token.removeprefix("##")}


def _normal_forms(ref: Any, known: set[str]) -> list[tuple[str, str]]:
    """(character, its normal form) for every ASCII control and every code point from DEL on that the
    normalizer changes or that is not in the vocabulary; one normalizer call per 4096 code points ('|'
    is never changed). The controls matter: BERT's clean-up drops U+000B, U+000C and U+001C-U+001F,
    which the op takes for spaces (so "0\x0cﬀ" is one word to `tokenizers` and two to the op)."""
    codes = [*range(0x01, 0x20), *(c for c in range(0x7F, 0x110000) if not 0xD800 <= c < 0xE000)]
    out = []
    for i in range(0, len(codes), 4096):
        chars = [chr(c) for c in codes[i : i + 4096]]
        normal = ref.normalizer.normalize_str("|".join(chars)).split("|")
        if len(normal) != len(chars):  # pragma: no cover - a normalizer that touches '|'
            normal = [ref.normalizer.normalize_str(ch) for ch in chars]
        out.extend((ch, n) for ch, n in zip(chars, normal) if n != ch or ch not in known)
    return out


def character_fixes(tokenizer: Any, tokenizer_json: Path, unk_token: str) -> CharacterFixes:
    """The table and the unknown characters of this exact op and vocabulary (measured here; the export's
    token-id comparison then checks the graph that uses them)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    ortx = require("onnxruntime_extensions", "mobile")
    ref = Tokenizer.from_file(str(tokenizer_json))
    ref.no_padding()
    ref.no_truncation()
    so = ort.SessionOptions()
    so.register_custom_ops_library(ortx.get_library_path())
    so.log_severity_level = 3
    session = ort.InferenceSession(tokenizer.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def op_ids(text: str) -> list[int]:
        return session.run(None, {name: np.array([text], dtype=object)})[0].tolist()

    known = _vocabulary_characters(ref)
    if ref.normalizer is None:
        probed = [chr(c) for lo, hi in _CANDIDATE_RANGES for c in range(lo, hi)]
        forms = [(ch, ch) for ch in probed + [chr(c) for c in _EXTRA_CANDIDATES]]
    else:
        forms = _normal_forms(ref, known)
    table: dict[str, list[str]] = {}
    for ch, normal in forms:
        if normal in ("", " ") and normal != ch:  # dropped, or a space: doing it first is always right
            table.setdefault(normal, []).append(ch)
            continue
        if normal == f" {ch} " or ord(ch) >= _PROBE_END or (normal == ch and ref.normalizer is not None):
            continue  # CJK (the op splits it too: 0 of 80,262 differ for MiniLM), unprobed, unchanged
        probe = f"a{ch}b {ch} "
        want = ref.encode(probe).ids
        if op_ids(probe) != want and normal != ch and op_ids(f"a{normal}b {normal} ") == want:
            table.setdefault(normal, []).append(ch)
    return CharacterFixes(
        {target: "".join(sorted(cs)) for target, cs in sorted(table.items())},
        _unknown_characters(ref, unk_token, forms, known),
        _punctuation(ref) + "".join(ch for ch, n in forms if len(n) > 2 and n[0] == n[-1] == " "),
    )


def _punctuation(ref: Any) -> str:
    """Non-ASCII punctuation (Unicode P*) that `tokenizers` splits "a?b" at: three tokens."""
    import unicodedata

    chars = [
        chr(c)
        for c in range(0x80, _PROBE_END)
        if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)).startswith("P")
    ]
    encoded = ref.encode_batch([f"a{c}b" for c in chars], add_special_tokens=False)
    return "".join(c for c, enc in zip(chars, encoded) if len(enc.ids) == 3)


def _unknown_characters(ref: Any, unk_token: str, forms: list[tuple[str, str]], known: set[str]) -> str:
    """Characters c whose normal form holds a character no token has: `tokenizers` makes any word holding
    c one [UNK]. Below _PROBE_END each is confirmed on "c ac cb acb" (exactly four [UNK]s: c alone, at
    the end, at the start, inside), which whitespace, punctuation and CJK never give."""
    unk = ref.token_to_id(unk_token)
    if unk is None:
        return ""
    chosen = [
        ch for ch, n in forms if n and n.strip() == n and " " not in n and any(x not in known for x in n)
    ]
    probed = [ch for ch in chosen if ord(ch) < _PROBE_END]
    probes = [f"{c} a{c} {c}b a{c}b" for c in probed]
    confirmed = {
        ch
        for ch, enc in zip(probed, ref.encode_batch(probes, add_special_tokens=False))
        if enc.ids == [unk] * 4
    }
    return "".join(ch for ch in chosen if ch in confirmed or ord(ch) >= _PROBE_END)


def char_class(chars: str, negate: bool = False, extra: str = "") -> str:
    """An RE2 class of `chars` (and the raw class body `extra`), runs of consecutive code points as ranges
    (the unknown set is ~100k); `negate`: every other character."""
    codes = sorted({ord(c) for c in chars})
    parts = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        lo, hi = codes[i], codes[j]
        parts.append(f"\\x{{{lo:x}}}" if lo == hi else f"\\x{{{lo:x}}}-\\x{{{hi:x}}}")
        i = j + 1
    return ("[^" if negate else "[") + "".join(parts) + extra + "]"


# --------------------------------------------------------------------------------------------- graph build
class _Nodes:
    """A tiny helper that appends ONNX nodes with unique prefixed names."""

    def __init__(self, opset: int, tag: str) -> None:
        self.opset = opset
        self.tag = tag
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0
        self._h = require("onnx", "export").helper

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{_P}{self.tag}/{hint}_{self._n}"

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "", domain: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self._h.make_node(op_type, list(inputs), [out], name=out, domain=domain, **attrs))
        return out

    def const(self, value: Any, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int) -> str:
        """Reduce* with axes as an input (opset >= 18, ReduceSum >= 13) or as an attribute."""
        as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if as_input:
            return self.op(op_type, [x, self.const(np.array(axes, np.int64))], keepdims=keepdims)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(np.array(axes, np.int64))])
        return self.op("Unsqueeze", [x], axes=axes)


Nodes = _Nodes  # what the tokenizer adapters (steps.e2e_tokenizers) build their in-graph ops with


@dataclass(frozen=True)
class InGraphTokenizer:
    """How one tokenizer family sits in the strings-in graph (built by its adapter).

    emit: inside the per-text Loop, one text (a (1,) string tensor) -> its int64 token ids (n,), special
    tokens added and truncated to max_seq_length. rewrite: once on the whole (n,) text tensor before the
    Loop (character rewrites that make the op's ids match `tokenizers`), or None. op: the custom op's name.
    """

    emit: Callable[[_Nodes, str], str]
    rewrite: Callable[[_Nodes, str], str] | None
    op: str


def wordpiece_tokenizer(tokenizer_json: Path, head: Head, fix_characters: bool = True) -> InGraphTokenizer:
    """The extensions' BertTokenizer op, with the character rewrites measured for this vocabulary."""
    settings = tokenizer_settings(tokenizer_json, head)
    tokenizer = tokenizer_model(tokenizer_json, head)
    fixes = character_fixes(tokenizer, tokenizer_json, settings.unk_token) if fix_characters else None
    tok_node = tokenizer.graph.node[0]

    def emit(body: _Nodes, text_1: str) -> str:
        helper = body._h
        ids, types, mask, offsets = (f"{_P}tok_{n}" for n in ("ids", "types", "mask", "offsets"))
        attrs = {a.name: helper.get_attribute_value(a) for a in tok_node.attribute}
        body.nodes.append(
            helper.make_node(
                _TOKENIZER_OP,
                [text_1],
                [ids, types, mask, offsets],
                name=f"{_P}tokenizer",
                domain=CONTRIB_DOMAIN,
                **attrs,
            )
        )
        return ids

    def rewrite(b: _Nodes, texts: str) -> str:
        return _rewrite_characters(b, texts, fixes)

    return InGraphTokenizer(emit, rewrite if fixes else None, f"{_TOKENIZER_OP} (onnxruntime-extensions)")


# The rewrites are nested by code-point blocks (4096, then 128 code points): a batch pays one presence
# check per block at each level it reaches, not one pass per replacement.
_BLOCK_SHIFTS = (12, 7)


def _split(part: dict[str, str], shift: int) -> list[dict[str, str]]:
    """{target: chars} cut by the block (code point >> shift) of each character, in block order."""
    by_block: dict[int, dict[str, str]] = {}
    for target, chars in part.items():
        for ch in chars:
            block = by_block.setdefault(ord(ch) >> shift, {})
            block[target] = block.get(target, "") + ch
    return [by_block[k] for k in sorted(by_block)]


def _rewrite_characters(b: _Nodes, texts: str, fixes: CharacterFixes) -> str:
    """RE2 (UTF-8 aware) rewrites of the whole 1-D text tensor before the tokenizer Loop, only when the
    batch holds a non-ASCII character (an `If`), and inside that per block of 128 code points: a block
    with one or two replacements is applied directly, a larger one only when the batch holds one of its
    characters (a nested `If`). An ASCII batch pays one regex; a Latin-accented batch pays about one
    regex per block of the table (bench/e2e_speed.py). Per text (inside the Loop) the rewrites cost
    ~8x more at batch 32."""
    helper = b._h
    from onnx import TensorProto

    def strings(value: str, hint: str, where: _Nodes) -> str:
        return where.const(np.array([value], dtype=object), hint)

    def replace(where: _Nodes, x: str, pattern: str, rewrite: str) -> str:
        return where.op(
            "StringRegexReplace",
            [x, strings(pattern, "pattern", where), strings(rewrite, "rewrite", where)],
            domain=CONTRIB_DOMAIN,
            global_replace=1,
        )

    def when(where: _Nodes, x: str, others: str, branch: _Nodes, branch_out: str, tag: str) -> str:
        """`branch` (computed from x) if some text of x holds a character outside the class `others`,
        else x unchanged."""
        kept = where.name(f"{tag}_kept")
        others = replace(where, x, others + "+", "")
        count = where.op("StringLength", [others], domain=CONTRIB_DOMAIN)
        found = where.op("Greater", [where.reduce("ReduceSum", count, [0], 0), where.const(np.int64(0))])
        then_branch = helper.make_graph(
            branch.nodes,
            f"{_P}{tag}_then",
            [],
            [helper.make_tensor_value_info(branch_out, TensorProto.STRING, [None])],
            initializer=branch.initializers,
        )
        else_branch = helper.make_graph(
            [helper.make_node("Identity", [x], [kept], name=kept)],
            f"{_P}{tag}_else",
            [],
            [helper.make_tensor_value_info(kept, TensorProto.STRING, [None])],
        )
        out = where.name(f"{tag}_out")
        where.nodes.append(
            helper.make_node("If", [found], [out], name=out, then_branch=then_branch, else_branch=else_branch)
        )
        return out

    def emit(where: _Nodes, x: str, part: dict[str, str], shifts: tuple[int, ...]) -> str:
        """The replacements of `part` applied to x; a block with more than two of them only when the
        batch holds one of its characters."""
        if len(part) <= 2 or not shifts:
            for target, cs in part.items():
                x = replace(where, x, char_class(cs), target)
            return x
        for block in _split(part, shifts[0]):
            if len(block) <= 2:
                x = emit(where, x, block, ())
                continue
            inner = _Nodes(b.opset, where.name("block")[len(_P) :])
            inner_out = emit(inner, x, block, shifts[1:])
            x = when(where, x, char_class("".join(block.values()), negate=True), inner, inner_out, inner.tag)
        return x

    fix = _Nodes(b.opset, "fix")
    out = texts
    if fixes.table.get(""):  # deletions (marks, controls, private use): one pass for all
        out = replace(fix, out, char_class(fixes.table[""]), "")
    out = emit(fix, out, {t: cs for t, cs in fixes.table.items() if t}, _BLOCK_SHIFTS)
    if fixes.split or fixes.unknown:  # words end at spaces only from here on
        split = char_class(fixes.split, extra=_ASCII_PUNCTUATION)
        out = replace(fix, out, f"({split})", " \\1 ")
    if fixes.unknown:  # a word holding an unknown character becomes that one character: one [UNK]
        word = f"\\S*{char_class(fixes.unknown)}\\S*"
        out = replace(fix, out, word, fixes.unknown[0])
    if out == texts:  # nothing to fix
        return texts
    return when(b, texts, "[\\x{0}-\\x{7e}]", fix, out, "non_ascii")


def _tokenize_loop(b: _Nodes, tokenizer: InGraphTokenizer) -> tuple[str, str]:
    """Loop over the texts (after the tokenizer's rewrites), one tokenizer op call each; returns (flat
    ids, per-text lengths)."""
    helper = b._h
    from onnx import TensorProto

    i, cond = f"{_P}i", f"{_P}cond"
    flat_in, flat_out = f"{_P}flat_in", f"{_P}flat_out"
    body = _Nodes(b.opset, "loop")
    texts = tokenizer.rewrite(b, TEXT_INPUT) if tokenizer.rewrite else TEXT_INPUT
    text_i = body.op("Gather", [texts, i], axis=0, hint="text_i")
    ids = tokenizer.emit(body, body.unsqueeze(text_i, [0]))
    body.nodes.append(helper.make_node("Concat", [flat_in, ids], [flat_out], name=f"{_P}concat_ids", axis=0))
    length = body.op("Shape", [ids], hint="length")
    cond_out = body.op("Identity", [cond], hint="cond_out")
    graph = helper.make_graph(
        body.nodes,
        f"{_P}tokenize_body",
        [
            helper.make_tensor_value_info(i, TensorProto.INT64, []),
            helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
            helper.make_tensor_value_info(flat_in, TensorProto.INT64, [None]),
        ],
        [
            helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
            helper.make_tensor_value_info(flat_out, TensorProto.INT64, [None]),
            helper.make_tensor_value_info(length, TensorProto.INT64, [1]),
        ],
        initializer=body.initializers,
    )
    n = b.op("Squeeze", [b.op("Shape", [TEXT_INPUT], start=0, end=1)], hint="n")
    flat0 = b.const(np.zeros((0,), np.int64), "flat0")
    flat, lengths = b.name("flat_ids"), b.name("lengths")
    b.nodes.append(
        helper.make_node(
            "Loop", [n, b.const(np.array(True)), flat0], [flat, lengths], name=f"{_P}tokenize", body=graph
        )
    )
    return flat, b.op("Reshape", [lengths, b.const(np.array([-1], np.int64))], hint="lengths")


def _pad(b: _Nodes, flat: str, lengths: str, pad_id: int) -> tuple[str, str]:
    """(input_ids, attention_mask), right padded to the longest text, from the flat ids and lengths."""
    longest = b.reduce(
        "ReduceMax", b.op("Concat", [lengths, b.const(np.array([1], np.int64))], axis=0), [0], 0
    )
    positions = b.unsqueeze(
        b.op("Range", [b.const(np.int64(0)), longest, b.const(np.int64(1))]), [0]
    )  # (1, L)
    starts = b.unsqueeze(b.op("CumSum", [lengths, b.const(np.int64(0))], exclusive=1), [1])  # (B, 1)
    valid = b.op("Less", [positions, b.unsqueeze(lengths, [1])])  # (B, L)
    index = b.op("Where", [valid, b.op("Add", [starts, positions]), b.const(np.int64(0))])
    padded_flat = b.op("Concat", [flat, b.const(np.array([pad_id], np.int64))], axis=0)  # never empty
    ids = b.op("Where", [valid, b.op("Gather", [padded_flat, index], axis=0), b.const(np.int64(pad_id))])
    return ids, b.op("Cast", [valid], to=7)


def build_e2e(
    graph: Path,
    tokenizer_json: Path,
    head: Head,
    dense_layers: Sequence[tuple[np.ndarray, np.ndarray | None]],
    out: Path,
    fix_characters: bool = True,
) -> Path:
    """Merge tokenizer + transformer graph (fp32 or int8, as given) + pooling + Dense + Normalize into `out`.

    Input `text`: 1-D string tensor; output `sentence_embedding`: (n, dim) float32. Prompts are a
    prefix the caller adds to each text; a model with prompts that pools without them
    (include_prompt=False) cannot be expressed and is refused.
    """
    from edgeembed.steps.e2e_tokenizers import check_support
    from edgeembed.tokenization import TextTokenizer

    adapter = check_support(tokenizer_json, head, "onnx")  # one line for what no op can express
    onnx = require("onnx", "export")
    helper = onnx.helper
    if len(dense_layers) != len(head.dense):
        raise InputError("one (weight, bias) pair is needed per Dense module of the head")
    tokenizer = adapter.build_onnx(tokenizer_json, head, fix_characters)
    pad_id = TextTokenizer.from_file(Path(tokenizer_json), head.max_seq_length).pad_id
    model = onnx.load(str(graph))
    opset = onnx_opset(model, 17)
    names = [i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
    unknown = set(names) - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown or "input_ids" not in names:
        raise InputError(f"{graph}: inputs {names} are not input_ids/attention_mask/token_type_ids")
    token_output = model.graph.output[0].name

    pre = _Nodes(opset, "pre")
    flat, lengths = _tokenize_loop(pre, tokenizer)
    ids, mask = _pad(pre, flat, lengths, pad_id)
    feeds = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": pre.op("Mul", [mask, pre.const(np.int64(0))]),
    }
    for n in names:
        pre.nodes.append(helper.make_node("Identity", [feeds[n]], [n], name=f"{_P}feed_{n}"))
    post = onnx_head.OnnxBuilder(opset, f"{_P}head/")
    x = onnx_head.emit(post, HeadModel.from_head(head, dense_layers), token_output, mask)
    post.nodes.append(helper.make_node("Identity", [x], [EMBEDDING_OUTPUT], name=f"{_P}output"))

    g = model.graph
    # A token graph that carries its head as a second output (steps.sentence_output) brings those nodes
    # too; this graph emits its own head on `mask`, so they go.
    own = [n for n in g.node if not n.name.startswith(sentence_output.PREFIX)]
    weights = [t for t in g.initializer if not t.name.startswith(sentence_output.PREFIX)]
    nodes = [*pre.nodes, *own, *post.nodes]  # topological: tokenizer, transformer, head
    dim = head.dim
    new_graph = helper.make_graph(
        nodes,
        "edgeembed_e2e",
        [helper.make_tensor_value_info(TEXT_INPUT, onnx.TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info(EMBEDDING_OUTPUT, onnx.TensorProto.FLOAT, ["n", dim])],
        initializer=[*weights, *pre.initializers, *post.initializers],
        value_info=list(g.value_info),
    )
    opsets = [o for o in model.opset_import if o.domain != CONTRIB_DOMAIN]
    opsets.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    merged = helper.make_model(new_graph, opset_imports=opsets, producer_name="edgeembed")
    merged.ir_version = model.ir_version
    helper.set_model_props(merged, {NORMALIZE_KEY: "true" if head.normalize else "false"})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(out))
    return out


def tokenizer_graph(tokenizer_json: Path, head: Head, fix_characters: bool = True) -> Any:
    """The tokenizer part of the strings-in graph alone, as `build_e2e` emits it (text (n,) -> input_ids
    (n, L), right padded): the token-id checks run on it without a transformer."""
    from edgeembed.steps.e2e_tokenizers import check_support
    from edgeembed.tokenization import TextTokenizer

    adapter = check_support(tokenizer_json, head, "onnx")
    onnx = require("onnx", "export")
    helper = onnx.helper
    tokenizer = adapter.build_onnx(tokenizer_json, head, fix_characters)
    pad_id = TextTokenizer.from_file(Path(tokenizer_json), head.max_seq_length).pad_id
    pre = _Nodes(17, "pre")
    flat, lengths = _tokenize_loop(pre, tokenizer)
    ids, _ = _pad(pre, flat, lengths, pad_id)
    pre.nodes.append(helper.make_node("Identity", [ids], ["input_ids"], name=f"{_P}feed_input_ids"))
    graph = helper.make_graph(
        pre.nodes,
        "tokenizer",
        [helper.make_tensor_value_info(TEXT_INPUT, onnx.TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["n", None])],
        initializer=pre.initializers,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(CONTRIB_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, producer_name="edgeembed")


# ------------------------------------------------------------------------------------ token-id comparison
def _tokenizer_session(e2e_graph: Path | Any) -> tuple[Any, str]:
    """A session running only the tokenizer part of a built end-to-end graph (a file, or a model such as
    `tokenizer_graph`'s), up to the transformer's input_ids (what ships is what is checked; one text per
    call, so nothing is padded)."""
    onnx = require("onnx", "export")
    ortx = require("onnxruntime_extensions", "mobile")
    import onnxruntime as ort

    if isinstance(e2e_graph, (str, Path)):
        model = onnx.load(str(e2e_graph), load_external_data=False)
    else:
        model = e2e_graph
    section = []
    for node in model.graph.node:  # the tokenizer's nodes come first, up to the feed of input_ids
        section.append(node)
        if node.name == f"{_P}feed_input_ids":
            break
    used = {i for n in section for i in n.input}
    single = onnx.helper.make_model(
        onnx.helper.make_graph(
            section,
            "tokenizer",
            [onnx.helper.make_tensor_value_info(TEXT_INPUT, onnx.TensorProto.STRING, [1])],
            [onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, None])],
            initializer=[i for i in model.graph.initializer if i.name in used],
        ),
        opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx", CONTRIB_DOMAIN)],
    )
    single.ir_version = model.ir_version
    so = ort.SessionOptions()
    so.register_custom_ops_library(ortx.get_library_path())
    so.log_severity_level = 3
    session = ort.InferenceSession(single.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session, TEXT_INPUT


def compare_token_ids(
    e2e_graph: Path | Any, tokenizer_json: Path, head: Head, texts: Sequence[str]
) -> list[TokenMismatch]:
    """Texts whose in-graph token ids differ from `tokenizers` (as the Encoder tokenizes: truncated to
    max_seq_length, lower-cased first when the head says so). Empty list = all agree. `e2e_graph`: a
    built strings-in graph's file, or a `tokenizer_graph` model."""
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(tokenizer_json))
    ref.no_padding()
    ref.enable_truncation(max_length=head.max_seq_length)
    session, name = _tokenizer_session(e2e_graph)
    out = []
    for index, raw in enumerate(texts):
        text = clean_text(raw)
        expected = ref.encode(text.lower() if head.do_lower_case else text).ids
        got = session.run(None, {name: np.array([text], dtype=object)})[0][0].tolist()
        if got != expected:
            out.append(TokenMismatch(index, raw, tuple(expected), tuple(got)))
    return out


def head_model(
    head: Head, dense_layers: Sequence[tuple[np.ndarray, np.ndarray | None]], opset: int = 17
) -> Any:
    """The head alone as ONNX (edgeembed.head.onnx.head_model) from a model's Head and Dense weights:
    token_embeddings (B, L, H) + attention_mask (B, L) -> sentence_embedding. The OpenVINO end-to-end
    model converts this graph, so both formats share one head implementation. Like `build_e2e`, it pools
    every token: a strings-in graph has no prompt length to exclude."""
    return onnx_head.head_model(HeadModel.from_head(head, dense_layers), opset, prompt_input=False)
