from .annealing import ANNEALING_MODES, AnnealingArguments, AnnealingTrainer
from .base import (
    DistillationArguments,
    DistillationTrainer,
    TaskAwareTrainer,
    check_label_space,
    label_space,
)
from .mutual import MutualLearningArguments, MutualLearningTrainer, StudentGroup

__all__ = [
    "ANNEALING_MODES",
    "AnnealingArguments",
    "AnnealingTrainer",
    "DistillationArguments",
    "DistillationTrainer",
    "MutualLearningArguments",
    "MutualLearningTrainer",
    "StudentGroup",
    "TaskAwareTrainer",
    "check_label_space",
    "label_space",
]
