"""What a card says, as data: the methods and their papers (:data:`METHODS`), the datasets, the peers, the whole
:class:`CardContext`, and the names (Hub ids, languages) a card is built from."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..trainers.citations import (
    ANNEALING_KD_CITATION,
    BAM_CITATION,
    DDML_CITATION,
    HINTON_CITATION,
    PIOT_CITATION,
    STEP_BY_STEP_CITATION,
)

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


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id_of(name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub id a model name or path stands for: itself when it looks like ``owner/name`` and is no local folder,
    the Hub id of a packaged copy (:mod:`distil_trainers.models.paths`), else ``None`` (a local checkpoint has no
    Hub id, and the Hub refuses a path as ``base_model``)."""
    if not name_or_path:
        return None
    text = str(name_or_path)
    from ..models.paths import PACKAGED_MODELS, packaged_model_path

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
        from ..data.registry import get_dataset_spec

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
