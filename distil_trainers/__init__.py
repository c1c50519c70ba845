"""distil_trainers: knowledge distillation for Hugging Face Transformers, as Trainer subclasses.

The names below load on first use (``import distil_trainers`` is cheap); each lives in the module named beside it.
"""

from typing import TYPE_CHECKING

from ._lazy import attach

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "features": ["FeatureDistiller", "FeatureMatch", "uniform_layer_map", "uniform_matches"],
    "models": ["MultiTaskConfig", "MultiTaskModel", "make_student"],
    "trainers": [
        "AdversarialArguments",
        "AdversarialTrainer",
        "AnnealingArguments",
        "AnnealingTrainer",
        "DistillationArguments",
        "DistillationModel",
        "DistillationTrainer",
        "MutualLearningArguments",
        "MutualLearningTrainer",
        "RationaleSeq2SeqConfig",
        "RationaleSeq2SeqTrainer",
        "RationaleSFTConfig",
        "RationaleSFTTrainer",
    ],
    # submodules reachable as attributes: distil_trainers.losses, .schedules, ...
    "losses": [],
    "schedules": [],
    "metrics": [],
    "data": [],
    "teachers": [],
    "hub": [],
}
__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .features import FeatureDistiller, FeatureMatch, uniform_layer_map, uniform_matches
    from .models import MultiTaskConfig, MultiTaskModel, make_student
    from .trainers import (
        AdversarialArguments,
        AdversarialTrainer,
        AnnealingArguments,
        AnnealingTrainer,
        DistillationArguments,
        DistillationModel,
        DistillationTrainer,
        MutualLearningArguments,
        MutualLearningTrainer,
        RationaleSeq2SeqConfig,
        RationaleSeq2SeqTrainer,
        RationaleSFTConfig,
        RationaleSFTTrainer,
    )
