"""What every distillation trainer shares: loading and freezing the teacher, label-space checks, per-component
loss logging, separate input columns per tokenizer, and single-task batches for multi-task training."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import seed_worker

from .. import losses
from ..data.multitask import SAMPLING_MODES, TASK_COLUMN, MultiTaskBatchSampler
from ..data.processing import TEACHER_PREFIX, TOKENIZER_COLUMNS, MultiTokenizerCollator
from ..features import FeatureDistiller, StudentFeatureDistillers, parse_feature_matches, parse_student_feature_matches
from ..teachers.cache import CACHE_ROW_COLUMN, CACHE_ROW_KEY, TeacherOutputs, resolve_teacher_outputs
from .inputs import (
    ROW_COLUMN,
    add_row_column,
    as_list,
    check_finite_teacher,
    check_has_labelled_items,
    check_teacher_reads_its_tokens,
    data_label_names,
    is_multitask,
    load_classifier_model,
    load_tokenizer,
    metrics_in_class_order,
    prepare_classification_dataset,
    same_tokenization,
    single_task_names,
    tokenizer_beside,
)

logger = logging.getLogger(__name__)


@dataclass
class DistillationArguments(TrainingArguments):
    """[`~transformers.TrainingArguments`] plus what every distillation trainer of this library understands."""

    teacher_model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `from_pretrained` when the teacher is given as a Hub id or a local path, "
            "e.g. '{\"dtype\": \"bfloat16\"}'. A JSON string is accepted on the command line."
        },
    )
    model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `from_pretrained` when the student(s) are given as Hub ids or local paths, "
            "e.g. '{\"dtype\": \"bfloat16\"}'. A JSON string is accepted on the command line."
        },
    )
    max_length: int | None = field(
        default=128,
        metadata={"help": "Truncation length when the trainer tokenises a raw-text dataset (a `text` column) itself."},
    )
    task_sampling: str = field(
        default="proportional",
        metadata={
            "help": "Multi-task training only: how the task of each batch is chosen. 'proportional' (every example once "
            "per epoch, tasks in proportion to their size) or 'temperature' (p_t ∝ n_t^(1/T)).",
            "choices": list(SAMPLING_MODES),
        },
    )
    task_sampling_temperature: float = field(
        default=2.0,
        metadata={"help": "Temperature T of task sampling when task_sampling='temperature' (1 = proportional)."},
    )
    feature_matches: list[dict] | str | None = field(
        default=None,
        metadata={
            "help": "Feature-level distillation terms added to the trainer's loss: a list of matches (a JSON string on "
            "the command line), e.g. '[{\"student_layer\": 2, \"teacher_layer\": 4, \"feature\": \"hidden\", "
            "\"loss\": \"kl\", \"weight\": 1.0}]'. feature: embeddings, hidden, cls or attention; loss: kl, "
            "similarity_kl, mse, cosine or attention_mse. Layers: 0 = embedding output, i = output of layer i. "
            "See distil_trainers.features. MutualLearningTrainer also takes matches per student: "
            "'{\"minilm\": [...], \"bert\": [...]}' (a list applies to every student)."
        },
    )
    feature_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Multiplies the feature loss (the weighted sum over feature_matches) in the total loss."},
    )
    save_projections: bool = field(
        default=False,
        metadata={
            "help": "Write the learned student->teacher projections of feature matching to projections.safetensors "
            "beside the saved student (save_model). They are never part of the student's own weights; training "
            "checkpoints always carry them so that resuming restores them."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("teacher_model_init_kwargs", "model_init_kwargs"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, json.loads(getattr(self, name)))
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs <= 0):
            raise ValueError(
                f"Nothing to train: max_steps={self.max_steps}, num_train_epochs={self.num_train_epochs}. Set "
                "max_steps > 0 or num_train_epochs > 0 (to only evaluate, call trainer.evaluate() without train())."
            )
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 (or None), got {self.max_length}.")
        # validated here (before training), kept as plain dicts so the arguments stay JSON-serialisable
        matches = parse_student_feature_matches(self.feature_matches)
        if isinstance(matches, dict):  # per student (MutualLearningTrainer)
            self.feature_matches = {name: [m.to_dict() for m in ms] for name, ms in matches.items()} or None
        else:
            self.feature_matches = [m.to_dict() for m in matches] or None
        if not self.feature_loss_weight >= 0:
            raise ValueError(f"feature_loss_weight must be >= 0, got {self.feature_loss_weight}.")
        if self.task_sampling not in SAMPLING_MODES:
            raise ValueError(f"task_sampling must be one of {SAMPLING_MODES}, got {self.task_sampling!r}.")
        if self.task_sampling_temperature <= 0:
            raise ValueError(f"task_sampling_temperature must be > 0, got {self.task_sampling_temperature}.")


# --------------------------------------------------------------------------------------------------------------------
# Models and label spaces
# --------------------------------------------------------------------------------------------------------------------


def load_classifier(
    model: str | os.PathLike | nn.Module, role: str, label_names: list[str] | None = None, **init_kwargs
) -> nn.Module:
    """Return ``model`` itself, or load it with ``AutoModelForSequenceClassification`` from a Hub id / local path
    (multi-task checkpoints of this library load the same way). A teacher must have a trained classification head; a
    student cut from a bare encoder gets a head over ``label_names`` (see
    :func:`~distil_trainers.trainers.inputs.load_classifier_model`)."""
    return load_classifier_model(model, role, label_names=label_names, require_head=role == "teacher", **init_kwargs)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def label_space(model: nn.Module) -> dict[str, int]:
    """``{task: num_labels}`` of a model: one entry per head of a multi-task model, a single ``"default"`` entry
    otherwise."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no `config`; cannot tell its label space.")
    tasks = getattr(config, "tasks", None)
    if tasks:
        return dict(tasks)
    return {"default": int(config.num_labels)}


def _label_names(model: nn.Module) -> list[str] | None:
    id2label = getattr(model.config, "id2label", None) or {}
    names = [id2label[i] for i in sorted(id2label)]
    if not names or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None  # transformers' placeholder names carry no information
    return names


def check_label_space(models: dict[str, nn.Module]) -> dict[str, int]:
    """Raise one clear error unless every model predicts the same classes (and, where both name their classes, the
    same names in the same order). Returns the common label space."""
    spaces = {name: label_space(m) for name, m in models.items()}
    reference_name, reference = next(iter(spaces.items()))
    for name, space in spaces.items():
        if space != reference:
            raise ValueError(
                f"Label spaces differ: {reference_name} predicts {reference} but {name} predicts {space}. "
                "Teacher and students must be classifiers over the same classes, in the same order; give the student "
                "num_labels/id2label from the teacher's config (or fine-tune the teacher on this dataset first)."
            )
    named = {name: _label_names(m) for name, m in models.items() if "default" in spaces[name]}
    named = {k: v for k, v in named.items() if v is not None}
    if len({tuple(v) for v in named.values()}) > 1:
        detail = "; ".join(f"{k}: {v}" for k, v in named.items())
        raise ValueError(f"Models name their classes differently ({detail}). Align config.id2label before distilling.")
    return reference


def check_dataset_labels(dataset: Any, space: dict[str, int], split: str, task_names: list[str] | None = None) -> None:
    """Raise if the dataset's labels do not fit the models' label space (checked before training starts)."""
    if not isinstance(dataset, datasets.Dataset):
        return
    column = next((c for c in ("labels", "label") if c in dataset.column_names), None)
    if column is None:
        return
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel) and "default" in space and feature.num_classes != space["default"]:
        raise ValueError(
            f"The {split} dataset has {feature.num_classes} classes {feature.names} but the models predict "
            f"{space['default']}."
        )
    columns = [column] + ([TASK_COLUMN] if TASK_COLUMN in dataset.column_names else [])
    frame = dataset.select_columns(columns).to_pandas()
    frame = frame[(frame[column] != -100) & (frame[column] != losses.UNLABELLED)]
    if frame.empty:
        return
    if "default" in space:
        groups = {"default": frame[column]}
    elif TASK_COLUMN in frame:
        names = task_names or list(space)
        groups = {names[int(t)]: g[column] for t, g in frame.groupby(TASK_COLUMN)}
    elif len(space) == 1:
        groups = {next(iter(space)): frame[column]}
    else:
        raise ValueError(
            f"The {split} dataset has no `{TASK_COLUMN}` column but the model has several tasks {list(space)}; "
            "build it with distil_trainers.data.concatenate_tasks."
        )
    for task, labels in groups.items():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= space[task]:
            where = "" if task == "default" else f" for task {task!r}"
            raise ValueError(
                f"The {split} dataset has labels in [{low}, {high}]{where} but the models predict {space[task]} "
                f"classes (0..{space[task] - 1})."
            )


def check_cached_label_space(cache: TeacherOutputs, students: dict[str, nn.Module]) -> dict[str, int]:
    """The students' common label space, which must be the cached teacher's: as many classes as the cached logits
    (single-task), or the same tasks in the same order with the same number of classes each (multi-task)."""
    space = check_label_space(students)
    cached = cache.tasks
    if cached is None:
        if "default" not in space:
            raise ValueError(
                f"The teacher-output cache holds a single-task teacher's logits but the students are multi-task "
                f"(tasks {space}). Build the cache from the multi-task teacher (a MultiTaskModel, or a "
                "TaskRoutedTeacher of one teacher per task) over datasets with a `task_ids` column."
            )
        if space["default"] != cache.num_labels:
            raise ValueError(
                f"The cached teacher logits have {cache.num_labels} classes but the students predict "
                f"{space['default']}."
            )
        return space
    if "default" in space:
        raise ValueError(
            f"The teacher-output cache holds a multi-task teacher's logits (tasks {cached}) but the students are "
            f"single-task classifiers ({space['default']} classes)."
        )
    for task, n in space.items():
        if task not in cached:
            raise ValueError(
                f"The students have task {task!r} but the teacher-output cache holds no logits for it (cached tasks: "
                f"{cached})."
            )
        if cached[task] != n:
            raise ValueError(
                f"Task {task!r}: the cached teacher logits have {cached[task]} classes but the students' {task!r} "
                f"head predicts {n}."
            )
    extra = [task for task in cached if task not in space]
    if extra:
        raise ValueError(
            f"The teacher-output cache holds tasks {extra} that the students do not have (students' tasks: "
            f"{list(space)}); task ids index the task list, so the teacher's and the students' tasks must be the same."
        )
    if list(cached) != list(space):
        raise ValueError(
            f"The teacher-output cache's task order {list(cached)} differs from the students' {list(space)}; task ids "
            "index the task list, so both must order their tasks the same way."
        )
    return space


def attach_cache(cache: TeacherOutputs, train_dataset: Any, eval_dataset: Any) -> tuple[Any, Any]:
    """Give the datasets the cache-row column (each example's cache row, looked up by its id)."""
    train_dataset = cache.attach(train_dataset, "train dataset")
    if isinstance(eval_dataset, dict):
        eval_dataset = {k: cache.attach(v, f"eval dataset {k!r}") for k, v in eval_dataset.items()}
    else:
        eval_dataset = cache.attach(eval_dataset, "eval dataset")
    return train_dataset, eval_dataset


def check_raw_texts(cache: TeacherOutputs, train_dataset: Any, eval_dataset: Any) -> None:
    """Compare the raw-text datasets' texts with those the cache was built on (before tokenising drops them)."""
    named = [("train dataset", train_dataset)]
    named += [(f"eval dataset {k!r}", v) for k, v in eval_dataset.items()] if isinstance(eval_dataset, dict) else [
        ("eval dataset", eval_dataset)]
    for what, ds in named:
        if isinstance(ds, datasets.Dataset) and "text" in ds.column_names and "id" in ds.column_names:
            cache.check_contents(ds, what)


def _is_tokenizer(obj: Any) -> bool:
    return isinstance(obj, PreTrainedTokenizerBase)


class _ZeroProjectionGrads(TrainerCallback):
    """Clears the projections' gradients after every optimizer step, as Trainer does for the model's."""

    def __init__(self, distiller: nn.Module):
        self.distiller = distiller

    def on_step_end(self, args, state, control, **kwargs):
        self.distiller.zero_grad(set_to_none=True)


def _use_eager_attention(model: nn.Module, role: str) -> None:
    """Attention maps are only returned by the eager attention implementation: switch to it (same results)."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current in (None, "eager"):
        return
    if not hasattr(model, "set_attn_implementation"):
        raise ValueError(
            f"Attention feature matches need the {role}'s attention maps; load it with attn_implementation='eager'."
        )
    logger.warning("Switching the %s from %s to eager attention (attention feature matches need the maps).", role, current)
    model.set_attn_implementation("eager")


# --------------------------------------------------------------------------------------------------------------------
# The trainer base
# --------------------------------------------------------------------------------------------------------------------


class TaskAwareTrainer(Trainer):
    """A plain [`~transformers.Trainer`] that also understands this library's datasets: it keeps the ``task_ids``
    column and prefixed per-model input columns (``teacher_input_ids``…) through ``remove_unused_columns``, and trains
    on single-task batches (:class:`~distil_trainers.data.multitask.MultiTaskBatchSampler`) when the training set mixes
    tasks. Use it to fine-tune or evaluate a :class:`~distil_trainers.models.MultiTaskModel` without distillation."""

    # Columns (besides the model's forward arguments) that must survive Trainer's `remove_unused_columns`.
    extra_input_prefixes: tuple[str, ...] = (TEACHER_PREFIX,)

    # ---- data ----------------------------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            keep = [TASK_COLUMN, CACHE_ROW_COLUMN, ROW_COLUMN]
            keep += [p + c for p in self.extra_input_prefixes for c in TOKENIZER_COLUMNS]
            self._signature_columns += [c for c in keep if c not in self._signature_columns]

    def get_train_dataloader(self) -> DataLoader:
        """Single-task batches when the training set mixes tasks (a ``task_ids`` column)."""
        dataset = self.train_dataset
        if not isinstance(dataset, datasets.Dataset) or TASK_COLUMN not in dataset.column_names:
            return super().get_train_dataloader()
        dataset = self._remove_unused_columns(dataset, description="training")
        batch_sampler = MultiTaskBatchSampler(
            dataset[TASK_COLUMN][:],
            batch_size=self._train_batch_size,
            sampling=getattr(self.args, "task_sampling", "proportional"),
            temperature=getattr(self.args, "task_sampling_temperature", 1.0),
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            drop_last=self.args.dataloader_drop_last,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            worker_init_fn=partial(
                seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
            ),
        )
        return self.accelerator.prepare(loader)



class HubPushMixin:
    """The Hub side of this library's trainers, for any [`~transformers.Trainer`] subclass (put it before the
    Trainer class in the bases): ``init_hf_repo`` only names the repository (no network before training),
    ``push_to_hub`` saves the student(s), writes this library's model card beside each and uploads them
    (:func:`distil_trainers.hub.push_trainer`), and the checkpoint pushes of ``args.hub_strategy`` go through
    :class:`distil_trainers.hub.CheckpointPusher`. Offline, a push raises one
    :class:`~distil_trainers.hub.HubPushError` after the local save."""

    # What the pushes made while training (``hub_strategy`` other than "end") put in the cards, and (mutual learning)
    # how they name the students' repositories; :meth:`push_to_hub` uses them too, its own arguments win. Set them
    # on the trainer before ``train()``, e.g. ``trainer.hub_card_kwargs = {"datasets": ["davidson"]}``.
    hub_card_kwargs: dict[str, Any] | None = None
    hub_student_pattern: str = "{repo_id}-{student}"
    # A ``huggingface_hub.HfApi`` to push with (default: a new ``HfApi()``).
    hub_api: Any = None

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Only names the repository (no network): the first push creates it, after a local save."""
        from ..hub import default_repo_id

        self.hub_model_id = default_repo_id(self.args)
        self.push_in_progress = None

    @property
    def hub_pusher(self):
        """The :class:`~distil_trainers.hub.CheckpointPusher` of this trainer (its warnings, failures and plans)."""
        from ..hub import CheckpointPusher

        if getattr(self, "_hub_pusher", None) is None:
            self._hub_pusher = CheckpointPusher()
        return self._hub_pusher

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Called by Trainer after each checkpoint save with ``push_to_hub=True``: push the checkpoint's student(s)
        with their card(s) as ``args.hub_strategy`` says (in the background; a failure warns once and training goes
        on). See :mod:`distil_trainers.hub`."""
        if self.args.hub_strategy == "end" or not self.is_world_process_zero():
            return
        self.hub_pusher.push(self, checkpoint_folder)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save, with ``training_args.bin`` written again without the Hub token and other credentials
        (:func:`distil_trainers.hub.save_training_args`): Trainer pickles the whole arguments, and checkpoints, that
        file included, are pushed with ``hub_strategy="checkpoint"`` / ``"all_checkpoints"``. The token in
        ``self.args`` stays for the pushes; resuming never reads the file."""
        from ..hub import save_training_args

        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save and os.path.isfile(os.path.join(output_dir, TRAINING_ARGS_NAME)):
            save_training_args(self.args, output_dir)

    def _finish_current_push(self) -> None:
        """Wait for the running checkpoint push (Trainer calls this at the end of ``train``)."""
        if getattr(self, "_hub_pusher", None) is not None:
            self._hub_pusher.wait()

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """Save the student(s) to ``args.output_dir``, write a model card beside each, and upload them to
        ``args.hub_model_id`` (mutual learning: one repository per student, ``student_pattern``, default
        :attr:`hub_student_pattern` ``"{repo_id}-{student}"``). ``kwargs`` go to
        :func:`distil_trainers.cards.card_context_from_trainer` (e.g. ``datasets=["davidson"]``), over
        :attr:`hub_card_kwargs`. A checkpoint push still running is waited for first. The upload is blocking. If it
        fails (offline…), one :class:`~distil_trainers.hub.HubPushError` says where the complete local save is.
        Returns the :class:`~distil_trainers.hub.UploadPlan`."""
        from ..hub import push_trainer

        self._finish_current_push()
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        return push_trainer(self, commit_message=commit_message, token=token, revision=revision, private=private,
                            **kwargs)


class DistillationTrainer(HubPushMixin, TaskAwareTrainer):
    """Base class of the distillation trainers. Subclasses implement ``compute_loss`` and record each loss component
    with :meth:`record_metric`; this class logs their averages under the component's name (``loss_ce``, ``lambda``…)
    at every logging step, and under ``eval_<name>`` after evaluation.

    Feature matching (``args.feature_matches``): the trainer builds a
    :class:`~distil_trainers.features.FeatureDistiller` (``self.feature_distiller``) holding the learned projections,
    asks both models for hidden states / attentions only when a match needs them (:attr:`feature_output_kwargs`,
    :meth:`teacher_outputs`), and a subclass's ``compute_loss`` adds :meth:`feature_loss`. The projections are not part
    of ``self.model``: they get their own optimizer parameter groups, are clipped together with the student, are saved
    to ``projections.safetensors`` beside checkpoints (and beside ``save_model`` output with ``save_projections``),
    never inside the student's weights. Under DDP the distiller is wrapped in its own ``DistributedDataParallel`` and
    the loss is computed in its ``forward``, so the projection gradients are all-reduced like the student's.
    """

    # Subclasses whose compute_loss adds `feature_loss` (AnnealingTrainer) keep this True.
    supports_feature_matching = True

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | str | None = None,
        teacher_model: PreTrainedModel | nn.Module | str | None = None,
        args: DistillationArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        teacher_processing_class=None,
        teacher_outputs: TeacherOutputs | str | os.PathLike | None = None,
        **kwargs,
    ):
        if model is None:
            raise ValueError(f"{type(self).__name__} needs the student `model` (a model, a Hub id or a local path).")
        if teacher_model is None and teacher_outputs is None:
            raise ValueError(
                f"{type(self).__name__} needs a `teacher_model` (a model, a Hub id or a local path) or precomputed "
                "`teacher_outputs` (distil_trainers.teachers.cache.precompute_teacher_outputs)."
            )
        teacher_kwargs = (getattr(args, "teacher_model_init_kwargs", None) or {}) if args is not None else {}
        student_kwargs = (getattr(args, "model_init_kwargs", None) or {}) if args is not None else {}
        max_length = getattr(args, "max_length", 128) if args is not None else 128
        if isinstance(processing_class, (str, os.PathLike)):
            processing_class = load_tokenizer(processing_class, "student")
        elif processing_class is None and isinstance(model, (str, os.PathLike)):
            processing_class = tokenizer_beside(model)  # a student given as a path brings its tokenizer
        if isinstance(teacher_processing_class, (str, os.PathLike)):
            teacher_processing_class = load_tokenizer(teacher_processing_class, "teacher")
        teacher = None
        if teacher_model is not None:
            teacher = freeze(load_classifier(teacher_model, "teacher", **teacher_kwargs))
        data_classes = data_label_names(train_dataset, eval_dataset)
        # The classes every model and dataset is brought to: the teacher's when it names them, else the data's.
        multitask = is_multitask(teacher) or is_multitask(model) or is_multitask(teacher_outputs)
        classes = None if multitask else single_task_names(teacher) or data_label_names(train_dataset, eval_dataset)
        model = load_classifier(model, "student", label_names=classes, **student_kwargs)
        classes = None if is_multitask(model) else classes or single_task_names(model)
        if teacher_outputs is not None:
            teacher_outputs = resolve_teacher_outputs(teacher_outputs, teacher)
            teacher = None  # the cache replaces the teacher: it is not kept in memory
            if getattr(args, "feature_matches", None):
                raise ValueError("feature_matches need the live teacher's hidden states; drop teacher_outputs.")

        student_tok = processing_class if _is_tokenizer(processing_class) else None
        teacher_tok = teacher_processing_class if _is_tokenizer(teacher_processing_class) else None
        if teacher is not None and teacher_tok is None:
            teacher_tok = tokenizer_beside(teacher_model)  # saved beside a teacher given as (or loaded from) a folder
        own_teacher_tok = teacher_tok is not None and not (student_tok is not None and same_tokenization(student_tok,
                                                                                                        teacher_tok))
        tokenizers = {"": student_tok} if student_tok is not None else {}
        if teacher is not None and own_teacher_tok:
            tokenizers[TEACHER_PREFIX] = teacher_tok
        if teacher_outputs is not None:  # texts are compared before tokenising drops them
            check_raw_texts(teacher_outputs, train_dataset, eval_dataset)
        train_dataset = prepare_classification_dataset(
            train_dataset, "train dataset", tokenizers, classes, max_length,
            allow_unlabelled=args is not None and not self.learns_from_labels(args),
        )
        eval_dataset = prepare_classification_dataset(eval_dataset, "eval dataset", tokenizers, classes, max_length)
        check_has_labelled_items(train_dataset, "train dataset")
        told_same = _is_tokenizer(teacher_processing_class) and not own_teacher_tok  # the caller says: one tokenizer
        if teacher is not None and not told_same:
            check_teacher_reads_its_tokens(teacher, model, student_tok, teacher_tok if own_teacher_tok else None,
                                           [train_dataset, *as_list(eval_dataset)])
        if teacher_outputs is not None:
            train_dataset, eval_dataset = attach_cache(teacher_outputs, train_dataset, eval_dataset)
        self._train_ids = None
        if teacher is not None:
            train_dataset, self._train_ids = add_row_column(train_dataset)

        if teacher is not None:
            space = check_label_space({"teacher": teacher, "student": model})
        else:
            space = check_cached_label_space(teacher_outputs, {"student": model})
        task_names = list(space) if "default" not in space else None
        check_dataset_labels(train_dataset, space, "train", task_names)
        eval_sets = eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset}
        for name, ds in eval_sets.items():
            check_dataset_labels(ds, space, name, task_names)

        self._input_prep = {"tokenizers": tokenizers, "label_names": classes, "max_length": max_length}
        if "compute_metrics" in kwargs:
            kwargs["compute_metrics"] = metrics_in_class_order(kwargs["compute_metrics"], classes, data_classes)
        if data_collator is None and student_tok is not None:
            data_collator = MultiTokenizerCollator({"": student_tok, TEACHER_PREFIX: teacher_tok or student_tok})

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.teacher_processing_class = teacher_processing_class
        self._setup_distillation(teacher, space, teacher_outputs)

    def _setup_distillation(
        self, teacher: nn.Module | None, space: dict[str, int], teacher_outputs: TeacherOutputs | None = None
    ) -> None:
        """What every distillation trainer does once ``Trainer.__init__`` has run."""
        self.teacher_cache = teacher_outputs
        # Our losses normalise by `num_items_in_batch` (the labelled examples of the whole accumulated batch), so the
        # Trainer must count them and must not divide the loss by the accumulation steps again.
        self.model_accepts_loss_kwargs = True
        self.label_space = space
        self._setup_feature_distiller(teacher)
        self.teacher = self._prepare_frozen(teacher) if teacher is not None else None
        self._metric_sums: dict[str, dict[str, float]] = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._metric_counts: dict[str, dict[str, float]] = {"train": defaultdict(float), "eval": defaultdict(float)}

    @staticmethod
    def learns_from_labels(args: DistillationArguments) -> bool:
        """Whether the loss has a label term. Without one, a training set without labels (no label column) is
        accepted: every example is :data:`~distil_trainers.losses.UNLABELLED` and learns from the teacher alone."""
        return True

    # ---- datasets given later ------------------------------------------------------------------------------------

    def prepare_dataset(self, dataset: Any, what: str = "dataset", require_labels: bool = True) -> Any:
        """A dataset given after construction (``evaluate``, ``predict``) made ready as the training data was: raw
        text tokenised for every model, labels encoded in the models' class order, the teacher-output cache rows."""
        prep = getattr(self, "_input_prep", None)
        known = as_list(getattr(self, "eval_dataset", None))
        if dataset is None or prep is None or isinstance(dataset, str) or any(dataset is k for k in known):
            return dataset  # the trainer's own eval sets (Trainer passes them, or their names, back in) are ready
        dataset = prepare_classification_dataset(dataset, what, require_labels=require_labels, **prep)
        if self.teacher_cache is not None:
            if isinstance(dataset, dict):
                dataset = {k: self.teacher_cache.attach(v, f"{what} {k!r}") for k, v in dataset.items()}
            else:
                dataset = self.teacher_cache.attach(dataset, what)
        return dataset

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Trainer's ``evaluate``; a raw-text ``eval_dataset`` is tokenised and its labels encoded first."""
        eval_dataset = self.prepare_dataset(eval_dataset, "eval dataset")
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """Trainer's ``predict``; a raw-text ``test_dataset`` (labels optional) is tokenised first."""
        test_dataset = self.prepare_dataset(test_dataset, "test dataset", require_labels=False)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    # ---- teacher -------------------------------------------------------------------------------------------------

    def _prepare_frozen(self, model: nn.Module) -> nn.Module:
        """Place a frozen model with the accelerator: on the device, never wrapped in DDP; sharded like the student
        under DeepSpeed ZeRO-3 / FSDP (TRL's helpers, as its GKD and DPO trainers do for their frozen models)."""
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            return prepare_deepspeed(model, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models import prepare_fsdp

            return prepare_fsdp(model, self.accelerator)
        return self.accelerator.prepare_model(model, evaluation_mode=True)

    # ---- feature matching ----------------------------------------------------------------------------------------

    def _setup_feature_distiller(self, teacher: nn.Module) -> None:
        self.feature_distiller: FeatureDistiller | StudentFeatureDistillers | None = None
        self._feature_module: nn.Module | None = None
        spec = getattr(self.args, "feature_matches", None)
        if not spec:
            return
        if not self.supports_feature_matching:
            raise ValueError(
                f"{type(self).__name__} does not support feature_matches; use AnnealingTrainer (any method) or "
                "MutualLearningTrainer for feature-level distillation."
            )
        student = self.accelerator.unwrap_model(self.model)
        distiller, students = self._build_feature_distiller(spec, student, teacher)
        if distiller.needs_attentions:
            for role, model in (*students, ("teacher", teacher)):
                _use_eager_attention(model, role)
        reference = next(student.parameters())
        distiller.to(device=reference.device, dtype=reference.dtype if reference.is_floating_point() else None)
        has_params = any(p.requires_grad for p in distiller.parameters())
        if has_params and (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            raise ValueError(
                "Feature matches with learned projections (student and teacher hidden sizes differ) are not supported "
                "under DeepSpeed or FSDP. Use matches that need no projection (equal hidden sizes, or "
                "loss='similarity_kl' / feature='attention'), or train with DDP."
            )
        self.feature_distiller = distiller
        if has_params:
            # Trainer zeroes the gradients of `self.model` after each optimizer step; the projections' need the same.
            self.add_callback(_ZeroProjectionGrads(distiller))
        # Under DDP the projections need all-reduced gradients: the distiller gets its own DDP wrapper and the loss is
        # computed in its forward (parameters used outside a DDP forward would break find_unused_parameters).
        if has_params and self.accelerator.num_processes > 1:
            self._feature_module = self.accelerator.prepare_model(distiller)
        else:
            self._feature_module = distiller

    def _build_feature_distiller(
        self, spec: Any, student: nn.Module, teacher: nn.Module
    ) -> tuple[FeatureDistiller | StudentFeatureDistillers, list[tuple[str, nn.Module]]]:
        """The feature-matching module for ``spec`` and the ``(role, model)`` students it reads features from."""
        if isinstance(parse_student_feature_matches(spec), dict):
            raise ValueError(
                f"feature_matches given per student ({sorted(spec)}) only apply to MutualLearningTrainer; "
                f"{type(self).__name__} has one student: pass a list of matches."
            )
        return FeatureDistiller(parse_feature_matches(spec), student, teacher), [("student", student)]

    @property
    def feature_output_kwargs(self) -> dict[str, bool]:
        """``output_hidden_states`` / ``output_attentions`` flags the feature matches need ({} without matches)."""
        return self.feature_distiller.output_kwargs if self.feature_distiller is not None else {}

    def projection_parameters(self) -> list[nn.Parameter]:
        if self.feature_distiller is None:
            return []
        return [p for p in self.feature_distiller.parameters() if p.requires_grad]

    def feature_loss(
        self,
        student_outputs: Any,
        teacher_outputs: Any,
        student_inputs: dict[str, Any],
        labels: torch.Tensor | None,
        num_items_in_batch=None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted feature loss and its components to log (``loss_feature`` and ``loss_feature/<match>``).

        Tokens count where the student's attention mask is 1, and only in labelled sequences, so the loss is an
        average over the same items as the label losses and ``num_items_in_batch`` normalises it the same way."""
        mask = student_inputs.get("attention_mask")
        if mask is None:  # no padding: every token of (input_ids or inputs_embeds) is valid
            reference = student_inputs.get("input_ids", student_inputs.get("inputs_embeds"))
            mask = torch.ones(reference.shape[:2], dtype=torch.bool, device=reference.device)
        mask = mask.bool()
        if labels is not None and labels.dim() == 1:
            mask = mask & losses.label_mask(labels).to(mask.device)[:, None]
        total, parts = self._feature_module(student_outputs, teacher_outputs, mask, num_items_in_batch)
        logged = {"loss_feature": total, **{f"loss_feature/{name}": value for name, value in parts.items()}}
        return total, logged

    def strip_feature_outputs(self, outputs: Any) -> Any:
        """The student's outputs without the hidden states / attentions requested for feature matching (so that
        evaluation does not gather them as predictions)."""
        requested = [k.replace("output_", "") for k in self.feature_output_kwargs]
        if not requested or not hasattr(outputs, "items"):
            return outputs
        kept = {k: v for k, v in outputs.items() if k not in requested}
        try:
            return type(outputs)(**kept)
        except TypeError:
            return kept

    def create_optimizer(self, model=None):
        """Trainer's optimizer, plus parameter groups for the feature-matching projections (weight decay on their
        weights, none on their biases, the same learning rate and schedule as the student)."""
        optimizer = super().create_optimizer(model)
        params = self.projection_parameters()
        if params and optimizer is not None:
            present = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if not any(id(p) in present for p in params):
                named = [(n, p) for n, p in self.feature_distiller.named_parameters() if p.requires_grad]
                for decay, group in ((self.args.weight_decay, [p for n, p in named if not n.endswith("bias")]),
                                     (0.0, [p for n, p in named if n.endswith("bias")])):
                    if group:
                        optimizer.add_param_group({"params": group, "weight_decay": decay})
        return optimizer

    def _clip_grad_norm(self, model):
        """Clip the student's and the projections' gradients together (as one model)."""
        params = self.projection_parameters()
        if not params or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._clip_grad_norm(model)
        return self.accelerator.clip_grad_norm_(itertools.chain(model.parameters(), params), self.args.max_grad_norm)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The student only (``model.safetensors`` holds its own weights); the projections go to
        ``projections.safetensors`` beside it in training checkpoints, and with ``args.save_projections``."""
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.feature_distiller is None or not self.args.should_save:
            return
        if _internal_call or getattr(self.args, "save_projections", False):
            self.feature_distiller.save_projections(output_dir if output_dir is not None else self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        self._load_projections(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        self._load_projections(self.state.best_model_checkpoint)

    def _load_projections(self, checkpoint: str) -> None:
        if self.projection_parameters() and not self.feature_distiller.load_projections(checkpoint):
            logger.warning("No projections.safetensors in %s: the projections start afresh.", checkpoint)

    @staticmethod
    def split_inputs(inputs: dict[str, Any], prefix: str = TEACHER_PREFIX) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split a batch into the student's inputs and the inputs of the model whose columns carry ``prefix`` (prefix
        stripped). Without such columns both models share the student's inputs (same tokenizer)."""
        inputs = dict(inputs)
        rows = inputs.pop(ROW_COLUMN, None)  # the examples' rows (training set): only read when an error names them
        own = {k: v for k, v in inputs.items() if not k.startswith(prefix)}
        other = {k[len(prefix) :]: v for k, v in inputs.items() if k.startswith(prefix)}
        if not other:
            other = dict(own)
        elif TASK_COLUMN in own:
            other[TASK_COLUMN] = own[TASK_COLUMN]
        if rows is not None:
            other[ROW_COLUMN] = rows
        return own, other

    def cached_teacher_logits(self, teacher_inputs: dict[str, Any]) -> torch.Tensor:
        """The cached logits of the batch's examples (its ``teacher_cache_row`` column, looked up by id); for a
        multi-task cache, those of the batch's task head (``task_ids``; a batch must hold one task)."""
        rows = teacher_inputs.get(CACHE_ROW_KEY)
        if rows is None:
            raise ValueError(
                f"The batch has no `{CACHE_ROW_COLUMN}` column; with teacher_outputs, datasets must go through the "
                "trainer (which adds it) and a custom data_collator must keep integer columns."
            )
        device = next(iter(v for v in teacher_inputs.values() if torch.is_tensor(v))).device
        return self.teacher_cache.logits_at(rows, teacher_inputs.get(TASK_COLUMN)).to(device)

    @torch.no_grad()
    def teacher_logits(self, teacher_inputs: dict[str, Any]) -> torch.Tensor:
        teacher_inputs = dict(teacher_inputs)
        rows = teacher_inputs.pop(ROW_COLUMN, None)
        if self.teacher_cache is not None:
            logits = self.cached_teacher_logits(teacher_inputs)
            self._check_teacher_logits(logits, rows)
            return logits
        self.teacher.eval()
        logits = self.teacher(**teacher_inputs).logits
        self._check_teacher_logits(logits, rows)
        return logits

    def _check_teacher_logits(self, logits: torch.Tensor, rows: torch.Tensor | None) -> None:
        ids = getattr(self, "_train_ids", None) if rows is not None else None
        check_finite_teacher(logits, rows, ids, self.state.global_step)

    @torch.no_grad()
    def teacher_outputs(self, teacher_inputs: dict[str, Any]) -> Any:
        """The teacher's outputs, with hidden states / attentions when the feature matches need them. Non-finite
        logits of a live teacher stop training (:class:`FloatingPointError` naming the step and the examples)."""
        teacher_inputs = dict(teacher_inputs)
        rows = teacher_inputs.pop(ROW_COLUMN, None)
        if self.teacher_cache is not None:
            logits = self.cached_teacher_logits(teacher_inputs)
            self._check_teacher_logits(logits, rows)
            return SequenceClassifierOutput(logits=logits)
        self.teacher.eval()
        outputs = self.teacher(**teacher_inputs, **self.feature_output_kwargs)
        self._check_teacher_logits(outputs.logits, rows)
        return outputs

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Trainer's estimate (6 × tokens × non-embedding parameters) with the parameter count taken once: Trainer
        recounts every parameter at every step, a measurable share of a small student's step."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if getattr(self, "_flos_parameters", None) is None:
            self._flos_parameters = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main_input].numel() * self._flos_parameters

    # ---- progress and metrics ------------------------------------------------------------------------------------

    def training_progress(self) -> float:
        """Fraction of optimizer steps done, in [0, 1] (constant within one accumulated step)."""
        max_steps = self.state.max_steps or 0
        return min(max(self.state.global_step / max_steps, 0.0), 1.0) if max_steps > 0 else 0.0

    def record_metric(self, name: str, value: torch.Tensor | float, count: torch.Tensor | float = 1.0) -> None:
        """Accumulate ``value`` (an average over ``count`` items) for logging under ``name``."""
        mode = "train" if self.model.training else "eval"
        value = float(value.detach().float().item()) if torch.is_tensor(value) else float(value)
        count = float(count.item()) if torch.is_tensor(count) else float(count)
        self._metric_sums[mode][name] += value * count
        self._metric_counts[mode][name] += count

    def record_components(
        self, components: dict[str, Any], labels: torch.Tensor, num_items_in_batch=None, prefix: str = ""
    ) -> None:
        """Record loss components computed with ``num_items_in_batch`` normalisation (and other scalars such as λ).

        Losses are turned back into this micro-batch's per-item means. In training each micro-batch is weighted by
        its share of the optimizer step's labelled items, so every optimizer step counts once over a logging window,
        exactly as Trainer averages ``loss`` (the logged components then add up to the logged ``loss``). In
        evaluation they are averaged over the labelled items."""
        count = float(losses.label_mask(labels).sum())
        if num_items_in_batch is not None:
            total = float(num_items_in_batch)
            rescale = total / max(count, 1.0)
            weight = count / max(total, 1.0) if self.model.training else count
        else:
            rescale, weight = 1.0, count
        for name, value in components.items():
            self.record_metric(prefix + name, value * rescale if name.startswith("loss") else value, weight)

    def _flush_metrics(self, mode: str) -> dict[str, float]:
        """Averages since the last flush, over the items of every process (all ranks call this: in ``log`` and
        after the evaluation loop)."""
        sums, counts = self._metric_sums[mode], self._metric_counts[mode]
        keys = sorted(sums)
        if self.accelerator.num_processes > 1 and keys:
            packed = torch.tensor([[sums[k], counts[k]] for k in keys], dtype=torch.float64, device=self.args.device)
            packed = self.accelerator.reduce(packed, reduction="sum").cpu()
            out = {k: float(packed[i, 0] / packed[i, 1]) for i, k in enumerate(keys) if packed[i, 1] > 0}
        else:
            out = {k: sums[k] / counts[k] for k in keys if counts[k] > 0}
        sums.clear()
        counts.clear()
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log; evaluation metrics are added in evaluation_loop
            logs = {**logs, **self._flush_metrics("train")}
        super().log(logs, start_time)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        self._flush_metrics("eval")
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only=prediction_loss_only, ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        for name, value in self._flush_metrics("eval").items():
            output.metrics[f"{metric_key_prefix}_{name}"] = value
        return output

    def scale_for_devices(self, loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """Under data parallelism with ``average_tokens_across_devices`` the count is global while DDP averages the
        per-rank gradients, so the per-rank loss is multiplied by the number of processes (as Trainer does)."""
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            return loss * self.accelerator.num_processes
        return loss
