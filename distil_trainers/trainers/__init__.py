from typing import TYPE_CHECKING

from .._lazy import attach

_EXPORTS = {
    "annealing": ["ANNEALING_MODES", "AnnealingArguments", "AnnealingTrainer"],
    "base": ["DistillationArguments", "DistillationTrainer", "TaskAwareTrainer", "check_label_space", "label_space"],
    "mutual": ["MutualLearningArguments", "MutualLearningTrainer", "StudentGroup"],
    "rationale": [
        "RationaleSeq2SeqConfig",
        "RationaleSeq2SeqTrainer",
        "RationaleSFTConfig",
        "RationaleSFTTrainer",
        "build_rationale_views",
        "rationale_multitask_loss",
        "training_views",
    ],
}
__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .annealing import ANNEALING_MODES, AnnealingArguments, AnnealingTrainer
    from .base import DistillationArguments, DistillationTrainer, TaskAwareTrainer, check_label_space, label_space
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
