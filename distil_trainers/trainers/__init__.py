"""The distillation trainers: one file per Trainer subclass over one shared base (``base.DistillationTrainer``)."""

from typing import TYPE_CHECKING

from .._lazy import attach

_EXPORTS = {
    "annealing": ["ANNEALING_MODES", "AnnealingArguments", "AnnealingTrainer"],
    "adversarial": ["AdversarialArguments", "AdversarialTrainer"],
    "arguments": ["DistillationArguments"],
    "base": ["DistillationTrainer"],
    "labels": ["check_label_space", "label_space"],
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
    "task_aware": ["TaskAwareTrainer"],
    "wrapper": ["DistillationModel"],
}
__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .adversarial import AdversarialArguments, AdversarialTrainer
    from .annealing import ANNEALING_MODES, AnnealingArguments, AnnealingTrainer
    from .arguments import DistillationArguments
    from .base import DistillationTrainer
    from .labels import check_label_space, label_space
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
    from .task_aware import TaskAwareTrainer
    from .wrapper import DistillationModel
