"""Every number of distil_trainers.metrics compared with scikit-learn called directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from transformers import EvalPrediction

from distil_trainers.metrics import (
    ClassificationMetrics,
    build_compute_metrics,
    classification_metrics,
    per_class_keys,
    sanitize_label_name,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def sklearn_reference(y_true, y_pred, labels, keys):
    """The expected metrics, straight from scikit-learn (y_true/y_pred already without -100)."""
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    p_macro, r_macro, f_macro, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    expected = {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision_macro": p_macro,
        "recall_macro": r_macro,
        "f1_macro": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "f1_weighted": f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
    }
    assert math.isclose(f_macro, expected["f1_macro"])
    for key, value in zip(keys, f):
        expected[f"f1_{key}"] = value
    return expected


def assert_same(result, expected):
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert isinstance(result[key], float), key
        assert result[key] == pytest.approx(value, abs=1e-12), key


@pytest.fixture
def three_class():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, size=200))
    return y_true, y_pred


def test_sanitize_label_name():
    assert sanitize_label_name("Not-Hate") == "not_hate"
    assert sanitize_label_name("offensive language") == "offensive_language"
    assert sanitize_label_name("Tristețe") == "tristete"
    assert sanitize_label_name(3) == "3"
    assert per_class_keys(None, 3) == ["0", "1", "2"]
    assert per_class_keys(["a b", "a-b", "macro", "", "ok"], 5) == ["a_b_0", "a_b_1", "macro_2", "3", "ok"]


def test_matches_sklearn_with_names(three_class):
    y_true, y_pred = three_class
    names = ["hate", "offensive", "neither"]
    result = classification_metrics(y_true, y_pred, label_names=names)
    assert_same(result, sklearn_reference(y_true, y_pred, [0, 1, 2], names))
    assert list(result)[:5] == ["accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted"]


def test_matches_sklearn_without_names(three_class):
    y_true, y_pred = three_class
    result = classification_metrics(y_true.tolist(), y_pred.tolist())
    assert_same(result, sklearn_reference(y_true, y_pred, [0, 1, 2], ["0", "1", "2"]))
    assert_same(classification_metrics(y_true, y_pred, num_labels=3), result)


def test_class_missing_from_predictions_and_batch():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    y_pred = np.array([0, 1, 1, 1, 0, 1, 1, 0])  # class 2 never predicted; class 3 absent everywhere
    names = ["NONE", "HATE", "OFFN", "PRFN"]
    result = classification_metrics(y_true, y_pred, label_names=names, include_confusion=True)
    expected = sklearn_reference(y_true, y_pred, [0, 1, 2, 3], ["none", "hate", "offn", "prfn"])
    confusion = result.pop("confusion_matrix")
    assert_same(result, expected)
    assert result["f1_offn"] == 0.0 and result["f1_prfn"] == 0.0
    # the absent class counts in the macro average: 4 classes, not 3
    assert result["f1_macro"] == pytest.approx(sum(result[f"f1_{k}"] for k in ("none", "hate", "offn", "prfn")) / 4)
    assert confusion == confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3]).tolist()
    assert len(confusion) == 4 and all(len(row) == 4 for row in confusion)


def test_ignores_minus_100(three_class):
    y_true, y_pred = three_class
    y_true = y_true.copy()
    y_true[::7] = -100
    keep = y_true != -100
    result = classification_metrics(y_true, y_pred, num_labels=3, include_confusion=True)
    confusion = result.pop("confusion_matrix")
    assert_same(result, sklearn_reference(y_true[keep], y_pred[keep], [0, 1, 2], ["0", "1", "2"]))
    assert confusion == confusion_matrix(y_true[keep], y_pred[keep], labels=[0, 1, 2]).tolist()
    assert sum(map(sum, confusion)) == keep.sum()


def test_binary_and_confusion_rows_are_true_labels():
    y_true, y_pred = [1, 1, 1, 0], [1, 0, 0, 0]
    result = classification_metrics(y_true, y_pred, label_names=["NOT", "HOF"], include_confusion=True)
    assert result["confusion_matrix"] == [[1, 0], [2, 1]]
    assert result["f1_hof"] == pytest.approx(f1_score(y_true, y_pred, pos_label=1))
    assert result["f1_not"] == pytest.approx(f1_score(y_true, y_pred, pos_label=0))


def test_errors():
    with pytest.raises(ValueError, match="entries"):
        classification_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="num_labels"):
        classification_metrics([0, 1], [0, 1], label_names=["a", "b"], num_labels=3)
    with pytest.raises(ValueError, match="no labelled examples"):
        classification_metrics([-100, -100], [0, 1])


# ----------------------------------------------------------------------------------------------------------------------
# Trainer compute_metrics
# ----------------------------------------------------------------------------------------------------------------------


def _logits_for(y_pred, num_labels, rng):
    logits = rng.normal(size=(len(y_pred), num_labels)).astype(np.float32)
    logits[np.arange(len(y_pred)), y_pred] += 10.0
    return logits


def test_compute_metrics_from_logits(three_class):
    y_true, y_pred = three_class
    logits = _logits_for(y_pred, 3, np.random.default_rng(1))
    labels = y_true.copy()
    labels[:5] = -100
    compute = build_compute_metrics(label_names=["anger", "joy", "sadness"])
    result = compute(EvalPrediction(predictions=logits, label_ids=labels))
    keep = labels != -100
    assert_same(result, sklearn_reference(y_true[keep], y_pred[keep], [0, 1, 2], ["anger", "joy", "sadness"]))
    assert "confusion_matrix" not in result
    assert all(type(v) is float for v in result.values())


def test_compute_metrics_tuple_predictions_and_missing_class():
    rng = np.random.default_rng(2)
    y_true = np.array([0, 1, 1, 0, 1, 0])
    y_pred = np.array([0, 1, 0, 0, 1, 1])
    logits = _logits_for(y_pred, 4, rng)  # 4 classes, 2 and 3 never occur
    hidden = rng.normal(size=(6, 5, 8))
    compute = build_compute_metrics(num_labels=4)
    result = compute(EvalPrediction(predictions=(logits, hidden), label_ids=y_true))
    assert_same(result, sklearn_reference(y_true, y_pred, [0, 1, 2, 3], ["0", "1", "2", "3"]))
    # plain (predictions, label_ids) tuples and already-argmaxed predictions work too
    assert compute((logits, y_true)) == result
    assert compute(EvalPrediction(predictions=y_pred, label_ids=y_true)) == result


def test_compute_metrics_in_trainer(tmp_path):
    """A real Trainer.evaluate with a tiny randomly initialised model logs the metrics with the eval_ prefix."""
    import datasets
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, num_labels=3
    )
    model = BertForSequenceClassification(config)
    rng = np.random.default_rng(0)
    data = datasets.Dataset.from_dict(
        {"input_ids": rng.integers(1, 50, size=(12, 6)).tolist(), "labels": rng.integers(0, 3, size=12).tolist()}
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_eval_batch_size=5, report_to=[], use_cpu=True, disable_tqdm=True
    )
    names = ["negative", "neutral", "positive"]
    trainer = Trainer(model=model, args=args, eval_dataset=data, compute_metrics=build_compute_metrics(names))
    metrics = trainer.evaluate()

    model.eval()
    with torch.no_grad():
        predicted = model(input_ids=torch.tensor(data["input_ids"][:])).logits.argmax(-1).numpy()
    expected = sklearn_reference(np.array(data["labels"][:]), predicted, [0, 1, 2], names)
    for key, value in expected.items():
        assert metrics[f"eval_{key}"] == pytest.approx(value)


# ----------------------------------------------------------------------------------------------------------------------
# evaluate API
# ----------------------------------------------------------------------------------------------------------------------


def test_evaluate_metric_equals_function(three_class, tmp_path):
    y_true, y_pred = three_class
    y_true = y_true.copy()
    y_true[3] = -100
    names = ["hate", "offensive", "neither"]
    metric = ClassificationMetrics(label_names=names, cache_dir=str(tmp_path))
    assert metric.name == "classification_metrics"
    for start in range(0, len(y_true), 64):
        metric.add_batch(predictions=y_pred[start : start + 64], references=y_true[start : start + 64])
    result = metric.compute()
    assert result == classification_metrics(y_true, y_pred, label_names=names)
    keep = y_true != -100
    assert_same(result, sklearn_reference(y_true[keep], y_pred[keep], [0, 1, 2], names))

    # the metric is reusable; compute() also accepts the inputs directly, and include_confusion per call
    again = metric.compute(predictions=y_pred.tolist(), references=y_true.tolist(), include_confusion=True)
    assert again == classification_metrics(y_true, y_pred, label_names=names, include_confusion=True)


def test_evaluate_metric_options(tmp_path):
    metric = ClassificationMetrics(num_labels=4, include_confusion=True, cache_dir=str(tmp_path))
    metric.add(predictions=0, references=0)
    metric.add(predictions=2, references=1)
    result = metric.compute()
    assert result == classification_metrics([0, 1], [0, 2], num_labels=4, include_confusion=True)
    assert result["confusion_matrix"] == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert {"f1_0", "f1_1", "f1_2", "f1_3"} <= set(result)


def test_evaluate_metric_cache_files_mode(tmp_path):
    """keep_in_memory=False goes through evaluate's Arrow cache files (in cache_dir) and gives the same numbers."""
    metric = ClassificationMetrics(label_names=["NOT", "HOF"], keep_in_memory=False, cache_dir=str(tmp_path))
    metric.add_batch(predictions=[1, 0, 1, 1], references=[1, 0, 0, 1])
    assert metric.compute() == classification_metrics([1, 0, 0, 1], [1, 0, 1, 1], label_names=["NOT", "HOF"])
    assert list(tmp_path.rglob("*.arrow")) == []  # evaluate removes its cache file after compute()
