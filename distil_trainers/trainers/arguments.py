"""The arguments every distillation trainer of this library understands, on top of Trainer's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..data.multitask import SAMPLING_MODES
from ..features import parse_student_feature_matches


@dataclass
class DistillationArguments(TrainingArguments):
    """[`~transformers.TrainingArguments`] plus what every distillation trainer of this library understands."""

    teacher_model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `from_pretrained` when the teacher is given as a Hub id or a local path, "
            "e.g. '{\"dtype\": \"bfloat16\"}'. A JSON string is accepted on the command line."
        },
    )
    model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `from_pretrained` when the student(s) are given as Hub ids or local paths, "
            "e.g. '{\"dtype\": \"bfloat16\"}'. A JSON string is accepted on the command line."
        },
    )
    max_length: int | None = field(
        default=128,
        metadata={"help": "Truncation length when the trainer tokenises a raw-text dataset (a `text` column) itself."},
    )
    task_sampling: str = field(
        default="proportional",
        metadata={
            "help": "Multi-task training only: how the task of each batch is chosen. 'proportional' (every example once "
            "per epoch, tasks in proportion to their size) or 'temperature' (p_t ∝ n_t^(1/T)).",
            "choices": list(SAMPLING_MODES),
        },
    )
    task_sampling_temperature: float = field(
        default=2.0,
        metadata={"help": "Temperature T of task sampling when task_sampling='temperature' (1 = proportional)."},
    )
    feature_matches: list[dict] | str | None = field(
        default=None,
        metadata={
            "help": "Feature-level distillation terms added to the trainer's loss: a list of matches (a JSON string on "
            "the command line), e.g. '[{\"student_layer\": 2, \"teacher_layer\": 4, \"feature\": \"hidden\", "
            "\"loss\": \"kl\", \"weight\": 1.0}]'. feature: embeddings, hidden, cls or attention; loss: kl, "
            "similarity_kl, mse, cosine or attention_mse. Layers: 0 = embedding output, i = output of layer i. "
            "See distil_trainers.features. MutualLearningTrainer also takes matches per student: "
            "'{\"minilm\": [...], \"bert\": [...]}' (a list applies to every student)."
        },
    )
    feature_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Multiplies the feature loss (the weighted sum over feature_matches) in the total loss."},
    )
    class_weights: list[float] | str | None = field(
        default=None,
        metadata={
            "help": "Weights of the classes in the label term (cross-entropy on gold labels; for teacher annealing the "
            "whole per-example loss): 'balanced' (n / (C * n_c) from the training labels), a list with one weight "
            "per class, or for multi-task data a mapping task -> 'balanced' | list. Each weighted term is divided by "
            "the sum of its examples' weights. A JSON string is accepted on the command line."
        },
    )
    save_projections: bool = field(
        default=False,
        metadata={
            "help": "Write the learned student->teacher projections of feature matching to projections.safetensors "
            "beside the saved student (save_model). They are never part of the student's own weights; training "
            "checkpoints always carry them so that resuming restores them."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("teacher_model_init_kwargs", "model_init_kwargs"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, json.loads(getattr(self, name)))
        if isinstance(self.class_weights, str) and self.class_weights != "balanced":
            try:
                self.class_weights = json.loads(self.class_weights)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"class_weights must be 'balanced', a list of weights or a task mapping (JSON), got "
                    f"{self.class_weights!r}."
                ) from err
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs <= 0):
            raise ValueError(
                f"Nothing to train: max_steps={self.max_steps}, num_train_epochs={self.num_train_epochs}. Set "
                "max_steps > 0 or num_train_epochs > 0 (to only evaluate, call trainer.evaluate() without train())."
            )
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 (or None), got {self.max_length}.")
        # validated here (before training), kept as plain dicts so the arguments stay JSON-serialisable
        matches = parse_student_feature_matches(self.feature_matches)
        if isinstance(matches, dict):  # per student (MutualLearningTrainer)
            self.feature_matches = {name: [m.to_dict() for m in ms] for name, ms in matches.items()} or None
        else:
            self.feature_matches = [m.to_dict() for m in matches] or None
        if not self.feature_loss_weight >= 0:
            raise ValueError(f"feature_loss_weight must be >= 0, got {self.feature_loss_weight}.")
        if self.task_sampling not in SAMPLING_MODES:
            raise ValueError(f"task_sampling must be one of {SAMPLING_MODES}, got {self.task_sampling!r}.")
        if self.task_sampling_temperature <= 0:
            raise ValueError(f"task_sampling_temperature must be > 0, got {self.task_sampling_temperature}.")


def refuse_data_parallel(args, trainer_name: str) -> None:
    """One error, before anything is built, when ``args`` would make Trainer wrap the model in ``nn.DataParallel``
    (several GPUs visible to one process): Trainer then passes ``num_items_in_batch`` as one count per GPU (the whole
    batch's count repeated, or floor-divided by the GPUs), from which no loss can recover the exact total."""
    if args is not None and args.n_gpu > 1:
        raise ValueError(
            f"{trainer_name} does not support nn.DataParallel ({args.n_gpu} GPUs visible to one process): launch one "
            "process per GPU (DDP) with `accelerate launch` or `torchrun --nproc_per_node N`, or expose one GPU "
            "(CUDA_VISIBLE_DEVICES=0)."
        )
