"""Classification metrics computed offline with scikit-learn.

* :func:`classification_metrics` - accuracy, macro precision/recall/F1, weighted F1, per-class F1 (and optionally the
  confusion matrix) from label ids;
* :func:`build_compute_metrics` - a ``compute_metrics`` callable for :class:`transformers.Trainer`;
* :class:`ClassificationMetrics` - the same numbers through the :mod:`evaluate` API (``add_batch`` / ``compute``)
  without ``evaluate.load`` (which needs the Hub).

The label set is ``range(num_labels)`` (or ``range(len(label_names))``) whenever it is known, so a class that is
missing from a batch still counts in the macro averages (with score 0, ``zero_division=0``). References equal to
``-100`` (the ignore index of transformers) are dropped together with their predictions.

Example::

    trainer = Trainer(..., compute_metrics=build_compute_metrics(label_names=["NOT", "HOF"]))
    # logs eval_accuracy, eval_f1_macro, eval_f1_not, eval_f1_hof, ...
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

__all__ = [
    "IGNORE_INDEX",
    "ClassificationMetrics",
    "build_compute_metrics",
    "classification_metrics",
    "per_class_keys",
    "sanitize_label_name",
]

IGNORE_INDEX = -100
_RESERVED = {"macro", "weighted", "micro"}  # "f1_<name>" must not collide with the averaged keys


def sanitize_label_name(name: Any) -> str:
    """``"Not-Hate"`` -> ``"not_hate"``: lower case, accents removed, every non-alphanumeric character -> ``_``."""
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]", "_", text)


def per_class_keys(label_names: Sequence[Any] | None, num_labels: int) -> list[str]:
    """Suffixes of the per-class keys (``f1_<suffix>``): sanitised names, or ``"0"``, ``"1"``, ... without names.

    Empty names, names that collide after sanitising and the reserved ``macro``/``weighted``/``micro`` get the
    class index appended (``hate_1``) so that every key is unique.
    """
    if label_names is None:
        return [str(i) for i in range(num_labels)]
    keys = [sanitize_label_name(name) for name in label_names]
    out = []
    for i, key in enumerate(keys):
        if not key.strip("_") or keys.count(key) > 1 or key in _RESERVED:
            key = f"{key}_{i}" if key.strip("_") else str(i)
        out.append(key)
    return out


def _as_1d(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{what} must be integer class ids (take the argmax of logits first), got {array.dtype}")
    return array.astype(np.int64)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    label_names: Sequence[str] | None = None,
    num_labels: int | None = None,
    include_confusion: bool = False,
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, weighted F1 and per-class F1 of integer predictions.

    Args:
        y_true: reference class ids; entries equal to ``-100`` are ignored (with the matching predictions).
        y_pred: predicted class ids, same length as ``y_true``.
        label_names: class names in id order; they name the per-class keys (``f1_<sanitised name>``).
        num_labels: number of classes (default ``len(label_names)``); with neither, the label set is the sorted
            union of the ids that occur.
        include_confusion: add ``confusion_matrix``, a list of lists (rows = true class, columns = predicted).

    Returns:
        ``{"accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "f1_<class>"...}`` as floats
        (+ ``"confusion_matrix"``).
    """
    y_true, y_pred = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} entries but y_pred {y_pred.size}")
    if label_names is not None:
        label_names = list(label_names)
        if num_labels is not None and num_labels != len(label_names):
            raise ValueError(f"num_labels={num_labels} but {len(label_names)} label_names were given")
        num_labels = len(label_names)
    keep = y_true != IGNORE_INDEX
    y_true, y_pred = y_true[keep], y_pred[keep]
    if y_true.size == 0:
        raise ValueError("no labelled examples (all references are missing or -100)")

    if num_labels is not None:
        labels = list(range(num_labels))
        keys = per_class_keys(label_names, num_labels)
    else:
        labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
        keys = [str(label) for label in labels]

    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    result: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
    }
    for key, value in zip(keys, f1):
        result[f"f1_{key}"] = float(value)
    if include_confusion:
        result["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return result


def _predictions_to_ids(predictions: Any, label_ids: np.ndarray) -> np.ndarray:
    if isinstance(predictions, (tuple, list)) and not np.isscalar(predictions[0] if len(predictions) else 0):
        predictions = predictions[0]  # (logits, hidden_states, ...) -> logits
    predictions = np.asarray(predictions)
    if predictions.ndim == label_ids.ndim + 1:  # logits (..., num_labels)
        return predictions.argmax(axis=-1)
    return predictions  # already class ids (e.g. preprocess_logits_for_metrics took the argmax)


def build_compute_metrics(
    label_names: Sequence[str] | None = None, num_labels: int | None = None
) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]`` for :class:`transformers.Trainer`.

    ``eval_pred.predictions`` may be logits of shape ``(N, C)``, a tuple whose first element is the logits, or class
    ids; the argmax of the logits is compared with ``eval_pred.label_ids`` (``-100`` ignored). Only scalar metrics
    are returned (no confusion matrix), so the Trainer can log all of them.
    """

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        if hasattr(eval_pred, "predictions"):
            predictions, label_ids = eval_pred.predictions, eval_pred.label_ids
        else:
            predictions, label_ids = eval_pred[0], eval_pred[1]
        if isinstance(label_ids, (tuple, list)) and len(label_ids) and not np.isscalar(label_ids[0]):
            label_ids = label_ids[0]
        label_ids = np.asarray(label_ids)
        predicted = _predictions_to_ids(predictions, label_ids)
        result = classification_metrics(label_ids, predicted, label_names=label_names, num_labels=num_labels)
        return {key: float(value) for key, value in result.items() if np.isscalar(value)}

    # read by the trainers: a dataset mapped to a model's class order gets metrics named in that order
    compute_metrics.label_names = list(label_names) if label_names is not None else None
    compute_metrics.num_labels = num_labels
    return compute_metrics


_DESCRIPTION = """Accuracy, macro precision/recall/F1, weighted F1 and per-class F1 (scikit-learn, zero_division=0)
for single-label classification; references equal to -100 are ignored."""

_INPUTS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids (-100 = ignore).
    include_confusion (`bool`, *optional*): also return `confusion_matrix` (rows = true class).
Returns:
    accuracy, precision_macro, recall_macro, f1_macro, f1_weighted, f1_<class name> (floats).
"""


class ClassificationMetrics(evaluate.Metric):
    """:func:`classification_metrics` as an :class:`evaluate.Metric`, constructed directly (no Hub, no script)::

        metric = ClassificationMetrics(label_names=["NOT", "HOF"])
        for batch in loader:
            metric.add_batch(predictions=logits.argmax(-1), references=batch["labels"])
        scores = metric.compute()

    Args:
        label_names, num_labels, include_confusion: as in :func:`classification_metrics`.
        keep_in_memory: keep the added predictions in memory (default, single process) instead of in Arrow cache
            files below ``cache_dir``; distributed use (``num_process > 1``) needs ``keep_in_memory=False``.
        **kwargs: passed to :class:`evaluate.EvaluationModule` (``cache_dir``, ``num_process``, ``process_id``,
            ``experiment_id``, ...).
    """

    def __init__(
        self,
        label_names: Sequence[str] | None = None,
        num_labels: int | None = None,
        include_confusion: bool = False,
        keep_in_memory: bool | None = None,
        **kwargs: Any,
    ) -> None:
        # set before super().__init__(), which calls _info(); evaluate itself silently swallows unknown kwargs
        self.label_names = list(label_names) if label_names is not None else None
        self.num_labels = num_labels
        self.include_confusion = include_confusion
        if keep_in_memory is None:
            keep_in_memory = kwargs.get("num_process", 1) == 1
        super().__init__(keep_in_memory=keep_in_memory, **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(
        self, predictions: Sequence[int], references: Sequence[int], include_confusion: bool | None = None
    ) -> dict[str, Any]:
        return classification_metrics(
            references,
            predictions,
            label_names=self.label_names,
            num_labels=self.num_labels,
            include_confusion=self.include_confusion if include_confusion is None else include_confusion,
        )
