"""DistillationTrainer: what every distillation trainer shares. One constructor path with overridable hooks (loading
and freezing the teacher, the student(s), per-model input columns, label-space checks, the teacher-output cache, the
extra trainable modules), one model for Trainer (the student and its extra modules, see
:mod:`~distil_trainers.trainers.wrapper`), the teacher's outputs, and per-component loss logging.

Also importable from here: :class:`~distil_trainers.trainers.arguments.DistillationArguments`,
:class:`~distil_trainers.trainers.task_aware.TaskAwareTrainer` and the label-space checks of
:mod:`~distil_trainers.trainers.labels`."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.trainer_utils import enable_full_determinism, set_seed

from .. import losses
from ..data.multitask import TASK_COLUMN
from ..data.processing import TEACHER_PREFIX, MultiTokenizerCollator
from ..features import FeatureDistiller, StudentFeatureDistillers, parse_feature_matches, parse_student_feature_matches
from ..hub import HubMixin
from ..teachers.cache import CACHE_ROW_COLUMN, CACHE_ROW_KEY, TeacherOutputs, resolve_teacher_outputs
from .arguments import DistillationArguments, refuse_data_parallel  # noqa: F401  (imported from here too)
from .citations import HINTON_CITATION
from .class_weights import class_weight_table
from .inputs import (
    ROW_COLUMN,
    add_row_column,
    as_list,
    check_finite_teacher,
    check_has_labelled_items,
    check_teacher_reads_its_tokens,
    data_label_names,
    is_multitask,
    load_tokenizer,
    metrics_in_class_order,
    prepare_classification_dataset,
    same_tokenization,
    single_task_names,
    tokenizer_beside,
)
from .labels import (  # noqa: F401  (label_space, check_label_space, freeze, load_classifier: imported from here too)
    attach_cache,
    check_cached_label_space,
    check_dataset_labels,
    check_label_space,
    check_raw_texts,
    freeze,
    label_space,
    load_classifier,
)
from .objective import ROWS, Objective
from .task_aware import TaskAwareTrainer
from .wrapper import DistillationModel, has_trainable_parameters

logger = logging.getLogger(__name__)


def _is_tokenizer(obj: Any) -> bool:
    return isinstance(obj, PreTrainedTokenizerBase)


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


class DistillationTrainer(HubMixin, TaskAwareTrainer):
    """Base class of the distillation trainers. Subclasses implement ``compute_loss`` and record each loss component
    with :meth:`record_metric`; this class logs their averages under the component's name (``loss_ce``, ``lambda``…)
    at every logging step, and under ``eval_<name>`` after evaluation.

    **One constructor.** ``__init__`` loads the teacher and the student(s), brings the datasets to the models (raw
    text tokenised per model, labels in the models' class order), checks label spaces, attaches the teacher-output
    cache and builds the extra trainable modules, then runs ``Trainer.__init__``. A subclass changes a step by
    overriding its hook, never by copying the constructor:

    - :meth:`check_models_given`: which of ``model`` / ``teacher_model`` / ``teacher_outputs`` are required;
    - :meth:`load_students`: the trainable student module from ``model`` (MutualLearningTrainer: ``{name: model}``
      becomes a :class:`~distil_trainers.trainers.mutual.StudentGroup`) and :meth:`student_models`, its
      ``{role: model}`` for checks and messages;
    - :meth:`input_tokenizers`: ``{column prefix: tokenizer}`` that raw-text datasets are tokenised with, and
      :meth:`check_tokenization`: refuse prepared datasets that a model would misread;
    - :meth:`check_label_spaces`: the common label space of the teacher (or its cached outputs) and the students;
    - :meth:`attach_teacher_outputs`: the columns the teacher side reads (cache rows, example rows);
    - :meth:`build_extra_modules`: ``{name: module}`` trained beside the student (``"features"``: the feature
      projections; AdversarialTrainer adds ``"discriminator"``);
    - :meth:`default_data_collator`, :meth:`wrap_compute_metrics`, and :meth:`parameter_owner` (per-module learning
      rates in the one optimizer).

    **One model for Trainer.** When an extra module has trainable parameters, ``self.model`` is a
    :class:`~distil_trainers.trainers.wrapper.DistillationModel` holding the student and those modules, so Trainer's
    own optimizer (weight decay on weights, not on biases and norms), gradient clipping, ``zero_grad``, DDP / FSDP /
    DeepSpeed wrapping and checkpoints serve them; otherwise it is the student itself. :attr:`student` is always the
    student (``trainer.model`` delegates ``config``, ``save_pretrained``… to it). The extra modules run inside the
    wrapper's forward (:meth:`forward_student`), so DDP sees their parameters used. Under DeepSpeed and FSDP they are
    parameters of the one wrapped model like the student's (partitioned or sharded, reduced, clipped and stored in
    the engine's checkpoints; ``save_model`` receives the gathered state and splits it), which is why feature
    projections and the discriminator are accepted there (this machine has no GPU: that path is not run by the tests).

    **Saving.** ``save_model`` writes the student alone (a ``from_pretrained`` folder); training checkpoints also
    hold each extra module beside it (``projections.safetensors``, ``discriminator.safetensors``), and ``save_model``
    writes them too when ``args.save_projections`` / ``save_discriminator`` say so. Resuming and
    ``load_best_model_at_end`` restore them.

    Feature matching (``args.feature_matches``): a :class:`~distil_trainers.features.FeatureDistiller`
    (:attr:`feature_distiller`) holds the learned projections; both models are asked for hidden states / attentions
    only when a match needs them (:attr:`feature_output_kwargs`, :meth:`teacher_outputs`), and a subclass's
    ``compute_loss`` passes :meth:`feature_inputs` to :meth:`forward_student` and adds the result.
    """

    _tag_names = ["distil-trainers", "knowledge-distillation"]
    _name = "Knowledge distillation"
    _paper = {
        "title": "Distilling the Knowledge in a Neural Network",
        "id": "1503.02531",
        "citation": HINTON_CITATION,
    }

    # Subclasses whose compute_loss adds the feature loss (AnnealingTrainer) keep this True.
    supports_feature_matching = True
    # The argument that makes save_model(dir) write an extra module beside the student (checkpoints always do).
    extra_save_flags: dict[str, str] = {"features": "save_projections"}

    class_weights_from_model = False  # built in __init__ from the label space checked across the models

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
        self.check_models_given(model, teacher_model, teacher_outputs)
        refuse_data_parallel(args, type(self).__name__)
        self.extra_modules: dict[str, nn.Module] = {}
        self._with_teacher = teacher_model is not None or teacher_outputs is not None
        if isinstance(processing_class, (str, os.PathLike)):
            processing_class = load_tokenizer(processing_class, "student")
        elif processing_class is None and isinstance(model, (str, os.PathLike)):
            processing_class = tokenizer_beside(model)  # a student given as a path brings its tokenizer
        if isinstance(teacher_processing_class, (str, os.PathLike)):
            teacher_processing_class = load_tokenizer(teacher_processing_class, "teacher")
        teacher = None
        if teacher_model is not None:
            teacher_kwargs = getattr(args, "teacher_model_init_kwargs", None) or {}
            teacher = freeze(load_classifier(teacher_model, "teacher", **teacher_kwargs))

        # The classes every model and dataset is brought to: the teacher's when it names them, else the data's.
        data_classes = data_label_names(train_dataset, eval_dataset)
        given = list(model.values()) if isinstance(model, Mapping) else [model]
        multitask = is_multitask(teacher) or is_multitask(teacher_outputs) or any(map(is_multitask, given))
        classes = None if multitask else single_task_names(teacher) or data_classes
        student = self.load_students(model, args, classes)
        students = self.student_models(student)
        if any(map(is_multitask, students.values())):
            classes = None
        else:
            classes = classes or next((n for n in map(single_task_names, students.values()) if n), None)
        if teacher_outputs is not None:
            teacher_outputs = resolve_teacher_outputs(teacher_outputs, teacher)
            teacher = None  # the cache replaces the teacher: it is not kept in memory
        if getattr(args, "feature_matches", None) and teacher is None:
            raise ValueError(
                "feature_matches need the live teacher's hidden states; "
                + ("drop teacher_outputs." if teacher_outputs is not None else "give a teacher_model or drop them.")
            )

        space = self.check_label_spaces(teacher, teacher_outputs, students)

        tokenizers = self.input_tokenizers(student, teacher, teacher_model, processing_class, teacher_processing_class,
                                           train_dataset, eval_dataset, data_collator)
        max_length = getattr(args, "max_length", 128)
        self._input_prep = {"tokenizers": tokenizers, "label_names": classes, "max_length": max_length}
        if not self._with_teacher:
            self._input_prep["role"] = "model"  # labels are mapped to the model's classes
        self._texts_checked = set()
        if teacher_outputs is not None:  # texts are compared before tokenising drops them
            self._texts_checked = check_raw_texts(teacher_outputs, train_dataset, eval_dataset)
        unlabelled = args is not None and self._with_teacher and not self.learns_from_labels(args)
        train_dataset = prepare_classification_dataset(
            train_dataset, "train dataset", allow_unlabelled=unlabelled, **self._input_prep
        )
        eval_dataset = prepare_classification_dataset(eval_dataset, "eval dataset", **self._input_prep)
        check_has_labelled_items(train_dataset, "train dataset")
        if teacher is not None:
            self.check_tokenization(teacher, student, tokenizers, teacher_processing_class,
                                    [train_dataset, *as_list(eval_dataset)])
        train_dataset, eval_dataset = self.attach_teacher_outputs(teacher, teacher_outputs, train_dataset, eval_dataset)

        task_names = list(space) if "default" not in space else None
        check_dataset_labels(train_dataset, space, "train", task_names)
        for name, ds in (eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset}).items():
            check_dataset_labels(ds, space, name, task_names)

        kwargs["compute_metrics"] = self.wrap_compute_metrics(kwargs.get("compute_metrics"), classes, data_classes)
        if data_collator is None:
            data_collator = self.default_data_collator(tokenizers)
        if args is not None and args.full_determinism:  # extra modules start from args.seed, as a model_init would
            enable_full_determinism(args.seed)
        elif args is not None:
            set_seed(args.seed)
        self.extra_modules = self.build_extra_modules(student, teacher, args)
        trained = student
        if any(map(has_trainable_parameters, self.extra_modules.values())):
            trained = DistillationModel(student, self.extra_modules)

        super().__init__(
            model=trained,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.teacher_processing_class = teacher_processing_class
        if self.args.label_names is None:
            self.label_names = ["labels"]  # a wrapper's or a group's forward(**inputs) hides them from Trainer
        self.teacher_cache = teacher_outputs
        # Our losses normalise by `num_items_in_batch` (the labelled examples of the whole accumulated batch), so the
        # Trainer must count them and must not divide the loss by the accumulation steps again.
        self.model_accepts_loss_kwargs = True
        self.label_space = space
        self.teacher = self._prepare_frozen(teacher) if teacher is not None else None
        # per mode and name: sums of value × count and of count, tensors on the device until the next log
        self._metric_sums: dict[str, dict[str, Any]] = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._metric_counts: dict[str, dict[str, Any]] = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._composites: dict[str, dict[str, dict[str, float]]] = {"train": {}, "eval": {}}
        self._step_counts: dict[str, torch.Tensor] | None = None  # items of each kind in the current optimizer step
        self._teacher_checks: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # checked before optimizer.step
        self.class_weight_table = class_weight_table(getattr(self.args, "class_weights", None), space, train_dataset,
                                                     task_names)  # the label space of the teacher and students
        self.add_callback(_TeacherCheckCallback(self))

    # ---- construction hooks --------------------------------------------------------------------------------------

    def check_models_given(self, model: Any, teacher_model: Any, teacher_outputs: Any) -> None:
        """Raise unless the models the trainer needs are given: a student, and a teacher or its cached outputs."""
        if model is None:
            raise ValueError(f"{type(self).__name__} needs the student `model` (a model, a Hub id or a local path).")
        if teacher_model is None and teacher_outputs is None:
            raise ValueError(
                f"{type(self).__name__} needs a `teacher_model` (a model, a Hub id or a local path) or precomputed "
                "`teacher_outputs` (distil_trainers.teachers.cache.precompute_teacher_outputs)."
            )

    @property
    def student_role(self) -> str:
        """How errors name the trained model: ``"student"``, or ``"model"`` when there is no teacher."""
        return "student" if self._with_teacher else "model"

    def load_students(self, model: Any, args: Any, classes: list[str] | None) -> nn.Module:
        """The trainable student module: ``model`` itself, or loaded from a Hub id / local path (a bare encoder gets
        a head over ``classes``). A :class:`DistillationModel` (another trainer's ``model``) gives its student."""
        if isinstance(model, DistillationModel):
            model = model.student
        init_kwargs = getattr(args, "model_init_kwargs", None) or {}
        return load_classifier(model, self.student_role, label_names=classes, **init_kwargs)

    def student_models(self, student: nn.Module) -> dict[str, nn.Module]:
        """``{role: model}`` of the trained classifiers, as label-space checks name them."""
        return {self.student_role: student}

    def input_tokenizers(self, student, teacher, teacher_model, processing_class, teacher_processing_class,
                         train_dataset, eval_dataset, data_collator) -> dict[str, Any]:
        """``{column prefix: tokenizer}``: the student's plain columns, and ``teacher_…`` columns when the teacher
        tokenizes differently (its tokenizer given, or saved beside a teacher given as a folder)."""
        student_tok = processing_class if _is_tokenizer(processing_class) else None
        teacher_tok = teacher_processing_class if _is_tokenizer(teacher_processing_class) else None
        if teacher is not None and teacher_tok is None:
            teacher_tok = tokenizer_beside(teacher_model)  # saved beside a teacher given as (or loaded from) a folder
        tokenizers = {"": student_tok} if student_tok is not None else {}
        if teacher is not None and teacher_tok is not None:
            if student_tok is None or not same_tokenization(student_tok, teacher_tok):
                tokenizers[TEACHER_PREFIX] = teacher_tok
        return tokenizers

    def check_tokenization(self, teacher, student, tokenizers, teacher_processing_class, datasets_: list) -> None:
        """Refuse to give the live teacher token ids of another vocabulary (unless the caller said that both models
        share one tokenizer by passing the same one as ``teacher_processing_class``)."""
        own_teacher_tok = TEACHER_PREFIX in tokenizers
        if _is_tokenizer(teacher_processing_class) and not own_teacher_tok:
            return
        check_teacher_reads_its_tokens(teacher, student, tokenizers.get(""), tokenizers.get(TEACHER_PREFIX), datasets_)

    def check_label_spaces(self, teacher, teacher_outputs, students: dict[str, nn.Module]) -> dict[str, int]:
        """The common label space of the teacher (or its cached logits) and the students."""
        if teacher is not None:
            return check_label_space({"teacher": teacher, **students})
        if teacher_outputs is not None:
            return check_cached_label_space(teacher_outputs, students)
        return check_label_space(students)

    def attach_teacher_outputs(self, teacher, teacher_outputs, train_dataset, eval_dataset) -> tuple[Any, Any]:
        """The datasets with what the teacher side reads: each example's cache row (``teacher_outputs``), or, with a
        live teacher, each training example's row (so that a non-finite teacher output names its example)."""
        self._train_ids = None
        if teacher_outputs is not None:
            checked = getattr(self, "_texts_checked", ())
            train_dataset, eval_dataset = attach_cache(teacher_outputs, train_dataset, eval_dataset, checked)
        if teacher is not None:
            train_dataset, self._train_ids = add_row_column(train_dataset)
        return train_dataset, eval_dataset

    def default_data_collator(self, tokenizers: dict[str, Any]) -> Any:
        """Pads each model's columns with its tokenizer (``None`` without a student tokenizer: Trainer's default)."""
        if "" not in tokenizers:
            return None
        return MultiTokenizerCollator({"": tokenizers[""], TEACHER_PREFIX: tokenizers.get(TEACHER_PREFIX, tokenizers[""])})

    def wrap_compute_metrics(self, compute_metrics: Any, classes: list[str] | None, data_classes: Any) -> Any:
        """The user's ``compute_metrics`` for labels in the models' class order."""
        return metrics_in_class_order(compute_metrics, classes, data_classes)

    def build_extra_modules(self, student: nn.Module, teacher: nn.Module | None, args: Any) -> dict[str, nn.Module]:
        """The modules trained beside the student, by name: ``"features"`` (the feature distiller) with
        ``args.feature_matches``. Those with trainable parameters go into one
        :class:`~distil_trainers.trainers.wrapper.DistillationModel` with the student."""
        spec = getattr(args, "feature_matches", None)
        if not spec:
            return {}
        if not self.supports_feature_matching:
            raise ValueError(
                f"{type(self).__name__} does not support feature_matches; use AnnealingTrainer (any method) or "
                "MutualLearningTrainer for feature-level distillation."
            )
        distiller, students = self.build_feature_distiller(spec, student, teacher)
        if distiller.needs_attentions:
            for role, model in (*students, ("teacher", teacher)):
                _use_eager_attention(model, role)
        reference = next(student.parameters())
        distiller.to(device=reference.device, dtype=reference.dtype if reference.is_floating_point() else None)
        return {"features": distiller}

    def build_feature_distiller(
        self, spec: Any, student: nn.Module, teacher: nn.Module
    ) -> tuple[FeatureDistiller | StudentFeatureDistillers, list[tuple[str, nn.Module]]]:
        """The feature-matching module for ``spec`` and the ``(role, model)`` students it reads features from."""
        if isinstance(parse_student_feature_matches(spec), dict):
            raise ValueError(
                f"feature_matches given per student ({sorted(spec)}) only apply to MutualLearningTrainer; "
                f"{type(self).__name__} has one student: pass a list of matches."
            )
        matches = parse_feature_matches(spec)
        token_level = [m.name for m in matches if m.token_level]
        # the teacher's tokenizer differs from the student's (as MutualLearningTrainer checks per student); a dataset
        # tokenised beforehand with `teacher_input_ids` is checked per batch (sequence lengths) by the distiller
        if token_level and TEACHER_PREFIX in self._input_prep["tokenizers"]:
            raise ValueError(
                "The student reads a different tokenization than the teacher (the teacher has its own "
                f"`{TEACHER_PREFIX}input_ids`), so their token positions do not line up: the token-level feature "
                f"matches {token_level} cannot apply. Match feature 'cls' only, or give both models the same tokenizer."
            )
        return FeatureDistiller(matches, student, teacher), [("student", student)]

    @staticmethod
    def learns_from_labels(args: DistillationArguments) -> bool:
        """Whether the loss has a label term. Without one, a training set without labels (no label column) is
        accepted: every example is :data:`~distil_trainers.losses.UNLABELLED` and learns from the teacher alone."""
        return True

    # ---- the student and its extra modules -----------------------------------------------------------------------

    @property
    def distillation_model(self) -> DistillationModel | None:
        """The :class:`DistillationModel` Trainer trains (without DDP), or ``None`` when it trains the student alone."""
        model = self.accelerator.unwrap_model(self.model)
        return model if isinstance(model, DistillationModel) else None

    @property
    def student(self) -> nn.Module:
        """The student (MutualLearningTrainer: the group of students), without DDP and without the extra modules."""
        model = self.accelerator.unwrap_model(self.model)
        return model.student if isinstance(model, DistillationModel) else model

    def hub_students(self) -> dict[str, PreTrainedModel]:
        """What is pushed to the Hub: ``{"": the student}``."""
        return {"": self.student}

    @property
    def feature_distiller(self) -> FeatureDistiller | StudentFeatureDistillers | None:
        return self.extra_modules.get("features")

    def forward_student(self, model: nn.Module, inputs: dict[str, Any], extra_inputs: dict | None = None):
        """``(student outputs, {name: result})``: the wrapped ``model`` Trainer gives ``compute_loss``, called on the
        student's ``inputs``, running the extra modules named in ``extra_inputs`` inside the same forward (DDP must
        see it). Given the bare student, the extra modules are applied to its outputs after its forward."""
        if not extra_inputs:
            return model(**inputs), {}
        if isinstance(self.accelerator.unwrap_model(model), DistillationModel):
            return model(**inputs, extra_inputs=extra_inputs)
        outputs = model(**inputs)
        return outputs, {name: self.extra_modules[name](outputs, **kw) for name, kw in extra_inputs.items()}

    def parameter_owner(self, name: str) -> tuple[str, float]:
        """``(group, learning rate)`` of the trainable parameter ``name`` of ``self.model``: parameters of different
        groups get parameter groups of their own in the optimizer."""
        return "", self.args.learning_rate

    def create_optimizer(self, model=None):
        """Trainer's optimizer over the student and its extra modules (``self.model``): weight decay on every weight
        but biases and norms. When :meth:`parameter_owner` puts parameters in several groups (per-student or
        per-module learning rates), each group gets its decay / no-decay parameter groups at its learning rate."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
        owners = {n: self.parameter_owner(n) for n, _ in named}
        if len({owner for owner, _ in owners.values()}) <= 1:
            return super().create_optimizer(model)
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        plain = isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)
        if not plain or any(k in optimizer_kwargs for k in ("params", "model", "optimizer_dict")):
            other = sorted({owner for owner, lr in owners.values() if lr != self.args.learning_rate})
            if other:
                raise ValueError(f"Learning rates of their own ({other}) are not supported with optim={self.args.optim}.")
            return super().create_optimizer(model)
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[str, bool], dict[str, Any]] = {}
        for n, p in named:
            owner, lr = owners[n]
            group = groups.setdefault((owner, n in decay), {
                "params": [], "weight_decay": self.args.weight_decay if n in decay else 0.0, "lr": float(lr)})
            group["params"].append(p)
        self.optimizer = optimizer_cls(list(groups.values()), **optimizer_kwargs)
        return self.optimizer

    # ---- saving and loading --------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The student alone (its weights, config and tokenizer: a ``from_pretrained`` folder). Training checkpoints
        also hold the extra modules beside it; ``save_model(dir)`` writes them when :attr:`extra_save_flags` say."""
        self._saving_checkpoint = _internal_call
        try:
            super().save_model(output_dir, _internal_call=_internal_call)
        finally:
            self._saving_checkpoint = False

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        wrapper = self.distillation_model
        if wrapper is None:
            return self.save_student(output_dir, state_dict)
        parts = wrapper.split_state_dict(state_dict)
        model, self.model = self.model, wrapper.student
        try:
            self.save_student(output_dir, parts["student"])
        finally:
            self.model = model
        if self.args.should_save:
            checkpoint = getattr(self, "_saving_checkpoint", False)
            names = [n for n, state in parts.items() if n != "student" and state
                     and (checkpoint or getattr(self.args, self.extra_save_flags.get(n, ""), False))]
            wrapper.save_extras(output_dir, state_dict, names)

    def save_student(self, output_dir: str, state_dict: dict | None = None) -> None:
        """Trainer's save of ``self.model`` (the student alone here) with its ``state_dict``."""
        super()._save(output_dir, state_dict=state_dict)

    def load_student(self, checkpoint: str, model: nn.Module | None = None) -> None:
        """Trainer's loading of the student's weights from a checkpoint folder."""
        super()._load_from_checkpoint(checkpoint, model=model)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        wrapper = self.distillation_model
        if wrapper is None or self.is_fsdp_enabled or self.is_deepspeed_enabled:  # engines restore the whole wrapper
            return self.load_student(resume_from_checkpoint, model)
        self.load_student(resume_from_checkpoint, wrapper.student)
        self._load_extras(resume_from_checkpoint)

    def load_best_student(self) -> None:
        """Trainer's loading of the best checkpoint's student weights into ``self.model`` (the student here)."""
        super()._load_best_model()

    def _load_best_model(self) -> None:
        wrapper = self.distillation_model
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:  # engines restore the whole wrapper
            return super()._load_best_model()
        if wrapper is None:
            return self.load_best_student()
        model, self.model = self.model, wrapper.student
        try:
            self.load_best_student()
        finally:
            self.model = model
        self._load_extras(self.state.best_model_checkpoint)

    def _load_extras(self, checkpoint: str) -> None:
        for name in self.distillation_model.load_extras(checkpoint):
            logger.warning("No saved %s in %s: it starts afresh.", name, checkpoint)

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

    @property
    def feature_output_kwargs(self) -> dict[str, bool]:
        """``output_hidden_states`` / ``output_attentions`` flags the feature matches need ({} without matches)."""
        return self.feature_distiller.output_kwargs if self.feature_distiller is not None else {}

    def feature_mask(self, student_inputs: dict[str, Any], labels: torch.Tensor | None) -> torch.Tensor:
        """The tokens feature losses count: where the student's attention mask is 1, in labelled sequences only (so
        the loss averages over the same items as the label losses and ``num_items_in_batch`` normalises it)."""
        mask = student_inputs.get("attention_mask")
        if mask is None:  # no padding: every token of (input_ids or inputs_embeds) is valid
            reference = student_inputs.get("input_ids", student_inputs.get("inputs_embeds"))
            mask = torch.ones(reference.shape[:2], dtype=torch.bool, device=reference.device)
        mask = mask.bool()
        if labels is not None and labels.dim() == 1:
            mask = mask & losses.label_mask(labels).to(mask.device)[:, None]
        return mask

    def feature_inputs(self, teacher_outputs: Any, student_inputs: dict[str, Any],
                       labels: torch.Tensor | None) -> dict[str, dict[str, Any]]:
        """The ``extra_inputs`` of :meth:`forward_student` for the feature distiller ({} without feature matches):
        the feature losses come back as sums over the sequences, normalised by :meth:`add_feature_terms`."""
        if self.feature_distiller is None:
            return {}
        mask = self.feature_mask(student_inputs, labels)
        return {"features": {"teacher_outputs": teacher_outputs, "mask": mask, "reduction": "sum"}}

    def add_feature_terms(self, objective: Objective, extra: Mapping[str, Any], prefix: str = "",
                          distiller: FeatureDistiller | None = None) -> dict[str, dict[str, float]]:
        """Add the feature matches' sums (``extra["features"]``, from :meth:`forward_student`) to ``objective``,
        each as ``loss_feature/<match>`` weighted by ``feature_loss_weight × match weight`` and counted in rows;
        returns the composite ``loss_feature`` (the weighted sum over the matches, before ``feature_loss_weight``)
        for :meth:`record_objective`."""
        if "features" not in extra:
            return {}
        distiller = distiller if distiller is not None else self.feature_distiller
        _, parts = extra["features"]
        weights = {name: match.weight for name, match in zip(distiller.names, distiller.matches)}
        for name, term in parts.items():
            objective.add(f"{prefix}loss_feature/{name}", term, ROWS, self.args.feature_loss_weight * weights[name])
        return {"loss_feature": {f"loss_feature/{name}": weights[name] for name in parts}}

    def strip_feature_outputs(self, outputs: Any, keys: tuple[str, ...] = ()) -> Any:
        """The student's outputs without the hidden states / attentions requested for feature matching (and without
        ``keys``), so that evaluation does not gather them as predictions."""
        requested = [k.replace("output_", "") for k in self.feature_output_kwargs] + list(keys)
        if not requested or not hasattr(outputs, "items"):
            return outputs
        kept = {k: v for k, v in outputs.items() if k not in requested}
        try:
            return type(outputs)(**kept)
        except TypeError:
            return kept

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
        """Non-finite teacher logits stop training before the optimizer step they would reach. In a training step
        the check is deferred to just before ``optimizer.step()`` (one host-device synchronisation per optimizer step,
        not per micro-batch); elsewhere it is immediate."""
        if self.model.training and self._step_counts is not None:
            self._teacher_checks.append((~torch.isfinite(logits.detach()).reshape(logits.shape[0], -1).all(-1), rows))
            return
        ids = getattr(self, "_train_ids", None) if rows is not None else None
        check_finite_teacher(logits, rows, ids, self.state.global_step)

    def check_teacher_outputs(self) -> None:
        """Raise :class:`FloatingPointError` (naming the step and the examples) if the teacher gave a non-finite logit
        in the current optimizer step. Called before ``optimizer.step()``."""
        checks, self._teacher_checks = self._teacher_checks, []
        if not checks or not bool(torch.cat([bad for bad, _ in checks]).any()):
            return
        ids = getattr(self, "_train_ids", None)
        for bad, rows in checks:
            check_finite_teacher(torch.where(bad, float("nan"), 0.0)[:, None], rows, ids if rows is not None else None,
                                 self.state.global_step)

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

    def record_sum(self, name: str, term: losses.LossSum, step_count: torch.Tensor | None = None) -> None:
        """Log a term as the mean over its items. In a training step (``step_count``: its kind's count over the
        optimizer step) each micro-batch enters with its share of the step, so every optimizer step counts once over
        a logging window, as Trainer averages ``loss``; elsewhere the items of every batch count alike."""
        mode = "train" if self.model.training else "eval"
        total, count = term.total.detach().double(), term.count.detach().double()
        if step_count is not None:
            denominator = step_count.double().clamp(min=1.0)
            total, count = total / denominator, count / denominator
        self._metric_sums[mode][name] = self._metric_sums[mode][name] + total
        self._metric_counts[mode][name] = self._metric_counts[mode][name] + count

    def record_objective(self, objective: Objective, prefix: str = "", scalars: Mapping[str, Any] | None = None,
                         composites: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """Log the objective's terms, ``scalars`` (λ, a temperature, ...: averaged like the terms, weighted by the
        rows) and ``composites`` (``{name: {term: weight}}``: weighted sums of the terms' logged means)."""
        objective.record(self, prefix)
        rows = objective.batch_counts[ROWS]
        step = objective.step_counts[ROWS] if objective.step_counts is not None else None
        for name, value in (scalars or {}).items():
            value = value.detach().double() if torch.is_tensor(value) else float(value)
            self.record_sum(prefix + name, losses.LossSum(value * rows, rows), step)
        mode = "train" if self.model.training else "eval"
        for name, parts in (composites or {}).items():
            self._composites[mode][prefix + name] = {prefix + k: float(w) for k, w in parts.items()}

    def _flush_metrics(self, mode: str) -> dict[str, float]:
        """Averages since the last flush, over the items of every process (all ranks call this: in ``log`` and
        after the evaluation loop). The one host-device synchronisation of the logged components."""
        sums, counts = self._metric_sums[mode], self._metric_counts[mode]
        keys = sorted(sums)
        if not keys:
            return {}
        device = self.args.device

        def as_float64(x):
            return x.to(device) if torch.is_tensor(x) else torch.tensor(float(x), dtype=torch.float64, device=device)

        packed = torch.stack([torch.stack([as_float64(sums[k]), as_float64(counts[k])]) for k in keys])
        if self.accelerator.num_processes > 1:
            packed = self.accelerator.reduce(packed, reduction="sum")
        packed = packed.cpu()
        out = {k: float(packed[i, 0] / packed[i, 1]) for i, k in enumerate(keys) if packed[i, 1] > 0}
        for name, parts in self._composites[mode].items():
            present = [(w, out[k]) for k, w in parts.items() if k in out]
            if present:
                out[name] = sum(w * v for w, v in present)
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


class _TeacherCheckCallback(TrainerCallback):
    """Runs :meth:`DistillationTrainer.check_teacher_outputs` before every optimizer step."""

    def __init__(self, trainer: DistillationTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.check_teacher_outputs()
