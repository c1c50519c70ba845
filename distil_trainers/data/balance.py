"""Class-balanced subsamples of binary datasets.

Large binary hate-speech collections such as MetaHate hold several times more non-hateful than hateful posts. Asking
a 70B teacher to explain every post of such a dataset is costly, and a student trained on the natural mix learns
mostly the majority class: :func:`balanced_binary_subsample` keeps as many posts of each class (seeded, each class
sampled on its own, the original order kept), at most ``max_samples`` in all::

    from distil_trainers.data import load_dataset_by_name
    from distil_trainers.data.balance import balanced_binary_subsample

    train = load_dataset_by_name("tweeteval_hate")["train"]
    train = balanced_binary_subsample(train, max_samples=2000, seed=42)   # 1000 not-hate, 1000 hate
"""

from __future__ import annotations

import logging

import datasets
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["balanced_binary_subsample"]


def balanced_binary_subsample(
    dataset: datasets.Dataset,
    *,
    max_samples: int | None = None,
    seed: int = 42,
    label_column: str = "label",
    name: str = "dataset",
) -> datasets.Dataset:
    """The same number of posts of each of the two classes: as many as the smaller class has, at most
    ``max_samples // 2`` each. Each class is sampled on its own (seeded by ``seed``); the kept rows stay in their
    original order; rows without a label (-100) are left out. The counts before and after are logged.

    Args:
        dataset: a binary dataset (labels 0 and 1; a ``ClassLabel`` column must have two names).
        max_samples: most posts to keep in all (None: as many as balance allows).
        seed: sampling seed.
        label_column: the column holding the class id.
        name: how the log names the dataset (e.g. ``"train"``).

    Raises:
        ValueError: the dataset is not binary, a class has no post, or ``max_samples`` < 2.
    """
    if label_column not in dataset.column_names:
        raise ValueError(f"{name} has no column {label_column!r} (its columns: {dataset.column_names})")
    if max_samples is not None and max_samples < 2:
        raise ValueError(f"max_samples must be >= 2 (one post per class at least), got {max_samples}")
    feature = dataset.features[label_column]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else ["0", "1"]
    if len(names) != 2:
        raise ValueError(f"a balanced binary subsample needs two classes; {name} has {len(names)}: {names}")
    labels = np.asarray(dataset[label_column][:])
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: column {label_column!r} must hold class ids 0 / 1, got {labels.dtype}")
    unknown = sorted(set(labels.tolist()) - {0, 1, -100})
    if unknown:
        raise ValueError(f"{name} is not binary: column {label_column!r} holds {unknown} besides 0 and 1")
    by_class = [np.flatnonzero(labels == c) for c in (0, 1)]
    per_class = min(len(rows) for rows in by_class)
    if per_class == 0:
        empty = [names[c] for c in (0, 1) if len(by_class[c]) == 0]
        raise ValueError(f"{name} has no post of class {empty[0]!r}: it cannot be balanced")
    if max_samples is not None:
        per_class = min(per_class, max_samples // 2)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(rows, size=per_class, replace=False) for rows in by_class]))
    logger.info(
        "%s: class-balanced binary subsample (seed %d): %s -> %d posts of each class",
        name, seed, ", ".join(f"{names[c]} {len(by_class[c])}" for c in (0, 1)), per_class,
    )
    return dataset.select(keep.tolist())
