"""Model cards for distilled students, rendered from Jinja templates.

The templates live in ``distil_trainers/model_cards/`` (shipped as package data, so they load from an installed
package; the checkout's top-level ``model_cards/`` is a link to that folder). A folder of your own templates with the
same file names takes precedence: ``template_dir=`` or the ``DISTIL_TRAINERS_CARD_TEMPLATES`` environment variable.

A card holds: the method and its paper citation (from a trainer also the trainer class, its ``_name``, its
``_tag_names`` as Hub tags and its ``_paper`` citation, as TRL's trainers carry them), teacher and peer students (for
an LLM teacher: which LLM labelled the data and how, :func:`llm_teacher_summary`), datasets and splits,
hyper-parameters, the metrics table, intended use and limitations, and YAML metadata (license, tags, datasets, metrics,
base_model, model-index) built with :class:`huggingface_hub.ModelCardData`, so the Hub reads it.

Example::

    context = card_context_from_trainer(trainer, datasets=[dataset_info("davidson", {"train": 2000})])
    write_model_card(context, "runs/x/student")          # runs/x/student/README.md
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .trainers.citations import (
    ANNEALING_KD_CITATION,
    BAM_CITATION,
    DDML_CITATION,
    HINTON_CITATION,
    PIOT_CITATION,
    STEP_BY_STEP_CITATION,
)

__all__ = [
    "METHODS",
    "TEMPLATE_ENV",
    "CardContext",
    "DatasetInfo",
    "PeerInfo",
    "card_context",
    "card_context_from_trainer",
    "card_metadata",
    "dataset_info",
    "datasets_of",
    "describe_student_spec",
    "hub_id_of",
    "llm_teacher_summary",
    "load_template",
    "method_of",
    "model_label",
    "render_model_card",
    "rows_to_card_metrics",
    "write_model_card",
]

TEMPLATE_ENV = "DISTIL_TRAINERS_CARD_TEMPLATES"
DEFAULT_TEMPLATE = "student.md.j2"
CARD_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")

# The papers a trainer class implements are its `_paper` (distil_trainers.trainers.citations); the others here.
_BAM, _JAFARI, _HINTON, _DDML = BAM_CITATION, ANNEALING_KD_CITATION, HINTON_CITATION, DDML_CITATION
_STEP_BY_STEP, _PIOT = STEP_BY_STEP_CITATION, PIOT_CITATION
_MKD_BERT = """@article{zhang2024mkdbert,
  title   = {{MKD-BERT}: Multi-level Knowledge Distillation for Pre-trained Language Models},
  author  = {Zhang, Ying and Yang, Ziheng and Ji, Shufan},
  year    = {2024}
}"""
_BREAZU = """@techreport{breazu2025joint,
  title  = {Joint multi-task learning and knowledge distillation for sentiment analysis and hate speech detection},
  author = {Breazu, Radu and Virlan, Mihnea},
  year   = {2025}
}"""
_TINYBERT = """@inproceedings{jiao-etal-2020-tinybert,
  title     = {{TinyBERT}: Distilling {BERT} for Natural Language Understanding},
  author    = {Jiao, Xiaoqi and Yin, Yichun and Shang, Lifeng and Jiang, Xin and Chen, Xiao and Li, Linlin and
               Wang, Fang and Liu, Qun},
  booktitle = {Findings of the Association for Computational Linguistics: EMNLP 2020},
  year      = {2020},
  pages     = {4163--4174},
  url       = {https://aclanthology.org/2020.findings-emnlp.372}
}"""


@dataclass(frozen=True)
class Method:
    key: str
    title: str
    description: str
    citations: tuple[str, ...]
    tags: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method(
            "bam",
            "Teacher annealing (BAM, Clark et al. 2019)",
            'The student was trained with `AnnealingTrainer(annealing="bam")` on the cross-entropy against the '
            "target λ·y + (1 − λ)·softmax(z_teacher / T), λ moving from the teacher's distribution towards the gold "
            "labels over training (teacher annealing, Clark et al. 2019).",
            (_BAM,),
            ("teacher-annealing",),
        ),
        Method(
            "jafari",
            "Annealing-KD (Jafari et al. 2021)",
            'The student was trained with `AnnealingTrainer(annealing="jafari")`: phase 1 matches the student\'s '
            "logits to the teacher's logits scaled by an annealing factor that rises to 1 (MSE), phase 2 fine-tunes "
            "on the labels (Annealing Knowledge Distillation, Jafari et al. 2021).",
            (_JAFARI,),
            ("annealing-kd",),
        ),
        Method(
            "hinton",
            "Knowledge distillation (Hinton et al. 2015)",
            'The student was trained with `AnnealingTrainer(annealing="kd")`: α·CE(labels) + β·T²·KL between the '
            "teacher's and the student's softened distributions (Hinton, Vinyals and Dean 2015).",
            (_HINTON,),
            (),
        ),
        Method(
            "mse",
            "Logit matching with feature-level distillation (MKD-BERT)",
            'The student was trained with `AnnealingTrainer(annealing="mse")`: the mean squared error between '
            "student and teacher logits, without a label term, as the output loss of the feed-forward-network "
            "distillation of Breazu and Virlan (2025), with the multi-level feature losses of MKD-BERT (Zhang et al. "
            "2024).",
            (_MKD_BERT, _BREAZU),
            ("feature-distillation",),
        ),
        Method(
            "ddml",
            "Deep distill-mutual learning (DDML)",
            "The student was trained with `MutualLearningTrainer` (DDML, Entropy 2025): together with its peer "
            "students of other architectures, each minimising a·CE(labels) + b·CE(teacher^T, student^T) + "
            "c/(K − 1)·Σ KL(student^T ‖ peer^T) against a frozen teacher (equation 11 of the paper).",
            (_DDML,),
            ("mutual-learning", "ddml"),
        ),
        Method(
            "rationale",
            "Rationale distillation (Distilling step-by-step)",
            "The student was fine-tuned on the teacher's labels and chain-of-thought rationales as two tasks "
            "(Distilling step-by-step, Hsieh et al. 2023), as Piot and Parapar (2024) distil a 70B instruction model "
            "into an 8B one for explainable hate-speech detection.",
            (_STEP_BY_STEP, _PIOT),
            ("rationale-distillation",),
        ),
        Method(
            "finetune",
            "Fine-tuning (no distillation)",
            "The model was fine-tuned on the labels with a plain cross-entropy loss (no teacher).",
            (),
            (),
        ),
    )
}
_ANNEALING_TO_METHOD = {"bam": "bam", "jafari": "jafari", "kd": "hinton", "none": "hinton", "mse": "mse"}


@dataclass
class DatasetInfo:
    """A dataset the model was trained or evaluated on: its registry name, Hub copy and split sizes."""

    name: str
    hub_id: str | None = None
    splits: dict[str, int | None] = field(default_factory=dict)
    label_names: list[str] | None = None
    language: str | None = None  # ISO 639-1 code of its texts


@dataclass
class PeerInfo:
    """Another student of a mutual-learning run."""

    name: str
    base_model: str | None = None
    repo_id: str | None = None


@dataclass
class CardContext:
    """Everything a card says. ``metrics`` rows: ``{"model", "dataset", "split", "values": {metric: fraction}}``."""

    model_name: str
    method: str
    base_model: str | None = None
    student_description: str | None = None
    params: int | None = None
    teacher: str | None = None
    peers: list[PeerInfo] = field(default_factory=list)
    datasets: list[DatasetInfo] = field(default_factory=list)
    label_names: list[str] | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    metrics_note: str | None = None
    feature_matching: str | None = None
    license: str = "apache-2.0"
    language: list[str] = field(default_factory=list)  # empty: the datasets' languages (English if none is known)
    tags: list[str] = field(default_factory=list)
    intended_use: str | None = None
    limitations: list[str] = field(default_factory=list)
    domain: str | None = None
    llm_teacher: dict[str, Any] | None = None  # how an LLM labelled the training data (llm_teacher_summary)
    trainer_class: str | None = None  # the trainer that trained it, and that class's `_name`
    trainer_name: str | None = None
    citations: list[str] = field(default_factory=list)  # BibTeX cited after the method's (a trainer's `_paper`)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r} for the model card; known: {sorted(METHODS)}.")


# --------------------------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id_of(name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub id a model name or path stands for: itself when it looks like ``owner/name`` and is no local folder,
    the Hub id of a packaged copy (:mod:`distil_trainers.models.paths`), else ``None`` (a local checkpoint has no
    Hub id, and the Hub refuses a path as ``base_model``)."""
    if not name_or_path:
        return None
    text = str(name_or_path)
    from .models.paths import PACKAGED_MODELS, packaged_model_path

    for hub_id in PACKAGED_MODELS:
        local = packaged_model_path(hub_id)
        if local is not None and os.path.realpath(local) == os.path.realpath(text):
            return hub_id
    if not os.path.exists(text) and _HUB_ID.match(text):
        return text
    return None


def dataset_info(
    name: str, splits: Mapping[str, int | None] | None = None, label_names: Sequence[str] | None = None
) -> DatasetInfo:
    """A :class:`DatasetInfo` for a dataset of the registry (its Hub copy looked up there) or any other name."""
    hub_id = language = None
    try:
        from .data.registry import get_dataset_spec

        spec = get_dataset_spec(name)
        hub_id, language = spec.hub_id, spec.language
    except ValueError:
        hub_id = name if _HUB_ID.match(name) else None
    return DatasetInfo(
        name=name, hub_id=hub_id, splits=dict(splits or {}), label_names=list(label_names) if label_names else None,
        language=language,
    )  # fmt: skip


def card_languages(context: CardContext) -> list[str]:
    """The languages a card declares: ``context.language`` if set, else those of its datasets (in order), else
    English."""
    if context.language:
        return list(context.language)
    return list(dict.fromkeys(d.language for d in context.datasets if d.language)) or ["en"]


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------


def _environment(template_dir: str | os.PathLike | None = None):
    import jinja2  # only where a card is rendered: `import distil_trainers` stays light

    loaders: list[jinja2.BaseLoader] = []
    for folder in (template_dir, os.environ.get(TEMPLATE_ENV)):
        if folder:
            loaders.append(jinja2.FileSystemLoader(str(folder)))
    loaders.append(jinja2.PackageLoader("distil_trainers", "model_cards"))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def load_template(name: str = DEFAULT_TEMPLATE, template_dir: str | os.PathLike | None = None):
    """The Jinja template ``name``: from ``template_dir`` / ``$DISTIL_TRAINERS_CARD_TEMPLATES`` if it is there, else
    the one shipped in the package."""
    return _environment(template_dir).get_template(name)


def card_metadata(context: CardContext) -> ModelCardData:
    """The card's YAML metadata as :class:`huggingface_hub.ModelCardData`: license, language, library, pipeline tag,
    tags (method, distillation, hate speech), datasets (Hub ids), metrics, base_model and a model-index with this
    model's results."""
    method = METHODS[context.method]
    tags = ["text-classification", "knowledge-distillation", "distil-trainers", *method.tags, *context.tags]
    if context.llm_teacher:
        tags.append("llm-teacher")
    if any(
        "hate" in (d.name + (d.hub_id or "")).lower() or d.name.startswith(("davidson", "hasoc"))
        for d in context.datasets
    ):
        tags.append("hate-speech")
    tags = list(dict.fromkeys(tags))
    eval_results = []
    for row in context.metrics:
        if row.get("model") not in (None, context.model_name, "this model"):
            continue
        ds = next((d for d in context.datasets if d.name == row.get("dataset")), None)
        if ds is None or ds.hub_id is None:
            continue
        for metric, value in row["values"].items():
            if metric in CARD_METRICS and isinstance(value, (int, float)):
                eval_results.append(
                    EvalResult(
                        task_type="text-classification",
                        task_name="Text Classification",
                        dataset_type=ds.hub_id,
                        dataset_name=ds.name,
                        dataset_split=row.get("split"),
                        metric_type=metric.split("_")[0],
                        metric_name=metric,
                        metric_value=round(float(value), 4),
                        metric_args={"average": "macro"} if metric.endswith("_macro") else None,
                    )
                )
    return ModelCardData(
        model_name=context.model_name,
        license=context.license,
        language=card_languages(context),
        library_name="transformers",
        # a rationale student is a language model that writes its label and explanation
        pipeline_tag="text-generation" if context.method == "rationale" else "text-classification",
        tags=tags,
        datasets=[d.hub_id for d in context.datasets if d.hub_id] or None,
        metrics=["accuracy", "precision", "recall", "f1"],
        base_model=context.base_model,
        eval_results=eval_results or None,
    )


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else str(value)


def render_model_card(
    context: CardContext, template: str = DEFAULT_TEMPLATE, template_dir: str | os.PathLike | None = None
) -> str:
    """The card's Markdown: YAML metadata (:func:`card_metadata`) and the body rendered from ``template``. The text
    is parsed back with :class:`huggingface_hub.ModelCard` before it is returned, so a card whose metadata the Hub
    would not read raises here."""
    method = METHODS[context.method]
    citations = _unique_citations([*method.citations, *context.citations])
    if context.feature_matching and context.method != "mse":
        citations += [_MKD_BERT, _BREAZU]
    if context.feature_matching and "attention" in context.feature_matching:
        citations.append(_TINYBERT)
    from . import __version__

    summary = (
        f"A {'student distilled' if context.method != 'finetune' else 'model fine-tuned'} with "
        "distil_trainers for text classification"
        + (f" on {', '.join(d.name for d in context.datasets)}" if context.datasets else "")
        + (f", from the teacher `{context.teacher}`" if context.teacher else "")
        + "."
    )
    text = load_template(template, template_dir).render(
        card_data=card_metadata(context).to_yaml(),
        model_name=context.model_name,
        summary=summary,
        method=method,
        base_model=context.base_model,
        student_description=context.student_description,
        params_text=f"{context.params / 1e6:.1f}M" if context.params else "-",
        teacher=context.teacher,
        peers=context.peers,
        label_names=context.label_names,
        library_version=__version__,
        feature_matching=context.feature_matching,
        datasets=context.datasets,
        hyperparameters={k: _plain(v) for k, v in context.hyperparameters.items()},
        metrics=[{**row, "values": {k: _percent(v) for k, v in row["values"].items()}} for row in context.metrics],
        metric_columns=_metric_columns(context),
        metrics_note=context.metrics_note,
        intended_use=context.intended_use or _default_intended_use(context),
        limitations=context.limitations,
        domain=context.domain,
        llm_teacher=context.llm_teacher,
        citations=_unique_citations(citations),
        trainer_class=context.trainer_class,
        trainer_name=context.trainer_name,
    )
    ModelCard(text, ignore_metadata_errors=False)  # raises on metadata the Hub could not read
    return text


def _unique_citations(citations: Sequence[str]) -> list[str]:
    """The citations in order, each paper once (a trainer's ``_paper`` and the method may cite the same paper)."""
    seen, out = set(), []
    for citation in citations:
        title = re.search(r"title\s*=\s*[{\"](.+?)[}\"],?\s*\n", citation, re.S)
        key = re.sub(r"[^a-z0-9]", "", (title.group(1) if title else citation).lower())
        if key not in seen:
            seen.add(key)
            out.append(citation)
    return out


def _metric_columns(context: CardContext) -> list[str]:
    """The card's metric columns: the macro metrics, then per-class F1 in class order."""
    from .metrics import per_class_keys  # (imports `evaluate`: only where a card is rendered)

    present = {k for row in context.metrics for k in row["values"]}
    columns = [m for m in CARD_METRICS if m in present]
    per_class = sorted(k for k in present if k.startswith("f1_") and k not in CARD_METRICS and k != "f1_weighted")
    order: list[str] = []
    # the classes of each dataset in turn (a multi-task model: task by task), then the model's own
    for names in [*(d.label_names for d in context.datasets), context.label_names]:
        if names:
            order += [f"f1_{k}" for k in per_class_keys(names, len(names)) if f"f1_{k}" not in order]
    per_class.sort(key=lambda k: order.index(k) if k in order else len(order))
    return columns + per_class


def _plain(value: Any) -> Any:
    """Hyper-parameter values as the card prints them (enums by their value)."""
    return getattr(value, "value", value)


def _default_intended_use(context: CardContext) -> str:
    classes = f" ({', '.join(context.label_names)})" if context.label_names else ""
    return (
        f"Research on knowledge distillation and a fast first-pass classifier{classes} for English social-media text "
        "like its training data, e.g. to prioritise posts for human review or to measure the prevalence of abusive "
        "language in a corpus. It is not meant to make decisions about people or content on its own."
    )


def write_model_card(context: CardContext, folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the card and write it to ``<folder>/README.md``; returns the path."""
    path = Path(folder) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(context, **kwargs))
    return path


# --------------------------------------------------------------------------------------------------------------------
# From a trainer
# --------------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------------
# From a finished run directory
# --------------------------------------------------------------------------------------------------------------------

_RECIPE_METHODS = {
    "bam": "bam",
    "annealing": "bam",
    "jafari": "jafari",
    "kd": "hinton",
    "none": "hinton",
    "mse": "mse",
    "ffn": "mse",
    "ffn_cls": "mse",
    "baseline": "finetune",
}
_STATE_HPARAMS = ("train_batch_size", "num_train_epochs", "max_steps", "global_step")


def saved_model_method(folder: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The method a recipe trained the model in ``folder`` with, from its ``training_complete.json`` (the students
    of a mutual-learning run: ``ddml``; teachers and baselines: ``finetune``), and that file's content."""
    folder = Path(folder)
    info: dict[str, Any] = {}
    marker = folder / "training_complete.json"
    if marker.is_file():
        import json

        info = json.loads(marker.read_text())
    if (folder.parent / "students.json").is_file():
        return "ddml", info
    method = info.get("method") or info.get("annealing")
    if method in _RECIPE_METHODS:
        return _RECIPE_METHODS[method], info
    if "generation" in info:  # a born-again multi-task student of the cross-lingual recipe (teacher annealing)
        return "bam", info
    return "finetune", info


def saved_card_context(
    folder: str | os.PathLike,
    name: str,
    summary: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    split: str = "test",
    teacher: str | None = None,
    base_model: str | None = None,
    peers: Sequence[str] = (),
    task_summaries: Mapping[str, Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> CardContext:
    """A :class:`CardContext` for a model saved by a recipe, without its trainer: the method from
    ``training_complete.json``, the classes and size from its config, the training schedule from the
    ``trainer_state.json`` of its last checkpoint if one is kept, and the metrics from a report's ``summary`` entry
    (:func:`distil_trainers.papers.reports.build_report`; "mean ± std" when it aggregates seeds).

    A multi-task model (:class:`~distil_trainers.models.MultiTaskModel`) takes ``task_summaries`` instead,
    ``{task: summary entry}``: one metrics row per task, evaluated on the dataset named like the task; its classes are
    listed as ``task: class``."""
    import json

    from transformers import AutoConfig

    folder = Path(folder)
    method, info = saved_model_method(folder)
    config = AutoConfig.from_pretrained(folder)
    id2label = getattr(config, "id2label", None) or {}
    label_names = [id2label[i] for i in sorted(id2label)] or None
    task_names = getattr(config, "task_label_names", None) if getattr(config, "tasks", None) else None
    if getattr(config, "tasks", None):  # a multi-task model: its heads' classes, not the config's default id2label
        label_names = [f"{t}: {n}" for t in config.tasks for n in (task_names or {}).get(t, [])] or None
    hparams: dict[str, Any] = {}
    states = sorted(folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if states:
        state = json.loads(states[-1].read_text())
        hparams = {k: state[k] for k in _STATE_HPARAMS if state.get(k) is not None}
    if info.get("feature_matches"):
        kinds = sorted({f"{m.get('feature', 'embeddings')}/{m.get('loss', 'kl')}" for m in info["feature_matches"]})
        overrides.setdefault("feature_matching", f"{len(info['feature_matches'])} matches ({', '.join(kinds)}).")
    metrics, note, params = [], None, None
    entries = dict(task_summaries) if task_summaries else ({None: summary} if summary is not None else {})
    for task, entry in entries.items():
        stats = entry["metrics"]
        values = {k: v["mean"] for k, v in stats.items() if k in CARD_METRICS or k.startswith("f1_")}
        values.pop("f1_weighted", None)
        where = task or dataset or "evaluation set"
        metrics.append({"model": "this model", "dataset": where, "split": split, "values": values})
        if len(entry.get("seeds", [])) > 1:
            note = f"mean over {len(entry['seeds'])} runs (seeds {entry['seeds']})"
        params = int(stats["params"]["mean"]) if "params" in stats else params
    if task_summaries:
        infos = [dataset_info(t, label_names=(task_names or {}).get(t)) for t in task_summaries]
    else:
        infos = [dataset_info(dataset)] if dataset else []
    context = CardContext(
        model_name=name,
        method=method,
        base_model=base_model,
        params=params,
        teacher=teacher if method != "finetune" else None,
        peers=[PeerInfo(name=p) for p in peers],
        datasets=infos,
        label_names=label_names,
        hyperparameters=hparams,
        metrics=metrics,
        metrics_note=note,
    )
    for key, value in overrides.items():
        setattr(context, key, value)
    return context


def rows_to_card_metrics(
    rows: Sequence[Mapping[str, Any]], this: str, split: str = "test", compare: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Card metric rows from a recipe's result rows (``{"model", "task", "accuracy", ...}``): the row labelled
    ``this`` becomes "this model" (and the card's model-index), the rows labelled in ``compare`` (teacher,
    baselines…) are kept under their labels for comparison."""
    out = []
    for row in rows:
        label = row.get("model")
        if label != this and label not in compare:
            continue
        values = {k: v for k, v in row.items() if (k in CARD_METRICS or k.startswith("f1_")) and k != "f1_weighted"}
        out.append(
            {
                "model": "this model" if label == this else label,
                "dataset": row.get("task"),
                "split": split,
                "values": values,
            }
        )
    return out


def llm_teacher_summary(
    meta: Mapping[str, Any], gold_labels: bool | None = None, prompt_source: str | None = None
) -> dict[str, Any]:
    """What a student's card says about the LLM that labelled its training data, from the ``meta`` of the LLM
    teacher-output cache (:func:`~distil_trainers.teachers.precompute_llm_teacher_outputs`): the model and backend,
    the prompt (``{text}`` standing for each text; the chat messages for a first-token backend), the label words per
    class, the scoring and the calibration. ``gold_labels``: whether the student also saw the gold labels (``None``:
    not said). ``prompt_source``: where a prompt the LLM was trained to answer comes from (a
    :class:`~distil_trainers.teachers.SavedClassifierPrompt`'s ``source``); without it the prompt is described as
    zero- or few-shot.

    Raises:
        ValueError: ``meta`` is not that of an LLM teacher (no ``meta["llm"]``).
    """
    llm = meta.get("llm")
    if not isinstance(llm, Mapping):
        raise ValueError("not the meta of an LLM teacher-output cache (it has no 'llm' entry)")
    backend = dict(llm.get("backend") or {})
    record = meta.get("calibration") or {}
    methods = list(record.get("methods") or [])
    parts = []
    if "contextual" in methods:
        prior = ", ".join(f"{k} {v:.3f}" for k, v in (record.get("content_free_distribution") or {}).items())
        inputs = ", ".join(repr(t) for t in record.get("content_free_inputs") or [])
        parts.append(f"contextual calibration (Zhao et al. 2021): divided by the class distribution of the "
                     f"content-free inputs {inputs} ({prior}) and renormalised")
    if "temperature" in methods:
        temperature = f"temperature T = {record['temperature']:.3f}"
        if record.get("temperature_fitted"):
            temperature += (f", fitted on {record['dev_examples']} labelled examples (NLL {record['dev_nll_before']:.3f}"
                            f" -> {record['dev_nll_after']:.3f})")
        parts.append(temperature)
    if llm.get("scoring") == "first_token":
        scoring = (f"probability of the first answer token among the server's top-{llm.get('top_logprobs')} "
                   "(an approximation: see distil_trainers.teachers.OpenAILogprobBackend)")
        prompt = "\n".join(f"[{m['role']}] {m['content']}" for m in llm.get("messages") or [])
    else:
        scoring = (f"log-probability of each label word after the prompt, {llm.get('normalization')} over its tokens; "
                   "a class sums its words' probabilities, renormalised over the classes")
        prompt = llm.get("prompt_text", "")
    shots = len((llm.get("prompt") or {}).get("demonstrations") or [])
    if prompt_source:
        asked = f"asked the label prompt it was trained to answer ({prompt_source})"
    else:
        asked = f"read as a {f'{shots}-shot' if shots else 'zero-shot'} classifier"
    return {
        "asked": asked,
        "model": llm.get("model") or backend.get("model"),
        "backend": backend.get("backend", "unknown"),
        "backend_details": {k: f"{v / 2**20:.1f} MiB" if k == "size" and isinstance(v, int) else v
                            for k, v in backend.items()
                            if k not in ("backend", "model") and not k.endswith("sha256") and v is not None},
        "scoring": scoring,
        "prompt": prompt,
        "chat_template": bool(llm.get("chat_template")),
        "label_words": {str(k): list(v) for k, v in (llm.get("label_words") or {}).items()},
        "calibration": "; ".join(parts) if parts else "none",
        "gold_labels": gold_labels,
    }


def datasets_of(suite: Any) -> list[DatasetInfo]:
    """:class:`DatasetInfo` of every task of a :class:`~distil_trainers.papers.workflow.TaskSuite` (split sizes, classes)."""
    return [
        dataset_info(task.name, {split: len(ds) for split, ds in task.splits.items()}, task.label_names)
        for task in suite.tasks
    ]


def describe_student_spec(spec: Mapping[str, Any]) -> str | None:
    """A phrase for a student spec of :func:`~distil_trainers.models.students.build_student` (the DDML recipe's
    ``students``): ``layers [0, 2, 4] of <base>`` or ``a 2-layer distilbert (hidden 256) trained from scratch…``."""
    if "base" in spec:
        return f"encoder layers {list(spec['layers'])} of {spec['base']}" if spec.get("layers") else None
    parts = [f"a {spec.get('num_layers', '?')}-layer {spec.get('architecture', 'transformer')}"]
    if spec.get("hidden_size"):
        parts.append(f"(hidden size {spec['hidden_size']})")
    parts.append("trained from scratch")
    if spec.get("vocab_size"):
        parts.append(f"with its own {spec['vocab_size']:,}-token vocabulary learnt from the training texts")
    return " ".join(parts)
