"""AnnealingTrainer: teacher annealing (BAM, Clark et al. 2019), Annealing-KD (Jafari et al. 2021) and classic
Hinton KD, for single-task classifiers and for :class:`~distil_trainers.models.MultiTaskModel`.

Example::

    args = AnnealingArguments(output_dir="student", annealing="bam", num_train_epochs=3)
    trainer = AnnealingTrainer(
        model=student, teacher_model="path/to/teacher", args=args,
        train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
        compute_metrics=build_compute_metrics(label_names),
    )
    trainer.train()
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from .. import losses, schedules
from ..data.multitask import TASK_COLUMN
from .base import DistillationArguments, DistillationTrainer
from .citations import BAM_CITATION
from .objective import LABELLED, ROWS, Objective

ANNEALING_MODES = ("bam", "jafari", "kd", "mse")
DEPRECATED_ANNEALING_MODES = {"none": "kd"}  # old name -> new name


@dataclass
class AnnealingArguments(DistillationArguments):
    r"""
    Arguments of [`AnnealingTrainer`], on top of [`~transformers.TrainingArguments`].

    - `annealing="bam"`: loss = CE(student, λ·onehot(y) + (1−λ)·softmax(z_T / T)), λ following `lambda_schedule` from
      `lambda_start` to `lambda_end` over the optimizer steps (Clark et al. 2019: linear, 0 → 1). By default
      (`lambda_progress="steps_done"`) step k of N reads p = k/N, so the last step's λ is the schedule at
      (N−1)/N, not `lambda_end`; `lambda_progress="inclusive"` reads p = k/(N−1), ending exactly at `lambda_end`.
    - `annealing="jafari"`: Annealing-KD. Phase 1 (the first `phase1_fraction` of the steps):
      MSE(z_S, Φ·z_T) with Φ = 1 − (τ−1)/τ_max rising from 1/τ_max to 1 in `max_temperature` equal stages; phase 2:
      CE on the labels only.
    - `annealing="kd"`: Hinton et al. 2015: `alpha`·CE(y) + `beta`·T²·KL(softmax(z_T/T) ‖ softmax(z_S/T)).
    - `annealing="mse"`: logit matching, MSE(z_S, z_T) averaged over the classes, no label term (the output loss of
      Breazu and Virlan's (2025) feedforward-network distillation; combine it with `feature_matches`).

    Any method can be combined with `feature_matches` (feature-level distillation, see
    [`~distil_trainers.DistillationArguments`]): the weighted feature loss times `feature_loss_weight` is added.
    """

    annealing: str = field(
        default="bam",
        metadata={"help": "Distillation method: 'bam' (teacher annealing), 'jafari' (Annealing-KD), 'kd' (Hinton KD) "
                          "or 'mse' (logit matching, no label term); 'none' is a deprecated alias of 'kd'.",
                  "choices": [*ANNEALING_MODES, *DEPRECATED_ANNEALING_MODES]},
    )
    temperature: float = field(
        default=1.0,
        metadata={"help": "Softmax temperature of the teacher (bam) or of both models (kd). Unused by jafari."},
    )
    lambda_schedule: str = field(
        default="linear",
        metadata={"help": "How λ moves with training progress (bam): linear, cosine, constant, step or dann "
                  "(the sigmoid ramp 2/(1+exp(-10p)) - 1).",
                  "choices": sorted(schedules.SCHEDULES)},
    )
    lambda_start: float = field(default=0.0, metadata={"help": "λ at the start of training (bam; linear/cosine)."})
    lambda_end: float = field(default=1.0, metadata={"help": "λ at the end of training (bam; linear/cosine)."})
    lambda_progress: str = field(
        default="steps_done",
        metadata={"help": "The progress p that λ's schedule reads (bam). 'steps_done': p = k / N at optimizer step k "
                  "(0-based) of N, so the last step uses λ(1 - 1/N), never lambda_end; 'inclusive': p = k / (N - 1), "
                  "so the first step uses λ(0) = lambda_start and the last λ(1) = lambda_end.",
                  "choices": ["steps_done", "inclusive"]},
    )
    lambda_value: float = field(default=1.0, metadata={"help": "λ of the constant schedule (bam)."})
    lambda_milestones: list[float] | None = field(
        default=None, metadata={"help": "Step schedule: progress points in (0, 1) where λ changes (bam)."}
    )
    lambda_values: list[float] | None = field(
        default=None, metadata={"help": "Step schedule: λ before the first milestone, then after each one (bam)."}
    )
    phase1_fraction: float = field(
        default=0.5,
        metadata={"help": "Annealing-KD: fraction of the optimizer steps spent in phase 1 (logit matching)."},
    )
    max_temperature: int = field(
        default=7,
        metadata={"help": "Annealing-KD: τ_max, the number of annealing stages of phase 1 (Φ goes 1/τ_max → 1)."},
    )
    alpha: float = field(default=0.5, metadata={"help": "Weight of the hard-label CE (annealing='kd')."})
    beta: float = field(default=0.5, metadata={"help": "Weight of the soft KD term (annealing='kd')."})

    def __post_init__(self):
        super().__post_init__()
        if self.annealing in DEPRECATED_ANNEALING_MODES:
            new = DEPRECATED_ANNEALING_MODES[self.annealing]
            warnings.warn(f"annealing={self.annealing!r} is deprecated; use annealing={new!r} (the same Hinton KD).",
                          FutureWarning, stacklevel=2)
            self.annealing = new
        if self.annealing not in ANNEALING_MODES:
            raise ValueError(f"annealing must be one of {ANNEALING_MODES}, got {self.annealing!r}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.lambda_progress not in ("steps_done", "inclusive"):
            raise ValueError(f"lambda_progress must be 'steps_done' or 'inclusive', got {self.lambda_progress!r}.")
        for name in ("lambda_start", "lambda_end", "lambda_value"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if not 0.0 < self.phase1_fraction < 1.0:
            raise ValueError(f"phase1_fraction must be in (0, 1), got {self.phase1_fraction}.")
        if self.max_temperature < 1:
            raise ValueError(f"max_temperature must be >= 1, got {self.max_temperature}.")
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta == 0:
            raise ValueError(f"alpha and beta must be >= 0 and not both 0, got alpha={self.alpha}, beta={self.beta}.")
        _ = self.lambda_fn  # build it now so that a bad schedule fails before training

    @property
    def lambda_fn(self):
        """λ as a function of training progress p ∈ [0, 1]."""
        name = self.lambda_schedule
        if name in ("linear", "cosine"):
            return schedules.get_schedule(name, start=self.lambda_start, end=self.lambda_end)
        if name == "constant":
            return schedules.get_schedule(name, value=self.lambda_value)
        if name == "step":
            if not self.lambda_milestones or not self.lambda_values:
                raise ValueError("lambda_schedule='step' needs lambda_milestones and lambda_values.")
            if any(not 0.0 <= v <= 1.0 for v in self.lambda_values):
                raise ValueError(f"lambda_values must lie in [0, 1], got {self.lambda_values}.")
            return schedules.get_schedule(name, milestones=self.lambda_milestones, values=self.lambda_values)
        return schedules.get_schedule(name)


class AnnealingTrainer(DistillationTrainer):
    """A [`~transformers.Trainer`] that distils a frozen teacher into the student with teacher annealing, Annealing-KD
    or Hinton KD (see [`AnnealingArguments`]). Use it exactly like ``Trainer``, plus ``teacher_model`` (a model, a Hub
    id or a local path) and, if the teacher tokenizes differently, ``teacher_processing_class`` (the dataset then
    carries ``teacher_input_ids`` / ``teacher_attention_mask``, see ``distil_trainers.data.tokenize_for_models``).

    Logged: ``loss_ta`` and ``lambda`` (bam); ``loss_mse``, ``annealing_factor``, ``loss_ce`` and ``phase`` (jafari);
    ``loss_ce`` and ``loss_kd`` (kd); ``loss_mse`` (mse); with ``feature_matches`` also ``loss_feature`` (the weighted
    sum over the matches, before ``feature_loss_weight``) and ``loss_feature/<match>`` per match.

    Evaluation scores the objective training ends with (progress 1: λ at p = 1 for bam, the label CE of phase 2 for
    jafari), so ``eval_loss`` depends on the weights only, never on where the schedule stands.
    """

    _tag_names = ["distil-trainers", "knowledge-distillation", "teacher-annealing"]
    _name = "Teacher annealing"
    _paper = {
        "title": "BAM! Born-Again Multi-Task Networks for Natural Language Understanding",
        "id": "1907.04829",
        "citation": BAM_CITATION,
    }

    def __init__(self, model=None, teacher_model=None, args: AnnealingArguments | None = None, **kwargs):
        if args is None:
            args = AnnealingArguments(output_dir="tmp_trainer")
        if not isinstance(args, AnnealingArguments):
            raise TypeError(f"AnnealingTrainer needs AnnealingArguments, got {type(args).__name__}.")
        super().__init__(model=model, teacher_model=teacher_model, args=args, **kwargs)
        self.lambda_fn = args.lambda_fn

    def evaluating(self) -> bool:
        """Whether the loss is computed for evaluation (the model in eval mode): it then scores the objective that
        training ends with, progress 1 (λ = its value at p = 1 for bam, phase 2's label CE for jafari), so that
        ``eval_loss`` compares weights, not points of the schedule, and ``load_best_model_at_end`` with
        ``metric_for_best_model="loss"`` compares one objective throughout."""
        return not self.model.training

    def lambda_progress(self) -> float:
        """The progress λ's schedule reads: :meth:`training_progress` (``k / N`` at optimizer step ``k`` of ``N``),
        or ``k / (N - 1)`` with ``lambda_progress="inclusive"`` (the last step then uses ``lambda_end``); 1 when
        :meth:`evaluating`."""
        if self.evaluating():
            return 1.0
        if self.args.lambda_progress == "inclusive":
            return schedules.progress(self.state.global_step, self.state.max_steps or 0, inclusive=True)
        return self.training_progress()

    def distillation_loss(self, objective: Objective, student_logits, teacher_logits, labels,
                          task_ids=None) -> dict[str, Any]:
        """Add the configured method's terms to ``objective``; returns the scalars to log beside them (λ, ...)."""
        args = self.args
        p = 1.0 if self.evaluating() else self.training_progress()
        mask = losses.label_mask(labels)
        weights = self.batch_class_weights(student_logits, task_ids)
        if args.annealing == "bam":
            lam = self.lambda_fn(self.lambda_progress())
            objective.add("loss_ta", losses.teacher_annealing_loss(
                student_logits, teacher_logits, labels, lam, temperature=args.temperature, reduction="sum",
                class_weights=weights,
            ), LABELLED)
            return {"lambda": lam}
        if args.annealing == "jafari":
            if p < args.phase1_fraction:
                factor = schedules.annealing_kd_factor(p / args.phase1_fraction, args.max_temperature)
                objective.add("loss_mse", losses.logits_mse_loss(
                    student_logits, teacher_logits, scale=factor, mask=mask, reduction="sum"
                ), ROWS)
                return {"annealing_factor": factor, "phase": 1.0}
            objective.add("loss_ce", self.label_term(student_logits, labels, weights), LABELLED)
            return {"phase": 2.0}
        if args.annealing == "mse":
            objective.add("loss_mse", losses.logits_mse_loss(student_logits, teacher_logits, mask=mask,
                                                             reduction="sum"), ROWS)
            return {}
        kd = losses.kd_kl_loss(student_logits, teacher_logits, temperature=args.temperature, mask=mask, reduction="sum")
        if args.alpha != 0:  # without a label term, items without a gold label (UNLABELLED) train on the teacher alone
            objective.add("loss_ce", self.label_term(student_logits, labels, weights), LABELLED, args.alpha)
        objective.add("loss_kd", kd, ROWS, args.beta)
        return {}

    @staticmethod
    def label_term(logits, labels, class_weights=None) -> losses.LossSum:
        """The cross-entropy on the gold labels (UNLABELLED items count in no label term)."""
        return losses.cross_entropy_loss(logits, losses.gold_labels(labels), reduction="sum",
                                         class_weights=class_weights)

    @staticmethod
    def learns_from_labels(args: AnnealingArguments) -> bool:
        """Whether the method has a label term: all but Hinton KD with ``alpha = 0`` and logit matching (``mse``),
        which can distil a teacher into a student on unlabelled text."""
        return not (args.annealing == "mse" or (args.annealing == "kd" and args.alpha == 0))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError("AnnealingTrainer needs `labels` in every batch (rename your label column to 'labels').")
        student_inputs, teacher_inputs = self.split_inputs(inputs)
        task_ids = student_inputs.get(TASK_COLUMN)
        teacher_outputs = self.teacher_outputs(teacher_inputs)
        # the wrapped model Trainer gives: the student, and the feature projections inside the same forward
        outputs, extra = self.forward_student(
            model, {**student_inputs, **self.feature_output_kwargs},
            self.feature_inputs(teacher_outputs, student_inputs, labels),
        )
        objective = self.objective(model, labels, num_items_in_batch, task_ids)
        scalars = self.distillation_loss(objective, outputs.logits, teacher_outputs.logits, labels, task_ids)
        composites = self.add_feature_terms(objective, extra)
        self.record_objective(objective, scalars=scalars, composites=composites)
        loss = self.scale_for_devices(objective.loss(), num_items_in_batch)
        return (loss, self.strip_feature_outputs(outputs)) if return_outputs else loss
