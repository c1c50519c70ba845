"""AdversarialTrainer: an :class:`~distil_trainers.trainers.annealing.AnnealingTrainer` with an adversarial language
discriminator (ADAN-style, as in Matei's cross-lingual study), and with an optional teacher (without one it trains on the labels alone).

A :class:`~distil_trainers.models.discriminator.LanguageDiscriminator` reads the student's pooled output through a
gradient-reversal layer and predicts each example's language (the ``language_ids`` column, see
:func:`~distil_trainers.papers.crosslingual.build_gradual_stages`). The total loss is the method's loss +
``adversarial_weight`` × the discriminator's cross-entropy: the discriminator minimises it, the encoder receives the
reversed gradient and so maximises it.

Example::

    args = AdversarialArguments(output_dir="ro", adversarial_weight=0.1, num_train_epochs=2)
    trainer = AdversarialTrainer(model=model, args=args, train_dataset=stage, processing_class=tokenizer)
    trainer.train()               # logs loss_ce, loss_adversarial, discriminator_accuracy, reversal_scale
    trainer.save_model("ro")      # the classifier only; the discriminator is never part of it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import losses, schedules
from ..data.multitask import TASK_COLUMN
from ..data.processing import TEACHER_PREFIX
from ..models.discriminator import DISCRIMINATOR_NAME, LANGUAGE_COLUMN, LanguageDiscriminator
from .annealing import AnnealingArguments, AnnealingTrainer
from .citations import ADAN_CITATION
from .objective import LABELLED, LANGUAGES, ROWS

__all__ = ["DISCRIMINATOR_NAME", "REVERSAL_SCHEDULES", "AdversarialArguments", "AdversarialTrainer"]

REVERSAL_SCHEDULES = ("constant", "linear", "cosine", "dann")


@dataclass
class AdversarialArguments(AnnealingArguments):
    """[`AnnealingArguments`] plus the language discriminator's settings. Without a teacher, the loss is the
    cross-entropy on the labels (``loss_ce``) and the annealing fields are unused."""

    adversarial_weight: float = field(
        default=0.1,
        metadata={
            "help": "Weight of the language discriminator's loss in the total loss (0 disables the discriminator)."
        },
    )
    reversal_scale: float = field(
        default=1.0,
        metadata={
            "help": "Factor of the gradient-reversal layer: the encoder receives -reversal_scale times the "
            "gradient of the discriminator loss (its final value under a reversal_schedule that ramps)."
        },
    )
    reversal_schedule: str = field(
        default="constant",
        metadata={
            "help": "How the reversal factor moves with training progress p: constant (reversal_scale throughout), "
            "linear or cosine (0 -> reversal_scale), or dann (reversal_scale * (2 / (1 + exp(-gamma p)) - 1), "
            "Ganin and Lempitsky 2015).",
            "choices": list(REVERSAL_SCHEDULES),
        },
    )
    reversal_gamma: float = field(default=10.0, metadata={"help": "gamma of the dann reversal schedule."})
    discriminator_hidden_size: int = field(
        default=256, metadata={"help": "Width of the discriminator's hidden layer."}
    )
    discriminator_dropout: float = field(default=0.1, metadata={"help": "Dropout inside the discriminator."})
    num_languages: int = field(default=2, metadata={"help": "Number of languages the discriminator tells apart."})
    discriminator_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the discriminator (default: learning_rate)."}
    )
    save_discriminator: bool = field(
        default=False,
        metadata={
            "help": "Also write discriminator.safetensors beside the saved model (save_model). Training "
            "checkpoints always carry it so that resuming restores it."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {self.adversarial_weight}.")
        if self.reversal_scale < 0:
            raise ValueError(f"reversal_scale must be >= 0, got {self.reversal_scale}.")
        if self.discriminator_hidden_size < 1:
            raise ValueError(f"discriminator_hidden_size must be >= 1, got {self.discriminator_hidden_size}.")
        if not 0.0 <= self.discriminator_dropout < 1.0:
            raise ValueError(f"discriminator_dropout must be in [0, 1), got {self.discriminator_dropout}.")
        if self.num_languages < 2:
            raise ValueError(f"num_languages must be >= 2, got {self.num_languages}.")
        if self.reversal_schedule not in REVERSAL_SCHEDULES:
            raise ValueError(
                f"reversal_schedule must be one of {', '.join(REVERSAL_SCHEDULES)}, got {self.reversal_schedule!r}."
            )
        if not self.reversal_gamma > 0:
            raise ValueError(f"reversal_gamma must be > 0, got {self.reversal_gamma}.")

    @property
    def reversal_fn(self):
        """The gradient-reversal factor as a function of training progress p ∈ [0, 1]."""
        name, scale = self.reversal_schedule, self.reversal_scale
        if name == "constant":
            return schedules.get_schedule(name, value=scale)
        if name == "dann":
            return schedules.get_schedule(name, gamma=self.reversal_gamma, scale=scale)
        return schedules.get_schedule(name, start=0.0, end=scale)


class AdversarialTrainer(AnnealingTrainer):
    """Teacher annealing / Annealing-KD / Hinton KD (with a ``teacher_model`` or precomputed ``teacher_outputs``) or
    label cross-entropy (with neither), plus an adversarial language discriminator on the student's pooled output.

    Batches carry ``language_ids`` (``-100`` where unknown); the discriminator loss is skipped for batches without
    it (evaluation on one language). Logged: the method's components (``loss_ce`` without a teacher),
    ``loss_adversarial`` (the discriminator's cross-entropy, before ``adversarial_weight``: in training, the mean over
    the rows of the accumulated batch that have a language id, labelled or not) and
    ``discriminator_accuracy`` and ``reversal_scale`` (the factor of the gradient-reversal layer, which
    ``reversal_schedule`` may ramp up from 0 as in DANN; a function of the step, so a resumed run goes on exactly).

    The discriminator (``trainer.discriminator``) is an extra module of the trainer's one model
    (:class:`~distil_trainers.trainers.wrapper.DistillationModel`, see
    :class:`~distil_trainers.trainers.base.DistillationTrainer`): it runs inside the model's forward, has its own
    optimizer parameter groups (``discriminator_learning_rate``), is clipped with the student, saved to
    ``discriminator.safetensors`` in checkpoints (and by ``save_model`` with ``save_discriminator``) and never written
    into the student's weights. Construction is the base class's; :meth:`check_models_given` lets the teacher out and
    :meth:`build_extra_modules` adds the discriminator."""

    _tag_names = ["distil-trainers", "knowledge-distillation", "cross-lingual", "adversarial"]
    _name = "Adversarial cross-lingual distillation"
    _paper = {
        "title": "Adversarial Deep Averaging Networks for Cross-Lingual Sentiment Classification",
        "id": "1606.01614",
        "citation": ADAN_CITATION,
    }

    extra_input_prefixes = (TEACHER_PREFIX,)
    extra_save_flags = {**AnnealingTrainer.extra_save_flags, "discriminator": "save_discriminator"}

    def __init__(self, model=None, teacher_model=None, args: AdversarialArguments | None = None, **kwargs):
        if args is None:
            args = AdversarialArguments(output_dir="tmp_trainer")
        if not isinstance(args, AdversarialArguments):
            raise TypeError(f"AdversarialTrainer needs AdversarialArguments, got {type(args).__name__}.")
        super().__init__(model=model, teacher_model=teacher_model, args=args, **kwargs)
        self.reversal_fn = args.reversal_fn

    # ---- construction hooks --------------------------------------------------------------------------------------

    def check_models_given(self, model, teacher_model, teacher_outputs) -> None:
        """The model is required; the teacher is optional (without one the loss is the label cross-entropy)."""
        if model is None:
            raise ValueError("AdversarialTrainer needs the `model` (a model, a Hub id or a local path).")

    def build_extra_modules(self, student, teacher, args: AdversarialArguments) -> dict[str, nn.Module]:
        """The feature distiller (with ``feature_matches``) and the language discriminator (``adversarial_weight``
        > 0) over the student's hidden size."""
        extras = super().build_extra_modules(student, teacher, args)
        if args.adversarial_weight == 0:
            return extras
        config = getattr(student, "config", None)
        hidden_size = getattr(getattr(config, "encoder", None) or config, "hidden_size", None)
        if hidden_size is None:
            raise ValueError("Cannot tell the model's hidden size (config.hidden_size) for the language discriminator.")
        reference = next(student.parameters())
        extras["discriminator"] = LanguageDiscriminator(
            hidden_size,
            num_languages=args.num_languages,
            intermediate_size=args.discriminator_hidden_size,
            dropout=args.discriminator_dropout,
            reversal_scale=args.reversal_scale,
        ).to(device=reference.device, dtype=reference.dtype)
        return extras

    @property
    def discriminator(self) -> LanguageDiscriminator | None:
        return self.extra_modules.get("discriminator")

    def parameter_owner(self, name: str) -> tuple[str, float]:
        """The discriminator's parameters train at ``discriminator_learning_rate`` (default: ``learning_rate``)."""
        if ".extras.discriminator." in f".{name}":
            return "discriminator", self.args.discriminator_learning_rate or self.args.learning_rate
        return super().parameter_owner(name)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            if LANGUAGE_COLUMN not in self._signature_columns:
                self._signature_columns.append(LANGUAGE_COLUMN)

    # ---- loss ----------------------------------------------------------------------------------------------------

    def count_items(self, batch):
        """Also the rows with a language id (labelled or not): the discriminator's loss is the mean over them."""
        counts = super().count_items(batch)
        languages = batch.get(LANGUAGE_COLUMN)
        if languages is not None:
            counts[LANGUAGES] = languages.ne(-100).sum().to(torch.float64)
        else:
            counts[LANGUAGES] = torch.zeros((), dtype=torch.float64, device=counts[ROWS].device)
        return counts

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError(
                "AdversarialTrainer needs `labels` in every batch (rename your label column to 'labels')."
            )
        languages = inputs.pop(LANGUAGE_COLUMN, None)
        student_inputs, teacher_inputs = self.split_inputs(inputs)
        task_ids = student_inputs.get(TASK_COLUMN)
        adversarial = self.discriminator is not None and languages is not None
        with_teacher = self.teacher is not None or self.teacher_cache is not None
        teacher_outputs = self.teacher_outputs(teacher_inputs) if with_teacher else None
        output_kwargs = dict(self.feature_output_kwargs)
        extra_inputs = self.feature_inputs(teacher_outputs, student_inputs, labels)
        if adversarial:
            output_kwargs["output_hidden_states"] = True
            if model.training:
                self.discriminator.reversal_scale = self.reversal_fn(self.training_progress())
            extra_inputs["discriminator"] = {"languages": languages}
        # the wrapped model: the student, its feature projections and the discriminator in one forward
        outputs, extra = self.forward_student(model, {**student_inputs, **output_kwargs}, extra_inputs)

        objective = self.objective(model, labels, num_items_in_batch, task_ids)
        if not with_teacher:
            weights = self.batch_class_weights(outputs.logits, task_ids)
            objective.add("loss_ce", self.label_term(outputs.logits, labels, weights), LABELLED)
            scalars: dict[str, Any] = {}
        else:
            scalars = self.distillation_loss(objective, outputs.logits, teacher_outputs.logits, labels, task_ids)
        composites = self.add_feature_terms(objective, extra)
        if adversarial:
            result = extra["discriminator"]
            # the mean over the rows with a language id of the whole step (labelled or not)
            objective.add("loss_adversarial", losses.LossSum(result.total, result.count.to(result.total.dtype)),
                          LANGUAGES, self.args.adversarial_weight)
            scalars["reversal_scale"] = self.discriminator.reversal_scale
            step = objective.step_counts[LANGUAGES] if objective.step_counts is not None else None
            self.record_sum("discriminator_accuracy",
                            losses.LossSum(result.correct.double(), result.count.double()), step)
        self.record_objective(objective, scalars=scalars, composites=composites)
        loss = self.scale_for_devices(objective.loss(), num_items_in_batch)
        if not return_outputs:
            return loss
        hidden = ("hidden_states",) if adversarial and "output_hidden_states" not in self.feature_output_kwargs else ()
        return loss, self.strip_feature_outputs(outputs, hidden)
