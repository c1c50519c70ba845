"""MutualLearningTrainer: deep distill-mutual learning (DDML: Multi-Student Knowledge Distillation for Hate Speech,
Entropy 2025, 27(4), 417).

One frozen teacher and K >= 2 students, of different architectures and tokenizers, train together. Student i
minimises (equation 11)

    L_i = a * CE(y, P_i) + b * CE(P_t^T, P_i^T) + c / (K - 1) * sum_{k != i} KL(P_i^T || P_k^T)

with the peers' distributions P_k^T held fixed in student i's term. All students live in one ``nn.Module``
(:class:`StudentGroup`), so one optimizer (a parameter group per student, optional per-student learning rates), one
scheduler, one ``accelerator.prepare`` and one backward of ``sum_i L_i`` serve them; since each L_i depends on its own
student's parameters only, that is exactly K separate updates. The teacher runs once per batch.

Example::

    trainer = MutualLearningTrainer(
        students={"minilm": "path/to/minilm-3l", "bert": "path/to/small-bert"},
        teacher_model="path/to/teacher",
        args=MutualLearningArguments(output_dir="ddml", num_train_epochs=3),
        train_dataset=raw["train"], eval_dataset=raw["validation"],          # `text` + `label`: tokenised per model
        compute_metrics=build_compute_metrics(label_names),
    )
    trainer.train()          # logs minilm/loss_hard, bert/loss_mutual, ...; evaluates eval_minilm_f1_macro, ...
    trainer.save_model()     # <output_dir>/minilm and <output_dir>/bert, each loadable with from_pretrained
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from torch import nn
from transformers import EvalPrediction, PreTrainedTokenizerBase

from .. import losses
from ..data.multitask import TASK_COLUMN
from ..data.processing import TEACHER_PREFIX, TOKENIZER_COLUMNS, MultiTokenizerCollator
from ..features import FeatureDistiller, StudentFeatureDistillers, parse_student_feature_matches
from ..teachers.cache import TeacherOutputs
from .base import DistillationArguments, DistillationTrainer
from .citations import DDML_CITATION
from .inputs import (
    ROW_COLUMN,
    load_tokenizer,
    metrics_in_class_order,
    prepare_classification_dataset,
    same_tokenization,
)
from .labels import load_classifier
from .objective import LABELLED, ROWS, Objective

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
RESERVED_NAMES = ("teacher", "ensemble")


@dataclass
class MutualLearningArguments(DistillationArguments):
    r"""
    Arguments of [`MutualLearningTrainer`], on top of [`~transformers.TrainingArguments`]: the weights a, b, c and the
    temperature of the DDML loss, the direction of the mutual KL term, per-student learning rates.
    """

    hard_weight: float = field(default=1.0, metadata={"help": "a: weight of the cross-entropy on the labels."})
    soft_weight: float = field(
        default=1.0, metadata={"help": "b: weight of the cross-entropy against the teacher's softened distribution."}
    )
    mutual_weight: float = field(
        default=1.0, metadata={"help": "c: weight of the mutual KL term (averaged over the K - 1 peers)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Temperature t of the soft distributions (t >= 1)."})
    kl_direction: str = field(
        default="student_peer",
        metadata={
            "help": "Direction of the mutual term: 'student_peer' = KL(P_i || P_k) as written in the DDML paper, "
            "'peer_student' = KL(P_k || P_i) as in deep mutual learning (Zhang et al. 2018).",
            "choices": list(losses.KL_DIRECTIONS),
        },
    )
    student_learning_rates: dict | str | None = field(
        default=None,
        metadata={"help": "Per-student learning rates, e.g. '{\"mbert\": 3e-5}'; others use learning_rate."},
    )
    max_length: int = field(
        default=128, metadata={"help": "Truncation length when the trainer tokenises a raw `text` column itself."}
    )
    clip_grad_per_student: bool = field(
        default=True,
        metadata={
            "help": "Clip each student's gradient norm to max_grad_norm separately (so the joint update equals K "
            "separate ones). False clips the norm over all students together, as plain Trainer would."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.student_learning_rates, str):
            self.student_learning_rates = json.loads(self.student_learning_rates)
        weights = {"hard_weight": self.hard_weight, "soft_weight": self.soft_weight, "mutual_weight": self.mutual_weight}
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"The DDML weights a, b, c must be >= 0, got {weights}.")
        if all(w == 0 for w in weights.values()):
            raise ValueError("hard_weight = soft_weight = mutual_weight = 0 leaves nothing to learn; set at least one > 0.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.kl_direction not in losses.KL_DIRECTIONS:
            raise ValueError(f"kl_direction must be one of {losses.KL_DIRECTIONS}, got {self.kl_direction!r}.")
        for name, lr in (self.student_learning_rates or {}).items():
            if not float(lr) > 0:
                raise ValueError(f"Learning rate of student {name!r} must be > 0, got {lr}.")


class StudentGroup(nn.Module):
    """The students of a mutual-learning run in one module. ``forward`` routes the columns ``<name>_input_ids`` (…)
    to student ``<name>`` and returns ``{name: logits}``."""

    def __init__(self, students: Mapping[str, nn.Module]):
        super().__init__()
        self.students = nn.ModuleDict(dict(students))
        # per-student `output_hidden_states` / `output_attentions` requested by feature matching
        self.output_kwargs: dict[str, dict[str, bool]] = {}

    @property
    def names(self) -> list[str]:
        return list(self.students)

    def inputs_of(self, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        prefix = f"{name}_"
        own = {k[len(prefix) :]: v for k, v in inputs.items() if k.startswith(prefix) and k[len(prefix) :] in TOKENIZER_COLUMNS}
        if not own:  # students sharing one tokenizer read the plain columns
            own = {k: v for k, v in inputs.items() if k in TOKENIZER_COLUMNS}
        if TASK_COLUMN in inputs:
            own[TASK_COLUMN] = inputs[TASK_COLUMN]
        return own

    def forward(self, return_model_outputs: bool = False, **inputs) -> dict[str, Any]:
        """``{name: logits}``; with ``return_model_outputs`` ``{name: model outputs}`` (with the hidden states /
        attentions in :attr:`output_kwargs`)."""
        if not return_model_outputs:
            return {name: model(**self.inputs_of(name, inputs)).logits for name, model in self.students.items()}
        return {
            name: model(**self.inputs_of(name, inputs), **self.output_kwargs.get(name, {}))
            for name, model in self.students.items()
        }


def _check_names(names: list[str]) -> None:
    for name in names:
        if not _NAME.match(name) or name in RESERVED_NAMES or f"{name}_".startswith(TEACHER_PREFIX):
            raise ValueError(
                f"Invalid student name {name!r}: use letters, digits, '_' or '-', starting with a letter, and not "
                f"{RESERVED_NAMES} (nor starting with {TEACHER_PREFIX!r})."
            )


class MutualLearningTrainer(DistillationTrainer):
    """A [`~transformers.Trainer`] for DDML: K >= 2 students learn from the labels, from a frozen teacher and from each
    other (see the module docstring and [`MutualLearningArguments`]).

    Args:
        students: ``{name: model}``; a model may also be a local path or Hub id (its tokenizer is then loaded from the
            same place).
        teacher_model: the teacher (model, path or Hub id).
        processing_classes: ``{name: tokenizer}`` for the students and ``"teacher"``; needed for models given as
            objects. Each model reads its own columns ``<name>_input_ids`` (the teacher ``teacher_input_ids``); datasets
            with a raw ``text`` column are tokenised here, once per model.
        compute_metrics: a usual ``compute_metrics``; it is applied to every student, to the students' ensemble
            (averaged probabilities) and to the teacher, giving ``eval_<name>_<metric>``, ``eval_ensemble_<metric>``,
            ``eval_teacher_<metric>``.

    Logged during training, per student: ``<name>/loss``, ``<name>/loss_hard``, ``<name>/loss_soft``,
    ``<name>/loss_mutual``; ``loss`` is the sum over students.

    Feature matching (``args.feature_matches``): a list of matches applies to every student, a dict
    ``{name: [matches]}`` to the students it names; each student's weighted feature loss against the teacher, times
    ``feature_loss_weight``, is added to its L_i and logged as ``<name>/loss_feature`` (and per match). Token-level
    matches (hidden states, embeddings, attention maps) need the student to read the teacher's tokenization; a student
    with its own tokenizer can match ``"cls"`` vectors. Projections are trained with their student (its parameter
    groups, its learning rate, clipped with it) inside the trainer's one model, and saved beside it
    (``<dir>/<name>/projections.safetensors``), never inside it.

    Construction is :class:`~distil_trainers.trainers.base.DistillationTrainer`'s, with these hooks overridden:
    :meth:`load_students` (the :class:`StudentGroup`), :meth:`student_models`, :meth:`input_tokenizers` (one column
    prefix per model), :meth:`check_tokenization`, :meth:`default_data_collator`, :meth:`wrap_compute_metrics`,
    :meth:`build_feature_distiller` (one distiller per student) and :meth:`parameter_owner` (per-student groups).
    """

    _tag_names = ["distil-trainers", "knowledge-distillation", "mutual-learning", "ddml"]
    _name = "DDML"
    _paper = {
        "title": "DDML: Multi-Student Knowledge Distillation for Hate Speech",
        "id": "https://doi.org/10.3390/e27040417",
        "citation": DDML_CITATION,
    }

    def __init__(
        self,
        students: Mapping[str, nn.Module | str] | None = None,
        teacher_model: nn.Module | str | None = None,
        args: MutualLearningArguments | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_classes: Mapping[str, PreTrainedTokenizerBase] | None = None,
        data_collator=None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        teacher_outputs: TeacherOutputs | str | os.PathLike | None = None,
        **kwargs,
    ):
        if args is None:
            args = MutualLearningArguments(output_dir="tmp_trainer")
        if not isinstance(args, MutualLearningArguments):
            raise TypeError(f"MutualLearningTrainer needs MutualLearningArguments, got {type(args).__name__}.")
        if "model" in kwargs:
            raise TypeError("MutualLearningTrainer takes `students={name: model}`, not `model=`.")
        if not students or len(students) < 2:
            raise ValueError(f"Mutual learning needs at least 2 students, got {len(students or {})}.")
        if not isinstance(students, Mapping):
            raise TypeError(
                f"students must be a dict {{name: model, Hub id or path}}, got a {type(students).__name__}; e.g. "
                "students={'minilm': 'path/to/minilm', 'bert': 'path/to/bert'} (the names key the logs and the saved "
                "folders)."
            )
        names = list(students)
        _check_names(names)
        unknown = set(args.student_learning_rates or {}) - set(names)
        if unknown:
            raise ValueError(f"student_learning_rates names unknown students {sorted(unknown)}; students are {names}.")
        self.student_names = names
        self.member_names = [*names, "ensemble", "teacher"]
        self.tokenizers = dict(processing_classes or {})  # by model name ("teacher" too)
        prefixes = [f"{name}_" for name in names]
        self.extra_input_prefixes = ("", *prefixes, TEACHER_PREFIX)  # plain columns when the models share a tokenizer
        super().__init__(
            model=dict(students),
            teacher_model=teacher_model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            teacher_outputs=teacher_outputs,
            compute_metrics=compute_metrics,
            **kwargs,
        )
        self.can_return_loss = False

    # ---- construction hooks --------------------------------------------------------------------------------------

    def load_students(self, model: Mapping[str, Any], args: MutualLearningArguments, classes) -> StudentGroup:
        """Every student loaded (a path or Hub id also brings its tokenizer), in one :class:`StudentGroup`."""
        models = {}
        for name, student in model.items():
            models[name] = load_classifier(student, f"student {name!r}", label_names=classes,
                                           **(args.model_init_kwargs or {}))
            if name not in self.tokenizers and isinstance(student, (str, os.PathLike)):
                self.tokenizers[name] = load_tokenizer(student, f"student {name!r}")
        return StudentGroup(models)

    def student_models(self, student: StudentGroup) -> dict[str, nn.Module]:
        return {f"student {name!r}": model for name, model in student.students.items()}

    def input_tokenizers(self, student, teacher, teacher_model, processing_class, teacher_processing_class,
                         train_dataset, eval_dataset, data_collator) -> dict[str, Any]:
        """One tokenizer for every model: plain ``input_ids`` / ``attention_mask``; otherwise each model its own
        columns (``<name>_input_ids``…, ``teacher_input_ids``…). A cache needs no teacher tokens. Raises when a model
        has no tokenizer and the data is not tokenised for it."""
        if teacher is not None and "teacher" not in self.tokenizers and isinstance(teacher_model, (str, os.PathLike)):
            self.tokenizers["teacher"] = load_tokenizer(teacher_model, "teacher")
        prefixes = {name: f"{name}_" for name in self.student_names} | {"teacher": TEACHER_PREFIX}
        needed = [*self.student_names, "teacher"] if teacher is not None else self.student_names
        known = {n: self.tokenizers[n] for n in needed if n in self.tokenizers}
        first = next(iter(known.values()), None)
        shared = len(known) == len(needed) and all(same_tokenization(first, t) for t in known.values())
        eval_sets = eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset}
        datasets_given = [ds for ds in [train_dataset, *eval_sets.values()] if isinstance(ds, datasets.Dataset)]
        for n in needed:
            own_columns = all(f"{prefixes[n]}input_ids" in ds.column_names for ds in datasets_given)
            if n not in known:
                plain = all("input_ids" in ds.column_names for ds in datasets_given)
                if not datasets_given or not (own_columns or plain) or data_collator is None:
                    raise ValueError(
                        f"No tokenizer for {'the teacher' if n == 'teacher' else f'student {n!r}'}: pass "
                        f"processing_classes={{{n!r}: tokenizer, ...}} (each model may tokenize differently)."
                    )
            elif not shared and not own_columns:
                if any("input_ids" in ds.column_names for ds in datasets_given):
                    raise ValueError(
                        f"{'The teacher' if n == 'teacher' else f'Student {n!r}'} tokenizes differently from the other "
                        f"models, but the dataset holds no {prefixes[n]}input_ids column: give the raw-text dataset "
                        "(columns text, label: the trainer tokenises it once per model) or tokenise it per model "
                        "(distil_trainers.data.tokenize_for_models with a prefix per model)."
                    )
        return {"": first} if shared else {prefixes[n]: tok for n, tok in known.items()}

    def check_tokenization(self, teacher, student, tokenizers, teacher_processing_class, datasets_) -> None:
        """Done by :meth:`input_tokenizers`, before the datasets are tokenised (each model reads its own columns)."""

    def default_data_collator(self, tokenizers: dict[str, Any]) -> MultiTokenizerCollator:
        return MultiTokenizerCollator(tokenizers)

    def wrap_compute_metrics(self, compute_metrics, classes, data_classes):
        """The user's compute_metrics (in the models' class order) applied to every member (:meth:`_member_metrics`)."""
        self._user_compute_metrics = metrics_in_class_order(compute_metrics, classes, data_classes)
        return self._member_metrics if compute_metrics is not None else None

    def build_feature_distiller(self, spec, student, teacher):
        """One :class:`~distil_trainers.features.FeatureDistiller` per student with matches (a list of matches
        applies to all students), checked against each student's tokenization before training starts."""
        group = student
        matches = parse_student_feature_matches(spec, self.student_names)
        if not isinstance(matches, dict):
            matches = {name: matches for name in self.student_names}
        teacher_tok = self.tokenizers.get("teacher")
        distillers = {}
        for name, own in matches.items():
            token_level = [m.name for m in own if m.token_level]
            tok = self.tokenizers.get(name)
            if token_level and tok is not None and teacher_tok is not None and not same_tokenization(tok, teacher_tok):
                raise ValueError(
                    f"Student {name!r} reads a different tokenization than the teacher, so its token positions do not "
                    f"line up with the teacher's: the token-level feature matches {token_level} cannot apply to it. "
                    "Give it feature 'cls' matches only, or list matches per student "
                    "(feature_matches={'<student>': [...]})."
                )
            distillers[name] = FeatureDistiller(own, group.students[name], teacher)
        module = StudentFeatureDistillers(distillers)
        group.output_kwargs = {name: module.student_output_kwargs(name) for name in distillers}
        return module, [(f"student {name!r}", group.students[name]) for name in distillers]

    @staticmethod
    def learns_from_labels(args: MutualLearningArguments) -> bool:
        """DDML has a label term unless ``hard_weight`` (a) is 0: then the students learn from the teacher and from
        each other, and unlabelled text can train them."""
        return args.hard_weight != 0

    def tokenize_dataset(self, dataset, what: str = "dataset"):
        """Give a raw dataset (``text`` and ``label`` columns) every model's input columns, tokenised once per model
        (``<name>_input_ids``…, ``teacher_input_ids``…; plain ``input_ids`` when all models share one tokenizer) and
        ``labels`` in the models' class order. Tokenised datasets only get their labels checked and renamed."""
        return prepare_classification_dataset(dataset, what, **self._input_prep)

    def split_inputs(self, inputs, prefix: str = TEACHER_PREFIX):
        """Students' and teacher's inputs; a teacher that shares the students' tokenizer reads the plain columns."""
        student_inputs, teacher_inputs = DistillationTrainer.split_inputs(inputs, prefix)
        if not any(k.startswith(prefix) for k in inputs):
            keep = {*TOKENIZER_COLUMNS, TASK_COLUMN, ROW_COLUMN}
            teacher_inputs = {k: v for k, v in teacher_inputs.items() if k in keep}
        return student_inputs, teacher_inputs

    # ---- the students ----------------------------------------------------------------------------------------------

    @property
    def group(self) -> StudentGroup:
        """The :class:`StudentGroup` of the students (without DDP and without the feature projections)."""
        return self.student

    def hub_students(self) -> dict[str, nn.Module]:
        """What is pushed to the Hub: ``{name: student}``, each to a repository of its own."""
        return dict(self.group.students.items())

    def parameter_owner(self, name: str) -> tuple[str, float]:
        """The student a parameter of the trained model belongs to (its own weights, or its feature projections)
        and that student's learning rate."""
        parts = name.split(".")
        owner = next((parts[i + 1] for i, part in enumerate(parts[:-1]) if part in ("students", "distillers")), "")
        return owner, float((self.args.student_learning_rates or {}).get(owner, self.args.learning_rate))

    # ---- loss ----------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError("MutualLearningTrainer needs `labels` in every batch.")
        student_inputs, teacher_inputs = self.split_inputs(inputs, TEACHER_PREFIX)
        # the wrapped model: one DDP forward for all students (and their projections); the teacher once per batch
        if self.feature_distiller is not None:
            teacher_out = self.teacher_outputs(teacher_inputs)
            teacher_logits = teacher_out.logits
            outputs, extra = self.forward_student(
                model, {**student_inputs, "return_model_outputs": True},
                self.feature_inputs(teacher_out, student_inputs, labels),
            )
            logits = {name: out.logits for name, out in outputs.items()}
            features = extra["features"]
        else:
            teacher_logits = self.teacher_logits(teacher_inputs)
            logits, _ = self.forward_student(model, student_inputs)
            features = {}

        args = self.args
        objective = self.objective(model, labels, num_items_in_batch)
        weights = self.batch_class_weights(teacher_logits)
        for name in self.student_names:
            peers = [logits[other] for other in self.student_names if other != name]
            terms = losses.ddml_loss(
                logits[name], teacher_logits, peers, labels, temperature=args.temperature,
                direction=args.kl_direction, reduction="sum", class_weights=weights,
            )
            student = Objective(objective.step_counts, objective.batch_counts)
            student.add("loss_hard", terms["loss_hard"], LABELLED, args.hard_weight)
            student.add("loss_soft", terms["loss_soft"], ROWS, args.soft_weight)
            student.add("loss_mutual", terms["loss_mutual"], ROWS, args.mutual_weight)
            composites = {}
            if name in features:
                composites = self.add_feature_terms(student, {"features": features[name]},
                                                    distiller=self.feature_distiller.distillers[name])
            parts = {term: weight for term, weight, _, _ in student.terms}
            self.record_objective(student, prefix=f"{name}/", composites={**composites, "loss": parts})
            objective.terms.extend(student.terms)
        total = self.scale_for_devices(objective.loss(), num_items_in_batch)
        if not return_outputs:
            return total
        return total, {"logits": self._member_logits(logits, teacher_logits)}

    def feature_inputs(self, teacher_outputs, student_inputs, labels):
        """The feature distillers' inputs: the teacher's outputs and, per student with matches, the tokens to count
        (its own attention mask, labelled sequences only)."""
        group = self.group
        masks = {name: self.feature_mask(group.inputs_of(name, student_inputs), labels)
                 for name in self.feature_distiller.distillers}
        return {"features": {"teacher_outputs": teacher_outputs, "masks": masks, "reduction": "sum"}}

    def _member_logits(self, logits: dict[str, torch.Tensor], teacher_logits: torch.Tensor) -> torch.Tensor:
        """``(batch, K + 2, classes)``: every student, the ensemble (log of the averaged probabilities), the teacher."""
        members = [logits[name].float() for name in self.student_names]
        ensemble = torch.stack([m.softmax(-1) for m in members]).mean(0).log()
        return torch.stack([*members, ensemble, teacher_logits.float()], dim=1)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """With labels: Trainer's step (loss and logits through compute_loss). Without: the members' logits only."""
        if inputs.get("labels") is not None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if prediction_loss_only:
            return (None, None, None)
        inputs = self._prepare_inputs(inputs)
        student_inputs, teacher_inputs = self.split_inputs(dict(inputs), TEACHER_PREFIX)
        with torch.no_grad():
            logits = self._member_logits(model(**student_inputs), self.teacher_logits(teacher_inputs))
        return (None, logits, None)

    def _member_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        """The user's compute_metrics for every student, the ensemble and the teacher."""
        predictions = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        out = {}
        for j, member in enumerate(self.member_names):
            metrics = self._user_compute_metrics(EvalPrediction(predictions=predictions[:, j], label_ids=eval_pred.label_ids))
            out.update({f"{member}_{k}": v for k, v in metrics.items()})
        return out

    # ---- optimisation --------------------------------------------------------------------------------------------

    def _clip_grad_norm(self, model):
        """DDML's ``clip_grad_per_student``: clip every student's gradient (with its projections') separately, so the
        joint update equals K separate ones; return the norm over all students (what Trainer logs as grad_norm)."""
        if not self.args.clip_grad_per_student or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._clip_grad_norm(model)
        self.accelerator.unscale_gradients()
        by_student: dict[str, list[nn.Parameter]] = {}
        for name, p in self.accelerator.unwrap_model(model).named_parameters():
            if p.grad is not None:
                by_student.setdefault(self.parameter_owner(name)[0], []).append(p)
        norms = [torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm) for params in by_student.values()]
        return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.tensor(0.0)

    # ---- saving and loading --------------------------------------------------------------------------------------

    def save_student(self, output_dir: str, state_dict: dict | None = None) -> None:
        """Each student in ``<output_dir>/<name>/`` with its tokenizer; never the teacher. ``training_args.bin``
        holds the arguments without the Hub token (:func:`distil_trainers.hub.save_training_args`), as with every
        trainer of the library: checkpoints are pushed with ``hub_strategy="checkpoint"``."""
        from ..hub import save_training_args

        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        for name, student in self.group.students.items():
            prefix = f"students.{name}."
            own = None if state_dict is None else {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            target = os.path.join(output_dir, name)
            student.save_pretrained(target, state_dict=own)
            if self.tokenizers.get(name) is not None:
                self.tokenizers[name].save_pretrained(target)
        with open(os.path.join(output_dir, "students.json"), "w") as f:
            json.dump({"students": self.student_names}, f)
        save_training_args(self.args, output_dir)

    def load_student(self, checkpoint: str, model: nn.Module | None = None) -> None:
        for name, student in self.group.students.items():
            path = os.path.join(checkpoint, name)
            if not os.path.isdir(path):
                raise FileNotFoundError(f"Checkpoint {checkpoint} has no folder for student {name!r}.")
            loaded = type(student).from_pretrained(path, dtype=next(student.parameters()).dtype)
            student.load_state_dict(loaded.state_dict())

    def load_best_student(self) -> None:
        self.load_student(self.state.best_model_checkpoint)
