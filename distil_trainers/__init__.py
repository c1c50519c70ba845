"""distil_trainers: knowledge distillation for Hugging Face Transformers, as Trainer subclasses."""

__version__ = "0.1.0.dev0"

from . import losses, schedules
from .models import MultiTaskConfig, MultiTaskModel, make_student
from .trainers import (
    AnnealingArguments,
    AnnealingTrainer,
    DistillationArguments,
    DistillationTrainer,
    MutualLearningArguments,
    MutualLearningTrainer,
)

__all__ = [
    "AnnealingArguments",
    "AnnealingTrainer",
    "DistillationArguments",
    "DistillationTrainer",
    "MultiTaskConfig",
    "MultiTaskModel",
    "MutualLearningArguments",
    "MutualLearningTrainer",
    "losses",
    "make_student",
    "schedules",
]
