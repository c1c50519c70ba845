from .annealing import ANNEALING_MODES, AnnealingArguments, AnnealingTrainer
from .base import DistillationArguments, DistillationTrainer, check_label_space, label_space

__all__ = [
    "ANNEALING_MODES",
    "AnnealingArguments",
    "AnnealingTrainer",
    "DistillationArguments",
    "DistillationTrainer",
    "check_label_space",
    "label_space",
]
