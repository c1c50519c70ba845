"""A :class:`CardContext` from a trainer: method, hyper-parameters, teacher and peers, the latest evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .context import _ANNEALING_TO_METHOD, CARD_METRICS, CardContext, DatasetInfo, PeerInfo, dataset_info, hub_id_of

_COMMON_HPARAMS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "warmup_steps",
    "weight_decay",
    "lr_scheduler_type",
    "seed",
)
_METHOD_HPARAMS = {
    "bam": ("temperature", "lambda_schedule", "lambda_start", "lambda_end", "lambda_value"),
    "jafari": ("phase1_fraction", "max_temperature"),
    "hinton": ("temperature", "alpha", "beta"),
    "mse": (),
    "ddml": (
        "hard_weight",
        "soft_weight",
        "mutual_weight",
        "temperature",
        "kl_direction",
        "student_learning_rates",
        "clip_grad_per_student",
    ),
    "rationale": ("alpha", "label_source", "teacher_kd_weight", "teacher_kd_temperature"),
}


def _model_source(model: Any) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None) or None


def method_of(args: Any, trainer: Any = None) -> str:
    """The card's method key: ``ddml`` for mutual learning, the annealing mode of ``AnnealingArguments`` (``bam``,
    ``jafari``, ``hinton``, ``mse``), ``rationale`` for rationale distillation, else ``finetune``."""
    if (trainer is not None and _students_of(trainer)) or hasattr(args, "mutual_weight"):
        return "ddml"
    annealing = getattr(args, "annealing", None)
    if annealing is not None:
        return _ANNEALING_TO_METHOD[annealing]
    if trainer is not None and "rationale" in type(trainer).__name__.lower():
        return "rationale"
    return "finetune"


def _latest_eval(log_history: Sequence[Mapping[str, Any]], prefix: str) -> dict[str, float]:
    for entry in reversed(list(log_history)):
        values = {
            k[len(prefix) :]: v for k, v in entry.items() if k.startswith(prefix) and isinstance(v, (int, float))
        }
        if any(k in values for k in CARD_METRICS):
            return {k: v for k, v in values.items() if k in CARD_METRICS or k.startswith("f1_")}
    return {}


def model_label(model: Any) -> str | None:
    """How a card names a model: its Hub id, else the name of its local folder."""
    source = _model_source(model)
    return hub_id_of(source) or (Path(source).name if source else None)


def card_context(
    model: Any,
    args: Any,
    method: str | None = None,
    teacher: Any = None,
    student: str | None = None,
    peers: Sequence[PeerInfo] = (),
    datasets: Sequence[DatasetInfo | str] | None = None,
    metrics: Sequence[Mapping[str, Any]] | None = None,
    log_history: Sequence[Mapping[str, Any]] = (),
    model_name: str | None = None,
    **overrides: Any,
) -> CardContext:
    """A :class:`CardContext` from a trained model and the arguments it was trained with.

    Args:
        model: the student (its config gives the base model, the classes and the parameter count).
        args: its ``TrainingArguments`` (``AnnealingArguments``, ``MutualLearningArguments``…): the method and the
            hyper-parameters.
        teacher: the teacher (a model, or a name for the card), if any.
        student: the student's name in a mutual-learning run (names the card and the evaluation keys).
        peers: the other students of a mutual-learning run.
        datasets: :class:`DatasetInfo` or registry names.
        metrics: rows ``{"model", "dataset", "split", "values": {metric: fraction}}``; by default the last evaluation
            in ``log_history`` (``eval_<metric>``, or ``eval_<student>_<metric>``).
        model_name: the card's title (default: the output folder's name, ``-<student>`` appended).
        **overrides: any other field of :class:`CardContext`.
    """
    method = method or method_of(args)
    hparams = {k: getattr(args, k) for k in (*_COMMON_HPARAMS, *_METHOD_HPARAMS.get(method, ())) if hasattr(args, k)}
    if hparams.get("max_steps", -1) in (-1, 0):
        hparams.pop("max_steps", None)
    if method == "bam":  # only the parameters of the schedule in use
        unused = ("lambda_start", "lambda_end") if hparams.get("lambda_schedule") == "constant" else ("lambda_value",)
        for key in unused:
            hparams.pop(key, None)
    feature_text = None
    matches = getattr(args, "feature_matches", None)
    if matches:
        kinds = sorted({f"{m.get('feature', 'embeddings')}/{m.get('loss', 'kl')}" for m in matches})
        feature_text = f"{len(matches)} matches ({', '.join(kinds)}), weight {args.feature_loss_weight}."
        hparams["feature_loss_weight"] = args.feature_loss_weight
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None) or {}
    label_names = [id2label[i] for i in sorted(id2label)] or None
    if label_names and all(n == f"LABEL_{i}" for i, n in enumerate(label_names)):
        label_names = None
    infos = [d if isinstance(d, DatasetInfo) else dataset_info(d) for d in (datasets or [])]
    if metrics is None:
        values = _latest_eval(log_history, f"eval_{student}_" if student else "eval_")
        where = infos[0].name if infos else "evaluation set"
        metrics = (
            [{"model": "this model", "dataset": where, "split": "validation", "values": values}] if values else []
        )
    if teacher is not None and not isinstance(teacher, str):
        teacher = model_label(teacher) or type(teacher).__name__
    output_name = Path(getattr(args, "output_dir", None) or "model").name
    context = CardContext(
        model_name=model_name or (f"{output_name}-{student}" if student else output_name),
        method=method,
        base_model=hub_id_of(_model_source(model)),
        params=sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else None,
        teacher=teacher,
        peers=list(peers),
        datasets=infos,
        label_names=label_names,
        hyperparameters=hparams,
        metrics=[dict(m) for m in metrics],
        feature_matching=feature_text,
    )
    for key, value in overrides.items():
        if not hasattr(context, key):
            raise TypeError(f"CardContext has no field {key!r}.")
        setattr(context, key, value)
    return context


def card_context_from_trainer(
    trainer: Any,
    student: str | None = None,
    peer_repo_ids: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> CardContext:
    """:func:`card_context` for the student of a distillation trainer (``student`` names one of a
    :class:`~distil_trainers.MutualLearningTrainer`'s students, ``trainer.hub_students()``; the others become its
    peers). The metrics default to the trainer's last evaluation; the trainer class's ``_name``, ``_tag_names`` and
    ``_paper`` citation (as TRL's trainers carry them) go into the card."""
    students = _students_of(trainer)
    if students:
        if student not in students:
            raise ValueError(f"Name the student of the mutual-learning run: one of {list(students)}.")
        model = students[student]
        peers = [
            PeerInfo(name=n, base_model=model_label(m), repo_id=(peer_repo_ids or {}).get(n))
            for n, m in students.items()
            if n != student
        ]
    else:  # the student alone, never a wrapper holding projections or a discriminator beside it
        model = getattr(trainer, "student", None)
        model = model if model is not None else trainer.accelerator.unwrap_model(trainer.model)
        peers = []
    teacher = getattr(trainer, "teacher", None)
    if teacher is not None:
        teacher = trainer.accelerator.unwrap_model(teacher)
    kwargs.setdefault("method", method_of(trainer.args, trainer))
    paper = getattr(trainer, "_paper", None) or {}
    kwargs.setdefault("trainer_class", type(trainer).__name__)
    kwargs.setdefault("trainer_name", getattr(trainer, "_name", None))
    kwargs.setdefault("citations", [paper["citation"]] if paper.get("citation") else [])
    kwargs["tags"] = list(dict.fromkeys([*getattr(trainer, "_tag_names", ()), *kwargs.get("tags", ())]))
    return card_context(
        model,
        trainer.args,
        teacher=teacher,
        student=student,
        peers=peers,
        log_history=trainer.state.log_history,
        **kwargs,
    )


def _students_of(trainer: Any) -> dict[str, Any] | None:
    """``{name: model}`` of a trainer with several students (``hub_students()``, else a mutual-learning group)."""
    students = trainer.hub_students() if hasattr(trainer, "hub_students") else None
    if not students and hasattr(trainer, "student_names"):
        students = {n: trainer.group.students[n] for n in trainer.student_names}
    return dict(students) if students and len(students) > 1 else None
