"""Single-task teachers for a multi-task student (BAM, Clark et al. 2019): :class:`TaskRoutedTeacher` holds one
classifier per task and answers each single-task batch with the teacher of that batch's task, so that
:class:`~distil_trainers.trainers.annealing.AnnealingTrainer` can distil several single-task models into one
:class:`~distil_trainers.models.MultiTaskModel` exactly as it distils one teacher.

Example::

    teacher = TaskRoutedTeacher({"redv1": ro_model, "sst2": sst2_model})   # task order = the student's
    trainer = AnnealingTrainer(model=multi_task_student, teacher_model=teacher, args=args, train_dataset=mixed)
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from torch import nn

from ..data.multitask import TASK_COLUMN


class TaskRoutedConfig:
    """The config of a :class:`TaskRoutedTeacher`: ``tasks`` (``{task: num_labels}``, in task-id order), and a JSON
    description of every routed teacher's config (hashed by the teacher-output cache's fingerprint)."""

    def __init__(self, tasks: dict[str, int], teachers: Mapping[str, nn.Module]):
        self.tasks = tasks
        self._teachers = teachers

    def to_json_string(self, use_diff: bool = False) -> str:
        configs = {}
        for name, model in self._teachers.items():
            config = model.config
            to_json = getattr(config, "to_json_string", None)
            configs[name] = json.loads(to_json(use_diff=use_diff)) if to_json is not None else repr(config)
        return json.dumps({"tasks": list(self.tasks.items()), "teachers": configs}, sort_keys=True)

    def __repr__(self) -> str:
        return f"TaskRoutedConfig(tasks={self.tasks})"


class TaskRoutedTeacher(nn.Module):
    """One classifier per task; ``forward(..., task_ids)`` runs the teacher of the batch's (single) task.

    ``config.tasks`` is ``{task: num_labels}`` in the given order, which must be the student's task order (the task
    ids of the data refer to it); the label-space check of the trainers compares it with the student's."""

    def __init__(self, teachers: Mapping[str, nn.Module]):
        super().__init__()
        if not teachers:
            raise ValueError("TaskRoutedTeacher needs at least one teacher.")
        self.task_names = list(teachers)
        self.teachers = nn.ModuleDict(dict(teachers))
        tasks = {}
        for name, model in teachers.items():
            config = getattr(model, "config", None)
            if config is None or getattr(config, "tasks", None):
                raise ValueError(f"The teacher of task {name!r} must be a single-task classifier with a config.")
            tasks[name] = int(config.num_labels)
        self.config = TaskRoutedConfig(tasks, self.teachers)

    def forward(self, task_ids: torch.Tensor | int | str | None = None, **inputs):
        if task_ids is None:
            raise ValueError(f"TaskRoutedTeacher needs `{TASK_COLUMN}` in every batch.")
        if isinstance(task_ids, str):
            name = task_ids
        else:
            if torch.is_tensor(task_ids):
                unique = torch.unique(task_ids)
                if unique.numel() != 1:
                    raise ValueError(f"A batch must hold one task, got task ids {unique.tolist()}.")
                task_ids = int(unique.item())
            name = self.task_names[int(task_ids)]
        if name not in self.teachers:
            raise KeyError(f"No teacher for task {name!r}; teachers: {self.task_names}.")
        return self.teachers[name](**inputs)
