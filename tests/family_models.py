"""Tiny random Sentence-Transformers folders of every family in the architecture registry, built in code.

Each has its family's real tokenizer format, trained here with `tokenizers` on a few multilingual lines
(WordPiece for BERT/DistilBERT/MPNet, Unigram with Metaspace for XLM-R/T5, byte-level BPE for
RoBERTa/ModernBERT/Qwen3), its usual pooling, and prompts or a Dense layer where its real models have them.
Hidden size 32, 2 layers: exported, quantized and reduced in seconds.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import (
    REPO,
    TINY_SIZES,
    WORDS,
    build_tokenizer,
    save_tiny_bert,
    wordpiece_vocab,
    write_st_layout,
)

E5_TOKENIZER = REPO.parent / "shared" / "data" / "tokenizers" / "multilingual-e5-small" / "tokenizer.json.gz"

TRAIN_TEXTS = [
    "The cat sat on the mat while the dog played in the garden.",
    "A man is playing a guitar on stage and the crowd sings along.",
    "Stock markets fell again as bank rates rose sharply this week.",
    "Le chat est assis sur le tapis, et le chien joue dehors.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "素早い茶色の狐が怠け者の犬を飛び越える。漢字と日本語のテキスト",
    "中文句子测试，快速的棕色狐狸跳过了懒狗。",
    "한국어 문장입니다. 빠른 갈색 여우가 게으른 개를 뛰어넘습니다.",
    "สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ",
    "الثعلب البني السريع يقفز فوق الكلب الكسول",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है",
    "emoji 🙂🚀 in text 👍🏽 naïve café résumé",
    "query: how do I embed text quickly on a small edge device?",
    "passage: quantized sentence embeddings search a large corpus fast.",
    "Instruct: Given a web search query, retrieve relevant passages\nQuery: what is an embedding?",
    "numbers 12345 67890, e-mail a@b.com, url https://example.org/#hash-tags",
    " ".join(WORDS),
]

# Varied multilingual texts for parity checks (scripts, accents, emoji, numbers, long and short).
TEXTS = [
    "The cat sat on the mat.",
    "A man is playing a guitar on stage.",
    "Stock markets fell sharply again today",
    "Le chat est assis sur le tapis.",
    "Der Hund spielt im Garten.",
    "El zorro salta.",
    "Быстрая лиса прыгает.",
    "漢字と日本語のテキスト",
    "中文句子测试",
    "한국어 문장입니다",
    "สุนัขจิ้งจอก",
    "الثعلب البني السريع",
    "तेज़ भूरी लोमड़ी",
    "emoji 🙂🚀 👍🏽 naïve café",
    "numbers 12345 and e-mail a@b.com",
    "x",
    "the quick brown fox jumps over the lazy dog while the crowd sings along in the garden "
    "of the small edge device near the stock market bank",
]


@dataclass(frozen=True)
class Family:
    """How to build one family's tiny model and how its real models pool."""

    name: str
    model_type: str
    build: Callable[[Path], Any]  # writes config, weights and tokenizer files into the folder
    pooling: str = "mean"
    prompts: dict[str, str] = field(default_factory=dict)
    dense: tuple[int, str, bool] | None = None  # (out_features, activation, bias) like sentence-t5's
    max_seq_length: int = 48


def _sentencepiece_normalizer() -> Any:
    """What tokenizers converted from SentencePiece (XLM-R, e5, T5) normalize with: the model's
    precompiled charsmap (NFKC-like, here the real multilingual-e5-small one) and runs of spaces collapsed.
    NFKC alone when that tokenizer is not beside the repo."""
    from tokenizers import Regex, normalizers

    if not E5_TOKENIZER.is_file():
        return normalizers.NFKC()
    cfg = json.loads(gzip.decompress(E5_TOKENIZER.read_bytes()))
    charsmap = next(p for p in cfg["normalizer"]["normalizers"] if p["type"] == "Precompiled")
    return normalizers.Sequence(
        [
            normalizers.Precompiled(base64.b64decode(charsmap["precompiled_charsmap"])),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )


def _trained_unigram(specials: list[str], unk: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = _sentencepiece_normalizer()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=600, special_tokens=specials, unk_token=unk, shrinking_factor=0.9, max_piece_length=8
    )
    tok.train_from_iterator(TRAIN_TEXTS * 3, trainer=trainer)
    return tok


# Qwen2/Qwen3's pre-tokenizer split (tokenizer.json of Qwen3-Embedding), before a regex-free ByteLevel.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)


def _trained_bpe(specials: list[str], qwen: bool = False) -> Any:
    """Byte-level BPE: GPT-2's (RoBERTa, ModernBERT) or, with `qwen`, Qwen's (NFC, its own split regex)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if qwen:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TRAIN_TEXTS * 3, trainer=trainer)
    return tok


def _save_tokenizer(path: Path, tok: Any, specials: dict[str, str]) -> int:
    """tokenizer.json plus a tokenizer_config.json that transformers loads as a plain fast tokenizer."""
    tok.save(str(path / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512, **specials}
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tok.get_vocab_size()


def _ids(tok: Any, *tokens: str) -> list[int]:
    return [tok.token_to_id(t) for t in tokens]


def _template(tok: Any, single: str, specials: list[str]) -> Any:
    from tokenizers import processors

    return processors.TemplateProcessing(
        single=single,
        pair=single.replace("$A", "$A $B:1"),
        special_tokens=[(s, tok.token_to_id(s)) for s in specials],
    )


def build_distilbert(path: Path) -> None:
    from transformers import DistilBertConfig, DistilBertModel

    vocab = build_tokenizer(path)
    cfg = DistilBertConfig(
        vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64
    )
    DistilBertModel(cfg).save_pretrained(str(path))


def build_mpnet(path: Path) -> None:
    """MPNet's real layout: a WordPiece vocabulary with <s>/</s> and RobertaProcessing."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import MPNetConfig, MPNetModel

    vocab = wordpiece_vocab(["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"])
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.decoder = decoders.WordPiece()
    n = _save_tokenizer(
        path, tok, {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "[UNK]"}
    )
    cfg = MPNetConfig(vocab_size=n, max_position_embeddings=66, pad_token_id=1, **TINY_SIZES)
    MPNetModel(cfg).save_pretrained(str(path))


def _xlmr_tokenizer(path: Path, real: bool) -> int:
    from tokenizers import Tokenizer

    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    if real:  # the real multilingual-e5-small tokenizer.json (XLM-R's 250k SentencePiece vocabulary)
        tok = Tokenizer.from_str(gzip.decompress(E5_TOKENIZER.read_bytes()).decode("utf-8"))
        tok.no_padding()
        tok.no_truncation()
    else:
        tok = _trained_unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>")
        tok.post_processor = _template(tok, "<s> $A </s>", ["<s>", "</s>"])
    return _save_tokenizer(path, tok, specials)


def _build_xlmr(path: Path, real: bool) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    n = _xlmr_tokenizer(path, real)
    cfg = XLMRobertaConfig(
        vocab_size=n, max_position_embeddings=66, pad_token_id=1, type_vocab_size=1, **TINY_SIZES
    )
    XLMRobertaModel(cfg).save_pretrained(str(path))


def build_xlmr(path: Path) -> None:
    _build_xlmr(path, real=False)


def build_xlmr_e5(path: Path) -> None:
    _build_xlmr(path, real=True)


def build_roberta(path: Path) -> None:
    from tokenizers import processors
    from transformers import RobertaConfig, RobertaModel

    tok = _trained_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    n = _save_tokenizer(
        path, tok, {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    )
    cfg = RobertaConfig(
        vocab_size=n, max_position_embeddings=66, pad_token_id=1, type_vocab_size=1, **TINY_SIZES
    )
    RobertaModel(cfg).save_pretrained(str(path))


def build_modernbert(path: Path) -> None:
    from transformers import ModernBertConfig, ModernBertModel

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = _trained_bpe(specials)
    tok.post_processor = _template(tok, "[CLS] $A [SEP]", ["[CLS]", "[SEP]"])
    n = _save_tokenizer(
        path, tok, {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"}
    )
    pad, cls, sep = _ids(tok, "[PAD]", "[CLS]", "[SEP]")
    cfg = ModernBertConfig(
        vocab_size=n,
        max_position_embeddings=64,
        pad_token_id=pad,
        bos_token_id=cls,
        cls_token_id=cls,
        eos_token_id=sep,
        sep_token_id=sep,
        global_attn_every_n_layers=2,
        local_attention=16,  # shorter than the longest test text, so the sliding window matters
        **TINY_SIZES,
    )
    ModernBertModel(cfg).save_pretrained(str(path))


def build_t5(path: Path) -> None:
    """sentence-t5 / gtr-t5 shape: a T5 encoder (gated-gelu, relative positions) with a Unigram tokenizer
    that appends </s>."""
    from transformers import T5Config, T5EncoderModel

    tok = _trained_unigram(["<pad>", "</s>", "<unk>"], "<unk>")
    tok.post_processor = _template(tok, "$A </s>", ["</s>"])
    n = _save_tokenizer(path, tok, {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    cfg = T5Config(
        vocab_size=n,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    T5EncoderModel(cfg).save_pretrained(str(path))


def build_qwen3(path: Path) -> None:
    """Qwen3-Embedding shape: a causal decoder whose tokenizer appends <|endoftext|>, pooled by that token."""
    from transformers import Qwen3Config, Qwen3Model

    tok = _trained_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], qwen=True)
    tok.post_processor = _template(tok, "$A <|endoftext|>", ["<|endoftext|>"])
    n = _save_tokenizer(path, tok, {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    eos = tok.token_to_id("<|endoftext|>")
    cfg = Qwen3Config(
        vocab_size=n,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
        pad_token_id=eos,
        eos_token_id=eos,
        bos_token_id=eos,
        tie_word_embeddings=True,
    )
    Qwen3Model(cfg).save_pretrained(str(path))


E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
QWEN_PROMPTS = {"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery: "}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("bert-mean", "bert", save_tiny_bert, "mean", E5_PROMPTS),
        Family("bert-cls", "bert", save_tiny_bert, "cls"),
        Family("xlm-roberta", "xlm-roberta", build_xlmr, "mean", E5_PROMPTS),
        Family("roberta", "roberta", build_roberta, "mean"),
        Family("distilbert", "distilbert", build_distilbert, "mean"),
        Family("mpnet", "mpnet", build_mpnet, "mean"),
        Family("modernbert", "modernbert", build_modernbert, "cls"),
        Family("t5", "t5", build_t5, "mean", dense=(32, "torch.nn.modules.linear.Identity", False)),
        Family("qwen3", "qwen3", build_qwen3, "lasttoken", QWEN_PROMPTS),
    )
}
E5_REAL = Family("xlm-roberta-e5-tokenizer", "xlm-roberta", build_xlmr_e5, "mean", E5_PROMPTS)


def build_family(family: Family, path: Path, seed: int = 0) -> Path:
    """The family's tiny model in Sentence-Transformers layout: Transformer, Pooling, (Dense), Normalize."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    family.build(path)
    pooling = {"word_embedding_dimension": 32, "pooling_mode": family.pooling, "include_prompt": True}
    dense = (family.dense,) if family.dense is not None else ()
    return write_st_layout(path, pooling, dense, True, family.max_seq_length, family.prompts, seed)


def st_embeddings(path: Path, texts: list[str], prompt_name: str | None = None) -> Any:
    """sentence-transformers' own embeddings of the folder: the reference every variant must match."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    return model.encode(texts, prompt_name=prompt_name, batch_size=8, convert_to_numpy=True)
