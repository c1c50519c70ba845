"""Classical text-classification baselines (scikit-learn): TF-IDF features with logistic regression, a linear SVM,
k nearest neighbours or a random forest, as in the HASOC systems of Saseendran et al. (2021), their "ML overall mode"
(the majority vote of those four) and the majority class.

Each baseline is one scikit-learn :class:`~sklearn.pipeline.Pipeline` (text in, class id out), scored with
stratified k-fold cross-validation on the training split and then refitted on the whole training split and scored on
the test split with :func:`distil_trainers.metrics.classification_metrics`.

Example::

    from distil_trainers.papers.baselines import run_baselines
    from distil_trainers.data import load_dataset_by_name

    data = load_dataset_by_name("hasoc_en_a")
    results = run_baselines(["logreg", "svm"], data["train"], data["test"], folds=10)
    results[0].test["f1_macro"], results[0].cv["f1_macro"]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier, VotingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, make_scorer, precision_score, recall_score
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from ..metrics import classification_metrics

__all__ = [
    "BASELINES",
    "CV_METRICS",
    "VOTING_MEMBERS",
    "BaselineResult",
    "cross_validate_baseline",
    "make_baseline",
    "normalise_text",
    "run_baselines",
]

BASELINES = ("majority", "logreg", "svm", "knn", "random_forest", "mode")
"""Names accepted by :func:`make_baseline`."""

VOTING_MEMBERS = ("logreg", "svm", "knn", "random_forest")
"""The classifiers whose majority vote is the ``mode`` baseline."""

CV_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
"""Scores computed on every cross-validation fold (macro averages; a class never predicted counts as 0)."""

_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"@\w+")
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower-case, URLs -> ``URL``, user mentions -> ``USER``, ``#`` dropped from hashtags, whitespace collapsed
    (the tweet pre-processing of the HASOC systems, without stemming or stop-word removal)."""
    text = _URL.sub(" URL ", text)
    text = _MENTION.sub(" USER ", text)
    text = text.replace("#", " ")
    return _SPACE.sub(" ", text).strip().lower()


def make_baseline(
    name: str,
    seed: int = 42,
    max_features: int | None = 50_000,
    ngram_range: tuple[int, int] = (1, 2),
    class_weight: str | None = None,
    n_neighbors: int = 5,
    n_estimators: int = 200,
) -> Pipeline:
    """A ``TfidfVectorizer -> classifier`` pipeline.

    Args:
        name: ``majority`` (most frequent class), ``logreg`` (logistic regression), ``svm`` (linear SVM), ``knn``
            (k nearest neighbours, Euclidean distance on the L2-normalised TF-IDF vectors) or ``random_forest``
            (entropy criterion, as in Saseendran et al.), or ``mode``: the hard majority vote of ``logreg``, ``svm``,
            ``knn`` and ``random_forest`` on the same TF-IDF features (the paper's "ML overall mode"; a tie goes to the
            lowest class id, as in scikit-learn's ``VotingClassifier``).
        seed: random state of the classifiers that have one.
        max_features, ngram_range: vocabulary of the TF-IDF features (word n-grams, sublinear tf).
        class_weight: ``"balanced"`` re-weights classes inversely to their frequency (logreg, svm, random_forest).
        n_neighbors: k of ``knn``.
        n_estimators: number of trees of ``random_forest``.
    """
    if name not in BASELINES:
        raise ValueError(f"Unknown baseline {name!r}; choose from {BASELINES}.")
    if class_weight not in (None, "balanced"):
        raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}.")
    classifiers: dict[str, Any] = {
        "majority": lambda: DummyClassifier(strategy="most_frequent"),
        "logreg": lambda: LogisticRegression(max_iter=2000, class_weight=class_weight, random_state=seed),
        "svm": lambda: LinearSVC(class_weight=class_weight, random_state=seed),
        "knn": lambda: KNeighborsClassifier(n_neighbors=n_neighbors, metric="euclidean"),
        "random_forest": lambda: RandomForestClassifier(
            n_estimators=n_estimators, criterion="entropy", class_weight=class_weight, random_state=seed, n_jobs=1
        ),
    }
    classifiers["mode"] = lambda: VotingClassifier(
        [(member, classifiers[member]()) for member in VOTING_MEMBERS], voting="hard", n_jobs=1
    )
    vectorizer = TfidfVectorizer(
        preprocessor=normalise_text,
        ngram_range=tuple(ngram_range),
        max_features=max_features,
        min_df=2,
        sublinear_tf=True,
    )
    return Pipeline([("tfidf", vectorizer), ("classifier", classifiers[name]())])


def cross_validate_baseline(
    pipeline: Pipeline, texts: Sequence[str], labels: Sequence[int], folds: int = 10, seed: int = 42, n_jobs: int = 1
) -> dict[str, float]:
    """Mean and standard deviation over ``folds`` stratified folds of the :data:`CV_METRICS`:
    ``{"accuracy": ..., "accuracy_std": ..., "f1_macro": ..., ...}``. The TF-IDF vocabulary is fitted inside each
    fold (the pipeline is cloned per fold), so no held-out text leaks into the features."""
    labels = np.asarray(labels)
    smallest = int(np.unique(labels, return_counts=True)[1].min()) if labels.size else 0
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}.")
    if smallest < folds:
        raise ValueError(
            f"{folds}-fold stratified cross-validation needs at least {folds} examples of every class; the rarest "
            f"class has {smallest}. Use fewer folds or more data."
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scoring = {
        "accuracy": make_scorer(accuracy_score),
        "precision_macro": make_scorer(precision_score, average="macro", zero_division=0),
        "recall_macro": make_scorer(recall_score, average="macro", zero_division=0),
        "f1_macro": make_scorer(f1_score, average="macro", zero_division=0),
    }
    scores = cross_validate(
        pipeline,
        np.asarray(texts, dtype=object),
        labels,
        cv=splitter,
        scoring=scoring,
        n_jobs=n_jobs,
        error_score="raise",
    )
    out = {}
    for metric in CV_METRICS:
        values = scores[f"test_{metric}"]
        out[metric], out[f"{metric}_std"] = float(values.mean()), float(values.std())
    return out


@dataclass
class BaselineResult:
    """One baseline: cross-validation scores on train (``cv``, empty without CV) and test-split metrics (``test``)."""

    name: str
    pipeline: Pipeline
    cv: dict[str, float] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)


def run_baselines(
    names: Sequence[str],
    train: Any,
    test: Any,
    folds: int | None = 10,
    seed: int = 42,
    text_column: str = "text",
    label_column: str = "label",
    n_jobs: int = 1,
    **baseline_kwargs,
) -> list[BaselineResult]:
    """Cross-validate each named baseline on ``train`` (``folds`` stratified folds; ``None`` or 0 skips CV), refit it
    on the whole of ``train`` and score it on ``test``. ``train`` / ``test`` are datasets (or dicts of lists) with a
    text and an integer label column; class names come from a ``ClassLabel`` feature when there is one.
    ``baseline_kwargs`` go to :func:`make_baseline`."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"Unknown baselines {unknown}; choose from {BASELINES}.")
    train_texts, train_labels = list(train[text_column]), np.asarray(list(train[label_column]))
    test_texts, test_labels = list(test[text_column]), np.asarray(list(test[label_column]))
    label_names = None
    features = getattr(train, "features", None)
    if features is not None and hasattr(features.get(label_column), "names"):
        label_names = list(features[label_column].names)
    results = []
    for name in tqdm(names, desc="Baselines"):
        result = BaselineResult(name=name, pipeline=make_baseline(name, seed=seed, **baseline_kwargs))
        if folds:
            result.cv = cross_validate_baseline(result.pipeline, train_texts, train_labels, folds, seed, n_jobs)
        result.pipeline.fit(train_texts, train_labels)
        predicted = result.pipeline.predict(test_texts)
        result.test = classification_metrics(
            test_labels,
            predicted,
            label_names=label_names,
            num_labels=None if label_names else int(max(train_labels.max(), test_labels.max()) + 1),
        )
        results.append(result)
    return results
