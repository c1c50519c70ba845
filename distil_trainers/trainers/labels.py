"""Label spaces: what classes each model predicts (one entry per task of a multi-task model), and the checks that
teacher, students, cached teacher outputs and datasets agree on them before training starts."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

import datasets
from torch import nn

from .. import losses
from ..data.multitask import TASK_COLUMN
from ..teachers.cache import TeacherOutputs
from .inputs import load_classifier_model


def load_classifier(
    model: str | os.PathLike | nn.Module, role: str, label_names: list[str] | None = None, **init_kwargs
) -> nn.Module:
    """Return ``model`` itself, or load it with ``AutoModelForSequenceClassification`` from a Hub id / local path
    (multi-task checkpoints of this library load the same way). A teacher must have a trained classification head; a
    student cut from a bare encoder gets a head over ``label_names`` (see
    :func:`~distil_trainers.trainers.inputs.load_classifier_model`)."""
    return load_classifier_model(model, role, label_names=label_names, require_head=role == "teacher", **init_kwargs)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def label_space(model: nn.Module) -> dict[str, int]:
    """``{task: num_labels}`` of a model: one entry per head of a multi-task model, a single ``"default"`` entry
    otherwise."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no `config`; cannot tell its label space.")
    tasks = getattr(config, "tasks", None)
    if tasks:
        return dict(tasks)
    return {"default": int(config.num_labels)}


def _label_names(model: nn.Module) -> list[str] | None:
    id2label = getattr(model.config, "id2label", None) or {}
    names = [id2label[i] for i in sorted(id2label)]
    if not names or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None  # transformers' placeholder names carry no information
    return names


def check_label_space(models: dict[str, nn.Module]) -> dict[str, int]:
    """Raise one clear error unless every model predicts the same classes (and, where both name their classes, the
    same names in the same order). Returns the common label space."""
    spaces = {name: label_space(m) for name, m in models.items()}
    reference_name, reference = next(iter(spaces.items()))
    for name, space in spaces.items():
        if space != reference:
            raise ValueError(
                f"Label spaces differ: {reference_name} predicts {reference} but {name} predicts {space}. "
                "Teacher and students must be classifiers over the same classes, in the same order; give the student "
                "num_labels/id2label from the teacher's config (or fine-tune the teacher on this dataset first)."
            )
    named = {name: _label_names(m) for name, m in models.items() if "default" in spaces[name]}
    named = {k: v for k, v in named.items() if v is not None}
    if len({tuple(v) for v in named.values()}) > 1:
        detail = "; ".join(f"{k}: {v}" for k, v in named.items())
        raise ValueError(f"Models name their classes differently ({detail}). Align config.id2label before distilling.")
    return reference


def check_dataset_labels(dataset: Any, space: dict[str, int], split: str, task_names: list[str] | None = None) -> None:
    """Raise if the dataset's labels do not fit the models' label space (checked before training starts)."""
    if not isinstance(dataset, datasets.Dataset):
        return
    column = next((c for c in ("labels", "label") if c in dataset.column_names), None)
    if column is None:
        return
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel) and "default" in space and feature.num_classes != space["default"]:
        raise ValueError(
            f"The {split} dataset has {feature.num_classes} classes {feature.names} but the models predict "
            f"{space['default']}."
        )
    columns = [column] + ([TASK_COLUMN] if TASK_COLUMN in dataset.column_names else [])
    frame = dataset.select_columns(columns).to_pandas()
    frame = frame[(frame[column] != -100) & (frame[column] != losses.UNLABELLED)]
    if frame.empty:
        return
    if "default" in space:
        groups = {"default": frame[column]}
    elif TASK_COLUMN in frame:
        names = task_names or list(space)
        groups = {names[int(t)]: g[column] for t, g in frame.groupby(TASK_COLUMN)}
    elif len(space) == 1:
        groups = {next(iter(space)): frame[column]}
    else:
        raise ValueError(
            f"The {split} dataset has no `{TASK_COLUMN}` column but the model has several tasks {list(space)}; "
            "build it with distil_trainers.data.concatenate_tasks."
        )
    for task, labels in groups.items():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= space[task]:
            where = "" if task == "default" else f" for task {task!r}"
            raise ValueError(
                f"The {split} dataset has labels in [{low}, {high}]{where} but the models predict {space[task]} "
                f"classes (0..{space[task] - 1})."
            )


def check_cached_label_space(cache: TeacherOutputs, students: dict[str, nn.Module]) -> dict[str, int]:
    """The students' common label space, which must be the cached teacher's: as many classes as the cached logits
    (single-task), or the same tasks in the same order with the same number of classes each (multi-task)."""
    space = check_label_space(students)
    cached = cache.tasks
    if cached is None:
        if "default" not in space:
            raise ValueError(
                f"The teacher-output cache holds a single-task teacher's logits but the students are multi-task "
                f"(tasks {space}). Build the cache from the multi-task teacher (a MultiTaskModel, or a "
                "TaskRoutedTeacher of one teacher per task) over datasets with a `task_ids` column."
            )
        if space["default"] != cache.num_labels:
            raise ValueError(
                f"The cached teacher logits have {cache.num_labels} classes but the students predict "
                f"{space['default']}."
            )
        return space
    if "default" in space:
        raise ValueError(
            f"The teacher-output cache holds a multi-task teacher's logits (tasks {cached}) but the students are "
            f"single-task classifiers ({space['default']} classes)."
        )
    for task, n in space.items():
        if task not in cached:
            raise ValueError(
                f"The students have task {task!r} but the teacher-output cache holds no logits for it (cached tasks: "
                f"{cached})."
            )
        if cached[task] != n:
            raise ValueError(
                f"Task {task!r}: the cached teacher logits have {cached[task]} classes but the students' {task!r} "
                f"head predicts {n}."
            )
    extra = [task for task in cached if task not in space]
    if extra:
        raise ValueError(
            f"The teacher-output cache holds tasks {extra} that the students do not have (students' tasks: "
            f"{list(space)}); task ids index the task list, so the teacher's and the students' tasks must be the same."
        )
    if list(cached) != list(space):
        raise ValueError(
            f"The teacher-output cache's task order {list(cached)} differs from the students' {list(space)}; task ids "
            "index the task list, so both must order their tasks the same way."
        )
    return space


def attach_cache(
    cache: TeacherOutputs, train_dataset: Any, eval_dataset: Any, checked: Collection[str] = ()
) -> tuple[Any, Any]:
    """Give the datasets the cache-row column (each example's cache row, looked up by its id). The datasets named in
    ``checked`` (by :func:`check_raw_texts`, before tokenising dropped their texts) are not checked again."""

    def attach(ds: Any, what: str) -> Any:
        return cache.attach(ds, what, check_contents=what not in checked)

    train_dataset = attach(train_dataset, "train dataset")
    if isinstance(eval_dataset, dict):
        eval_dataset = {k: attach(v, f"eval dataset {k!r}") for k, v in eval_dataset.items()}
    else:
        eval_dataset = attach(eval_dataset, "eval dataset")
    return train_dataset, eval_dataset


def check_raw_texts(cache: TeacherOutputs, train_dataset: Any, eval_dataset: Any) -> set[str]:
    """Compare the raw-text datasets' texts with those the cache was built on (before tokenising drops them); returns
    the names of the datasets checked."""
    named = [("train dataset", train_dataset)]
    named += [(f"eval dataset {k!r}", v) for k, v in eval_dataset.items()] if isinstance(eval_dataset, dict) else [
        ("eval dataset", eval_dataset)]
    checked = set()
    for what, ds in named:
        if isinstance(ds, datasets.Dataset) and "text" in ds.column_names and "id" in ds.column_names:
            cache.check_contents(ds, what)
            checked.add(what)
    return checked
