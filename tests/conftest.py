"""Fixtures: a tiny BERT Sentence-Transformers folder built in code (nothing downloaded), its exported
artifact, and (integration) the real all-MiniLM-L6-v2 artifact, each exported once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
STS_DIR = REPO.parent / "shared" / "data" / "stsbenchmark"

WORDS = [
    "the",
    "a",
    "an",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "man",
    "is",
    "playing",
    "guitar",
    "stage",
    "crowd",
    "sings",
    "along",
    "hello",
    "world",
    "edge",
    "device",
    "text",
    "model",
    "small",
    "fast",
    "quantized",
    "embed",
    "quickly",
    "when",
    "and",
    "of",
    "to",
    "in",
    "it",
    "this",
    "that",
    "with",
    "for",
    "are",
    "was",
    "be",
    "stock",
    "market",
    "fell",
    "bank",
    "rates",
    "again",
    "numbers",
    "e",
    "mail",
    "url",
    "hash",
    "tags",
    "leading",
    "trailing",
    "whitespace",
    "upper",
    "case",
    "shouting",
    "about",
    "embeddings",
    "sentence",
    "query",
    "passage",
    "search",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    """A small WordPiece vocabulary: the special tokens, WORDS, and every letter alone and as ##piece."""
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:/#@")
    vocab_list = specials + sorted(set(WORDS)) + letters + [f"##{c}" for c in letters]
    return {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}


def build_tokenizer(path: Path) -> int:
    """A BERT-style WordPiece tokenizer with a small vocabulary, saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = wordpiece_vocab(SPECIAL)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    # Like all-MiniLM-L6-v2's file: fixed padding and truncation that the Encoder must override.
    tok.enable_truncation(max_length=16)
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=16)
    tok.save(str(path / "tokenizer.json"))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512})
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            }
        )
    )
    return len(vocab)


TINY_SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def save_tiny_bert(path: Path) -> None:
    """The WordPiece tokenizer and a 2-layer, 32-wide random BERT (seeded by the caller) saved in `path`."""
    from transformers import BertConfig, BertModel

    vocab_size = build_tokenizer(path)
    config = BertConfig(vocab_size=vocab_size, max_position_embeddings=64, type_vocab_size=2, **TINY_SIZES)
    BertModel(config).eval().save_pretrained(str(path))


def write_st_layout(
    path: Path,
    pooling: dict,
    dense: tuple[tuple, ...] = (),
    normalize: bool = True,
    max_seq_length: int = 24,
    prompts: dict | None = None,
    seed: int = 0,
) -> Path:
    """The Sentence-Transformers modules around the transformer saved at `path`: Pooling (`pooling` is its
    config), Dense layers given as (out_features, activation[, bias]) with seeded random weights,
    Normalize, and the configs; the one writer of that layout for every tiny model of the tests."""
    import torch
    from safetensors.torch import save_file

    from edgeembed.st_layout import module_entry

    modules = [module_entry(0, "", "Transformer"), module_entry(1, "1_Pooling", "Pooling")]
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    n_modes = (
        len(pooling.get("pooling_mode", ["x"]))
        if isinstance(pooling.get("pooling_mode"), list)
        else max(1, sum(1 for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True))
    )
    in_features = pooling["word_embedding_dimension"] * n_modes
    for i, (out_features, activation, *rest) in enumerate(dense, start=2):
        bias = rest[0] if rest else True
        d = path / f"{i}_Dense"
        d.mkdir(exist_ok=True)
        cfg = {
            "in_features": in_features,
            "out_features": out_features,
            "bias": bias,
            "activation_function": activation,
        }
        (d / "config.json").write_text(json.dumps(cfg))
        g = torch.Generator().manual_seed(seed + i)
        state = {"linear.weight": torch.randn(out_features, in_features, generator=g) * 0.2}
        if bias:
            state["linear.bias"] = torch.randn(out_features, generator=g) * 0.1
        save_file(state, str(d / "model.safetensors"))
        modules.append(module_entry(i, f"{i}_Dense", "Dense"))
        in_features = out_features
    if normalize:
        # Like all-MiniLM-L6-v2: the Normalize folder is named but does not exist.
        modules.append(module_entry(len(modules), f"{len(modules)}_Normalize", "Normalize"))
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    st_cfg: dict = {"similarity_fn_name": "cosine"}
    if prompts:
        st_cfg["prompts"] = prompts
    (path / "config_sentence_transformers.json").write_text(json.dumps(st_cfg))
    return path


def build_tiny_model(
    path: Path,
    pooling: dict | None = None,
    dense: tuple[tuple[int, str], ...] = (),
    normalize: bool = True,
    max_seq_length: int = 24,
    prompts: dict | None = None,
    modules_json: bool = True,
    seed: int = 0,
) -> Path:
    """A 2-layer, 32-wide BERT with random weights in Sentence-Transformers layout."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    save_tiny_bert(path)
    if not modules_json:
        return path
    pooling = pooling or {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    return write_st_layout(path, pooling, dense, normalize, max_seq_length, prompts, seed)


def static_reference(folder: Path, texts: list[str], normalize: bool = True) -> np.ndarray:
    """A static folder's embeddings by the reduce step's own reference encoder (mean of the token rows,
    tokenized as its head says: no special tokens, the tokenizer.json's truncation; then its Dense layers),
    on its table widened to float32: what the Encoder and the ONNX graph must give."""
    from edgeembed.encoder import tokenizer_for
    from edgeembed.reduce.static import mean_embed, static_embed
    from edgeembed.runtimes.static import load_table
    from edgeembed.source import load_source

    table = load_table(folder / "model.safetensors").astype(np.float32)
    head = load_source(folder).head
    tokenizer = tokenizer_for(folder, head)
    if normalize:
        from safetensors.numpy import load_file

        dense = []
        for d in head.dense:
            w = load_file(str(folder / d.path / "model.safetensors"))
            dense.append((w["linear.weight"], w.get("linear.bias"), d.activation))
        return static_embed(table, dense, tokenizer, texts)
    assert not head.dense, "an unnormalized reference with Dense layers is not needed by any test"
    return mean_embed(table, tokenizer, texts, normalize=False)


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory) -> Callable[..., Path]:
    def make(**kwargs) -> Path:
        return build_tiny_model(tmp_path_factory.mktemp("tiny-src"), **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory) -> Path:
    return tiny_model_factory(
        dense=((16, "torch.nn.modules.activation.Tanh"),),
        prompts={"query": "query: ", "passage": "passage: "},
    )


@pytest.fixture(scope="session")
def tiny_artifact(tiny_model, tmp_path_factory) -> Path:
    from edgeembed.build import export

    out = tmp_path_factory.mktemp("tiny-art") / "artifact"
    return export(tiny_model, out, optimize="none").path  # the plain fp32 graph: the reference variant


@pytest.fixture(scope="session")
def sts_test_path() -> Path:
    path = STS_DIR / "sts-test.csv"
    if not path.is_file():
        pytest.skip(f"STS benchmark not found at {path} (expected ../shared beside the repo)")
    return path


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory) -> Path:
    from edgeembed.build import export

    return export(None, tmp_path_factory.mktemp("minilm") / "fp32").path


@pytest.fixture
def faiss_one_thread():
    """faiss's OpenMP k-means spins on a shared 2-core machine (seconds instead of ms for a tiny
    codebook); its thread count is process-wide, so set it here and restore it."""
    import importlib
    import importlib.util

    faiss = importlib.import_module("faiss") if importlib.util.find_spec("faiss") else None
    if faiss is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def float_state_after_encoding(artifact: Path, runtime: str | None = None) -> list[str]:
    """[subnormals work before, after] Encoder.load(artifact, runtime) and two encodes, in a fresh process."""
    # in a fresh process: another test's library call may already have flushed this process's threads
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from edgeembed.encoder import Encoder

        def subnormals_work():
            return bool((np.array([1e-310]) * 1.0)[0] != 0 and (np.array([1e-40], np.float32) * 1)[0] != 0)

        before = subnormals_work()
        enc = Encoder.load({str(artifact)!r}, runtime={runtime!r})
        enc.encode(["one text"], batch_size=1)
        enc.encode(["a batch"] * 40, batch_size=32)  # the throughput hint: a second compile
        print(before, subnormals_work())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()
