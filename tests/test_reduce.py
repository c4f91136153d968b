"""edgeembed.reduce on the tiny model: layer reduction + distillation, PCA head, static embeddings,
resume, bad input; the outputs load in sentence-transformers and export through our pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeembed.errors import EdgeEmbedError, InputError, SourceError
from edgeembed.reduce import DistillConfig, ReducePlan, reduce
from edgeembed.reduce.config import StaticConfig

from conftest import WORDS, static_reference

TINY = DistillConfig(steps=6, batch_size=8, eval_every=2, holdout=16, lr=1e-3)


@pytest.fixture(scope="module")
def teacher(tiny_model_factory) -> Path:
    return tiny_model_factory(seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 14)))) for _ in range(600)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sts(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(30):
        a = " ".join(rng.choice(WORDS, size=6))
        b = " ".join(rng.choice(WORDS, size=6))
        rows.append(f"{a}\t{b}\t{rng.uniform(0, 5):.2f}")
    path = tmp_path_factory.mktemp("sts") / "sts.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def l1(teacher, corpus, sts, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("l1") / "student"
    reduce(
        teacher,
        out,
        ReducePlan(layers=1, distill=TINY),
        corpus=corpus,
        sts=sts,
        sts_test=sts,
        cache_dir=cache,
    )
    return out


def _st(path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def test_one_layer_folder_and_record(l1, teacher, corpus):
    files = {p.relative_to(l1).as_posix() for p in l1.rglob("*") if p.is_file()}
    assert {
        "modules.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling/config.json",
    } <= files
    assert "reduce.json" in files
    assert not any(p.name.startswith(".") for p in l1.parent.iterdir()), "work folder left behind"
    assert json.loads((l1 / "config.json").read_text())["num_hidden_layers"] == 1
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((l1 / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling", "Normalize"]
    rec = json.loads((l1 / "reduce.json").read_text())
    assert rec["teacher"]["path"] == str(teacher.resolve()) and len(rec["teacher"]["sha256"]) == 64
    assert rec["teacher"]["layers"] == 2 and len(rec["layers"]["kept"]) == 1
    assert rec["layers"]["selection"] == "auto" and len(rec["layers"]["scores"]) == 2
    assert rec["corpus"]["path"] == str(corpus.resolve()) and rec["corpus"]["size"] == 600
    assert rec["distill"]["steps_done"] == 6 and not rec["interrupted"]
    assert [p["step"] for p in rec["distill"]["curve"]] == [0, 2, 4, 6]
    assert rec["seed"] == 0 and rec["wall_seconds"] > 0
    assert set(rec["sts"]) == {"dev", "test"} and set(rec["sts"]["dev"]) == {"teacher", "student"}


def test_student_loads_in_sentence_transformers_and_exports(l1, tmp_path):
    from edgeembed import Encoder
    from edgeembed.build import export

    texts = ["the cat sat on the mat", "a man is playing a guitar", "hello world"]
    ref = _st(l1).encode(texts, normalize_embeddings=False)
    art = export(l1, tmp_path / "art").path
    ours = Encoder.load(art).encode(texts)
    assert ours.shape == (3, 32)
    np.testing.assert_allclose((ours * ref).sum(1), 1.0, atol=1e-5)


def test_pca_head_shape_order_and_values(tiny_model, corpus, cache, tmp_path):
    """Teacher with its own Dense (tanh, 16): PCA Dense (identity, 16 -> 8) goes after it, before Normalize."""
    out = tmp_path / "pca"
    reduce(tiny_model, out, ReducePlan(dim=8), corpus=corpus, cache_dir=cache)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == [
        "Transformer",
        "Pooling",
        "Dense",
        "Dense",
        "Normalize",
    ]
    cfg = json.loads((out / modules[3]["path"] / "config.json").read_text())
    assert (cfg["in_features"], cfg["out_features"]) == (16, 8)
    assert cfg["activation_function"].endswith("Identity")
    from safetensors.numpy import load_file

    pca = load_file(str(out / modules[3]["path"] / "model.safetensors"))
    texts = ["the cat sat on the mat", "stock market fell again", "hello world", "a small fast model"]
    teacher = _st(tiny_model)
    pre = teacher.encode(texts, normalize_embeddings=False, output_value="sentence_embedding")
    # The teacher normalizes; its pre-Normalize output is what the PCA Dense sees.
    import torch

    with torch.inference_mode():
        feats = teacher.tokenize(texts)
        for module in list(teacher)[:-1]:
            feats = module(feats)
        pre = feats["sentence_embedding"].numpy()
    assert "linear.bias" not in pca and cfg["bias"] is False
    expected = pre @ pca["linear.weight"].T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = _st(out).encode(texts)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Orthonormal rows, largest variance first.
    w = pca["linear.weight"]
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-5)
    rec = json.loads((out / "reduce.json").read_text())
    assert rec["pca"]["dim"] == 8 and 0 < rec["pca"]["explained_variance"] <= 1


@pytest.fixture(scope="module")
def static_model(teacher, corpus, sts, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("static") / "static"
    # The plain mean (head_hidden=0; the default has a Dense head): the parity tests below read its table; the
    # head has its own test (test_static_with_a_deep_averaging_head).
    plan = ReducePlan(static=True, static_config=StaticConfig(dim=16, head_hidden=0))
    reduce(teacher, out, plan, corpus=corpus, sts=sts, cache_dir=cache)
    return out


def test_static_folder_encoder_and_onnx_match_numpy_reference(static_model, tmp_path):
    from edgeembed.artifact import ArtifactGraph, Manifest, save_artifact
    from edgeembed.backends.static import write_static, write_static_onnx
    from edgeembed.encoder import Encoder
    from edgeembed.source import load_source

    spec = load_source(static_model)
    assert spec.kind == "static" and spec.dim == 16 and not spec.head.add_special_tokens
    texts = ["the cat sat on the mat", "", "hello world hello", "a man is playing a guitar on stage"]
    ref = static_reference(static_model, texts)
    np.testing.assert_allclose(_st(static_model).encode(texts), ref, atol=1e-5)

    def build(tmp: Path) -> Manifest:
        graph = write_static(spec, tmp)
        entry = ArtifactGraph(graph.path.name, "static", "tokens", graph.precision, graph.input_names)
        return Manifest(graphs=(entry,), head=spec.head, source={"path": str(spec.path)})

    art = tmp_path / "art"
    save_artifact(art, build)
    enc = Encoder.load(art)
    got = enc.encode(texts, batch_size=2)
    assert np.all(got[1] == 0)  # an empty text has no tokens: zeros, as sentence-transformers gives
    keep = [0, 2, 3]
    assert ((got[keep] * ref[keep]).sum(1) > 0.9999).all()  # float16 table in the artifact
    assert (art / "model.safetensors").stat().st_size < (static_model / "model.safetensors").stat().st_size
    st_art = _st(art).encode(texts)
    assert ((st_art[keep] * ref[keep]).sum(1) > 0.9999).all()

    import onnxruntime as ort

    onnx_path = write_static_onnx(spec, art / "model.safetensors", art / "model.onnx", []).path
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = enc.tokenizer(texts)
    pooled = sess.run(["sentence_embedding"], batch.as_inputs(["input_ids", "attention_mask"]))[0]
    np.testing.assert_allclose(pooled, got, atol=1e-6)


def test_static_record(static_model):
    rec = json.loads((static_model / "reduce.json").read_text())
    assert rec["static"]["config"]["dim"] == 16
    epochs = StaticConfig().train_epochs  # the default training length, which the fixture keeps
    assert [p["epoch"] for p in rec["static"]["training"]["curve"]] == list(range(epochs + 1))
    assert "dev" in rec["sts"]


def _curve(path: Path) -> list[tuple[int, float]]:
    rec = json.loads((path / "reduce.json").read_text())
    return [(p["step"], p["agreement"]) for p in rec["distill"]["curve"]]


def test_resume_equals_uninterrupted(teacher, corpus, cache, tmp_path):
    from safetensors.numpy import load_file

    config = DistillConfig(steps=6, batch_size=8, eval_every=2, holdout=16, lr=1e-3)
    plan = ReducePlan(keep="1", distill=config, seed=7)
    full = reduce(teacher, tmp_path / "full", plan, corpus=corpus, cache_dir=cache).path

    def interrupt(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    first = reduce(teacher, cut, plan, corpus=corpus, cache_dir=cache, on_train_step=interrupt)
    assert first.interrupted and json.loads((cut / "reduce.json").read_text())["interrupted"]
    assert (tmp_path / ".cut.reduce-work" / "checkpoint.pt").is_file()
    resumed = reduce(teacher, cut, plan, corpus=corpus, cache_dir=cache, resume=True)
    assert not resumed.interrupted and resumed.record["distill"]["resumed_from"] == 3
    (steps_cut, agree_cut), (steps_full, agree_full) = zip(*_curve(cut)), zip(*_curve(full))
    assert steps_cut == steps_full
    assert agree_cut == pytest.approx(agree_full, abs=1e-7)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-7)
    assert not (tmp_path / ".cut.reduce-work").exists()


def test_an_unwritable_cache_is_one_line_and_writes_no_output(teacher, corpus, tmp_path):
    from edgeembed.cli import main

    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should go\n")
    runner = CliRunner()
    args = ["reduce", str(teacher), "--out", str(tmp_path / "out"), "--keep", "1", "--corpus", str(corpus)]
    result = runner.invoke(main, [*args, "--steps", "2", "--batch-size", "8", "--cache-dir", str(blocker)])
    assert result.exit_code != 0
    line = result.output.strip().splitlines()[-1]
    assert "teacher-embedding cache" in line and "--cache-dir" in line and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_failure_mid_training_writes_nothing(teacher, corpus, cache, tmp_path):
    def boom(step: int) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        reduce(
            teacher,
            tmp_path / "out",
            ReducePlan(layers=1, distill=TINY),
            corpus=corpus,
            cache_dir=cache,
            on_train_step=boom,
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("plan", "corpus_text", "message"),
    [
        (dict(layers=1), None, "corpus not found"),
        (dict(layers=1), "\n  \n", "no non-empty lines"),
        (dict(layers=1), b"ok\n\xff\xfe bad\n", "not UTF-8 text (line 2)"),
        (dict(layers=1), "one\ntwo\nthree\n", "needs at least 64"),
        (dict(keep="0,5"), "x\n", "out of range: the teacher has layers 0..1"),
        (dict(keep="1,1"), "x\n", "more than once"),
        (dict(dim=32), "x\n", "--dim 32 must be between 1 and 31"),
        (dict(layers=2), "x\n", "--layers must be between 1 and 1"),
        (dict(keep="0,1"), "x\n", "keeps all 2 layers"),
    ],
)
def test_bad_input_one_line(teacher, cache, tmp_path, plan, corpus_text, message):
    corpus = tmp_path / "c.txt"
    if isinstance(corpus_text, bytes):
        corpus.write_bytes(corpus_text)
    elif corpus_text is not None:
        corpus.write_text(corpus_text)
    cfg = DistillConfig(steps=6, batch_size=8, holdout=16)
    with pytest.raises(EdgeEmbedError, match=re.escape(message)):
        reduce(teacher, tmp_path / "out", ReducePlan(distill=cfg, **plan), corpus=corpus, cache_dir=cache)
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_plan_errors():
    with pytest.raises(InputError, match="nothing to reduce"):
        ReducePlan()
    with pytest.raises(InputError, match="does not combine"):
        ReducePlan(static=True, layers=2)


def test_unsupported_teacher(tiny_model_factory, corpus, tmp_path):
    bad = tiny_model_factory()
    modules = json.loads((bad / "modules.json").read_text())
    modules.insert(1, {"idx": 9, "name": "9", "path": "9_LSTM", "type": "sentence_transformers.models.LSTM"})
    (bad / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(
        SourceError, match=re.escape("unsupported module 'sentence_transformers.models.LSTM'")
    ):
        reduce(bad, tmp_path / "out", ReducePlan(layers=1), corpus=corpus)


def test_cli_reduce_and_error(teacher, corpus, cache, tmp_path):
    from edgeembed.cli import main

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["reduce", str(teacher), "--out", str(out), "--keep", "0", "--corpus", str(corpus), "--steps", "2"]
    args += ["--batch-size", "8", "--eval-every", "1", "--cache-dir", str(cache)]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert (out / "reduce.json").is_file()
    res = runner.invoke(main, ["reduce", str(teacher), "--out", str(tmp_path / "x"), "--keep", "0,0"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.integration
def test_minilm_short_distillation_improves_agreement(tmp_path):
    """Layers [0,2,4] of MiniLM untrained vs after 40 short steps: agreement with the teacher on held-out
    texts must rise (a property that fails if the loss, targets or optimizer are wrong)."""
    corpus = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "sentences.txt"
    if not corpus.is_file():
        pytest.skip(f"corpus not found at {corpus}")
    cfg = DistillConfig(steps=40, batch_size=16, eval_every=20, holdout=128, lr=3e-4)
    res = reduce(
        None, tmp_path / "l3", ReducePlan(keep="0,2,4", distill=cfg), corpus=corpus, cache_dir=tmp_path / "c"
    )
    curve = res.record["distill"]["curve"]
    assert curve[-1]["agreement"] > curve[0]["agreement"] + 0.01, curve


def test_static_folder_exports_through_the_build(static_model, tmp_path):
    """`edgeembed export` of a static folder: the static back-end, gated against the source table,
    lineage carried into the manifest; graph steps are refused with one line."""
    from edgeembed.build import export
    from edgeembed.encoder import Encoder
    from edgeembed.errors import InputError

    r = export(static_model, tmp_path / "art")
    m = r.manifest
    assert m.runtime == "static" and m.precision == "fp16" and m.graph == "model.safetensors"
    assert m.validation["min_cosine"] >= 0.9999 and m.validation["reference"] == "source table (float32)"
    assert m.lineage is not None and m.lineage == json.loads((static_model / "reduce.json").read_text())
    emb = Encoder.load(r.path).encode(["hello world", "the cat sat on the mat", ""])
    assert emb.shape[0] == 3 and np.isfinite(emb).all()
    with pytest.raises(InputError, match="static-embedding model"):
        export(static_model, tmp_path / "q", quantize="dynamic")


def test_extend_vocabulary_adds_frequent_whole_words_after_the_table(tmp_path):
    from tokenizers import Tokenizer, models

    from edgeembed.reduce.static import extend_vocabulary

    from conftest import build_tokenizer

    build_tokenizer(tmp_path)
    raw = (tmp_path / "tokenizer.json").read_text()
    texts = ["Xylophones sing", "the xylophones", "XYLOPHONES!", "zebra, zebra", "quokka"]
    new, words = extend_vocabulary(raw, texts, n=10, min_count=2, first_id=500)
    # Normalized as the tokenizer does (lower case), most frequent first; words in the vocabulary ("the",
    # "sings"), single characters ("!") and words rarer than min_count ("quokka") are left out.
    assert words == ["xylophones", "zebra"]
    tok = Tokenizer.from_str(new)
    tok.no_padding()
    assert tok.encode("the XYLOPHONES zebra", add_special_tokens=False).ids[1:] == [500, 501]
    assert len(tok.encode("xylophone", add_special_tokens=False).ids) > 1  # not added: still in pieces
    assert extend_vocabulary(raw, texts, n=1, min_count=2, first_id=0)[1] == ["xylophones"]
    assert extend_vocabulary(raw, texts, n=0, min_count=1, first_id=500) == (raw, [])
    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])).to_str()
    assert extend_vocabulary(bpe, texts, n=10, min_count=1, first_id=2) == (bpe, [])


def test_static_with_added_words_loads_and_exports_alike(teacher, sts, cache, tmp_path):
    """Added words get rows after the teacher's vocabulary, the folder's tokenizer takes them whole, and
    sentence-transformers, the reference and the exported artifact agree."""
    from edgeembed.build import export
    from edgeembed.encoder import Encoder

    rng = np.random.default_rng(4)
    extra = ["zebras", "quokkas", "marimbas"]
    lines = [" ".join(rng.choice(WORDS + extra, size=int(rng.integers(3, 10)))) for _ in range(400)]
    corpus = tmp_path / "words.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = StaticConfig(
        dim=16, pca_texts=200, train_texts=300, holdout=50, train_epochs=1, batch_size=32, vocab_words=2
    )
    out = tmp_path / "s"
    rec = reduce(
        teacher, out, ReducePlan(static=True, static_config=cfg), corpus=corpus, sts=sts, cache_dir=cache
    ).record["static"]
    assert rec["words_added"] == 2 and set(rec["words_added_first"]) < set(extra)
    teacher_rows = json.loads((teacher / "config.json").read_text())["vocab_size"]
    from safetensors.numpy import load_file

    assert load_file(str(out / "model.safetensors"))["embedding.weight"].shape == (teacher_rows + 2, 16)
    texts = [f"the {w} sat on the mat" for w in extra] + ["hello world"]
    ref = static_reference(out, texts)
    np.testing.assert_allclose(_st(out).encode(texts), ref, atol=1e-5)
    got = Encoder.load(export(out, tmp_path / "art").path).encode(texts)
    assert ((got * ref).sum(1) > 0.9999).all()  # float16 table in the artifact


@pytest.mark.parametrize(
    "field, value",
    [
        ("head_hidden", -1),
        ("head_hidden", 10**7),
        ("vocab_words", -2),
        ("vocab_min_count", 0),
        ("head_activation", "swish"),
        ("head_lr", 0),
    ],
)
def test_static_settings_are_checked(field, value):
    with pytest.raises(InputError, match=field.replace("_lr", " learning rate")):
        StaticConfig(**{field: value})


def test_static_head_width_follows_the_dimension():
    """The default head is 4 x dim wide, enough (2 x dim) for ReLU to start as the identity at any --dim;
    an explicit width is kept as given, and 0 means the plain mean."""
    assert StaticConfig().head_width == 1024
    assert StaticConfig(dim=768).head_width == 3072
    assert StaticConfig(dim=768, head_hidden=512).head_width == 512
    assert StaticConfig(head_hidden=0).head_width == 0


def test_static_with_a_deep_averaging_head(teacher, corpus, sts, cache, tmp_path, monkeypatch):
    """head_hidden adds Dense(relu) + Dense after the mean, trained with the table: it starts as the
    identity (epoch 0 agrees exactly as the plain mean does), the folder is StaticEmbedding, Dense, Dense,
    Normalize, and sentence-transformers, the exported artifact (numpy) and its ONNX graph agree."""
    from edgeembed.build import export
    from edgeembed.encoder import Encoder
    from edgeembed.pool import EncoderPool

    base = StaticConfig(dim=16, pca_texts=200, train_texts=300, holdout=100, train_epochs=2, batch_size=32)
    curves = {}
    for hidden in (0, None):  # None, the default: 4 x dim
        cfg = StaticConfig(**{**base.to_dict(), "head_hidden": hidden})
        out = tmp_path / f"h{hidden}"
        res = reduce(
            teacher, out, ReducePlan(static=True, static_config=cfg), corpus=corpus, sts=sts, cache_dir=cache
        )
        curves[hidden] = res.record["static"]["training"]["curve"]
        assert res.record["static"]["head_width"] == (64 if hidden is None else 0)
    assert curves[None][0]["agreement"] == pytest.approx(curves[0][0]["agreement"], abs=1e-5)
    assert curves[None][0]["sts_dev"] == pytest.approx(curves[0][0]["sts_dev"], abs=1e-3)
    dense_in = json.loads((out / "1_Dense" / "config.json").read_text())
    assert (dense_in["in_features"], dense_in["out_features"]) == (16, 64)
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert kinds == ["StaticEmbedding", "Dense", "Dense", "Normalize"]
    # An empty text has no tokens: the head of a zero mean, as sentence-transformers gives.
    texts = ["the cat sat on the mat", "hello world hello", "a man is playing a guitar on stage", ""]
    ref = _st(out).encode(texts)
    art = export(out, tmp_path / "art").path
    for runtime in (None, "onnxruntime"):
        got = Encoder.load(art, runtime=runtime).encode(texts)
        assert ((got * ref).sum(1) > 0.9999).all(), runtime  # float16 table in the artifact
    # The pool's workers run the head through BLAS on their own share of the cores (not every core in
    # every worker), with the one-process numbers.
    one = Encoder.load(art).encode(texts * 20)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with EncoderPool(art, workers=2, threads=1) as pool:
        np.testing.assert_allclose(pool.encode(texts * 20), one, atol=1e-6)
        assert pool.pids
        for pid in pool.pids:
            assert b"OPENBLAS_NUM_THREADS=1\x00" in Path(f"/proc/{pid}/environ").read_bytes()


def test_every_pooling_mode_reduces(tiny_model_factory, corpus, cache, tmp_path):
    """The torch head (edgeembed.head.torch) has every pooling mode: a weightedmean + lasttoken teacher that
    pools without its prompt reduces to fewer layers, and its student embeds as sentence-transformers does."""
    from edgeembed import Encoder
    from edgeembed.build import export

    modes = ["weightedmean", "lasttoken"]
    src = tiny_model_factory(
        pooling={"word_embedding_dimension": 32, "pooling_mode": modes, "include_prompt": False},
        prompts={"query": "query: "},
        seed=5,
    )
    out = tmp_path / "student"
    reduce(src, out, ReducePlan(layers=1, distill=TINY), corpus=corpus, cache_dir=cache)
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == modes and pooling["include_prompt"] is False
    texts = ["the cat sat on the mat", "a man is playing a guitar", "hello world"]
    ref = _st(out).encode(texts, prompt_name="query", normalize_embeddings=True)
    ours = Encoder.load(export(out, tmp_path / "art").path).encode(texts, prompt_name="query", normalize=True)
    assert ours.shape == (3, 64)
    np.testing.assert_allclose((ours * ref).sum(1), 1.0, atol=1e-5)


def test_evaluation_texts_are_never_trained_on(tmp_path):
    from edgeembed.reduce.corpus import read_corpus

    path = tmp_path / "c.txt"
    lines = [f"text {i}" for i in range(100)] + ["text 15", "an sts sentence", "kept"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plain = read_corpus(path, 0)
    held = read_corpus(path, 0, exclude_lines=(10, 20), exclude_texts=["an sts sentence"])
    trained = set(held.sample(0, len(held)))
    assert not trained & {f"text {i}" for i in range(10, 20)}  # the duplicate at line 101 too
    assert "an sts sentence" not in trained and "kept" in trained and "text 9" in trained
    assert held.excluded == 12 and len(held) == len(plain) - 12
    assert held.key != plain.key and plain.key == plain.sha256 == held.sha256  # the cache tells them apart


def test_reduce_records_the_exclusion_and_the_yardstick(teacher, corpus, sts, cache, tmp_path):
    from edgeembed.reduce.corpus import read_corpus
    from edgeembed.yardstick import load_texts

    ys = load_texts(corpus, sts, lines=(0, 100), n_queries=10)
    res = reduce(
        teacher,
        tmp_path / "s",
        ReducePlan(layers=1, distill=TINY),
        corpus=corpus,
        sts_test=sts,
        cache_dir=cache,
        exclude_lines=(0, 100),
        yardstick=ys,
    )
    rec = res.record
    first_100 = set(read_corpus(corpus).texts[:100])
    assert rec["corpus"]["excluded"] >= len(first_100) and rec["corpus"]["excluded_lines"] == [1, 100]
    assert rec["corpus"]["size"] == 600 - rec["corpus"]["excluded"]
    y = rec["yardstick"]
    assert (
        0 <= y["recall_at_k"] <= 1 and y["k"] == 10 and y["queries"] == 10 and y["corpus"] == len(ys.corpus)
    )
    assert -1 <= y["mean_cosine"] <= 1 and y["texts"]["lines"] == [1, 100]


def test_teacher_embeddings_are_cached_per_input_length_and_the_yardstick_once(
    teacher, corpus, sts, tmp_path
):
    from dataclasses import replace

    from edgeembed.yardstick import load_texts

    cache = tmp_path / "cache"
    ys = load_texts(corpus, sts, lines=(0, 100), n_queries=10)

    def run(name: str, config: DistillConfig) -> dict:
        plan = ReducePlan(layers=1, distill=config)
        kwargs = {"corpus": corpus, "sts_test": sts, "exclude_lines": (0, 100), "yardstick": ys}
        return reduce(teacher, tmp_path / name, plan, cache_dir=cache, **kwargs).record

    first = run("a", TINY)
    (ref,) = cache.glob("*-texts-*.npy")
    stamp = (ref.stat().st_ino, ref.stat().st_mtime_ns)
    second = run("b", TINY)
    assert (ref.stat().st_ino, ref.stat().st_mtime_ns) == stamp  # read back, not embedded again
    assert second["yardstick"] == first["yardstick"]
    assert len([d for d in cache.iterdir() if d.is_dir()]) == 1
    run("c", replace(TINY, max_seq_length=4))  # targets cut at 4 tokens are other targets
    assert len([d for d in cache.iterdir() if d.is_dir()]) == 2
    assert len(list(cache.glob("*-texts-*.npy"))) == 2


@pytest.mark.parametrize("select", ["agreement", "sts"])
def test_the_best_checkpoint_by_the_chosen_signal_is_kept(teacher, corpus, sts, cache, tmp_path, select):
    cfg = DistillConfig(steps=8, batch_size=8, eval_every=1, holdout=32, lr=3e-3, select=select)
    rec = reduce(
        teacher, tmp_path / "s", ReducePlan(keep="1", distill=cfg), corpus=corpus, sts=sts, cache_dir=cache
    ).record["distill"]
    curve = rec["curve"]
    key = "agreement" if select == "agreement" else "sts"
    best = max(curve, key=lambda p: p[key])
    assert rec["best_step"] == best["step"]
    assert rec["selected_by"] == ("agreement on held-out texts" if select == "agreement" else "sts dev")
    assert all(p["recall"] is not None and 0 <= p["recall"] <= 1 for p in curve)
    assert len({round(p["agreement"], 6) for p in curve}) > 1  # training moved it: the choice was real


def test_training_stops_when_the_agreement_stops_rising(teacher, corpus, cache, tmp_path):
    # A gain of 1.0 in mean cosine is impossible: every evaluation after step 0 counts as no gain.
    cfg = DistillConfig(steps=40, batch_size=8, eval_every=2, holdout=16, patience=2, min_gain=1.0)
    rec = reduce(teacher, tmp_path / "s", ReducePlan(keep="1", distill=cfg), corpus=corpus, cache_dir=cache)
    d = rec.record["distill"]
    assert d["stopped"] == "no gain" and d["steps_done"] == 4 and not rec.interrupted
    assert [p["step"] for p in d["curve"]] == [0, 2, 4]


def test_time_budget_stops_training_and_keeps_the_best(teacher, corpus, cache, tmp_path):
    cfg = DistillConfig(steps=40, batch_size=8, eval_every=10, holdout=16, max_minutes=1e-9)
    d = reduce(
        teacher, tmp_path / "s", ReducePlan(keep="1", distill=cfg), corpus=corpus, cache_dir=cache
    ).record["distill"]
    assert d["stopped"] == "time budget" and d["steps_done"] == 1
    assert [p["step"] for p in d["curve"]] == [0, 1] and d["best_step"] in (0, 1)
    assert d["schedule_fitted_to"] == 1  # the learning rate decayed over the steps the budget held


def test_the_schedule_is_fitted_to_the_steps_a_time_budget_holds():
    from edgeembed.reduce.distill import fitted_horizon

    # 50 steps in 25 s: an hour holds 7,200 steps, 6,480 with the 10 % margin.
    assert fitted_horizon(8000, 50, 25.0, 3600.0) == 6480
    assert fitted_horizon(8000, 50, 10.0, 3600.0) == 8000  # all of them fit: unchanged
    assert fitted_horizon(8000, 50, 1000.0, 1.0) == 50  # never fewer than the steps already done
    assert fitted_horizon(8000, 50, 0.0, 3600.0) == 8000


def test_several_epochs_over_fewer_texts_on_cpu(teacher, corpus, cache, tmp_path):
    cfg = DistillConfig(steps=8, batch_size=8, eval_every=4, holdout=16, train_texts=32, device="cpu")
    d = reduce(
        teacher, tmp_path / "s", ReducePlan(keep="1", distill=cfg), corpus=corpus, cache_dir=cache
    ).record["distill"]
    assert d["texts"] == 32 and d["epochs"] == 2.0 and d["device"] == "cpu" and d["steps_done"] == 8


def test_epoch_batches_cover_every_text_once_per_pass():
    from edgeembed.reduce.distill import epoch_batches

    lengths = np.arange(32) % 7
    batches = epoch_batches(lengths, 8, 2, seed=0, steps=10)
    assert len(batches) == 10
    first, second = np.concatenate(batches[:4]), np.concatenate(batches[4:8])
    assert sorted(first) == sorted(second) == list(range(32))


def test_device_cuda_without_a_gpu_is_one_line(teacher, corpus, cache, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    cfg = DistillConfig(steps=2, batch_size=8, eval_every=1, holdout=16, device="cuda")
    with pytest.raises(InputError, match="sees no CUDA device"):
        reduce(teacher, tmp_path / "s", ReducePlan(keep="1", distill=cfg), corpus=corpus, cache_dir=cache)
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA device (run on a GPU host)"
)
def test_cuda_training_matches_cpu_and_writes_a_cpu_model(teacher, corpus, cache, tmp_path):
    from sentence_transformers import SentenceTransformer

    runs = {}
    for device in ("cpu", "cuda"):
        cfg = DistillConfig(steps=6, batch_size=8, eval_every=2, holdout=16, lr=1e-3, device=device)
        runs[device] = reduce(
            teacher, tmp_path / device, ReducePlan(keep="1", distill=cfg), corpus=corpus, cache_dir=cache
        ).record["distill"]
    assert runs["cuda"]["device"] == "cuda" and runs["cpu"]["device"] == "cpu"
    for a, b in zip(runs["cpu"]["curve"], runs["cuda"]["curve"]):
        assert a["agreement"] == pytest.approx(b["agreement"], abs=1e-3)  # float reorderings only
    st = SentenceTransformer(str(tmp_path / "cuda"), device="cpu")
    assert st.encode(["hello world"]).shape[0] == 1


def test_static_epoch_is_chosen_by_agreement_on_held_out_texts(teacher, corpus, sts, cache, tmp_path):
    from edgeembed.reduce import StaticConfig

    cfg = StaticConfig(dim=16, pca_texts=200, train_texts=300, holdout=100, train_epochs=3, batch_size=32)
    plan = ReducePlan(static=True, static_config=cfg)
    rec = reduce(teacher, tmp_path / "s", plan, corpus=corpus, sts=sts, cache_dir=cache).record["static"]
    training = rec["training"]
    assert training["holdout_texts"] == 100 and training["selected_by"] == "agreement on held-out texts"
    curve = training["curve"]
    assert [p["epoch"] for p in curve] == [0, 1, 2, 3] and all("sts_dev" in p for p in curve)
    assert training["best_epoch"] == max(curve, key=lambda p: p["agreement"])["epoch"]


def test_cli_static_presets_and_settings(teacher, corpus, cache, tmp_path):
    from edgeembed.cli import main

    runner = CliRunner()
    base = [
        "reduce",
        str(teacher),
        "--static",
        "--dim",
        "16",
        "--corpus",
        str(corpus),
        "--cache-dir",
        str(cache),
    ]
    out = tmp_path / "quick"
    res = runner.invoke(
        main,
        [
            *base,
            "--out",
            str(out),
            "--preset",
            "quick",
            "--train-texts",
            "64",
            "--vocab-words",
            "3",
            "--head-hidden",
            "8",
        ],
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "reduce.json").read_text())["static"]["config"]
    assert cfg["train_epochs"] == StaticConfig(train_texts=40_000, train_epochs=4).train_epochs
    assert cfg["train_texts"] == 64 and cfg["dim"] == 16 and cfg["vocab_words"] == 3
    assert cfg["head_hidden"] == 8
    for extra, needle in (
        (["--preset", "long"], "distillation preset"),
        (["--steps", "3"], "--steps"),
    ):
        res = runner.invoke(main, [*base, "--out", str(tmp_path / "x"), *extra])
        assert res.exit_code == 1 and needle in res.output.strip().splitlines()[-1], res.output
        assert not (tmp_path / "x").exists()
    res = runner.invoke(
        main,
        ["reduce", str(teacher), "--layers", "1", "--out", str(tmp_path / "y"), "--preset", "no-training"],
    )
    assert res.exit_code == 1 and "--static preset" in res.output.strip().splitlines()[-1]
    res = runner.invoke(
        main, ["reduce", str(teacher), "--layers", "1", "--out", str(tmp_path / "z"), "--vocab-words", "5"]
    )
    assert res.exit_code == 1 and "--vocab-words shape a static model: use with --static" in res.output
    assert not (tmp_path / "z").exists()


def test_the_teacher_is_exported_to_onnx_once_per_run(teacher, sts, tmp_path):
    from edgeembed.yardstick import load_texts

    rng = np.random.default_rng(5)
    corpus = tmp_path / "big.txt"
    lines = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) + f" {i}" for i in range(11_000)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Both the training targets and the yardstick are past ONNX_MIN_TEXTS: one export serves both.
    ys = load_texts(corpus, sts, lines=(0, 5100), n_queries=10)
    cfg = DistillConfig(steps=2, batch_size=8, eval_every=2, holdout=5000)
    steps: list[str] = []
    rec = reduce(
        teacher,
        tmp_path / "s",
        ReducePlan(layers=1, distill=cfg),
        corpus=corpus,
        sts_test=sts,
        cache_dir=tmp_path / "cache",
        exclude_lines=(0, 5100),
        yardstick=ys,
        on_step=steps.append,
    ).record
    assert sum("exporting the teacher to ONNX" in s for s in steps) == 1, steps
    assert rec["yardstick"]["recall_at_k"] > 0


@pytest.mark.parametrize("dropout", [False, True])
def test_dropout_is_off_while_training_unless_asked(teacher, corpus, cache, tmp_path, dropout):
    """The student regresses a deterministic teacher: by default it trains with its dropout off."""
    from dataclasses import replace

    from edgeembed.reduce import distill as distill_module

    seen: list[bool] = []
    real = distill_module.distill

    def spy(student, *args, **kwargs):
        kwargs["on_train_step"] = lambda _step: seen.append(student.transformer.training)
        return real(student, *args, **kwargs)

    cfg = replace(TINY, dropout=dropout) if dropout else TINY
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("edgeembed.reduce.run.distill", spy)
        reduce(teacher, tmp_path / "s", ReducePlan(keep="1", distill=cfg), corpus=corpus, cache_dir=cache)
    assert seen and set(seen) == {dropout}


def test_the_cli_offers_every_preset_and_only_those():
    from edgeembed.cli import main
    from edgeembed.reduce import DISTILL_PRESETS, STATIC_PRESETS

    (option,) = [p for p in main.commands["reduce"].params if p.name == "preset"]
    assert set(option.type.choices) == set(DISTILL_PRESETS) | set(STATIC_PRESETS)
