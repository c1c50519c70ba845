"""Class weights on the label term: ``class_weights`` ("balanced", one weight per class, or per task) as a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..data.multitask import TASK_COLUMN


def class_weight_table(spec: Any, space: Mapping[str, int], train_dataset: Any,
                       task_names: list[str] | None) -> torch.Tensor | None:
    """``class_weights`` as a ``(tasks, max classes)`` table (one row per task, in the label space's order).

    ``spec``: ``None``; ``"balanced"`` (``n / (C * n_c)`` from the training labels, as scikit-learn computes it);
    a list of ``C`` weights; or, for multi-task data, ``{task: "balanced" | [weights]}`` (tasks left out weigh 1)."""
    if spec is None:
        return None
    tasks = list(space)
    if not isinstance(spec, Mapping):
        if len(tasks) > 1:
            spec = {task: spec for task in tasks}
        else:
            spec = {tasks[0]: spec}
    unknown = sorted(set(spec) - set(tasks))
    if unknown:
        raise ValueError(f"class_weights names tasks {unknown}, but the tasks are {tasks}.")
    table = torch.ones(len(tasks), max(space.values()), dtype=torch.float64)
    for t, task in enumerate(tasks):
        value = spec.get(task)
        if value is None:
            continue
        num = space[task]
        if value == "balanced":
            counts = training_label_counts(train_dataset, t if task_names else None, num)
            if (counts == 0).any():
                missing = [i for i in range(num) if counts[i] == 0]
                raise ValueError(f"class_weights='balanced': class(es) {missing} of task {task!r} have no training "
                                 "example; give the weights as a list.")
            table[t, :num] = counts.sum() / (num * counts)
        else:
            weights = torch.as_tensor(value, dtype=torch.float64)
            if weights.shape != (num,) or not torch.isfinite(weights).all() or (weights < 0).any():
                raise ValueError(f"class_weights for task {task!r} must be {num} finite non-negative numbers (one per "
                                 f"class) or 'balanced', got {value!r}.")
            table[t, :num] = weights
    return table


def training_label_counts(train_dataset: Any, task: int | None, num_classes: int) -> torch.Tensor:
    """How many training examples of each class (of task index ``task`` in multi-task data)."""
    if train_dataset is None:
        raise ValueError("class_weights='balanced' needs the train_dataset to count the classes.")
    column = next((c for c in ("labels", "label", "label_ids") if c in train_dataset.column_names), None)
    if column is None:
        raise ValueError("class_weights='balanced' needs a label column (labels or label) in the train_dataset.")
    labels = torch.as_tensor(train_dataset[column][:])
    if task is not None:
        labels = labels[torch.as_tensor(train_dataset[TASK_COLUMN][:]) == task]
    labels = labels[(labels >= 0) & (labels < num_classes)]
    return torch.bincount(labels, minlength=num_classes).to(torch.float64)
