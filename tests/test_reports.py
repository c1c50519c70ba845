"""Reports: metrics against values computed by hand on a small prediction set, ensembles, mean ± std over seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from distil_trainers.papers.reports import (
    aggregate_seeds,
    build_report,
    ensemble_result,
    find_saved_models,
    format_mean_std,
    model_result,
    predict_logits,
    report_markdown,
    write_report,
)

LABELS = ["hate", "offensive", "neither"]
Y_TRUE = [0, 0, 1, 1, 2, 2, 2, 0]
Y_PRED = [0, 1, 1, 1, 2, 0, 2, 0]


def one_hot_logits(pred, num_labels=3):
    logits = np.full((len(pred), num_labels), -1.0)
    logits[np.arange(len(pred)), pred] = 2.0
    return logits


def test_model_result_matches_hand_computation():
    # confusion (rows true): [[2,1,0],[0,2,0],[1,0,2]]; precision 2/3, 2/3, 1; recall 2/3, 1, 2/3
    result = model_result("student", Y_TRUE, one_hot_logits(Y_PRED), LABELS, params=1000, seconds=2.0, seed=7)
    m = result.metrics
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision_macro"] == pytest.approx(7 / 9)
    assert m["recall_macro"] == pytest.approx(7 / 9)
    assert m["f1_hate"] == pytest.approx(2 / 3)
    assert m["f1_offensive"] == pytest.approx(0.8)
    assert m["f1_neither"] == pytest.approx(0.8)
    assert m["f1_macro"] == pytest.approx(34 / 45)
    assert result.samples_per_second == pytest.approx(4.0)  # 8 examples in 2 s
    assert result.params == 1000 and result.num_examples == 8 and result.seed == 7


def test_ensemble_averages_probabilities_not_logits():
    # member A = softmax([2,0,0]) = [.787, .107, .107]; member B = softmax([0,3,3]) = [.024, .488, .488]
    # mean probabilities [.406, .297, .297] -> class 0, while the mean logits [1, 1.5, 1.5] would give class 1
    a = np.array([[2.0, 0.0, 0.0]])
    b = np.array([[0.0, 3.0, 3.0]])
    result = ensemble_result("ensemble", [0], [a, b], LABELS, params=10, seconds=1.0)
    assert result.metrics["accuracy"] == 1.0
    assert result.role == "ensemble"
    with pytest.raises(ValueError, match="at least 2"):
        ensemble_result("e", [0], [a], LABELS)


def test_aggregate_seeds_uses_sample_std():
    runs = [{"f1_macro": 0.80, "params": 5.0}, {"f1_macro": 0.84, "params": 5.0}, {"f1_macro": 0.82, "params": 5.0}]
    stats = aggregate_seeds(runs)
    # deviations -0.02, +0.02, 0 -> sum of squares 0.0008 / (3 - 1) -> std 0.02 (population std would be 0.0163)
    assert stats["f1_macro"]["mean"] == pytest.approx(0.82)
    assert stats["f1_macro"]["std"] == pytest.approx(0.02)
    assert stats["f1_macro"]["n"] == 3
    assert stats["params"]["std"] == 0.0
    assert format_mean_std(stats["f1_macro"]["mean"], stats["f1_macro"]["std"]) == "82.00 ± 2.00"
    single = aggregate_seeds([{"accuracy": 0.5}])
    assert single["accuracy"]["std"] is None
    assert format_mean_std(0.5, None) == "50.00"
    assert format_mean_std(float("nan")) == "-"


def test_report_json_and_markdown(tmp_path):
    results = []
    for seed, pred in ((1, Y_PRED), (2, Y_TRUE)):  # seed 2 predicts perfectly
        results.append(
            model_result("student", Y_TRUE, one_hot_logits(pred), LABELS, params=2_000_000, seconds=1.0, seed=seed)
        )
        results.append(
            model_result(
                "teacher",
                Y_TRUE,
                one_hot_logits(Y_TRUE),
                LABELS,
                role="teacher",
                params=4_000_000,
                seconds=2.0,
                seed=seed,
            )
        )
    report = build_report(results, dataset="toy", split="test", label_names=LABELS)
    json_path, md_path = write_report(report, tmp_path / "out" / "report")
    loaded = json.loads(json_path.read_text())
    student = loaded["summary"]["student"]
    assert student["seeds"] == [1, 2]
    assert student["metrics"]["accuracy"]["values"] == pytest.approx([0.75, 1.0])
    assert student["metrics"]["accuracy"]["mean"] == pytest.approx(0.875)
    assert student["metrics"]["accuracy"]["std"] == pytest.approx(np.std([0.75, 1.0], ddof=1))
    # summed over the two seeds: the first confusion matrix plus the diagonal [3, 2, 3]
    assert student["confusion_matrix"] == [[5, 1, 0], [0, 4, 0], [1, 0, 5]]
    assert len(loaded["runs"]) == 4 and loaded["runs"][0]["metrics"]["confusion_matrix"][0] == [2, 1, 0]
    text = md_path.read_text()
    assert text == report_markdown(report)
    assert "over 2 seeds" in text
    row = next(line for line in text.splitlines() if line.startswith("| student |"))
    assert f"87.50 ± {100 * np.std([0.75, 1.0], ddof=1):.2f}" in row
    assert "| 2.0M |" in row
    assert "| teacher | teacher | 100.00 ± 0.00 |" in text
    assert "| hate | 5 | 1 | 0 |" in text


def test_predict_logits_and_throughput():
    from conftest import random_classification_dataset, tiny_classifier
    from tokenizers import Tokenizer, models
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast

    model = tiny_classifier()
    data = random_classification_dataset(n=10)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, "[UNK]")),
        pad_token="[PAD]",
        unk_token="[UNK]",
    )
    logits, seconds = predict_logits(model, data, data_collator=DataCollatorWithPadding(tok), batch_size=4)
    import torch

    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor(data["input_ids"][:]), attention_mask=torch.tensor(data["attention_mask"][:])
        ).logits.numpy()
    assert logits.shape == (10, 3)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert seconds > 0 and math.isfinite(seconds)
    with pytest.raises(ValueError, match="input_ids"):
        predict_logits(model, data.remove_columns("input_ids"), tok)


def test_predict_logits_progress_bar_can_be_hidden(capsys):
    from conftest import random_classification_dataset, tiny_classifier
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    model, data = tiny_classifier(), random_classification_dataset(n=6)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, "[UNK]")),
                                  pad_token="[PAD]", unk_token="[UNK]")  # fmt: skip
    shown, _ = predict_logits(model, data, tok, batch_size=4, desc="Scoring tiny")
    assert "Scoring tiny" in capsys.readouterr().err
    hidden, _ = predict_logits(model, data, tok, batch_size=4, desc="Scoring tiny", show_progress=False)
    assert "Scoring tiny" not in capsys.readouterr().err
    np.testing.assert_allclose(hidden, shown)


def test_find_saved_models_roles_and_ensembles(tmp_path):
    import json as _json

    def save(folder):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"x")

    save(tmp_path / "teacher")
    save(tmp_path / "teacher_sst2")  # the single-task teachers of the cross-lingual recipe
    save(tmp_path / "ddml" / "a")
    save(tmp_path / "ddml" / "b")
    save(tmp_path / "ddml" / "checkpoint-4" / "a")
    save(tmp_path / "alone" / "a")
    (tmp_path / "ddml" / "students.json").write_text(_json.dumps({"students": ["a", "b"]}))
    models, ensembles = find_saved_models(tmp_path)
    assert {(m.name, m.role) for m in models} == {
        ("teacher", "teacher"),
        ("teacher_sst2", "teacher"),
        ("ddml/a", "student"),
        ("ddml/b", "student"),
        ("alone/a", "baseline"),
    }
    assert [(e.name, e.members) for e in ensembles] == [("ddml/ensemble", ["ddml/a", "ddml/b"])]
    with pytest.raises(FileNotFoundError):
        find_saved_models(tmp_path / "alone" / "nothing")
    # a rationale run holds LoRA adapters of language models: the error says how to score them
    (tmp_path / "rationale" / "student").mkdir(parents=True)
    (tmp_path / "rationale" / "student" / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"LoRA adapters .*\(student\).*papers.rationale_pipeline --stage\s+evaluate"):
        find_saved_models(tmp_path / "rationale")


# ---- finished run directories: distil-trainers evaluate ---------------------------------------------------------------

TOY_WORDS = ["good", "bad", "fine", "awful", "nice", "vile", "ok", "meh"]


def toy_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(TOY_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, "[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="module")
def toy_dataset_name():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from distil_trainers.data import register_dataset

    name = "toy_reports_eval"

    def load(root, *, seed):
        rng = np.random.default_rng(0)
        texts = [" ".join(rng.choice(TOY_WORDS, size=int(rng.integers(2, 6)))) for _ in range(24)]
        features = Features(
            {"id": Value("string"), "text": Value("string"), "label": ClassLabel(names=["neg", "neu", "pos"])}
        )

        def make(lo, hi):
            data = {
                "id": [f"t{i}" for i in range(lo, hi)],
                "text": texts[lo:hi],
                "label": [i % 3 for i in range(lo, hi)],
            }
            return Dataset.from_dict(data, features=features)

        return DatasetDict(train=make(0, 12), validation=make(12, 18), test=make(18, 24))

    from distil_trainers.data.registry import _REGISTRY

    if name not in _REGISTRY:
        register_dataset(name)(load)
    return name


def save_toy_model(folder, seed, layers=2):
    from conftest import tiny_classifier

    model = tiny_classifier(
        seed,
        vocab_size=len(TOY_WORDS) + 2,
        layers=layers,
        id2label={0: "neg", 1: "neu", 2: "pos"},
        label2id={"neg": 0, "neu": 1, "pos": 2},
    )
    model.save_pretrained(folder)
    toy_tokenizer().save_pretrained(folder)
    return model


def test_evaluate_command_on_a_run_directory(tmp_path, toy_dataset_name):
    import json as _json
    import shutil

    import torch

    from distil_trainers.papers.cli import main

    run = tmp_path / "run"
    models = {
        "teacher": save_toy_model(run / "teacher", 0, layers=3),
        "ddml/a": save_toy_model(run / "ddml" / "a", 1),
        "ddml/b": save_toy_model(run / "ddml" / "b", 2),
    }
    (run / "ddml" / "students.json").write_text(_json.dumps({"students": ["a", "b"]}))
    history = [
        {
            "loss": 2.0 - 0.1 * s,
            "a/loss_hard": 1.0,
            "a/loss_mutual": 0.1,
            "b/loss_hard": 1.0,
            "b/loss_mutual": 0.1,
            "step": s,
        }
        for s in range(1, 6)
    ]
    (run / "ddml" / "log_history.json").write_text(_json.dumps(history))
    (run / "ddml" / "checkpoint-5").mkdir()  # ignored: not a saved model
    shutil.copytree(run, tmp_path / "run2")  # the same run "with another seed"
    out = tmp_path / "eval"
    config = tmp_path / "evaluate.yaml"  # part of the arguments from --config, the rest from the command line
    config.write_text(f"dataset: {toy_dataset_name}\ndata_dir: {tmp_path}\nwrite_cards: true\nseeds: [7, 8]\n")
    code = main(
        [
            "evaluate",
            str(run),
            str(tmp_path / "run2"),
            "--config",
            str(config),
            "--seeds",
            "1",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    assert code == 0
    report = _json.loads((out / "report.json").read_text())
    assert list(report["summary"]) == ["ddml/a", "ddml/b", "teacher", "ddml/ensemble"]

    # independent computation: each model's argmax on the 6 test texts, and the ensemble's averaged probabilities
    tok = toy_tokenizer()
    from distil_trainers.data import load_dataset_by_name

    test = load_dataset_by_name(toy_dataset_name, data_dir=tmp_path)["test"]
    batch = tok(test["text"][:], padding=True, return_tensors="pt")
    labels = torch.tensor(test["label"][:])
    probs = {}
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            probs[name] = model(**batch).logits.softmax(-1)
        expected = (probs[name].argmax(-1) == labels).float().mean().item()
        entry = report["summary"][name]
        assert entry["metrics"]["accuracy"]["mean"] == pytest.approx(expected)
        assert entry["metrics"]["accuracy"]["std"] == 0.0  # the same run twice
        assert entry["metrics"]["params"]["mean"] == sum(p.numel() for p in model.parameters())
        assert entry["seeds"] == [1, 2] and entry["num_examples"] == 6
        assert np.sum(entry["confusion_matrix"]) == 12  # 6 examples x 2 runs
    ensemble = ((probs["ddml/a"] + probs["ddml/b"]) / 2).argmax(-1)
    assert report["summary"]["ddml/ensemble"]["metrics"]["accuracy"]["mean"] == pytest.approx(
        (ensemble == labels).float().mean().item()
    )
    assert report["summary"]["teacher"]["role"] == "teacher"
    assert "± 0.00" in (out / "report.md").read_text()

    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert {"curves_run_ddml.png", "curves_run2_ddml.png", "comparison_f1_macro.png"} <= set(pngs)
    assert "confusion_ddml_ensemble.png" in pngs
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    card = (run / "ddml" / "a" / "README.md").read_text()
    assert "10.3390/e27040417" in card and "`b`" in card
    assert not (run / "teacher" / "README.md").exists()  # cards for students only


def test_evaluate_refuses_a_model_of_another_label_space(tmp_path, toy_dataset_name):
    from conftest import tiny_classifier

    from distil_trainers.papers.reports import evaluate_run_dirs

    run = tmp_path / "run"
    tiny_classifier(0, vocab_size=10, num_labels=2).save_pretrained(run / "student")
    toy_tokenizer().save_pretrained(run / "student")
    with pytest.raises(ValueError, match="predicts 2 classes"):
        evaluate_run_dirs([run], toy_dataset_name, data_dir=str(tmp_path))


# ---- multi-task runs: one row per (model, task), each head on its own dataset -----------------------------------------


@pytest.fixture(scope="module")
def toy_binary_dataset_name():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from distil_trainers.data import register_dataset
    from distil_trainers.data.registry import _REGISTRY

    name = "toy_reports_binary"

    def load(root, *, seed):
        rng = np.random.default_rng(1)
        texts = [" ".join(rng.choice(TOY_WORDS, size=int(rng.integers(1, 5)))) for _ in range(30)]
        features = Features({"id": Value("string"), "text": Value("string"), "label": ClassLabel(names=["no", "yes"])})

        def make(lo, hi):
            data = {"id": [f"b{i}" for i in range(lo, hi)], "text": texts[lo:hi], "label": [i % 2 for i in range(lo, hi)]}
            return Dataset.from_dict(data, features=features)

        return DatasetDict(train=make(0, 10), validation=make(10, 16), test=make(16, 30))

    if name not in _REGISTRY:
        register_dataset(name)(load)
    return name


def save_toy_multitask(folder, seed, tasks, layers=2):
    """A tiny MultiTaskModel with heads named after registered datasets (as the multi-task recipes save it)."""
    from conftest import tiny_bert_config

    from distil_trainers.models import MultiTaskConfig, MultiTaskModel

    names = {t: (["neg", "neu", "pos"] if n == 3 else ["no", "yes"]) for t, n in tasks.items()}
    config = MultiTaskConfig(
        encoder=tiny_bert_config(vocab_size=len(TOY_WORDS) + 2, layers=layers).to_dict(),
        tasks=tasks,
        task_label_names=names,
    )
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    model = MultiTaskModel(config)
    with torch.no_grad():  # heads far from zero, so that the predictions differ between texts and seeds
        for head in model.heads.values():
            head.weight.normal_(0.0, 2.0)
    model.save_pretrained(folder)
    toy_tokenizer().save_pretrained(folder)
    model.eval()
    return model


def expected_metrics(model, task, texts, labels):
    """Scikit-learn's metrics of ``model``'s ``task`` head, computed here from a plain forward pass."""
    import torch
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    batch = toy_tokenizer()(list(texts), padding=True, return_tensors="pt")
    task_ids = torch.full((len(texts),), model.config.task_id(task))
    with torch.no_grad():
        predicted = model(**batch, task_ids=task_ids).logits.argmax(-1).numpy()
    classes = list(range(model.config.tasks[task]))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=classes, average="macro", zero_division=0
    )
    return {
        "accuracy": accuracy_score(labels, predicted),
        "precision_macro": precision,
        "recall_macro": recall,
        "f1_macro": f1,
        "per_class": f1_score(labels, predicted, labels=classes, average=None, zero_division=0),
        "confusion": confusion_matrix(labels, predicted, labels=classes),
        "predicted": predicted,
    }


def test_evaluate_multitask_run_one_row_per_model_and_task(tmp_path, toy_dataset_name, toy_binary_dataset_name):
    from distil_trainers.data import load_dataset_by_name
    from distil_trainers.papers.cli import main

    tasks = {toy_binary_dataset_name: 2, toy_dataset_name: 3}  # the order of the task ids: binary first
    runs, models = [tmp_path / "s1", tmp_path / "s2"], {}
    for i, run in enumerate(runs):  # the same recipe with two seeds: different weights
        models[i, "teacher"] = save_toy_multitask(run / "teacher", 10 + i, tasks, layers=3)
        models[i, "annealing"] = save_toy_multitask(run / "annealing", 20 + i, tasks)
    out = tmp_path / "eval"
    code = main(
        ["evaluate", *map(str, runs), "--seeds", "1", "2", "--output_dir", str(out), "--write_cards", "true",
         "--data_dir", str(tmp_path)]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    b, t = toy_binary_dataset_name, toy_dataset_name
    assert list(report["summary"]) == [f"annealing [{b}]", f"annealing [{t}]", f"teacher [{b}]", f"teacher [{t}]"]
    assert report["label_names"] is None and report["dataset"] is None
    assert report["tasks"][t]["label_names"] == ["neg", "neu", "pos"] and report["tasks"][b]["label_names"] == ["no", "yes"]

    varied = set()
    for task in tasks:
        test = load_dataset_by_name(task, data_dir=tmp_path)["test"]
        texts, labels = test["text"][:], np.asarray(test["label"][:])
        names = report["tasks"][task]["label_names"]
        for model_name in ("teacher", "annealing"):
            entry = report["summary"][f"{model_name} [{task}]"]
            assert entry["model"] == model_name and entry["task"] == task and entry["label_names"] == names
            assert entry["seeds"] == [1, 2] and entry["num_examples"] == len(labels)
            per_seed = [expected_metrics(models[i, model_name], task, texts, labels) for i in range(2)]
            varied |= {tuple(e["predicted"]) for e in per_seed}
            for metric in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
                values = [e[metric] for e in per_seed]
                stats = entry["metrics"][metric]
                assert stats["values"] == pytest.approx(values)
                assert stats["mean"] == pytest.approx(np.mean(values))
                assert stats["std"] == pytest.approx(np.std(values, ddof=1))
            for k, label in enumerate(names):
                assert entry["metrics"][f"f1_{label}"]["values"] == pytest.approx([e["per_class"][k] for e in per_seed])
            assert entry["confusion_matrix"] == (per_seed[0]["confusion"] + per_seed[1]["confusion"]).tolist()
    assert len(varied) > 2  # the heads do not all predict the same

    text = (out / "report.md").read_text()
    assert "| model | task | role | accuracy |" in text
    assert "F1 no | F1 yes | F1 neg | F1 neu | F1 pos |" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| annealing | {b} | student |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[7] != "-" and cells[9:12] == ["-", "-", "-"]  # no neg / neu / pos classes in the binary task
    assert f"Confusion matrix of teacher on {t} (summed over seeds" in text
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert {f"confusion_teacher_{t}.png", f"confusion_annealing_{b}.png", f"comparison_f1_macro_{t}.png"} <= pngs
    card = (runs[0] / "annealing" / "README.md").read_text()
    assert f"| this model | {b} | test |" in card and f"| this model | {t} | test |" in card
    assert "f1_macro | f1_no | f1_yes | f1_neg | f1_neu | f1_pos |" in card  # each task's classes in their order
    assert f"{t}: neu" in card  # the classes of every head, not the config's default LABEL_0 / LABEL_1

    # one head only; a task that is not a head is refused with the heads named
    from distil_trainers.papers.reports import evaluate_run_dirs

    only, _ = evaluate_run_dirs([runs[0]], tasks=[t], data_dir=str(tmp_path))
    assert list(only["summary"]) == [f"annealing [{t}]", f"teacher [{t}]"]
    with pytest.raises(ValueError, match=r"no head for the requested task\(s\) \['sst2'\]"):
        evaluate_run_dirs([runs[0]], tasks=[t, "sst2"], data_dir=str(tmp_path))


def test_multitask_head_of_another_size_and_single_task_without_dataset(tmp_path, toy_dataset_name):
    from distil_trainers.papers.reports import evaluate_run_dirs

    run = tmp_path / "run"
    save_toy_multitask(run / "student", 0, {toy_dataset_name: 2})  # the dataset has 3 classes
    with pytest.raises(ValueError, match="head for the task 'toy_reports_eval' predicts 2 classes"):
        evaluate_run_dirs([run], data_dir=str(tmp_path))
    save_toy_model(tmp_path / "single" / "student", 0)
    with pytest.raises(ValueError, match="single-task classifier.*--dataset"):
        evaluate_run_dirs([tmp_path / "single"], data_dir=str(tmp_path))
