"""Two training views per post, and their tokens.

:func:`build_rationale_views` turns teacher-annotated posts into prompt-completion rows (a label view and a rationale
view per post, a ``view`` column telling them apart); :func:`tokenize_views` tokenises them for a decoder-only student
(``input_ids``, and ``labels`` with -100 on the prompt) the way ``trl.SFTTrainer`` tokenises prompt-completion data,
without going through TRL's private dataset preparation; :func:`training_views` gives those tokenised rows with their
view-row ids, for precomputing a top-k teacher cache over exactly what the student trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import datasets

from ..._sequences import common_prefix_length
from .config import RationaleArguments, RationaleSeq2SeqConfig, RationaleSFTConfig

if TYPE_CHECKING:
    from ...teachers.llm_prompts import SavedClassifierPrompt
from .loss import LABEL_VIEW, RATIONALE_VIEW, VIEW_NAMES

logger = logging.getLogger(__name__)

__all__ = [
    "POST_ID_COLUMN",
    "REQUIRED_COLUMNS",
    "VIEW_COLUMN",
    "build_rationale_views",
    "label_view_classifier_prompt",
    "rationale_completion",
    "tokenize_views",
    "training_views",
    "view_prompt",
    "view_row_id",
]

VIEW_COLUMN = "view"
# Column of :func:`training_views`' rows: the post a view row comes from (their `id` is the view row's own id)
POST_ID_COLUMN = "post_id"
REQUIRED_COLUMNS = ("text", "label")


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


def label_view_classifier_prompt(
    args: RationaleSFTConfig, class_names: Sequence[str], conversational: bool
) -> SavedClassifierPrompt:
    """The label view of a decoder-only student as an LLM-classifier prompt, so that
    :class:`~distil_trainers.teachers.LLMClassifier` asks the trained student the question it learnt to answer.

    The label view is the prompt :func:`view_prompt` (instruction, then ``Post: <text>``) and the class name as the
    completion: a user turn and an assistant turn with the tokenizer's chat template (``conversational``), else the
    prompt, a new line and the name. The :class:`~distil_trainers.teachers.ClassifierPrompt` below renders exactly
    that prompt (the instruction lines as its task description, no list of choices of its own, no system turn, no
    answer prefix) and the class names are the label words, scored as the sum of their tokens' log-probabilities, as
    :meth:`RationaleSFTTrainer.predict_labels` does (which also counts the end-of-turn token after the name; the
    classifier reads the name alone).
    """
    from ...teachers.llm_prompts import ClassifierPrompt, SavedClassifierPrompt

    names = [str(n) for n in class_names]
    instruction = f"{args.task_description}\n{_format_instruction(args.label_instruction, names)}"
    prompt = ClassifierPrompt(task_description=instruction, answer_instruction="", text_prefix="Post: ",
                              answer_prefix="", separator="", use_chat_template=bool(conversational),
                              use_system_role=False)  # fmt: skip
    return SavedClassifierPrompt(prompt, names, [[n] for n in names], normalization="sum",
                                 source="RationaleSFTTrainer label view")  # fmt: skip


def rationale_completion(rationale: str, label_word: str, answer_prefix: str) -> str:
    return f"{rationale.strip()}\n{answer_prefix}{label_word}"


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
    views at all. With ``args.rationales_only_when_teacher_agrees`` (the default with gold labels) a row whose
    teacher chose another label keeps its label view only (agreement read from ``teacher_agrees``, or from
    ``teacher_label == label`` when the dataset has no such column).
    """
    with_rationales = args.alpha < 1 if with_rationales is None else with_rationales
    columns = set(dataset.column_names)
    needed = list(REQUIRED_COLUMNS)
    if with_rationales:
        needed.append("rationale")
    if args.label_source == "teacher":
        needed.append("teacher_label")
    only_agreeing = with_rationales and args.rationales_only_when_teacher_agrees
    if only_agreeing and "teacher_agrees" not in columns and "teacher_label" not in columns:
        needed.append("teacher_agrees")
    missing = [c for c in needed if c not in columns]
    if missing:
        hint = ""
        if "teacher_agrees" in missing:
            hint = (
                " Rationale views are built only where the teacher agrees with the gold label "
                "(rationales_when_teacher_agrees, on by default with label_source='gold'), which needs a "
                "`teacher_agrees` or `teacher_label` column; set rationales_when_teacher_agrees=False to train every "
                "rationale with the gold label."
            )
        raise ValueError(
            f"The dataset lacks the columns {missing} (it has {sorted(columns)}). Rationale distillation needs the "
            "output of distil_trainers.teachers.rationales.generate_rationales (id, text, label, teacher_label, rationale, "
            f"teacher_agrees, parsed, raw_output).{hint}"
        )
    table = dataset.to_dict()
    if only_agreeing and "teacher_agrees" not in table:  # rationales made elsewhere: agreement from the labels
        table["teacher_agrees"] = [int(t) == int(g) for t, g in zip(table["teacher_label"], table["label"])]
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

    disagreeing = 0
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
            if only_agreeing and not bool(table["teacher_agrees"][i]):
                disagreeing += 1
                continue  # the teacher's rationale argues for another label than the one trained on
            add(i, RATIONALE_VIEW, rationale_completion(rationale, class_names[label], args.answer_prefix))
    if not rows["prompt"]:
        raise ValueError("No training views could be built: every row lacks a usable label.")
    if disagreeing:
        logger.warning(
            "%d of %d posts train their label view only: the teacher chose another label than the gold one, so its "
            "rationale would argue against the label trained on (rationales_when_teacher_agrees=False keeps them).",
            disagreeing,
            n,
        )
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


# --------------------------------------------------------------------------------------------------------------------
# Tokens (decoder-only students)
# --------------------------------------------------------------------------------------------------------------------


_WARNED: set[str] = set()


def _answer_start(example: dict[str, Any], tokenizer, ids: Sequence[int], answer_prefix: str) -> int | None:
    """Where the answer line (``"\n" + answer_prefix + label`` and what follows it: EOS, the chat template's end of
    turn) of a rationale view's tokens ``ids`` begins; None when the completion has no answer line.

    The rationale alone (the completion cut before its answer line) is tokenised the same way as the row; the answer
    starts where the two token sequences diverge (a token merging across the cut is counted with the answer)."""
    prompt, completion = example["prompt"], example["completion"]
    content = completion[-1]["content"] if isinstance(completion, list) else completion
    cut = content.rfind("\n" + answer_prefix) if answer_prefix else -1
    if cut < 0:
        return None
    if isinstance(completion, list):
        head = [*completion[:-1], {**completion[-1], "content": content[:cut]}]
        head_ids = tokenizer.apply_chat_template(prompt + head, tokenize=True, return_dict=True)["input_ids"]
    else:
        head_ids = tokenizer(text=prompt + content[:cut])["input_ids"]
    return common_prefix_length(head_ids, ids)


def _keep_start(ids: list[int], labels: list[int], max_length: int, answer: int | None):
    """The first ``max_length`` tokens; for a rationale view whose answer line starts at ``answer``, the rationale is
    cut instead so that the answer line and EOS survive: ``ids[:room] + ids[answer:]``. When even the prompt and the
    answer line do not fit, every label is -100 (the row is then dropped, as a row cut before its completion is)."""
    if len(ids) <= max_length:
        return ids, labels
    if answer is None:
        return ids[:max_length], labels[:max_length]
    start = next((k for k, label in enumerate(labels) if label != -100), len(labels))
    room = max_length - (len(ids) - answer)
    if room < start:
        if "answer" not in _WARNED:
            _WARNED.add("answer")
            logger.warning(
                "A rationale view's prompt and answer line do not fit in max_length=%d: the view is dropped rather "
                "than trained without its label (raise max_length).",
                max_length,
            )
        return ids[:max_length], [-100] * max_length
    return ids[:room] + ids[answer:], labels[:room] + labels[answer:]


def _view_tokens(
    example: dict[str, Any],
    tokenizer,
    eos_token: str,
    keep: slice | None,
    answer_prefix: str | None = None,
) -> dict[str, Any]:
    """``input_ids`` and ``labels`` of one view row, cut to ``keep`` (the ``max_length`` slice); a plain-text
    ``completion`` comes back with its EOS token. With ``keep_start`` (``keep.start is None``) and ``answer_prefix``,
    a rationale view keeps its answer line: the rationale text is cut instead (:func:`_keep_start`)."""
    out = {}
    answer = None
    if "input_ids" in example:  # already tokenised (e.g. the output of training_views)
        ids = list(example["input_ids"])
        labels = example.get("labels")
        if labels is None:
            mask = example.get("completion_mask") or [1] * len(ids)
            labels = [t if m else -100 for t, m in zip(ids, mask)]
        labels = list(labels)
    else:
        prompt, completion = example["prompt"], example["completion"]
        if isinstance(prompt, list):  # conversational: the tokenizer's chat template renders both turns
            prompt_ids = tokenizer.apply_chat_template(
                prompt, tokenize=True, return_dict=True, add_generation_prompt=True
            )["input_ids"]
            ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
        else:  # plain text: the completion ends with the EOS token
            if not completion.endswith(eos_token):
                completion = out["completion"] = completion + eos_token
            prompt_ids = tokenizer(text=prompt)["input_ids"]
            ids = tokenizer(text=prompt + completion)["input_ids"]
        ids = list(ids)
        # the completion starts where the tokenised prompt and prompt + completion diverge
        start = common_prefix_length(prompt_ids, ids)
        if start < len(prompt_ids) and "prefix" not in _WARNED:
            _WARNED.add("prefix")  # once: it likely applies to every row
            logger.warning(
                "The tokenised prompt is not a prefix of the tokenised prompt + completion; the completion starts "
                "where they diverge: %r",
                tokenizer.decode(prompt_ids[start:]),
            )
        labels = [-100] * start + ids[start:]
        keeps_start = keep is not None and keep.start is None
        if keeps_start and answer_prefix and example.get(VIEW_COLUMN) == RATIONALE_VIEW and len(ids) > keep.stop:
            answer = _answer_start({**example, **out}, tokenizer, ids, answer_prefix)
            if answer is not None and answer < start:
                answer = None
    if keep is not None and keep.start is None:
        ids, labels = _keep_start(ids, labels, keep.stop, answer)
    elif keep is not None:
        ids, labels = ids[keep], labels[keep]
    return {**out, "input_ids": ids, "labels": labels}


def _has_completion_tokens(example: dict[str, Any]) -> bool:
    return any(label != -100 for label in example["labels"])


def tokenize_views(
    views: datasets.Dataset, args: RationaleSFTConfig, processing_class, name: str = "train"
) -> datasets.Dataset:
    """Tokenise prompt-completion view rows for a decoder-only student: ``input_ids`` and ``labels`` (-100 on the
    prompt tokens), every other column kept.

    What ``trl.SFTTrainer`` (1.9 and later) does to prompt-completion data with ``completion_only_loss`` (checked by
    ``tests/test_rationale_package.py`` against TRL itself): conversational rows go
    through the tokenizer's chat template (the prompt with the generation prompt, then prompt + completion), plain rows
    get the EOS token at the end of their completion; the completion starts where the tokenised prompt and the
    tokenised prompt + completion diverge; rows are cut to ``args.max_length`` (``args.truncation_mode``) and rows
    left without completion tokens are dropped. One difference from TRL: with ``keep_start``, a rationale view longer
    than ``max_length`` is cut inside its rationale text, so that its ``Label: <label>`` line and EOS always survive
    (a view whose prompt and answer line alone do not fit is dropped). Rows that already have ``input_ids`` are only cut (and given
    ``labels`` from their ``completion_mask`` when they have none). ``args.eos_token`` is set on the tokenizer, as
    ``SFTTrainer`` does. Done here rather than by TRL so that the trainer, :func:`training_views` and label scoring
    tokenise with one function."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if args.eos_token is not None:
        if args.eos_token not in tokenizer.get_vocab():
            raise ValueError(
                f"The eos_token {args.eos_token!r} is not in the vocabulary of {type(tokenizer).__name__}: add it to "
                "the tokenizer or leave eos_token unset."
            )
        tokenizer.eos_token = args.eos_token
    keep = None
    if args.max_length is not None:
        if args.truncation_mode == "keep_start":
            keep = slice(None, args.max_length)
        elif args.truncation_mode == "keep_end":
            keep = slice(-args.max_length, None)
        else:
            raise ValueError(f"Unsupported truncation_mode {args.truncation_mode!r}: use 'keep_start' or 'keep_end'.")
    columns = views.column_names
    processed = "input_ids" in columns
    if not processed and not {"prompt", "completion"} <= set(columns):
        raise ValueError(f"View rows need `prompt` and `completion` columns (or `input_ids`), got {columns}.")
    drop = ["completion_mask"] if processed and "labels" not in columns and "completion_mask" in columns else None
    tokenized = views.map(
        _view_tokens,
        fn_kwargs={
            "tokenizer": processing_class,
            "eos_token": tokenizer.eos_token,
            "keep": keep,
            "answer_prefix": getattr(args, "answer_prefix", None),
        },
        remove_columns=drop,
        num_proc=args.dataset_num_proc,
        desc=f"Tokenizing {name} views",
    )
    if keep is None:
        return tokenized
    return tokenized.filter(
        _has_completion_tokens, num_proc=args.dataset_num_proc, desc=f"Dropping empty {name} views"
    )


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
    tokenizer (:func:`tokenize_views`). Columns: ``id`` (the view row's id, ``"<post id>:label"`` /
    ``"<post id>:rationale"``), ``post_id``, ``view``, ``input_ids`` and ``labels`` (-100 outside the completion). Pass
    the result to ``distil_trainers.teachers.cache.precompute_topk_logprobs(teacher, views, cache_dir, k=...,
    temperature=..., tokenizer=tokenizer)`` and the cache to the trainer as ``teacher_outputs``.
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
    if args.dataset_kwargs and args.dataset_kwargs.get("skip_prepare_dataset", False):
        prepared = views
    else:
        prepared = tokenize_views(views, args, processing_class, name)
        if args.shuffle_dataset:  # the order SFTTrainer's preparation gives the trainer's own datasets
            prepared = prepared.shuffle(seed=args.seed)
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
