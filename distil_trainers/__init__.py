"""distil_trainers: knowledge distillation for Hugging Face Transformers, as Trainer subclasses."""

__version__ = "0.1.0.dev0"

from . import features, losses, schedules
from .features import FeatureDistiller, FeatureMatch, uniform_layer_map, uniform_matches
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
    "FeatureDistiller",
    "FeatureMatch",
    "MultiTaskConfig",
    "MultiTaskModel",
    "MutualLearningArguments",
    "MutualLearningTrainer",
    "losses",
    "make_student",
    "schedules",
    "features",
    "uniform_layer_map",
    "uniform_matches",
]
