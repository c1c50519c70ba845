"""Rationale distillation, student side ("Distilling step-by-step", Hsieh et al. 2023; Piot et al.'s 70B -> 8B hate
speech distillation).

A teacher LLM wrote a label and an explanation for every post (``distil_trainers.teachers.rationales``: columns ``id``,
``text``, ``label``, ``teacher_label``, ``rationale``, ``teacher_agrees``, ``parsed``, ``raw_output``). Every post
gives the student TWO training views that differ by their task instruction:

* label view: "answer with the label" -> completion = the label word;
* rationale view: "explain, then answer" -> completion = the rationale and a final ``Label: <label>`` line.

The loss is ``alpha * L_label + (1 - alpha) * L_rationale`` where each term is the token-level cross-entropy over the
COMPLETION tokens of its view, normalised by the number of completion tokens of that view in the whole optimizer step
(all gradient-accumulation micro-batches, all processes), so that batch 4 gives the same gradients as batch 2 x 2
accumulation steps. ``alpha = 1`` is the label-only ablation (rationale views are not built at all).

With a teacher LLM that shares the student's tokenizer, :class:`RationaleSFTTrainer` also distils token by token from a
cache of the teacher's top-k next-token log-probabilities (``teacher_outputs=``, built over :func:`training_views` with
``distil_trainers.teachers.cache.precompute_topk_logprobs``): with ``w = teacher_kd_weight`` the loss becomes
``(1 - w) * [alpha * L_label + (1 - alpha) * L_rationale] + w * [alpha * KD_label + (1 - alpha) * KD_rationale]``,
``KD_view`` being ``T^2 * KL(teacher || student)`` summed over that view's completion tokens and divided by the same
token counts as the cross-entropy.

At evaluation the student classifies by scoring: for every post, the log-likelihood of each candidate label word as the
completion of the label-view prompt (one batched forward per post's candidate set, no free generation); the argmax is
the prediction, reported as ``eval_accuracy``, ``eval_f1_macro``, ``eval_f1_<class>`` ...

Two trainers share this: :class:`RationaleSFTTrainer` (a ``trl.SFTTrainer`` for decoder-only students, with QLoRA via
``quantization_config`` + ``peft_config``) and :class:`RationaleSeq2SeqTrainer` (a ``Seq2SeqTrainer`` for T5-style
encoder-decoder students, task prefixes ``[label]`` / ``[rationale]`` as in Distilling step-by-step).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments
from trl import SFTConfig, SFTTrainer

from ..losses import topk_kl_per_item
from ..metrics import classification_metrics
from ..teachers.cache import CACHE_ROW_COLUMN, TeacherOutputs, resolve_teacher_outputs
from .base import HubPushMixin

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_VIEW",
    "POST_ID_COLUMN",
    "RATIONALE_VIEW",
    "VIEW_COLUMN",
    "RationaleSFTConfig",
    "RationaleSFTTrainer",
    "RationaleSeq2SeqConfig",
    "RationaleSeq2SeqTrainer",
    "build_rationale_views",
    "disable_avx512_bf16_repacking",
    "parse_student_output",
    "rationale_multitask_loss",
    "training_views",
    "view_row_id",
]

LABEL_VIEW, RATIONALE_VIEW = 0, 1
VIEW_COLUMN = "view"
VIEW_NAMES = {LABEL_VIEW: "label", RATIONALE_VIEW: "rationale"}
# Column of :func:`training_views`' rows: the post a view row comes from (their `id` is the view row's own id)
POST_ID_COLUMN = "post_id"
LABEL_SOURCES = ("gold", "teacher")
UNPARSED_ROWS = ("drop_rationale", "drop")


# --------------------------------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------------------------------


def rationale_multitask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    view: torch.Tensor,
    alpha: float,
    num_label_tokens: torch.Tensor | int | None = None,
    num_rationale_tokens: torch.Tensor | int | None = None,
    shift: bool = True,
) -> dict[str, torch.Tensor]:
    """``alpha * L_label + (1 - alpha) * L_rationale`` over the completion tokens of each view.

    Args:
        logits: ``(batch, length, vocab)``.
        labels: ``(batch, length)`` token ids, ``-100`` where there is no loss (prompt, padding).
        view: ``(batch,)``, ``LABEL_VIEW`` (0) or ``RATIONALE_VIEW`` (1) per row.
        alpha: weight of the label view, in [0, 1].
        num_label_tokens / num_rationale_tokens: the denominators, i.e. the number of loss tokens of each view in the
            whole optimizer step (gradient accumulation and processes included). ``None``: this batch's own counts.
        shift: causal LM (token t predicts t + 1): compare ``logits[:, :-1]`` with ``labels[:, 1:]``. ``False`` for
            encoder-decoder models whose logits are aligned with their labels.

    Returns:
        ``loss`` and, for logging, ``sum_label`` / ``sum_rationale`` (summed token losses, detached) and
        ``count_label`` / ``count_rationale`` (this batch's loss tokens).
    """
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    per_token = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    valid = labels.ne(-100)
    is_label = (view == LABEL_VIEW).unsqueeze(1)
    is_rationale = (view == RATIONALE_VIEW).unsqueeze(1)
    sum_label = (per_token * is_label).sum()
    sum_rationale = (per_token * is_rationale).sum()
    count_label = (valid & is_label).sum()
    count_rationale = (valid & is_rationale).sum()
    n_label = count_label if num_label_tokens is None else torch.as_tensor(num_label_tokens)
    n_rationale = count_rationale if num_rationale_tokens is None else torch.as_tensor(num_rationale_tokens)
    n_label = n_label.to(per_token.device).clamp(min=1)
    n_rationale = n_rationale.to(per_token.device).clamp(min=1)
    loss = alpha * sum_label / n_label
    if alpha < 1:
        loss = loss + (1 - alpha) * sum_rationale / n_rationale
    return {
        "loss": loss,
        "sum_label": sum_label.detach(),
        "sum_rationale": sum_rationale.detach(),
        "count_label": count_label,
        "count_rationale": count_rationale,
    }


# --------------------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RationaleArguments:
    """The rationale-distillation fields shared by :class:`RationaleSFTConfig` and :class:`RationaleSeq2SeqConfig`."""

    alpha: float = field(
        default=0.5,
        metadata={
            "help": "Weight of the label view: loss = alpha * L_label + (1 - alpha) * L_rationale. 1 = label-only "
            "ablation (no rationale views are built)."
        },
    )
    label_source: str = field(
        default="gold",
        metadata={
            "help": "Which label the student is trained on (label view and final line of the rationale view): 'gold' "
            "(the dataset's label, with the teacher's rationale) or 'teacher' (the teacher's parsed label; rows whose "
            "label the teacher did not give are dropped).",
            "choices": list(LABEL_SOURCES),
        },
    )
    unparsed_rows: str = field(
        default="drop_rationale",
        metadata={
            "help": "Rows whose teacher output could not be parsed (parsed=False or an empty rationale): "
            "'drop_rationale' keeps their label view and drops their rationale view; 'drop' drops both views.",
            "choices": list(UNPARSED_ROWS),
        },
    )
    rationales_when_teacher_agrees: bool = field(
        default=False,
        metadata={
            "help": "Build the rationale view only for rows where the teacher's label equals the gold label "
            "(teacher_agrees), so the student never learns an explanation arguing for another label."
        },
    )
    class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "The label words, in label-id order (what the student writes as its answer). Default: the names of "
            "the `label` ClassLabel of the training set."
        },
    )
    task_description: str = field(
        default="Classify the following social-media post.",
        metadata={"help": "First line of every prompt (both views)."},
    )
    label_instruction: str = field(
        default="Answer with the label only, one of: {labels}.",
        metadata={"help": "Instruction of the label view; '{labels}' is replaced by the class names."},
    )
    rationale_instruction: str = field(
        default="Explain your reasoning briefly, then give the label on a last line 'Label: <label>', where <label> "
        "is one of: {labels}.",
        metadata={"help": "Instruction of the rationale view; '{labels}' is replaced by the class names."},
    )
    answer_prefix: str = field(
        default="Label: ",
        metadata={"help": "Prefix of the final answer line of rationale-view completions."},
    )
    label_scoring: bool = field(
        default=True,
        metadata={
            "help": "At evaluation, classify every evaluation post by the log-likelihood of each label word and report "
            "accuracy, macro P/R/F1 and per-class F1 (eval_accuracy, eval_f1_macro, ...)."
        },
    )
    max_scoring_samples: int | None = field(
        default=None,
        metadata={"help": "Score at most this many evaluation posts (the first ones); None = all."},
    )
    teacher_kd_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight w of token-level distillation from a top-k teacher cache (RationaleSFTTrainer's "
            "`teacher_outputs`): loss = (1 - w) * view loss + w * KD, where KD = alpha * KD_label + (1 - alpha) * "
            "KD_rationale and KD_view is T^2 * KL(teacher || student) per completion token of that view. 0 = off "
            "(the loss is exactly the view loss)."
        },
    )
    teacher_kd_temperature: float = field(
        default=1.0,
        metadata={
            "help": "Temperature T of the distillation term; must equal the temperature the top-k cache was built "
            "with (precompute_topk_logprobs(temperature=...))."
        },
    )

    def _check_rationale_arguments(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}.")
        if self.unparsed_rows not in UNPARSED_ROWS:
            raise ValueError(f"unparsed_rows must be one of {UNPARSED_ROWS}, got {self.unparsed_rows!r}.")
        if self.class_names is not None:
            names = [str(n).strip() for n in self.class_names]
            if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
                raise ValueError(f"class_names must be >= 2 distinct non-empty words, got {self.class_names}.")
        if self.max_scoring_samples is not None and self.max_scoring_samples < 1:
            raise ValueError(f"max_scoring_samples must be >= 1 or None, got {self.max_scoring_samples}.")
        if not 0.0 <= self.teacher_kd_weight <= 1.0:
            raise ValueError(f"teacher_kd_weight must be in [0, 1], got {self.teacher_kd_weight}.")
        if not self.teacher_kd_temperature > 0:
            raise ValueError(f"teacher_kd_temperature must be > 0, got {self.teacher_kd_temperature}.")


@dataclass
class RationaleSFTConfig(RationaleArguments, SFTConfig):
    """[`~trl.SFTConfig`] plus the rationale-distillation fields (``alpha``, ``label_source``, ``unparsed_rows``...).

    Packing and padding-free batches are refused: every row must stay one view. ``completion_only_loss`` is always
    on (the prompt is never a target)."""

    def __post_init__(self):
        self._check_rationale_arguments()
        if self.packing or self.padding_free:
            raise ValueError("RationaleSFTConfig does not support packing / padding_free: each row must be one view.")
        if self.completion_only_loss is False:
            raise ValueError(
                "Rationale distillation trains on completion tokens only; leave completion_only_loss unset."
            )
        if self.assistant_only_loss:
            raise ValueError("assistant_only_loss does not apply: the views are prompt-completion pairs.")
        self.completion_only_loss = True
        super().__post_init__()


@dataclass
class RationaleSeq2SeqConfig(RationaleArguments, Seq2SeqTrainingArguments):
    """[`~transformers.Seq2SeqTrainingArguments`] plus the rationale-distillation fields, for encoder-decoder
    students (T5 family)."""

    label_prefix: str = field(default="[label]", metadata={"help": "Input prefix of the label view."})
    rationale_prefix: str = field(default="[rationale]", metadata={"help": "Input prefix of the rationale view."})
    max_source_length: int = field(default=256, metadata={"help": "Encoder inputs are truncated to this many tokens."})
    max_target_length: int = field(default=256, metadata={"help": "Targets are truncated to this many tokens."})

    def __post_init__(self):
        self._check_rationale_arguments()
        if self.max_source_length < 1 or self.max_target_length < 1:
            raise ValueError("max_source_length and max_target_length must be >= 1.")
        super().__post_init__()


# --------------------------------------------------------------------------------------------------------------------
# Data: two views per post
# --------------------------------------------------------------------------------------------------------------------


def _class_names(args: RationaleArguments, dataset: Any, override: Sequence[str] | None = None) -> list[str]:
    if override is not None:
        return [str(n) for n in override]
    if args.class_names is not None:
        return list(args.class_names)
    feature = getattr(dataset, "features", {}).get("label") if dataset is not None else None
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    raise ValueError(
        "The class names are unknown: pass class_names=[...] (in label-id order) to the trainer or its config, or give "
        "the dataset a `label` ClassLabel feature."
    )


def _format_instruction(template: str, class_names: Sequence[str]) -> str:
    return template.replace("{labels}", ", ".join(class_names))


def view_prompt(args: Any, text: str, view: int, class_names: Sequence[str]) -> str:
    """The prompt text of one view of one post (decoder-only students; seq2seq students use the task prefix)."""
    if isinstance(args, RationaleSeq2SeqConfig):
        prefix = args.label_prefix if view == LABEL_VIEW else args.rationale_prefix
        return f"{prefix} {text}"
    template = args.label_instruction if view == LABEL_VIEW else args.rationale_instruction
    return f"{args.task_description}\n{_format_instruction(template, class_names)}\n\nPost: {text}"


def rationale_completion(rationale: str, label_word: str, answer_prefix: str) -> str:
    return f"{rationale.strip()}\n{answer_prefix}{label_word}"


REQUIRED_COLUMNS = ("text", "label")


def build_rationale_views(
    dataset: datasets.Dataset,
    args: RationaleArguments,
    class_names: Sequence[str],
    conversational: bool = True,
    with_rationales: bool | None = None,
) -> datasets.Dataset:
    """Turn a teacher-annotated dataset into prompt-completion rows, one per view, with a ``view`` column
    (``LABEL_VIEW`` / ``RATIONALE_VIEW``) and the post's ``id`` (when the dataset has one).

    ``conversational``: prompt and completion as chat messages (the tokenizer's chat template formats them, as TRL
    does for conversational prompt-completion datasets); otherwise plain strings (the prompt ends with a newline).
    ``with_rationales``: build rationale views (default: when ``args.alpha < 1``).
    Rows without a usable label (``label_source='teacher'`` and the teacher gave none, or a gold label of -100) have no
    views at all.
    """
    with_rationales = args.alpha < 1 if with_rationales is None else with_rationales
    columns = set(dataset.column_names)
    needed = list(REQUIRED_COLUMNS)
    if with_rationales:
        needed.append("rationale")
    if args.label_source == "teacher":
        needed.append("teacher_label")
    if args.rationales_when_teacher_agrees and with_rationales:
        needed.append("teacher_agrees")
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(
            f"The dataset lacks the columns {missing} (it has {sorted(columns)}). Rationale distillation needs the "
            "output of distil_trainers.teachers.rationales.generate_rationales (id, text, label, teacher_label, rationale, "
            "teacher_agrees, parsed, raw_output)."
        )
    table = dataset.to_dict()
    n = len(dataset)
    num_classes = len(class_names)
    rows: dict[str, list] = {"id": [], "prompt": [], "completion": [], VIEW_COLUMN: []}

    def add(i: int, view: int, completion: str) -> None:
        prompt = view_prompt(args, table["text"][i], view, class_names)
        if conversational:
            rows["prompt"].append([{"role": "user", "content": prompt}])
            rows["completion"].append([{"role": "assistant", "content": completion}])
        else:
            rows["prompt"].append(prompt + "\n")
            rows["completion"].append(completion)
        rows["id"].append(str(table["id"][i]) if "id" in table else str(i))
        rows[VIEW_COLUMN].append(view)

    for i in range(n):
        label = int(table["teacher_label"][i] if args.label_source == "teacher" else table["label"][i])
        if label == -100 or (args.label_source == "teacher" and label < 0):
            continue
        if not 0 <= label < num_classes:
            raise ValueError(f"Row {i} has label {label} but there are {num_classes} classes {list(class_names)}.")
        rationale = str(table["rationale"][i] or "") if "rationale" in table else ""
        parsed = bool(table["parsed"][i]) if "parsed" in table else True
        usable = parsed and bool(rationale.strip())
        if not usable and args.unparsed_rows == "drop" and with_rationales:
            continue
        add(i, LABEL_VIEW, class_names[label])
        if with_rationales and usable:
            if args.rationales_when_teacher_agrees and not bool(table["teacher_agrees"][i]):
                continue
            add(i, RATIONALE_VIEW, rationale_completion(rationale, class_names[label], args.answer_prefix))
    if not rows["prompt"]:
        raise ValueError("No training views could be built: every row lacks a usable label.")
    return datasets.Dataset.from_dict(rows)


def _is_view_dataset(dataset: Any) -> bool:
    return isinstance(dataset, datasets.Dataset) and VIEW_COLUMN in dataset.column_names


def view_row_id(post_id: Any, view: int) -> str:
    """The id of one view row: ``"<post id>:label"`` or ``"<post id>:rationale"`` (what a top-k teacher cache is
    keyed by)."""
    return f"{post_id}:{VIEW_NAMES[int(view)]}"


def _view_row_ids(dataset: datasets.Dataset, what: str = "dataset") -> list[str]:
    """The view-row ids of a view dataset: its ``id`` column when it comes from :func:`training_views` (it has a
    ``post_id`` column), else built from the post ``id`` and the ``view``."""
    columns = dataset.column_names
    if POST_ID_COLUMN in columns:
        return [str(i) for i in dataset["id"][:]]
    if "id" not in columns or VIEW_COLUMN not in columns:
        raise ValueError(
            f"The {what} has no `id` / `{VIEW_COLUMN}` columns, so its rows cannot be matched with the teacher cache. "
            "Pass teacher-annotated posts with an `id` column (or the output of training_views)."
        )
    return [view_row_id(i, v) for i, v in zip(dataset["id"][:], dataset[VIEW_COLUMN][:])]


def _prepare_sft_views(
    views: datasets.Dataset, args: RationaleSFTConfig, processing_class, name: str = "train"
) -> datasets.Dataset:
    """Tokenise prompt-completion view rows with TRL's own ``SFTTrainer._prepare_dataset``, as the trainer does (no
    model needed: the preparation reads only the tokenizer and the config)."""
    if args.dataset_kwargs and args.dataset_kwargs.get("skip_prepare_dataset", False):
        return views
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if args.eos_token is not None:
        tokenizer.eos_token = args.eos_token  # as SFTTrainer.__init__ does before preparing
    preparer = SFTTrainer.__new__(SFTTrainer)
    preparer._tokenizer = tokenizer
    preparer.chat_template = None  # assistant_only_loss is refused by RationaleSFTConfig
    preparer.completion_only_loss = True
    return SFTTrainer._prepare_dataset(preparer, views, processing_class, args, False, None, name)


def training_views(
    dataset: datasets.Dataset | Mapping[str, datasets.Dataset],
    args: RationaleSFTConfig,
    processing_class,
    class_names: Sequence[str] | None = None,
    name: str = "train",
) -> datasets.Dataset | dict[str, datasets.Dataset]:
    """The tokenised view rows :class:`RationaleSFTTrainer` trains on, for precomputing a top-k teacher cache.

    ``dataset``: teacher-annotated posts (or a ``{"train": ..., "eval": ...}`` mapping of them, returned as a dict),
    turned into label and rationale views and tokenised exactly as the trainer does with the same ``args`` and
    tokenizer. Columns: ``id`` (the view row's id, ``"<post id>:label"`` / ``"<post id>:rationale"``), ``post_id``,
    ``view``, ``input_ids`` and ``labels`` (-100 outside the completion). Pass the result to
    ``distil_trainers.teachers.cache.precompute_topk_logprobs(teacher, views, cache_dir, k=..., temperature=...,
    tokenizer=tokenizer)`` and the cache to the trainer as ``teacher_outputs``.
    """
    if isinstance(dataset, Mapping):
        return {key: training_views(ds, args, processing_class, class_names, key) for key, ds in dataset.items()}
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"training_views needs a datasets.Dataset (or a mapping of them), got {type(dataset).__name__}."
        )
    if not isinstance(args, RationaleSFTConfig):
        raise TypeError("training_views needs `args`, the RationaleSFTConfig the student will be trained with.")
    if _is_view_dataset(dataset):
        views = dataset
    else:
        names = _class_names(args, dataset, class_names)
        conversational = getattr(processing_class, "chat_template", None) is not None
        views = build_rationale_views(dataset, args, names, conversational=conversational)
    prepared = _prepare_sft_views(views, args, processing_class, name)
    ids = _view_row_ids(prepared)
    posts = prepared[POST_ID_COLUMN][:] if POST_ID_COLUMN in prepared.column_names else prepared["id"][:]
    return datasets.Dataset.from_dict(
        {
            "id": ids,
            POST_ID_COLUMN: [str(p) for p in posts],
            VIEW_COLUMN: prepared[VIEW_COLUMN][:],
            "input_ids": prepared["input_ids"][:],
            "labels": prepared["labels"][:],
        }
    )


def parse_student_output(output: str, class_names: Sequence[str], answer_prefix: str = "Label: ") -> tuple[str, int]:
    """Split a rationale-view generation into (rationale, label id); the label id is -1 when no class name is found
    on the last ``answer_prefix`` line (or, failing that, anywhere in the last line)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    prefix = answer_prefix.strip().lower()
    answer_index = next(
        (k for k in range(len(lines) - 1, -1, -1) if lines[k].strip().lower().startswith(prefix)), None
    )
    if answer_index is None:
        answer, rationale = (lines[-1] if lines else ""), "\n".join(lines[:-1])
    else:
        answer, rationale = lines[answer_index].strip()[len(prefix) :], "\n".join(lines[:answer_index])
    answer = answer.strip().lower()
    # longest names first so that "not-hate" is not read as "hate"
    for cid in sorted(range(len(class_names)), key=lambda c: -len(class_names[c])):
        if re.search(rf"(?<![\w-]){re.escape(class_names[cid].lower())}(?![\w-])", answer):
            return rationale.strip(), cid
    return rationale.strip(), -1


# --------------------------------------------------------------------------------------------------------------------
# QLoRA on CPU
# --------------------------------------------------------------------------------------------------------------------


def disable_avx512_bf16_repacking(model: nn.Module) -> int:
    """Set ``support_avx512bf16_for_cpu = False`` on every ``bitsandbytes.nn.Linear4bit`` of ``model``.

    With bitsandbytes 0.50 on CPUs with avx512_bf16, the first eval-mode / no-grad forward repacks the 4-bit weights,
    after which LoRA gradients are missing or wrong. Returns the number of modules changed (0 without bitsandbytes)."""
    try:
        import bitsandbytes as bnb
    except Exception:  # noqa: BLE001 - not installed or not loadable: no 4-bit layers either
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def _is_4bit(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False)) or any(
        type(m).__name__ == "Linear4bit" for m in model.modules()
    )


# --------------------------------------------------------------------------------------------------------------------
# What both trainers share
# --------------------------------------------------------------------------------------------------------------------


class _RationaleTrainerMixin:
    """View-aware token counting, the alpha-weighted loss, per-view loss logging and label scoring at evaluation."""

    _shift_labels = True  # causal LM

    # ---- set-up --------------------------------------------------------------------------------------------------

    def _check_inputs(self, args, config_class: type, processing_class, train_dataset, data_collator=None) -> None:
        """The errors both trainers raise before anything is built (``data_collator``: one the trainer refuses)."""
        name = type(self).__name__
        if args is None or not isinstance(args, config_class):
            raise TypeError(f"{name} needs `args`, a {config_class.__name__}.")
        if data_collator is not None:
            raise ValueError(f"{name} builds its own collator (it must carry the `view` column).")
        if processing_class is None:
            raise ValueError(f"{name} needs the student's tokenizer as `processing_class`.")
        if train_dataset is None:
            raise ValueError(f"{name} needs a `train_dataset` (the teacher-annotated posts).")

    def _training_views(self, train_dataset, eval_dataset, views_of: Callable[[datasets.Dataset], datasets.Dataset]):
        """The views of the training and evaluation sets (``views_of`` builds them from posts, and passes view datasets
        through); a raw evaluation set is also kept for label scoring."""
        self._raw_eval_dataset = None
        train_views, eval_views = views_of(train_dataset), eval_dataset
        if isinstance(eval_dataset, datasets.Dataset) and not _is_view_dataset(eval_dataset):
            self._raw_eval_dataset = eval_dataset
            eval_views = views_of(eval_dataset)
        return train_views, eval_views

    def _init_rationale_state(self) -> None:
        self._view_token_counts: torch.Tensor | None = None
        # summed token losses and token counts of each view, then the summed KD terms of each view
        self._view_logs = {mode: torch.zeros(6, dtype=torch.float64) for mode in ("train", "eval")}
        self.teacher_cache: TeacherOutputs | None = None
        # compute_loss normalises by num_items_in_batch itself: Trainer must count the items and not divide again
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            extra = [VIEW_COLUMN] + ([CACHE_ROW_COLUMN] if getattr(self, "teacher_cache", None) is not None else [])
            extra = [c for c in extra if c not in self._signature_columns]
            self._signature_columns = [*self._signature_columns, *extra]

    # ---- token counts over the whole optimizer step ----------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(2, dtype=torch.long)
        for batch in batch_samples:
            labels = batch["labels"][..., 1:] if self._shift_labels else batch["labels"]
            valid = labels.ne(-100).cpu()
            view = batch[VIEW_COLUMN].cpu()
            counts[0] += valid[view == LABEL_VIEW].sum()
            counts[1] += valid[view == RATIONALE_VIEW].sum()
        counts = counts.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            counts = self.accelerator.gather(counts.unsqueeze(0)).sum(0)
        self._view_token_counts = counts
        return batch_samples, num_items_in_batch

    # ---- loss ------------------------------------------------------------------------------------------------------

    def _view_loss(self, logits, labels, view, num_items_in_batch, cache_rows=None) -> torch.Tensor:
        mode = "train" if self.model.training else "eval"
        counts = self._view_token_counts if (num_items_in_batch is not None and mode == "train") else None
        alpha = self.args.alpha
        out = rationale_multitask_loss(
            logits,
            labels,
            view,
            alpha=alpha,
            num_label_tokens=None if counts is None else counts[0],
            num_rationale_tokens=None if counts is None else counts[1],
            shift=self._shift_labels,
        )
        loss = out["loss"]
        zero = torch.zeros((), dtype=out["sum_label"].dtype, device=out["sum_label"].device)
        kd_label, kd_rationale = zero, zero
        weight = self.args.teacher_kd_weight
        if weight > 0:
            kd_label, kd_rationale = self._teacher_kd_sums(logits, labels, view, cache_rows)
            # the denominators of the cross-entropy: this optimizer step's completion tokens of each view
            n_label = out["count_label"] if counts is None else counts[0]
            n_rationale = out["count_rationale"] if counts is None else counts[1]
            kd = alpha * kd_label / n_label.to(kd_label.device).clamp(min=1)
            if alpha < 1:
                kd = kd + (1 - alpha) * kd_rationale / n_rationale.to(kd_label.device).clamp(min=1)
            loss = (1 - weight) * loss + weight * kd
        if counts is not None and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the counts cover every rank
        parts = torch.stack(
            [
                out["sum_label"],
                out["count_label"],
                out["sum_rationale"],
                out["count_rationale"],
                kd_label.detach(),
                kd_rationale.detach(),
            ]
        ).double()
        self._view_logs[mode] += self.accelerator.gather(parts.unsqueeze(0)).sum(0).cpu()
        return loss

    def _teacher_kd_sums(self, logits, labels, view, cache_rows) -> tuple[torch.Tensor, torch.Tensor]:
        """``T^2 * KL(teacher || student)`` from the top-k cache, summed over the completion tokens of the label views
        and of the rationale views of the batch."""
        if self.teacher_cache is None or cache_rows is None:
            raise ValueError(
                "teacher_kd_weight > 0 needs the teacher's top-k cache: pass `teacher_outputs` to the trainer (and "
                f"keep the `{CACHE_ROW_COLUMN}` column the trainer adds to its datasets)."
            )
        if self._shift_labels:  # the entry of token t is predicted by the logits at t - 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        valid = labels.ne(-100)
        entries = self.teacher_cache.topk_at(cache_rows.tolist())
        for b, (entry, n) in enumerate(zip(entries, valid.sum(1).tolist())):
            if entry["rest_logprob"].shape[0] != n:
                raise ValueError(
                    f"Row {b} of the batch has {n} completion tokens but its teacher-cache entry holds "
                    f"{entry['rest_logprob'].shape[0]}: the cache was built over differently tokenised views."
                )
        device = logits.device
        stacked = {k: torch.cat([e[k] for e in entries]).to(device) for k in entries[0]}
        per_token = topk_kl_per_item(
            logits[valid],  # row by row, positions in order: the order of the cached entries
            stacked["topk_logprobs"],
            stacked["topk_indices"],
            stacked["rest_logprob"],
            temperature=self.args.teacher_kd_temperature,
        )
        token_view = view.to(device).unsqueeze(1).expand_as(valid)[valid]
        zero = per_token.new_zeros(())
        kd_label = torch.where(token_view == LABEL_VIEW, per_token, zero).sum()
        kd_rationale = torch.where(token_view == RATIONALE_VIEW, per_token, zero).sum()
        return kd_label, kd_rationale

    def _pop_view_logs(self, mode: str) -> dict[str, float]:
        sum_l, n_l, sum_r, n_r, kd_l, kd_r = self._view_logs[mode].tolist()
        self._view_logs[mode].zero_()
        out = {}
        if n_l > 0:
            out["loss_label"] = sum_l / n_l
        if n_r > 0:
            out["loss_rationale"] = sum_r / n_r
        if self.args.teacher_kd_weight > 0 and n_l + n_r > 0:
            alpha = self.args.alpha
            out["loss_teacher_kd"] = alpha * (kd_l / n_l if n_l else 0.0) + (1 - alpha) * (kd_r / n_r if n_r else 0.0)
        return out

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        mode = "train" if self.model.training else "eval"
        extra = self._pop_view_logs(mode)
        if mode == "eval":
            extra = {f"eval_{k}": v for k, v in extra.items()}
        logs.update(extra)
        super().log(logs, *args, **kwargs)

    # ---- evaluation ------------------------------------------------------------------------------------------------

    def _views_for(self, dataset: datasets.Dataset) -> datasets.Dataset:
        raise NotImplementedError

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        raw = self._raw_eval_dataset
        if isinstance(eval_dataset, datasets.Dataset) and not _is_view_dataset(eval_dataset):
            raw, eval_dataset = eval_dataset, self._views_for(eval_dataset)
        metrics = super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        # `metric_key_prefix`'s per-view losses were logged (log() adds them to the same dict)
        if self.args.label_scoring and raw is not None and "label" in raw.column_names:
            if self.args.max_scoring_samples is not None:
                raw = raw.select(range(min(len(raw), self.args.max_scoring_samples)))
            predictions = self.predict_labels(raw["text"][:])
            references = [int(x) for x in raw["label"][:]]
            scores = classification_metrics(references, predictions, label_names=self.class_names)
            extra = {f"{metric_key_prefix}_{k}": float(v) for k, v in scores.items()}
            metrics.update(extra)
            self.log(dict(extra))
        return metrics

    def _explain_each(self, texts: Sequence[str], generate: Callable[[nn.Module, str], str]) -> list[dict[str, Any]]:
        """``generate(model, text) -> output`` for every text with the model in eval mode, parsed into
        ``{"text", "rationale", "label", "label_name", "output"}``."""
        model = self.model
        was_training = model.training
        model.eval()
        results = []
        try:
            for text in texts:
                output = generate(model, text)
                rationale, label = parse_student_output(output, self.class_names, self.args.answer_prefix)
                label_name = self.class_names[label] if label >= 0 else None
                results.append(
                    {"text": text, "rationale": rationale, "label": label, "label_name": label_name, "output": output}
                )
        finally:
            model.train(was_training)
        return results

    @torch.no_grad()
    def predict_labels(self, texts: Sequence[str], return_scores: bool = False, show_progress: bool = True):
        """Class ids of ``texts``: for each text, the class whose word has the highest log-likelihood (summed over its
        completion tokens) as the completion of the label-view prompt. One forward per text over all candidates.
        With ``return_scores``, also the ``(len(texts), num_classes)`` log-likelihoods."""
        model = self.model
        was_training = model.training
        model.eval()
        scores = np.full((len(texts), len(self.class_names)), -np.inf)
        try:
            batches = self._candidate_batches(texts)
            for i, batch in enumerate(
                tqdm(
                    batches,
                    total=len(texts),
                    desc="Scoring labels",
                    disable=not show_progress or not self.is_world_process_zero(),
                )
            ):
                batch = {k: v.to(self.args.device) for k, v in batch.items()}
                labels = batch.pop("labels")
                logits = self._candidate_logits(model, batch, labels)
                if self._shift_labels:
                    logits, labels = logits[:, :-1], labels[:, 1:]
                logp = torch.log_softmax(logits.float(), dim=-1)
                valid = labels.ne(-100)
                token_logp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
                scores[i] = token_logp.sum(-1).cpu().numpy()
        finally:
            model.train(was_training)
        predictions = scores.argmax(-1)
        return (predictions, scores) if return_scores else predictions


# --------------------------------------------------------------------------------------------------------------------
# Decoder-only students: an SFTTrainer
# --------------------------------------------------------------------------------------------------------------------


class _ViewCollator:
    """Wraps TRL's language-modeling collator and adds the ``view`` column (and the teacher-cache rows, when the
    dataset has them) as tensors."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        extra = [c for c in (VIEW_COLUMN, CACHE_ROW_COLUMN) if c in examples[0]]
        batch = self.inner([{k: v for k, v in ex.items() if k not in extra} for ex in examples])
        for column in extra:
            batch[column] = torch.tensor([int(ex[column]) for ex in examples], dtype=torch.long)
        return batch


def _resolve_topk_cache(teacher_outputs, args: RationaleArguments) -> TeacherOutputs | None:
    """The top-k cache, checked against the arguments (kind, temperature) before anything is built."""
    if teacher_outputs is None:
        if args.teacher_kd_weight > 0:
            raise ValueError(
                f"teacher_kd_weight = {args.teacher_kd_weight} needs `teacher_outputs`: a top-k teacher cache built "
                "with precompute_topk_logprobs over training_views(posts, args, tokenizer)."
            )
        return None
    cache = resolve_teacher_outputs(teacher_outputs, kind="topk")
    cached = cache.meta.get("temperature")
    if cached is None or float(cached) != float(args.teacher_kd_temperature):
        raise ValueError(
            f"teacher_kd_temperature = {args.teacher_kd_temperature} but the teacher cache was built with temperature "
            f"{cached}: set teacher_kd_temperature={cached} or rebuild the cache with "
            f"precompute_topk_logprobs(..., temperature={args.teacher_kd_temperature})."
        )
    return cache


def _output_vocab_size(model: nn.Module) -> int:
    """Width of the student's logits."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if getattr(head, "out_features", None) is not None:
        return int(head.out_features)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.vocab_size)


class RationaleSFTTrainer(_RationaleTrainerMixin, HubPushMixin, SFTTrainer):
    """Multi-task rationale distillation for decoder-only students (a [`~trl.SFTTrainer`]).

    ``train_dataset`` / ``eval_dataset`` are teacher-annotated datasets (the output of
    ``distil_trainers.teachers.rationales.generate_rationales``: ``text``, ``label``, ``teacher_label``, ``rationale``,
    ``parsed``, ...); they are turned into label and rationale views (:func:`build_rationale_views`) and tokenised by
    TRL as prompt-completion data (chat template when the tokenizer has one). Everything else is ``SFTTrainer``'s:
    ``model`` may be a path with ``args.model_init_kwargs``, ``quantization_config`` (a
    ``transformers.BitsAndBytesConfig``, e.g. nf4 + double quantization) and ``peft_config`` (a ``peft.LoraConfig``)
    give QLoRA. On CPU the 4-bit layers get the avx512_bf16 work-around and LoRA weights stay in float32.

    ``teacher_outputs`` (a top-k :class:`~distil_trainers.teachers.cache.TeacherOutputs` or its directory, built with
    ``precompute_topk_logprobs`` over :func:`training_views` by a teacher with the student's tokenizer) adds the
    token-level distillation term weighted by ``args.teacher_kd_weight``. Its rows are found by view-row id, never by
    position; every train and eval view row needs one, with as many completion tokens as the student's row, token ids
    inside the student's vocabulary and the temperature ``args.teacher_kd_temperature`` (all checked here, before
    training).

    Logged: ``loss``, ``loss_label``, ``loss_rationale`` (per-token means of each view), ``loss_teacher_kd`` (with a
    teacher cache: ``alpha * KD_label + (1 - alpha) * KD_rationale``, per-token means), and at evaluation
    ``eval_loss*`` plus label-scoring metrics ``eval_accuracy``, ``eval_f1_macro``, ``eval_f1_<class>``...

    Example::

        args = RationaleSFTConfig(output_dir="out", alpha=0.5, class_names=["hate", "offensive", "neither"])
        trainer = RationaleSFTTrainer(model=student, args=args, train_dataset=rationales["train"],
                                      eval_dataset=rationales["validation"], processing_class=tokenizer,
                                      peft_config=LoraConfig(r=16, target_modules="all-linear"))
        trainer.train()
        trainer.evaluate()          # eval_loss_label, eval_loss_rationale, eval_f1_macro, ...
        trainer.explain(["some post"])
    """

    _shift_labels = True

    def __init__(
        self,
        model,
        args: RationaleSFTConfig | None = None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | None = None,
        processing_class=None,
        class_names: Sequence[str] | None = None,
        teacher_outputs: TeacherOutputs | str | os.PathLike | None = None,
        **kwargs,
    ):
        self._check_inputs(args, RationaleSFTConfig, processing_class, train_dataset, kwargs.get("data_collator"))
        cache = _resolve_topk_cache(teacher_outputs, args)
        self.class_names = _class_names(args, train_dataset, class_names)
        self._conversational = getattr(processing_class, "chat_template", None) is not None
        train_views, eval_views = self._training_views(
            train_dataset, eval_dataset, lambda ds: ds if _is_view_dataset(ds) else self._build_views(ds, args)
        )
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_views,
            eval_dataset=eval_views,
            processing_class=processing_class,
            **kwargs,
        )
        self.data_collator = _ViewCollator(self.data_collator)
        self._init_rationale_state()
        if cache is not None:
            self._attach_teacher_cache(cache)
        if _is_4bit(self.model):
            n = disable_avx512_bf16_repacking(self.model)
            logger.info("4-bit student: avx512_bf16 repacking disabled on %d Linear4bit layers", n)
            if not torch.cuda.is_available():
                # TRL casts the adapter weights of quantized models to bfloat16; on CPU train them in float32
                for param in self.model.parameters():
                    if param.requires_grad and param.dtype != torch.float32:
                        param.data = param.data.float()

    def _build_views(self, dataset: datasets.Dataset, args: RationaleSFTConfig) -> datasets.Dataset:
        return build_rationale_views(dataset, args, self.class_names, conversational=self._conversational)

    def _views_for(self, dataset: datasets.Dataset) -> datasets.Dataset:
        return self._build_views(dataset, self.args)

    # ---- the top-k teacher cache ----------------------------------------------------------------------------------

    def _attach_teacher_cache(self, cache: TeacherOutputs) -> None:
        """Check the cache against the student and the prepared views, and give every view dataset the cache-row
        column (each view row's entry, looked up by its id)."""
        vocab = _output_vocab_size(self.accelerator.unwrap_model(self.model))
        cached_vocab = cache.meta.get("vocab_size")
        top_index = int(cache.tensors["topk_indices"].max()) if cache.tensors["topk_indices"].numel() else -1
        if (cached_vocab is not None and int(cached_vocab) != vocab) or top_index >= vocab:
            found = f"a vocabulary of {cached_vocab}" if cached_vocab is not None else f"token id {top_index}"
            raise ValueError(
                f"The teacher cache was built by a teacher with {found} but the student's vocabulary has {vocab} "
                "tokens. Token-level distillation needs a teacher that shares the student's tokenizer (e.g. a 70B "
                "and an 8B model of the same family)."
            )
        self.teacher_cache = cache
        self._signature_columns = None  # recomputed with the cache-row column
        self.train_dataset = self._with_cache_rows(self.train_dataset, "train views")
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {
                k: self._with_cache_rows(v, f"eval views {k!r}") for k, v in self.eval_dataset.items()
            }
        elif self.eval_dataset is not None:
            self.eval_dataset = self._with_cache_rows(self.eval_dataset, "eval views")
        if self.args.teacher_kd_weight == 0:
            logger.warning("teacher_outputs is given but teacher_kd_weight = 0: the teacher cache is not used.")

    def _with_cache_rows(self, dataset: Any, what: str) -> Any:
        if not isinstance(dataset, datasets.Dataset):
            raise ValueError(f"With teacher_outputs the {what} must be a datasets.Dataset, got {type(dataset).__name__}.")
        cache = self.teacher_cache
        ids = _view_row_ids(dataset, what)
        known = set(cache.ids)
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(
                f"The teacher cache has no entry for {len(missing)} of the {len(ids)} {what} rows (ids "
                f"{missing[:5]}{'…' if len(missing) > 5 else ''}). Build the views with training_views(posts, args, "
                "tokenizer), for the train and the eval posts, with the student's arguments, and precompute the cache "
                "over them: precompute_topk_logprobs(teacher, {'train': ..., 'eval': ...}, ...)."
            )
        rows = cache.rows(ids, what)
        cache.check_contents(dataset, what, rows=rows)  # a cache of other views under the same ids is refused
        offsets = cache.tensors["offsets"]
        cached = (offsets[1:] - offsets[:-1])[torch.as_tensor(rows, dtype=torch.long)].tolist()
        tokens = [sum(1 for t in row[1:] if t != -100) for row in dataset["labels"][:]]
        wrong = [(i, n, c) for i, n, c in zip(ids, tokens, cached) if n != c]
        if wrong:
            detail = ", ".join(f"{i!r}: {n} vs {c}" for i, n, c in wrong[:3])
            raise ValueError(
                f"{len(wrong)} {what} rows have a different number of completion tokens than their teacher-cache entry "
                f"({detail}; student vs cache). The cache must be built over the views tokenised with the student's "
                "tokenizer and these very arguments (training_views(posts, args, tokenizer))."
            )
        if CACHE_ROW_COLUMN in dataset.column_names:
            dataset = dataset.remove_columns(CACHE_ROW_COLUMN)
        return dataset.add_column(CACHE_ROW_COLUMN, rows)

    def get_eval_dataloader(self, eval_dataset=None):
        # a dataset given to evaluate() (prepared by SFTTrainer.evaluate) gets its cache rows here
        if (
            self.teacher_cache is not None
            and isinstance(eval_dataset, datasets.Dataset)
            and CACHE_ROW_COLUMN not in eval_dataset.column_names
        ):
            eval_dataset = self._with_cache_rows(eval_dataset, "eval views")
        return super().get_eval_dataloader(eval_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        view = inputs.pop(VIEW_COLUMN)
        labels = inputs.pop("labels")
        cache_rows = inputs.pop(CACHE_ROW_COLUMN, None)
        outputs = model(**inputs, use_cache=False)
        loss = self._view_loss(outputs.logits, labels, view, num_items_in_batch, cache_rows)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, dict(inputs))
        return loss.detach(), None, None

    # ---- label scoring and generation ----------------------------------------------------------------------------

    def _tokenize_views(self, rows: dict[str, list]) -> datasets.Dataset:
        """Tokenise prompt-completion rows exactly as the training views were (TRL's preparation)."""
        ds = datasets.Dataset.from_dict(rows)
        return self._prepare_dataset(ds, self.processing_class, self.args, False, None, "scoring")

    def _candidate_batches(self, texts: Sequence[str]):
        """For every text, the collated batch of its label-view prompt completed with each class name, tokenised as
        the training views were (TRL's preparation of prompt-completion rows, done once for all texts)."""
        num_classes = len(self.class_names)
        rows: dict[str, list] = {"prompt": [], "completion": [], "example": [], "candidate": []}
        for i, text in enumerate(texts):
            prompt = view_prompt(self.args, text, LABEL_VIEW, self.class_names)
            for c, name in enumerate(self.class_names):
                if self._conversational:
                    rows["prompt"].append([{"role": "user", "content": prompt}])
                    rows["completion"].append([{"role": "assistant", "content": name}])
                else:
                    rows["prompt"].append(prompt + "\n")
                    rows["completion"].append(name)
                rows["example"].append(i)
                rows["candidate"].append(c)
        prepared = self._tokenize_views(rows).select_columns(["example", "candidate", "input_ids", "labels"])
        if len(prepared) != len(rows["prompt"]):
            raise ValueError(
                f"Some label-view prompts do not fit max_length={self.args.max_length}; raise max_length to score labels."
            )
        prepared = prepared.sort(["example", "candidate"])
        for i in range(len(texts)):
            chunk = prepared[i * num_classes : (i + 1) * num_classes]
            examples = [{"input_ids": chunk["input_ids"][c], "labels": chunk["labels"][c]} for c in range(num_classes)]
            yield self.data_collator.inner(examples)

    def _candidate_logits(self, model, batch, labels):
        return model(**batch, use_cache=False).logits

    def _generation_prompt_ids(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self.processing_class
        out = []
        for text in texts:
            prompt = view_prompt(self.args, text, RATIONALE_VIEW, self.class_names)
            if self._conversational:
                ids = tok.apply_chat_template(
                    [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
                )["input_ids"]
            else:
                ids = tok(prompt + "\n", add_special_tokens=True)["input_ids"]
            out.append(list(ids))
        return out

    @torch.no_grad()
    def explain(self, texts: Sequence[str], max_new_tokens: int = 128, **generate_kwargs) -> list[dict[str, Any]]:
        """Greedy rationale-view generation for a few texts: ``[{"text", "rationale", "label", "label_name",
        "output"}]`` (``label`` = -1 when the answer line names no class)."""
        tok = self.processing_class
        prompt_ids = dict(zip(texts, self._generation_prompt_ids(texts)))

        def generate(model, text: str) -> str:
            input_ids = torch.tensor([prompt_ids[text]], device=self.args.device)
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                **generate_kwargs,
            )
            return tok.decode(generated[0, input_ids.shape[1] :], skip_special_tokens=True)

        return self._explain_each(texts, generate)

    def generate_rationales_with_student(self, texts: Sequence[str], **kwargs) -> list[dict[str, Any]]:
        """Alias of :meth:`explain`."""
        return self.explain(texts, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Encoder-decoder students: a Seq2SeqTrainer
# --------------------------------------------------------------------------------------------------------------------


class _Seq2SeqViewCollator:
    """Pads encoder inputs and labels (``DataCollatorForSeq2Seq``, labels padded with -100, decoder inputs built by
    the model) and adds the ``view`` column."""

    def __init__(self, tokenizer, model):
        self.inner = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        views = [int(ex.get(VIEW_COLUMN, LABEL_VIEW)) for ex in examples]
        keep = ("input_ids", "attention_mask", "labels")
        batch = self.inner([{k: ex[k] for k in keep if k in ex} for ex in examples])
        batch[VIEW_COLUMN] = torch.tensor(views, dtype=torch.long)
        return batch


class RationaleSeq2SeqTrainer(_RationaleTrainerMixin, HubPushMixin, Seq2SeqTrainer):
    """Rationale distillation for encoder-decoder students (T5 family), as in Distilling step-by-step: inputs
    ``"[label] <post>"`` -> label word and ``"[rationale] <post>"`` -> rationale + ``Label: <label>``; same views,
    same alpha-weighted per-view token loss, same label scoring as :class:`RationaleSFTTrainer`."""

    _shift_labels = False

    def __init__(
        self,
        model,
        args: RationaleSeq2SeqConfig | None = None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | None = None,
        processing_class=None,
        class_names: Sequence[str] | None = None,
        **kwargs,
    ):
        self._check_inputs(args, RationaleSeq2SeqConfig, processing_class, train_dataset)
        if args.teacher_kd_weight > 0 or kwargs.get("teacher_outputs") is not None:
            raise ValueError(
                "Token-level distillation from a top-k teacher cache (teacher_kd_weight, teacher_outputs) is available "
                "in RationaleSFTTrainer (decoder-only students) only."
            )
        kwargs.pop("teacher_outputs", None)
        if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
            raise ValueError("RationaleSeq2SeqTrainer needs an encoder-decoder student; use RationaleSFTTrainer.")
        self.class_names = _class_names(args, train_dataset, class_names)
        self._tok = processing_class
        self._seq2seq_args = args
        train_views, eval_views = self._training_views(train_dataset, eval_dataset, self._views_for)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_views,
            eval_dataset=eval_views,
            processing_class=processing_class,
            data_collator=kwargs.pop("data_collator", None) or _Seq2SeqViewCollator(processing_class, model),
            **kwargs,
        )
        self._init_rationale_state()

    def _tokenize_rows(self, prompts: Sequence[str], targets: Sequence[str]) -> dict[str, list]:
        args = self._seq2seq_args
        enc = self._tok(list(prompts), truncation=True, max_length=args.max_source_length)
        tgt = self._tok(text_target=list(targets), truncation=True, max_length=args.max_target_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": tgt["input_ids"]}

    def _views_for(self, dataset: datasets.Dataset) -> datasets.Dataset:
        args = self._seq2seq_args
        if _is_view_dataset(dataset):
            return dataset
        views = build_rationale_views(dataset, args, self.class_names, conversational=False)
        prompts = [p.rstrip("\n") for p in views["prompt"][:]]
        tokens = self._tokenize_rows(prompts, views["completion"][:])
        return datasets.Dataset.from_dict({**tokens, VIEW_COLUMN: views[VIEW_COLUMN][:], "id": views["id"][:]})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        view = inputs.pop(VIEW_COLUMN)
        labels = inputs.pop("labels")
        if "decoder_input_ids" not in inputs:
            inputs["decoder_input_ids"] = self.accelerator.unwrap_model(model).prepare_decoder_input_ids_from_labels(
                labels=labels
            )
        outputs = model(**inputs, use_cache=False)
        loss = self._view_loss(outputs.logits, labels, view, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, dict(inputs))
        return loss.detach(), None, None

    def _candidate_batches(self, texts: Sequence[str]):
        for text in texts:
            prompt = view_prompt(self.args, text, LABEL_VIEW, self.class_names)
            tokens = self._tokenize_rows([prompt] * len(self.class_names), list(self.class_names))
            rows = [{k: tokens[k][c] for k in tokens} for c in range(len(self.class_names))]
            yield self.data_collator.inner(rows)

    def _candidate_logits(self, model, batch, labels):
        batch = dict(batch)
        batch.pop("decoder_input_ids", None)
        decoder_input_ids = self.accelerator.unwrap_model(model).prepare_decoder_input_ids_from_labels(labels=labels)
        return model(**batch, decoder_input_ids=decoder_input_ids, use_cache=False).logits

    @torch.no_grad()
    def explain(self, texts: Sequence[str], max_new_tokens: int = 128, **generate_kwargs) -> list[dict[str, Any]]:
        """Greedy generation from ``"[rationale] <post>"`` for a few texts (same output as
        :meth:`RationaleSFTTrainer.explain`)."""

        def generate(model, text: str) -> str:
            prompt = view_prompt(self.args, text, RATIONALE_VIEW, self.class_names)
            enc = self._tok([prompt], return_tensors="pt", truncation=True, max_length=self.args.max_source_length)
            enc = {k: v.to(self.args.device) for k, v in enc.items()}
            generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
            return self._tok.decode(generated[0], skip_special_tokens=True)

        return self._explain_each(texts, generate)

    generate_rationales_with_student = explain
