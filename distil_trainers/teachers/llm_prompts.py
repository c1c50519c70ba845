"""Prompts of an LLM read as a classifier: the tasks' descriptions and label words, :class:`ClassifierPrompt`, and
:class:`SavedClassifierPrompt`, the prompt a model was trained to answer, saved beside its weights.

:mod:`~distil_trainers.teachers.llm_classifier` scores the label words after these prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rationales.prompts import DEFAULT_TASK_DESCRIPTION

__all__ = [
    "CLASSIFIER_PROMPT_FILE",
    "ClassifierPrompt",
    "Demonstration",
    "NORMALIZATIONS",
    "SavedClassifierPrompt",
    "TASK_PROMPTS",
    "default_classifier_prompt",
    "default_label_words",
    "resolve_label_words",
]

NORMALIZATIONS = ("mean", "sum")
GENERIC_TASK_DESCRIPTION = "Classify the text into one of the given categories."
DEFAULT_ANSWER_INSTRUCTION = "Answer with exactly one of these labels: {choices}."


# ---------------------------------------------------------------------------------------------------------------------
# tasks and label words
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    description: str
    words: Mapping[str, Sequence[str]]
    text_prefix: str = "Post: "


TASK_PROMPTS: dict[str, _Task] = {
    "davidson": _Task(DEFAULT_TASK_DESCRIPTION, {"hate": ["hate"], "offensive": ["offensive"], "neither": ["neither"]}),
    "tweeteval_hate": _Task(
        "Decide whether the tweet is hate speech against immigrants or women.",
        {"not-hate": ["not hate"], "hate": ["hate"]},
        "Tweet: ",
    ),
    "hasoc_a": _Task(
        "Decide whether the post contains hate speech, offensive language or profanity, or none of them.",
        {"NOT": ["none"], "HOF": ["offensive"]},
    ),
    "hasoc_b": _Task(
        "Classify the post as hate speech (an attack on a group for who they are), offensive language (insults), "
        "profanity (swearing without insulting anyone) or none of them.",
        {"NONE": ["none"], "HATE": ["hate"], "OFFN": ["offensive"], "PRFN": ["profane"]},
    ),
    "sst2": _Task(
        "Classify the sentiment of the movie review sentence.",
        {"negative": ["negative"], "positive": ["positive"]},
        "Sentence: ",
    ),
    "tweeteval_sentiment": _Task(
        "Classify the sentiment of the tweet.",
        {"negative": ["negative"], "neutral": ["neutral"], "positive": ["positive"]},
        "Tweet: ",
    ),
    "tweeteval_emotion": _Task(
        "Classify the emotion the tweet expresses.",
        {"anger": ["anger"], "joy": ["joy"], "optimism": ["optimism"], "sadness": ["sadness"]},
        "Tweet: ",
    ),
    "redv1": _Task(
        "Classify the emotion the Romanian tweet expresses.",
        {"anger": ["anger"], "fear": ["fear"], "joy": ["joy"], "sadness": ["sadness"], "neutral": ["neutral"]},
        "Tweet: ",
    ),
}
"""Default description, label words and text prefix of the registered datasets (``hasoc_{en,de,hi}_{a,b}`` use
``hasoc_a`` / ``hasoc_b``)."""

# Words for class names that are codes, whatever the task.
_CODE_WORDS = {
    "NOT": ["none"], "HOF": ["offensive"], "NONE": ["none"], "HATE": ["hate"], "OFFN": ["offensive"],
    "PRFN": ["profane"], "not-hate": ["not hate"],
}


def _task(task: str | None) -> _Task | None:
    if task is None:
        return None
    if task in TASK_PROMPTS:
        return TASK_PROMPTS[task]
    if task.startswith("hasoc_") and task[-2:] in ("_a", "_b"):
        return TASK_PROMPTS["hasoc" + task[-2:]]
    raise ValueError(f"Unknown task {task!r}; known: {sorted(TASK_PROMPTS)} (or hasoc_<lang>_a/b). Pass a prompt.")


def _name_to_word(name: str) -> str:
    return " ".join(str(name).replace("-", " ").replace("_", " ").split()).lower()


def default_label_words(class_names: Sequence[str], task: str | None = None) -> dict[str, list[str]]:
    """``{class name: [word]}``: the task's words (:data:`TASK_PROMPTS`), else the word for a coded name (``HOF``
    -> ``offensive``, ``NOT`` -> ``none``...), else the name lower-cased with ``-``/``_`` as spaces."""
    spec = _task(task)
    table = dict(spec.words) if spec is not None else {}
    return {
        str(name): list(table.get(str(name)) or _CODE_WORDS.get(str(name)) or [_name_to_word(name)])
        for name in class_names
    }


def resolve_label_words(
    label_words: Mapping[str, str | Sequence[str]] | Sequence[str | Sequence[str]], class_names: Sequence[str]
) -> list[list[str]]:
    """The label words of every class, in class order.

    Args:
        label_words: ``{class name: word or [words]}`` with exactly the class names as keys, or one entry per class
            in class order.
        class_names: the classes, in label-id order (a ``ClassLabel``'s names).

    Raises:
        ValueError: missing or unknown classes, an empty word, or a word given to two classes.
    """
    names = [str(n) for n in class_names]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"need at least 2 distinct class names, got {names}")
    if isinstance(label_words, Mapping):
        keys = [str(k) for k in label_words]
        missing, unknown = [n for n in names if n not in keys], [k for k in keys if k not in names]
        if missing or unknown:
            raise ValueError(
                f"label_words must name every class exactly: missing {missing}, unknown {unknown} (classes {names}, "
                "in the dataset's ClassLabel order)"
            )
        raw = [label_words[n] for n in names]
    else:
        raw = list(label_words)
        if len(raw) != len(names):
            raise ValueError(f"label_words has {len(raw)} entries for {len(names)} classes {names}")
    out: list[list[str]] = []
    owner: dict[str, str] = {}
    for name, words in zip(names, raw):
        words = [words] if isinstance(words, str) else [str(w) for w in words]
        if not words or any(not w.strip() for w in words):
            raise ValueError(f"class {name!r} needs non-empty label words, got {words!r}")
        for w in words:
            if w in owner and owner[w] != name:
                raise ValueError(f"the label word {w!r} is given to both {owner[w]!r} and {name!r}")
            owner[w] = name
        out.append(list(dict.fromkeys(words)))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# the prompt
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Demonstration:
    """A few-shot example: a text and its class name (shown with the class's first label word)."""

    text: str
    label: str


@dataclass
class ClassifierPrompt:
    """The prompt whose next tokens are read as class probabilities.

    Without a chat template the prompt is plain text::

        {task_description}

        Answer with exactly one of these labels: hate, offensive, neither.

        Post: {demonstration text}
        Label: {demonstration word}

        Post: {text}
        Label:

    and the candidates are ``separator + word`` (``" hate"``). With a chat template the instructions are the system
    message (or open the first user message when ``use_system_role=False``), each demonstration is a user turn
    ``Post: ...`` and an assistant turn ``Label: hate``, the text is the last user turn, and the prompt is the rendered
    conversation with the assistant header, followed by the answer prefix.

    Args:
        task_description: what to classify and what the classes mean.
        demonstrations: few-shot examples (:class:`Demonstration`, ``(text, class name)`` or dicts).
        text_prefix: written before each text.
        answer_prefix: written where the answer starts (``""`` for none: the word then follows the prompt
            directly, without separator).
        separator: between the answer prefix and the word.
        answer_instruction: the line listing the choices (``{choices}``: the first word of every class).
        use_chat_template: True: require the model's chat template; False: plain text; None: the template when the
            model has one.
        use_system_role: instructions as a system message (False for templates without a system role).
    """

    task_description: str = GENERIC_TASK_DESCRIPTION
    demonstrations: Sequence[Demonstration] = field(default_factory=list)
    text_prefix: str = "Post: "
    answer_prefix: str = "Label:"
    separator: str = " "
    answer_instruction: str = DEFAULT_ANSWER_INSTRUCTION
    use_chat_template: bool | None = None
    use_system_role: bool = True

    def __post_init__(self) -> None:
        demos = []
        for d in self.demonstrations:
            if isinstance(d, Demonstration):
                demos.append(d)
            elif isinstance(d, Mapping):
                demos.append(Demonstration(str(d["text"]), str(d["label"])))
            else:
                text, label = d
                demos.append(Demonstration(str(text), str(label)))
        self.demonstrations = demos
        if "{choices}" not in self.answer_instruction and self.answer_instruction:
            raise ValueError("answer_instruction must contain '{choices}' (or be empty)")

    def instructions(self, choices: Sequence[str]) -> str:
        """Task description and the list of choices."""
        parts = [self.task_description.strip()]
        if self.answer_instruction:
            parts.append(self.answer_instruction.format(choices=", ".join(choices)))
        return "\n\n".join(p for p in parts if p)

    def answer(self, word: str, with_prefix: bool = True) -> str:
        """A demonstration's answer: ``"Label: hate"`` (or the bare word)."""
        return f"{self.answer_prefix}{self.separator}{word}" if (with_prefix and self.answer_prefix) else word

    def continuation(self, word: str) -> str:
        """What is scored after the prompt: ``separator + word`` after an answer prefix, else the word."""
        return f"{self.separator}{word}" if self.answer_prefix else word

    def messages(
        self, text: str, class_names: Sequence[str], label_words: Sequence[Sequence[str]], with_prefix: bool = True
    ) -> list[dict[str, str]]:
        """The chat conversation: instructions, demonstrations, the text as the last user message."""
        first = {n: ws[0] for n, ws in zip(class_names, label_words)}
        turns: list[dict[str, str]] = []
        for d in self.demonstrations:
            turns.append({"role": "user", "content": f"{self.text_prefix}{d.text}"})
            turns.append({"role": "assistant", "content": self.answer(first[d.label], with_prefix)})
        turns.append({"role": "user", "content": f"{self.text_prefix}{text}"})
        instructions = self.instructions([ws[0] for ws in label_words])
        if self.use_system_role:
            return [{"role": "system", "content": instructions}, *turns]
        turns[0] = {"role": "user", "content": f"{instructions}\n\n{turns[0]['content']}"}
        return turns

    def plain_text(self, text: str, class_names: Sequence[str], label_words: Sequence[Sequence[str]]) -> str:
        """The prompt without chat template."""
        first = {n: ws[0] for n, ws in zip(class_names, label_words)}
        blocks = [self.instructions([ws[0] for ws in label_words])]
        for d in self.demonstrations:
            blocks.append(f"{self.text_prefix}{d.text}\n{self.answer(first[d.label])}")
        blocks.append(f"{self.text_prefix}{text}\n{self.answer_prefix}")
        return "\n\n".join(blocks)

    def to_dict(self) -> dict[str, Any]:
        """Every field (recorded in caches)."""
        return {
            "task_description": self.task_description,
            "demonstrations": [{"text": d.text, "label": d.label} for d in self.demonstrations],
            "text_prefix": self.text_prefix,
            "answer_prefix": self.answer_prefix,
            "separator": self.separator,
            "answer_instruction": self.answer_instruction,
            "use_chat_template": self.use_chat_template,
            "use_system_role": self.use_system_role,
        }


def default_classifier_prompt(task: str | None = None, **overrides: Any) -> ClassifierPrompt:
    """The zero-shot prompt of a registered dataset (:data:`TASK_PROMPTS`: its description and text prefix), or a
    generic one; ``overrides`` set other :class:`ClassifierPrompt` fields (``demonstrations``, ``answer_prefix``...)."""
    spec = _task(task)
    fields: dict[str, Any] = {}
    if spec is not None:
        fields.update(task_description=spec.description, text_prefix=spec.text_prefix)
    fields.update(overrides)
    return ClassifierPrompt(**fields)




# ---------------------------------------------------------------------------------------------------------------------
# a prompt saved beside a model
# ---------------------------------------------------------------------------------------------------------------------

CLASSIFIER_PROMPT_FILE = "classifier_prompt.json"


@dataclass
class SavedClassifierPrompt:
    """The prompt, class names, label words and normalisation a causal LM answers a classification with, saved as
    ``classifier_prompt.json`` in its model folder.

    :class:`~distil_trainers.trainers.rationale.RationaleSFTTrainer` saves its label view this way with every model
    and checkpoint, so that :class:`~distil_trainers.teachers.LLMClassifier` asks the rationale-distilled student the
    exact question it was trained on (same rendered prompt, same class words, log-probabilities summed over the
    word's tokens as the trainer's label scoring does). ``source`` says where the prompt comes from.
    """

    prompt: ClassifierPrompt
    class_names: list[str]
    label_words: list[list[str]]
    normalization: str = "sum"
    source: str = ""

    def __post_init__(self) -> None:
        self.class_names = [str(n) for n in self.class_names]
        self.label_words = resolve_label_words(self.label_words, self.class_names)
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt.to_dict(),
            "class_names": self.class_names,
            "label_words": self.label_words,
            "normalization": self.normalization,
            "source": self.source,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``<directory>/classifier_prompt.json``; returns its path."""
        path = Path(directory) / CLASSIFIER_PROMPT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SavedClassifierPrompt:
        """Read a ``classifier_prompt.json`` file, or the one in a model folder."""
        path = Path(path)
        if path.is_dir():
            path = path / CLASSIFIER_PROMPT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"No classifier prompt at {path} (a model saved by RationaleSFTTrainer has one).")
        data = json.loads(path.read_text())
        missing = {"prompt", "class_names", "label_words"} - set(data)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}: not a classifier prompt file.")
        return cls(ClassifierPrompt(**data["prompt"]), data["class_names"], data["label_words"],
                   data.get("normalization", "sum"), data.get("source", ""))

    @classmethod
    def find(cls, model: Any) -> SavedClassifierPrompt | None:
        """The prompt saved in the folder ``model`` names, or None (a Hub id, a GGUF file, a folder without one)."""
        if isinstance(model, (str, os.PathLike)) and (Path(model) / CLASSIFIER_PROMPT_FILE).is_file():
            return cls.load(model)
        return None

    @classmethod
    def resolve(cls, choice: str, model: Any) -> SavedClassifierPrompt | None:
        """The recipes' ``teacher_prompt``: ``"auto"`` the prompt saved in the folder ``model`` names if any,
        ``"zero-shot"`` none (the zero-shot prompt is used), else the path of a ``classifier_prompt.json``."""
        if choice == "zero-shot":
            return None
        return cls.find(model) if choice == "auto" else cls.load(choice)

    def check_classes(self, class_names: Sequence[str]) -> None:
        """Refuse a dataset whose classes (names, in label-id order) are not the ones the model answers with."""
        names = [str(n) for n in class_names]
        if names != self.class_names:
            raise ValueError(
                f"The model's saved classifier prompt answers with the classes {self.class_names}, the dataset has "
                f"{names} (in label-id order). Use a model trained on these classes, or another prompt."
            )
