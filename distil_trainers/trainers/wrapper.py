"""One module for Trainer: the student and the extra trainable modules its distillation learns beside it.

Some methods train modules that are not part of the student: the learned projections of feature matching
(:class:`~distil_trainers.features.FeatureDistiller`), the language discriminator of adversarial training
(:class:`~distil_trainers.models.discriminator.LanguageDiscriminator`). :class:`DistillationModel` holds the student
(a model, or a :class:`~distil_trainers.trainers.mutual.StudentGroup` of students) and these modules, so that Trainer's
own machinery serves them all at once: one optimizer with its weight-decay groups, one gradient clipping, one
``zero_grad``, one DDP / FSDP / DeepSpeed wrapper, one checkpoint (the trainers write the student as a normal
``from_pretrained`` folder and each extra module to its own file beside it).

The extra modules run inside :meth:`DistillationModel.forward`, so that DDP sees their parameters used in its
forward::

    outputs = model(**student_inputs)                                    # the student's outputs, nothing else
    outputs, extra = model(**student_inputs, extra_inputs={"features": {"teacher_outputs": t, "mask": m}})
    feature_loss, parts = extra["features"]                              # features(outputs, teacher_outputs=t, mask=m)

Each extra module is called as ``module(student_outputs, **its_inputs)``; it saves itself with
``save_to(directory, state_dict)`` and loads with ``load_from(directory) -> bool``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["DistillationModel", "has_trainable_parameters"]


def has_trainable_parameters(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


class DistillationModel(nn.Module):
    """The student (``student``) and its extra trainable modules (``extras``, by name) as one ``nn.Module``.

    Called like the student it returns the student's outputs; with ``extra_inputs={name: kwargs}`` it returns
    ``(student_outputs, {name: extras[name](student_outputs, **kwargs)})``. Attributes it does not have itself
    (``config``, ``save_pretrained``, ``main_input_name``…) are the student's, so that code expecting the student
    keeps working; its ``state_dict`` and ``parameters`` are those of the whole (``student.…``, ``extras.<name>.…``).
    """

    def __init__(self, student: nn.Module, extras: Mapping[str, nn.Module]):
        super().__init__()
        self.student = student
        self.extras = nn.ModuleDict(dict(extras))

    def forward(self, *args, extra_inputs: Mapping[str, Mapping[str, Any]] | None = None, **kwargs):
        outputs = self.student(*args, **kwargs)
        if not extra_inputs:
            return outputs
        return outputs, {name: self.extras[name](outputs, **inputs) for name, inputs in extra_inputs.items()}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if name.startswith("__") or "student" not in modules:
                raise
            return getattr(modules["student"], name)

    # ---- saving and loading -------------------------------------------------------------------------------------

    def split_state_dict(self, state_dict: Mapping[str, torch.Tensor] | None = None) -> dict[str, dict[str, Any]]:
        """``{"student": its state, <extra name>: its state, ...}`` with the prefixes stripped (``state_dict``: a
        state dict of this module, e.g. gathered by DeepSpeed / FSDP; default: the current one)."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        parts: dict[str, dict[str, Any]] = {"student": {}, **{name: {} for name in self.extras}}
        for key, value in state_dict.items():
            if key.startswith("student."):
                parts["student"][key[len("student."):]] = value
                continue
            name, _, rest = key[len("extras."):].partition(".")
            if key.startswith("extras.") and name in parts:
                parts[name][rest] = value
        return parts

    def save_extras(self, directory: str, state_dict: Mapping[str, torch.Tensor] | None = None,
                    names: list[str] | None = None) -> None:
        """Write the extra modules ``names`` (default: all) beside the student in ``directory``."""
        parts = self.split_state_dict(state_dict)
        for name, module in self.extras.items():
            if names is None or name in names:
                module.save_to(directory, parts[name])

    def load_extras(self, directory: str) -> list[str]:
        """Load every extra module saved in ``directory``; returns the names of those it found no file for."""
        return [name for name, module in self.extras.items() if not module.load_from(directory)]
