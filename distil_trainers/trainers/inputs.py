"""What a trainer checks and prepares before the first optimizer step: models given as paths or Hub ids (with the
label space taken from the data), raw-text or pre-tokenised datasets (labels encoded and in the model's class order),
and every input that would otherwise train without a word and give a wrong model.

Each check raises one error that names the offending thing and says what to do. The cases, and where each is caught:

======================================================  ========================================================
input                                                   error
======================================================  ========================================================
a local path that does not exist                        ``FileNotFoundError``: not found locally (and, offline,
                                                        that the Hub cannot be reached either)
a teacher without a classification head                 ``ValueError`` before loading a random head
class names in another order than the teacher's         mapped to the teacher's order by name (logged)
class names that do not match the model's               ``ValueError`` listing both sides
label column missing / string labels in a tokenised     ``ValueError`` naming the dataset and its columns
set / empty dataset / no labelled item at all
student token ids that the teacher would read as its    ``ValueError``: pass ``teacher_processing_class``
own (another vocabulary)
``max_steps=0`` or zero epochs                          ``ValueError`` from the arguments
non-finite teacher logits (live teacher)                ``FloatingPointError`` with the step and example ids
======================================================  ========================================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import datasets
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from ..data.labels import align_labels, encode_labels, label_names_of, model_label_names, normalise_label_name
from ..data.loading import hub_offline
from ..data.multitask import TASK_COLUMN
from ..data.processing import TEACHER_PREFIX, tokenize_for_models
from ..losses import UNLABELLED

logger = logging.getLogger(__name__)

ROW_COLUMN = "example_row"
"""Integer column the trainers add to the training set: each example's row, so that an error names its id."""

LABEL_COLUMNS = ("labels", "label")
TEXT_COLUMN, TEXT_PAIR_COLUMN = "text", "text_pair"


# --------------------------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------------------------


def _offline() -> bool:
    return hub_offline(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))  # the variables of model loading


def _looks_local(name: str) -> bool:
    """A name that can only be a path: absolute, relative with ./ ../ ~, a Windows drive, or more than one '/'."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name
            or (len(name) > 1 and name[1] == ":"))


def not_found_message(name: str, role: str) -> str:
    """The message for a model or tokenizer ``name`` that is neither a local folder nor reachable on the Hub."""
    lines = [f"The {role} {name!r} was not found locally (no such directory)."]
    if _looks_local(name):
        lines.append("It is a path, not a Hub id: check the path (relative paths start at the working directory "
                     f"{os.getcwd()}).")
    elif _offline():
        lines.append("The Hugging Face Hub cannot be reached (HF_HUB_OFFLINE is set), so it cannot be looked up as a "
                     "Hub id either: give a local path, or unset HF_HUB_OFFLINE when online.")
    else:
        lines.append("It could not be loaded as a Hub id either: check the spelling, your token for private "
                     "repositories, and the network.")
    return " ".join(lines)


def load_config(name: str | os.PathLike, role: str, **kwargs) -> Any:
    """``AutoConfig.from_pretrained`` with one clear error when ``name`` is neither a local folder nor a reachable Hub
    id (instead of the Hub client's repo-id error)."""
    name = os.fspath(name)
    if not os.path.isdir(name):
        if _looks_local(name) or (_offline() and not _in_hub_cache(name)):
            raise FileNotFoundError(not_found_message(name, role))
    try:
        return AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        if os.path.isdir(name):
            raise
        raise FileNotFoundError(not_found_message(name, role) + f" ({type(exc).__name__}: {exc})") from None


def _in_hub_cache(name: str) -> bool:
    """Whether a Hub id has a config in the local Hub cache (offline loading then works)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # a malformed repo id is not in the cache
        return False


_CONFIG_KWARGS = ("revision", "token", "trust_remote_code", "cache_dir", "local_files_only")


def has_classification_head(model: nn.Module) -> bool:
    """Whether ``model`` outputs class logits: not a bare encoder (a transformers model that is its own base model,
    such as ``BertModel``). Models that are not transformers models are trusted."""
    if not isinstance(model, PreTrainedModel):
        return True
    if getattr(model.config, "tasks", None):
        return True
    return model.base_model is not model


def _config_has_head(config: Any) -> bool | None:
    architectures = getattr(config, "architectures", None) or []
    if getattr(config, "tasks", None):
        return True
    if not architectures:
        return None
    return any(a.endswith(("ForSequenceClassification", "MultiTaskModel")) for a in architectures)


def label_kwargs(names: list[str] | None) -> dict[str, Any]:
    """``num_labels`` / ``id2label`` / ``label2id`` for ``from_pretrained`` from class names."""
    if not names:
        return {}
    return {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def load_classifier_model(
    model: str | os.PathLike | nn.Module,
    role: str,
    label_names: list[str] | None = None,
    require_head: bool = False,
    **init_kwargs,
) -> nn.Module:
    """The model itself, or the classifier loaded from a Hub id / local path.

    A checkpoint that already is a sequence classifier loads as it is (its classes are its own: the data is mapped to
    them). A bare pretrained encoder gets a new head whose classes are ``label_names`` (the data's), unless
    ``require_head`` (a teacher: a random head would teach noise), which is an error.
    """
    if isinstance(model, nn.Module):
        if require_head and not has_classification_head(model):
            raise ValueError(
                f"The {role} ({type(model).__name__}) has no classification head: its outputs are not class logits. "
                f"Give a sequence classifier (e.g. AutoModelForSequenceClassification) fine-tuned on these classes."
            )
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"The {role} must be a model, a Hub id or a local path, got {type(model).__name__}.")
    name = os.fspath(model)
    config = load_config(name, role, **{k: v for k, v in init_kwargs.items() if k in _CONFIG_KWARGS})
    head = _config_has_head(config)
    kwargs = dict(init_kwargs)
    if head is False:
        if require_head:
            raise ValueError(
                f"The {role} {name!r} has no classification head (architectures: {config.architectures}): it would "
                "start from a randomly initialised head and teach noise. Fine-tune it on your classes first (the "
                "recipes do: leave `teacher_model` unset and set `teacher_base`), or give a fine-tuned classifier."
            )
        if not any(k in kwargs for k in ("num_labels", "id2label")):
            kwargs.update(label_kwargs(label_names))
    loaded, info = AutoModelForSequenceClassification.from_pretrained(name, output_loading_info=True, **kwargs)
    if require_head and head is None:
        new = [k for k in info.get("missing_keys", []) if not k.startswith(loaded.base_model_prefix + ".")]
        if new:
            raise ValueError(
                f"The {role} {name!r} has no trained classification head ({', '.join(sorted(new)[:4])} would be "
                "randomly initialised). Fine-tune it on your classes first, or give a fine-tuned classifier."
            )
    return loaded


def load_tokenizer(name: str | os.PathLike, role: str, **kwargs):
    """The tokenizer saved with a model (a path or Hub id); one clear error when there is none."""
    if os.path.isdir(os.fspath(name)) and not has_tokenizer_files(name):
        raise ValueError(
            f"The {role} at {os.fspath(name)!r} has no saved tokenizer (none of {', '.join(TOKENIZER_FILES)}): save "
            "it beside the model (tokenizer.save_pretrained(path)) or pass the tokenizer."
        )
    try:
        return AutoTokenizer.from_pretrained(os.fspath(name), **kwargs)
    except (OSError, ValueError) as exc:
        raise ValueError(f"Could not load the tokenizer of the {role} from {os.fspath(name)!r}: {exc}") from None


def single_task_names(model: nn.Module | None) -> list[str] | None:
    """The class names of a single-task model (``None`` for multi-task models and unnamed classes)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "tasks", None):
        return None
    return model_label_names(getattr(config, "id2label", None))


def embedding_size(model: nn.Module | None) -> int | None:
    getter = getattr(model, "get_input_embeddings", None)
    try:
        embeddings = getter() if getter is not None else None
    except (NotImplementedError, AttributeError):
        return None
    return getattr(embeddings, "num_embeddings", None)


# --------------------------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------------------------


def _each(dataset: Any) -> dict[str, Any]:
    return dict(dataset) if isinstance(dataset, Mapping) else {"": dataset}


def is_multitask(model: Any) -> bool:
    """A model with one head per task (``config.tasks``), or a multi-task teacher-output cache."""
    return bool(getattr(getattr(model, "config", None), "tasks", None) or getattr(model, "tasks", None))


def data_label_names(*sets: Any) -> list[str] | None:
    """The class names the data gives (a ``ClassLabel`` label column, or the sorted distinct string labels); ``None``
    for multi-task data (a ``task_ids`` column: every task has its own classes)."""
    for group in sets:
        if any(isinstance(ds, datasets.Dataset) and TASK_COLUMN in ds.column_names for ds in _each(group).values()):
            return None
    for group in sets:
        for ds in _each(group).values():
            if not isinstance(ds, datasets.Dataset):
                continue
            column = next((c for c in LABEL_COLUMNS if c in ds.column_names), None)
            if column is None:
                continue
            names = label_names_of(ds, column)
            if names is not None:
                return names
            if getattr(ds.features[column], "dtype", None) in ("string", "large_string"):
                return sorted({str(v) for v in ds[column][:]})
    return None


def is_raw_text(ds: datasets.Dataset) -> bool:
    return TEXT_COLUMN in ds.column_names and "input_ids" not in ds.column_names


def prepare_classification_dataset(
    dataset: Any,
    what: str,
    tokenizers: Mapping[str, Any] | None,
    label_names: list[str] | None,
    max_length: int | None,
    role: str = "teacher",
    require_labels: bool = True,
    allow_unlabelled: bool = False,
) -> Any:
    """A dataset ready for a classifier trainer: raw text tokenised once per tokenizer (``{prefix: tokenizer}``),
    labels in a ``labels`` column, string labels encoded and named classes mapped to ``label_names`` (the model's
    order). Datasets that are not ``datasets.Dataset`` (torch datasets, iterables) pass through unchecked."""
    if dataset is None:
        return None
    if isinstance(dataset, Mapping):
        return {k: prepare_classification_dataset(v, f"{what} {k!r}", tokenizers, label_names, max_length, role,
                                                  require_labels, allow_unlabelled)
                for k, v in dataset.items()}
    if not isinstance(dataset, datasets.Dataset):
        return dataset
    if len(dataset) == 0:
        raise ValueError(f"The {what} is empty (0 rows): give it examples, or leave it out.")
    column = next((c for c in LABEL_COLUMNS if c in dataset.column_names), None)
    if column is None and allow_unlabelled:
        logger.info("The %s has no labels: every example learns from the teacher alone.", what)
        dataset = dataset.add_column("labels", [UNLABELLED] * len(dataset))
        column = "labels"
    if column is None and not require_labels:
        if is_raw_text(dataset):
            _require_tokenizers(tokenizers, what)
            pair = TEXT_PAIR_COLUMN if TEXT_PAIR_COLUMN in dataset.column_names else None
            return tokenize_for_models(dataset, tokenizers, text_column=TEXT_COLUMN, text_pair_column=pair,
                                       max_length=max_length, label_column=None, desc=f"Tokenizing the {what}")
        return dataset
    if column is None:
        raise ValueError(
            f"The {what} has no label column ('labels' or 'label'); its columns are {dataset.column_names}. Rename "
            "your label column (dataset.rename_column(<name>, 'label')). To distil unlabelled text, use a loss "
            "without a label term (AnnealingArguments(annealing='kd', alpha=0) or annealing='mse'; "
            "MutualLearningArguments(hard_weight=0))."
        )
    raw = is_raw_text(dataset)
    dtype = getattr(dataset.features[column], "dtype", None)
    if dtype in ("string", "large_string"):
        if not raw:
            raise ValueError(
                f"The {what} is tokenised but its {column!r} column holds strings (class names). Encode them before "
                "tokenising (distil_trainers.data.encode_labels), or give the raw-text dataset (columns text, "
                "label): the trainer encodes and tokenises it."
            )
        dataset = encode_labels(dataset, column, names=label_names if _same_set(dataset, column, label_names)
                                else None)
    if label_names is not None:
        dataset = align_labels(dataset, label_names, column, role=role)
    if raw:
        _require_tokenizers(tokenizers, what)
        pair = TEXT_PAIR_COLUMN if TEXT_PAIR_COLUMN in dataset.column_names else None
        dataset = tokenize_for_models(dataset, tokenizers, text_column=TEXT_COLUMN, text_pair_column=pair,
                                      max_length=max_length, label_column=column, desc=f"Tokenizing the {what}")
    elif column != "labels":
        dataset = dataset.rename_column(column, "labels")
    return dataset


def _require_tokenizers(tokenizers: Mapping[str, Any] | None, what: str) -> None:
    if not tokenizers:
        raise ValueError(
            f"The {what} holds raw text (a 'text' column) but no tokenizer was given: pass processing_class=... (the "
            "student's tokenizer), or tokenise the dataset yourself."
        )


def _same_set(ds: datasets.Dataset, column: str, names: list[str] | None) -> bool:
    return names is not None and {str(v) for v in ds[column][:]} <= set(names)


def check_has_labelled_items(dataset: Any, what: str) -> None:
    """Raise when no example of ``dataset`` has a label (all ``-100``): the label losses would be 0/0."""
    if not isinstance(dataset, datasets.Dataset) or "labels" not in dataset.column_names:
        return
    labels = dataset.with_format("numpy")["labels"][:]
    if len(labels) and getattr(labels, "ndim", 1) == 1 and bool((labels == -100).all()):
        raise ValueError(
            f"The {what} has no labelled example: every label is -100 (ignored). Nothing would be learned from the "
            "labels; check the label column."
        )


def add_row_column(dataset: Any) -> tuple[Any, list[str] | None]:
    """The training set with its row numbers (:data:`ROW_COLUMN`) and its ids, so that an error during training can
    name the examples of the batch."""
    if not isinstance(dataset, datasets.Dataset) or ROW_COLUMN in dataset.column_names:
        return dataset, None
    ids = [str(x) for x in dataset["id"][:]] if "id" in dataset.column_names else None
    return dataset.add_column(ROW_COLUMN, list(range(len(dataset)))), ids


def check_finite_teacher(logits: torch.Tensor, rows: torch.Tensor | None, ids: list[str] | None, step: int) -> None:
    """Stop training on non-finite teacher logits (one check per batch), naming the step and the examples."""
    bad = ~torch.isfinite(logits.detach()).reshape(logits.shape[0], -1).all(dim=-1)
    if not bool(bad.any()):
        return
    positions = bad.nonzero().flatten().tolist()
    if rows is not None:
        found = [int(r) for r in rows.flatten()[positions].tolist()]
        names = [ids[r] for r in found] if ids is not None else [f"row {r}" for r in found]
    else:
        names = [f"batch position {p}" for p in positions]
    raise FloatingPointError(
        f"The teacher produced non-finite logits (NaN or inf) at step {step} for {len(positions)} example(s): "
        f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}. Training stops here so that no NaN reaches the "
        "student. Check those inputs, and the teacher's dtype (fp16 overflows; use bf16 or fp32)."
    )


# --------------------------------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------------------------------


def same_tokenization(a: Any, b: Any) -> bool:
    """Whether two tokenizers split text the same way (same class and vocabulary)."""
    if a is b:
        return True
    return type(a) is type(b) and len(a) == len(b) and a.get_vocab() == b.get_vocab()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


def has_tokenizer_files(folder: str | os.PathLike) -> bool:
    """Whether a local folder holds a saved tokenizer (without one, transformers may build an empty tokenizer that
    maps every word to [UNK] instead of failing)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES)


def tokenizer_beside(model: Any) -> Any:
    """The tokenizer saved with a model given as a path or Hub id (or loaded from a local folder: its
    ``name_or_path``), or ``None`` when there is none."""
    if isinstance(model, nn.Module):
        model = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
        if not model or not os.path.isdir(model):
            return None
    name = os.fspath(model)
    if os.path.isdir(name) and not has_tokenizer_files(name):
        return None
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, TypeError):
        return None


def check_teacher_reads_its_tokens(
    teacher: nn.Module, student: nn.Module, student_tok: Any, teacher_tok: Any, sets: list[Any]
) -> None:
    """Refuse to feed the student's token ids to a teacher with another vocabulary.

    ``teacher_tok`` is the teacher's own tokenizer when it differs from the student's (``None`` when they are the
    same, or unknown). A dataset without ``teacher_input_ids`` gives the teacher the student's ids: that is only
    right when both read the same vocabulary."""
    student_only = [ds for group in sets for ds in _each(group).values()
                    if isinstance(ds, datasets.Dataset) and "input_ids" in ds.column_names
                    and f"{TEACHER_PREFIX}input_ids" not in ds.column_names]
    if not student_only:
        return
    fix = ("Pass teacher_processing_class=<the teacher's tokenizer> and give the raw-text dataset (columns text, "
           "label: the trainer tokenises it for both), or tokenise with distil_trainers.data.tokenize_for_models("
           "data, {'': student_tokenizer, 'teacher_': teacher_tokenizer}).")
    if teacher_tok is not None:
        raise ValueError("The teacher tokenizes differently from the student, but the dataset is tokenised for the "
                         "student only (no teacher_input_ids column): the teacher would read the student's token ids. "
                         + fix)
    teacher_vocab, student_vocab = embedding_size(teacher), embedding_size(student)
    tok_vocab = len(student_tok) if student_tok is not None else None
    if teacher_vocab is None:
        return
    # embedding tables may be padded beyond the tokenizer (DeBERTa-v3: 128100 rows for 128001 tokens), so a tokenizer
    # is only too big for the teacher; two tables of different sizes mean two vocabularies
    for what, size in (("student's embedding table", student_vocab), ("student's tokenizer", tok_vocab)):
        too_big = size is not None and (size > teacher_vocab if what.endswith("tokenizer") else size != teacher_vocab)
        if too_big:
            raise ValueError(
                f"The teacher's vocabulary has {teacher_vocab} entries but the {what} {size}: the teacher would read "
                "the student's token ids as its own. " + fix
            )


def as_list(dataset: Any) -> list[Any]:
    if dataset is None:
        return []
    return list(dataset.values()) if isinstance(dataset, Mapping) else [dataset]


def metrics_in_class_order(compute_metrics: Any, classes: list[str] | None, original: list[str] | None) -> Any:
    """``compute_metrics`` for labels in the model's class order ``classes``.

    A :func:`~distil_trainers.metrics.build_compute_metrics` function built with the dataset's names in another order
    is rebuilt with the model's order (else its per-class metrics would carry the wrong names); one with other classes
    is an error. Any other function is kept, with a warning when the dataset's ids were re-mapped."""
    if compute_metrics is None or not classes:
        return compute_metrics
    names = getattr(compute_metrics, "label_names", None)
    if names is None:
        if original is not None and list(original) != list(classes):
            logger.warning(
                "The dataset's class ids were mapped to the model's order %s (the dataset had %s): a compute_metrics "
                "that names classes must use the model's order.", classes, original,
            )
        return compute_metrics
    if list(names) == list(classes):
        return compute_metrics
    if sorted(map(normalise_label_name, names)) != sorted(map(normalise_label_name, classes)):
        raise ValueError(
            f"compute_metrics names the classes {list(names)} but the models predict {list(classes)}: build it with "
            "the model's classes (build_compute_metrics(list(model.config.id2label.values())))."
        )
    from ..metrics import build_compute_metrics

    logger.info("compute_metrics rebuilt with the model's class order %s (it was given %s).", classes, list(names))
    return build_compute_metrics(list(classes), num_labels=getattr(compute_metrics, "num_labels", None))
