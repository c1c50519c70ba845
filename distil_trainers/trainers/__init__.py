from .annealing import ANNEALING_MODES, AnnealingArguments, AnnealingTrainer
from .base import (
    DistillationArguments,
    DistillationTrainer,
    TaskAwareTrainer,
    check_label_space,
    label_space,
)
from .mutual import MutualLearningArguments, MutualLearningTrainer, StudentGroup
from .rationale import (
    RationaleSeq2SeqConfig,
    RationaleSeq2SeqTrainer,
    RationaleSFTConfig,
    RationaleSFTTrainer,
    build_rationale_views,
    rationale_multitask_loss,
    training_views,
)

__all__ = [
    "ANNEALING_MODES",
    "AnnealingArguments",
    "AnnealingTrainer",
    "DistillationArguments",
    "DistillationTrainer",
    "MutualLearningArguments",
    "MutualLearningTrainer",
    "RationaleSFTConfig",
    "RationaleSFTTrainer",
    "RationaleSeq2SeqConfig",
    "RationaleSeq2SeqTrainer",
    "StudentGroup",
    "TaskAwareTrainer",
    "build_rationale_views",
    "check_label_space",
    "label_space",
    "rationale_multitask_loss",
    "training_views",
]
