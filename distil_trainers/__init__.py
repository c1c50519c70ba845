"""distil_trainers: knowledge distillation for Hugging Face Transformers, as Trainer subclasses."""

__version__ = "0.1.0.dev0"

from . import efficiency, features, losses, schedules
from .features import FeatureDistiller, FeatureMatch, uniform_layer_map, uniform_matches
from .models import MultiTaskConfig, MultiTaskModel, make_student
from .trainers import (
    AnnealingArguments,
    AnnealingTrainer,
    DistillationArguments,
    DistillationTrainer,
    MutualLearningArguments,
    MutualLearningTrainer,
    RationaleSeq2SeqConfig,
    RationaleSeq2SeqTrainer,
    RationaleSFTConfig,
    RationaleSFTTrainer,
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
    "RationaleSFTConfig",
    "RationaleSFTTrainer",
    "RationaleSeq2SeqConfig",
    "RationaleSeq2SeqTrainer",
    "efficiency",
    "losses",
    "make_student",
    "schedules",
    "features",
    "uniform_layer_map",
    "uniform_matches",
]
