"""Classical baselines: the pipelines learn on a small real slice of HASOC 2019 English (better than the majority
class under cross-validation and on test), CV leaves the test split alone and refuses impossible fold counts."""

from __future__ import annotations

import numpy as np
import pytest

from distil_trainers.data import load_dataset_by_name
from distil_trainers.data.registry import DatasetNotAvailableError
from distil_trainers.papers.baselines import (
    BASELINES,
    VOTING_MEMBERS,
    cross_validate_baseline,
    make_baseline,
    normalise_text,
    run_baselines,
)


@pytest.fixture(scope="module")
def hasoc_slice():
    try:
        data = load_dataset_by_name("hasoc_en_a", seed=42, max_samples_per_split={"train": 1200, "test": 400})
    except DatasetNotAvailableError:
        pytest.skip("HASOC 2019 data not available (set DISTIL_TRAINERS_DATA_DIR)")
    return data


def test_normalise_text_masks_urls_and_mentions():
    assert normalise_text("@bob Look at #Brexit  https://t.co/xyz NOW") == "user look at brexit url now"


def test_unknown_baseline_is_an_error():
    with pytest.raises(ValueError, match="Unknown baseline"):
        make_baseline("naive_bayes")
    with pytest.raises(ValueError, match="Unknown baselines"):
        run_baselines(["logreg", "xgboost"], {"text": [], "label": []}, {"text": [], "label": []})


def test_cross_validation_needs_enough_examples_per_class():
    texts = [f"text {i}" for i in range(30)]
    labels = [0] * 27 + [1] * 3
    with pytest.raises(ValueError, match="rarest class has 3"):
        cross_validate_baseline(make_baseline("logreg"), texts, labels, folds=10)


def test_cross_validation_reports_mean_and_std():
    rng = np.random.default_rng(0)
    words = {0: ["good", "great", "nice"], 1: ["bad", "awful", "ugly"]}
    labels = rng.integers(0, 2, 60).tolist()
    texts = [" ".join(rng.choice(words[y], 3)) + " movie" for y in labels]
    scores = cross_validate_baseline(make_baseline("logreg"), texts, labels, folds=5)
    assert scores["accuracy"] == pytest.approx(1.0)  # separable by vocabulary
    assert scores["accuracy_std"] == pytest.approx(0.0)
    assert set(scores) == {
        f"{m}{s}" for m in ("accuracy", "precision_macro", "recall_macro", "f1_macro") for s in ("", "_std")
    }


def test_baselines_beat_the_majority_class_on_real_hasoc(hasoc_slice):
    train, test = hasoc_slice["train"], hasoc_slice["test"]
    results = {r.name: r for r in run_baselines(BASELINES, train, test, folds=5, seed=0, n_estimators=50)}
    majority = results["majority"]
    # the majority class predicts one label: macro F1 is at most that class's F1 / 2
    assert majority.test["f1_macro"] < 0.45
    for name in ("logreg", "svm", "random_forest"):
        assert results[name].cv["f1_macro"] > majority.cv["f1_macro"] + 0.1, name
        assert results[name].test["f1_macro"] > majority.test["f1_macro"] + 0.05, name
    assert results["knn"].cv["f1_macro"] > majority.cv["f1_macro"]
    # test metrics carry the class names of the dataset
    assert "f1_hof" in results["logreg"].test and "f1_not" in results["logreg"].test


def test_mode_is_the_majority_vote_of_the_four_classifiers(hasoc_slice):
    train, test = hasoc_slice["train"], hasoc_slice["test"]
    texts, labels = list(train["text"]), np.asarray(train["label"])
    test_texts = list(test["text"])
    votes = np.stack(
        [make_baseline(m, n_estimators=20).fit(texts, labels).predict(test_texts) for m in VOTING_MEMBERS], axis=1
    )
    # the mode of each row, a tie going to the smallest class id, written out
    expected = np.array([min(set(row), key=lambda c: (-list(row).count(c), c)) for row in votes])
    predicted = make_baseline("mode", n_estimators=20).fit(texts, labels).predict(test_texts)
    np.testing.assert_array_equal(predicted, expected)
    # the vote is not a copy of one member on this slice
    assert any((votes[:, i] != predicted).any() for i in range(votes.shape[1]))
