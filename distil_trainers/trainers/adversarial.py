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

import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import TrainerCallback

from .. import losses, schedules
from ..data.processing import TEACHER_PREFIX, MultiTokenizerCollator
from ..models.discriminator import LANGUAGE_COLUMN, LanguageDiscriminator, pooled_features
from .annealing import AnnealingArguments, AnnealingTrainer
from .base import TaskAwareTrainer, _is_tokenizer, check_dataset_labels, check_label_space, load_classifier
from .inputs import (
    check_has_labelled_items,
    data_label_names,
    is_multitask,
    prepare_classification_dataset,
    single_task_names,
)

logger = logging.getLogger(__name__)

DISCRIMINATOR_NAME = "discriminator.safetensors"
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


class _ZeroDiscriminatorGrads(TrainerCallback):
    def __init__(self, module: nn.Module):
        self.module = module

    def on_step_end(self, args, state, control, **kwargs):
        self.module.zero_grad(set_to_none=True)


class AdversarialTrainer(AnnealingTrainer):
    """Teacher annealing / Annealing-KD / Hinton KD (with a ``teacher_model`` or precomputed ``teacher_outputs``) or
    label cross-entropy (with neither), plus
    an adversarial language discriminator on the student's pooled output.

    Batches carry ``language_ids`` (``-100`` where unknown); the discriminator loss is skipped for batches without
    it (evaluation on one language). Logged: the method's components (``loss_ce`` without a teacher),
    ``loss_adversarial`` (the discriminator's cross-entropy, before ``adversarial_weight``) and
    ``discriminator_accuracy`` and ``reversal_scale`` (the factor of the gradient-reversal layer, which
    ``reversal_schedule`` may ramp up from 0 as in DANN; a function of the step, so a resumed run goes on exactly).
    The discriminator (``trainer.discriminator``) is not part of the model: it has its own optimizer parameter groups,
    is clipped with the model, saved to ``discriminator.safetensors`` in checkpoints and never written into the
    model's weights."""

    extra_input_prefixes = (TEACHER_PREFIX,)

    def __init__(self, model=None, teacher_model=None, args: AdversarialArguments | None = None, **kwargs):
        if args is None:
            args = AdversarialArguments(output_dir="tmp_trainer")
        if not isinstance(args, AdversarialArguments):
            raise TypeError(f"AdversarialTrainer needs AdversarialArguments, got {type(args).__name__}.")
        if teacher_model is not None or kwargs.get("teacher_outputs") is not None:
            super().__init__(model=model, teacher_model=teacher_model, args=args, **kwargs)
        else:
            self._init_without_teacher(model, args, **kwargs)
        self._setup_discriminator()

    # ---- construction --------------------------------------------------------------------------------------------

    def _init_without_teacher(
        self,
        model,
        args,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        teacher_processing_class=None,
        **kwargs,
    ) -> None:
        """The base class's checks and set-up, for a student trained on its labels alone."""
        if model is None:
            raise ValueError("AdversarialTrainer needs the `model` (a model, a Hub id or a local path).")
        if args.feature_matches:
            raise ValueError("feature_matches need a teacher_model; give one or drop the matches.")
        max_length = args.max_length
        classes = data_label_names(train_dataset, eval_dataset)
        model = load_classifier(model, "model", label_names=classes, **(args.model_init_kwargs or {}))
        classes = None if is_multitask(model) else single_task_names(model) or classes
        tokenizers = {"": processing_class} if _is_tokenizer(processing_class) else {}
        self._input_prep = {"tokenizers": tokenizers, "label_names": classes, "max_length": max_length, "role": "model"}
        train_dataset = prepare_classification_dataset(train_dataset, "train dataset", **self._input_prep)
        eval_dataset = prepare_classification_dataset(eval_dataset, "eval dataset", **self._input_prep)
        check_has_labelled_items(train_dataset, "train dataset")
        self._train_ids = None
        space = check_label_space({"model": model})
        task_names = list(space) if "default" not in space else None
        check_dataset_labels(train_dataset, space, "train", task_names)
        eval_sets = eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset}
        for name, ds in eval_sets.items():
            check_dataset_labels(ds, space, name, task_names)
        if data_collator is None and _is_tokenizer(processing_class):
            data_collator = MultiTokenizerCollator({"": processing_class})
        TaskAwareTrainer.__init__(
            self,
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.teacher_processing_class = None
        self.lambda_fn = args.lambda_fn
        self._setup_distillation(None, space)

    def _prepare_frozen(self, model):
        return None if model is None else super()._prepare_frozen(model)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            if LANGUAGE_COLUMN not in self._signature_columns:
                self._signature_columns.append(LANGUAGE_COLUMN)

    def _setup_discriminator(self) -> None:
        args = self.args
        self.discriminator: LanguageDiscriminator | None = None
        self._discriminator_module: nn.Module | None = None
        self.reversal_fn = args.reversal_fn
        if args.adversarial_weight == 0:
            return
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError("The language discriminator is not supported under DeepSpeed or FSDP; train with DDP.")
        student = self.accelerator.unwrap_model(self.model)
        config = getattr(student, "config", None)
        encoder_config = getattr(config, "encoder", None) or config
        hidden_size = getattr(encoder_config, "hidden_size", None)
        if hidden_size is None:
            raise ValueError(
                "Cannot tell the model's hidden size (config.hidden_size) for the language discriminator."
            )
        reference = next(student.parameters())
        self.discriminator = LanguageDiscriminator(
            hidden_size,
            num_languages=args.num_languages,
            intermediate_size=args.discriminator_hidden_size,
            dropout=args.discriminator_dropout,
            reversal_scale=args.reversal_scale,
        ).to(device=reference.device, dtype=reference.dtype)
        self.add_callback(_ZeroDiscriminatorGrads(self.discriminator))
        # Under DDP the discriminator's gradients must be all-reduced: it gets its own DDP wrapper and its loss is
        # computed in its forward.
        if self.accelerator.num_processes > 1:
            self._discriminator_module = self.accelerator.prepare_model(self.discriminator)
        else:
            self._discriminator_module = self.discriminator

    # ---- loss ----------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError(
                "AdversarialTrainer needs `labels` in every batch (rename your label column to 'labels')."
            )
        languages = inputs.pop(LANGUAGE_COLUMN, None)
        student_inputs, teacher_inputs = self.split_inputs(inputs)
        adversarial = self._discriminator_module is not None and languages is not None
        output_kwargs = dict(self.feature_output_kwargs)
        if adversarial:
            output_kwargs["output_hidden_states"] = True
        outputs = model(**student_inputs, **output_kwargs)

        if self.teacher is None and self.teacher_cache is None:
            loss = losses.cross_entropy_loss(outputs.logits, labels, num_items_in_batch=num_items_in_batch)
            logged: dict[str, Any] = {"loss_ce": loss}
        else:
            teacher_outputs = self.teacher_outputs(teacher_inputs)
            loss, logged = self.distillation_loss(outputs.logits, teacher_outputs.logits, labels, num_items_in_batch)
            if self.feature_distiller is not None:
                feature_loss, feature_logged = self.feature_loss(
                    outputs, teacher_outputs, student_inputs, labels, num_items_in_batch
                )
                loss = loss + self.args.feature_loss_weight * feature_loss
                logged.update(feature_logged)

        if adversarial:
            if model.training:
                self.discriminator.reversal_scale = self.reversal_fn(self.training_progress())
            result = self._discriminator_module(pooled_features(outputs), languages, num_items_in_batch)
            loss = loss + self.args.adversarial_weight * result.loss
            logged["loss_adversarial"] = result.loss
            logged["reversal_scale"] = self.discriminator.reversal_scale
            self.record_metric("discriminator_accuracy", result.accuracy, result.count)

        self.record_components(logged, labels, num_items_in_batch)
        loss = self.scale_for_devices(loss, num_items_in_batch)
        if not return_outputs:
            return loss
        outputs = self.strip_feature_outputs(outputs)
        if adversarial and "output_hidden_states" not in self.feature_output_kwargs and hasattr(outputs, "items"):
            kept = {k: v for k, v in outputs.items() if k != "hidden_states"}
            outputs = type(outputs)(**kept)
        return loss, outputs

    # ---- optimizer, clipping, checkpoints ------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.discriminator is None or optimizer is None:
            return optimizer
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        named = [(n, p) for n, p in self.discriminator.named_parameters() if id(p) not in present]
        lr = self.args.discriminator_learning_rate or self.args.learning_rate
        for decay, group in (
            (self.args.weight_decay, [p for n, p in named if not n.endswith("bias")]),
            (0.0, [p for n, p in named if n.endswith("bias")]),
        ):
            if group:
                optimizer.add_param_group({"params": group, "weight_decay": decay, "lr": lr})
        return optimizer

    def _clip_grad_norm(self, model):
        if self.discriminator is None:
            return super()._clip_grad_norm(model)
        params = itertools.chain(model.parameters(), self.projection_parameters(), self.discriminator.parameters())
        return self.accelerator.clip_grad_norm_(params, self.args.max_grad_norm)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.discriminator is None or not self.args.should_save:
            return
        if _internal_call or self.args.save_discriminator:
            from safetensors.torch import save_file

            directory = output_dir if output_dir is not None else self.args.output_dir
            os.makedirs(directory, exist_ok=True)
            state = {k: v.detach().contiguous().cpu() for k, v in self.discriminator.state_dict().items()}
            save_file(state, os.path.join(directory, DISCRIMINATOR_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        if self.discriminator is None:
            return
        path = os.path.join(resume_from_checkpoint, DISCRIMINATOR_NAME)
        if os.path.isfile(path):
            from safetensors.torch import load_file

            self.discriminator.load_state_dict(load_file(path))
        else:
            logger.warning("No %s in %s: the discriminator starts afresh.", DISCRIMINATOR_NAME, resume_from_checkpoint)
