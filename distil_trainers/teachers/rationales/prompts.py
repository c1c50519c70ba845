"""Few-shot chain-of-thought prompts for a teacher LLM, and the parser of its answers.

A :class:`RationalePrompt` turns a post into chat messages (system instructions, few-shot user/assistant turns, the
post) that ask for a short explanation followed by the label on its own line::

    Explanation: <one or two sentences>
    Label: <one of the label names>

:func:`parse_teacher_output` reads such an answer back. It tolerates what real models write: any case, markdown
(``**Label:** Hate``), quotes, trailing punctuation, synonyms and longer forms of a label (``offensive language``),
``Answer:`` / ``Final label:`` instead of ``Label:``, several label lines (the last one wins) and a bare label on the
last line. An answer without a recognisable label, or without an explanation, comes back with ``parsed=False`` and a
reason instead of an exception.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_TASK_DESCRIPTION",
    "FewShotExample",
    "ParsedOutput",
    "RationalePrompt",
    "default_prompt",
    "normalize_label_text",
    "parse_teacher_output",
]

DEFAULT_TASK_DESCRIPTION = (
    "You are an expert content moderator. Classify social media posts as hate speech, offensive language or "
    "neither. Hate speech attacks or demeans a group because of race, religion, ethnicity, gender, sexual "
    "orientation or disability. Offensive language is vulgar, insulting or rude without targeting a group for "
    "who they are."
)

# Words that introduce the label line and the explanation, lower case, without the colon.
_LABEL_KEYS = ("final label", "final answer", "label", "answer", "classification", "category", "class", "prediction")
_EXPLANATION_KEYS = ("explanation", "rationale", "reasoning", "reason", "justification")
_MARKDOWN = re.compile(r"[*_`#>~]+")
_QUOTES = "\"'“”‘’«»"
_KEY_LINE = re.compile(
    r"^\s*(?:[-•]\s*)?(?P<key>"
    + "|".join(k.replace(" ", r"\s+") for k in _LABEL_KEYS)
    + r")\s*[:=\-–]\s*(?P<value>.*)$",
    re.IGNORECASE,
)
_INLINE_LABEL = re.compile(
    r"(?:^|[\s.;,])(?:final\s+)?(?:label|answer|classification)\s*[:=]\s*(?P<value>[^\n.;,]+)", re.IGNORECASE
)
_EXPLANATION_LINE = re.compile(
    r"^\s*(?:[-•]\s*)?(?P<key>" + "|".join(_EXPLANATION_KEYS) + r")\s*[:=\-–]\s*(?P<value>.*)$", re.IGNORECASE
)


def normalize_label_text(text: Any) -> str:
    """``' **"Offensive-Language."** '`` -> ``"offensive language"``: lower case, accents, markdown, quotes and
    punctuation removed, separators (``-``, ``_``, ``/``) turned into single spaces."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = _MARKDOWN.sub(" ", text)
    text = re.sub(r"[^a-z0-9 ]+", " ", text)
    return " ".join(text.split())


@dataclass
class FewShotExample:
    """One demonstration: a post, its label name (one of the prompt's ``label_names``) and a short explanation."""

    text: str
    label: str
    explanation: str


@dataclass
class ParsedOutput:
    """What :func:`parse_teacher_output` read from an answer.

    ``label_id`` is -1 and ``rationale`` is ``""`` unless ``parsed``; ``error`` then says what was missing.
    ``found_label_id`` keeps the label read even when the explanation was missing (for diagnostics).
    """

    label_id: int
    rationale: str
    parsed: bool
    error: str | None = None
    found_label_id: int = -1


@dataclass
class RationalePrompt:
    """A few-shot chain-of-thought classification prompt.

    Args:
        label_names: class names in label-id order (a dataset's ``features["label"].names``).
        task_description: first part of the system message: what the task is and what the classes mean.
        few_shot: demonstrations shown as earlier user/assistant turns (their ``label`` must be in ``label_names``).
        label_synonyms: extra spellings accepted by the parser, ``{label name: [synonym, ...]}``.
        use_system_role: put the instructions into a ``system`` message; set False for chat templates without a
            system role (the instructions are then prepended to the first user message).
        post_prefix: text before the post in each user message.
    """

    label_names: Sequence[str]
    task_description: str = DEFAULT_TASK_DESCRIPTION
    few_shot: Sequence[FewShotExample] = field(default_factory=list)
    label_synonyms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    use_system_role: bool = True
    post_prefix: str = "Post: "

    def __post_init__(self) -> None:
        self.label_names = [str(name) for name in self.label_names]
        if len(self.label_names) < 2:
            raise ValueError(f"a classification prompt needs at least 2 label names, got {self.label_names}")
        normalized = [normalize_label_text(name) for name in self.label_names]
        if "" in normalized or len(set(normalized)) != len(normalized):
            raise ValueError(
                f"label names must be distinct and non-empty once lower-cased without punctuation: {self.label_names}"
            )
        self.few_shot = [ex if isinstance(ex, FewShotExample) else FewShotExample(**ex) for ex in self.few_shot]
        for ex in self.few_shot:
            if ex.label not in self.label_names:
                raise ValueError(f"few-shot example label {ex.label!r} is not one of {self.label_names}")
        unknown = set(self.label_synonyms) - set(self.label_names)
        if unknown:
            raise ValueError(f"label_synonyms has keys {sorted(unknown)} that are not label names {self.label_names}")
        self.label_synonyms = {k: [str(s) for s in v] for k, v in self.label_synonyms.items()}

    # -- rendering ----------------------------------------------------------------------------------------------------

    def instructions(self) -> str:
        """The instruction text: task description, the label set and the answer format."""
        labels = ", ".join(self.label_names)
        return (
            f"{self.task_description.strip()}\n\n"
            f"Possible labels: {labels}.\n"
            "Think about the post step by step, then answer in exactly this format:\n"
            "Explanation: <one or two sentences explaining your decision>\n"
            f"Label: <one of: {labels}>"
        )

    def format_answer(self, explanation: str, label: str) -> str:
        """The answer format the teacher is asked for (used for the few-shot turns)."""
        return f"Explanation: {explanation.strip()}\nLabel: {label}"

    def to_messages(self, text: str) -> list[dict[str, str]]:
        """Chat messages for one post: instructions, few-shot turns, then the post as the last user message."""
        messages: list[dict[str, str]] = []
        turns: list[dict[str, str]] = []
        for ex in self.few_shot:
            turns.append({"role": "user", "content": f"{self.post_prefix}{ex.text}"})
            turns.append({"role": "assistant", "content": self.format_answer(ex.explanation, ex.label)})
        turns.append({"role": "user", "content": f"{self.post_prefix}{text}"})
        if self.use_system_role:
            messages.append({"role": "system", "content": self.instructions()})
            messages.extend(turns)
        else:
            turns[0] = {"role": "user", "content": f"{self.instructions()}\n\n{turns[0]['content']}"}
            messages.extend(turns)
        return messages

    def to_dict(self) -> dict[str, Any]:
        """Everything that changes the teacher's answers or their parsing (recorded in the generation cache)."""
        return {
            "label_names": list(self.label_names),
            "task_description": self.task_description,
            "few_shot": [vars(ex).copy() for ex in self.few_shot],
            "label_synonyms": {k: list(v) for k, v in self.label_synonyms.items()},
            "use_system_role": self.use_system_role,
            "post_prefix": self.post_prefix,
        }

    # -- parsing ------------------------------------------------------------------------------------------------------

    def parse(self, output: str) -> ParsedOutput:
        """:func:`parse_teacher_output` with this prompt's labels and synonyms."""
        return parse_teacher_output(output, self.label_names, self.label_synonyms)


# ---------------------------------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------------------------------


def _label_table(label_names: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None) -> list[tuple[str, int]]:
    """(normalised spelling, label id), longest spelling first so that ``not hate`` wins over ``hate``."""
    table = {}
    for i, name in enumerate(label_names):
        table.setdefault(normalize_label_text(name), i)
    for name, spellings in (synonyms or {}).items():
        i = list(label_names).index(name)
        for s in spellings:
            table.setdefault(normalize_label_text(s), i)
    return sorted(((k, v) for k, v in table.items() if k), key=lambda kv: -len(kv[0]))


def _match_label(value: str, table: list[tuple[str, int]]) -> int:
    """Label id of a label-line value: exact spelling, else a spelling that starts the value (``hate speech`` ->
    ``hate``; longest first), else -1."""
    value = normalize_label_text(value)
    if not value:
        return -1
    for spelling, i in table:
        if value == spelling:
            return i
    for spelling, i in table:
        if value.startswith(spelling + " "):
            return i
    return -1


def _clean_line(line: str) -> str:
    return _MARKDOWN.sub("", line).strip().strip(_QUOTES).strip()


def parse_teacher_output(
    output: str, label_names: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None
) -> ParsedOutput:
    """Read the explanation and the label from a teacher's answer.

    The label comes from the LAST line of the form ``<key>: <value>`` with key one of ``label``, ``final label``,
    ``answer``, ``classification``, ``category``, ``class``, ``prediction`` (markdown and case ignored); if there is no
    such line, a last non-empty line that is nothing but a label name counts. The value maps to a label id by exact
    (normalised) spelling or synonym, else by a spelling that begins it (``Offensive language.`` -> ``offensive``).

    The rationale is the text after ``Explanation:`` (or ``Rationale:``, ``Reasoning:``...) up to the next label line,
    or, without such a marker, the text before the label line. Lines that are themselves label lines are left out.

    Returns:
        :class:`ParsedOutput`; ``parsed`` is True only when both a known label and a non-empty explanation were found.
    """
    if output is None:
        output = ""
    table = _label_table(label_names, synonyms)
    lines = [_clean_line(line) for line in str(output).replace("\r\n", "\n").split("\n")]

    label_id, label_line = -1, None
    key_lines = [i for i, line in enumerate(lines) if _KEY_LINE.match(line)]
    for i in reversed(key_lines):
        value = _KEY_LINE.match(lines[i]).group("value")
        if not value.strip() and i + 1 < len(lines):  # "Label:" with the value on the next line
            value = lines[i + 1]
        label_id = _match_label(value, table)
        if label_id >= 0:
            label_line = i
            break
    if label_line is None:
        non_empty = [i for i, line in enumerate(lines) if line]
        if non_empty:
            last = non_empty[-1]
            for spelling, i in table:
                if normalize_label_text(lines[last]) == spelling:
                    label_id, label_line = i, last
                    break

    if label_line is None:  # "Explanation: ... Label: hate" written on one line
        inline = list(_INLINE_LABEL.finditer("\n".join(lines)))
        for match in reversed(inline):
            label_id = _match_label(match.group("value"), table)
            if label_id >= 0:
                before = "\n".join(lines)[: match.start()].split("\n")
                rationale = _extract_rationale(before, None, set())
                break
        else:
            label_id = -1
    if label_line is not None or label_id < 0:
        rationale = _extract_rationale(lines, label_line, set(key_lines))
    if label_id < 0:
        reason = "a label line with an unknown label" if key_lines else "no label line"
        return ParsedOutput(-1, "", False, f"{reason} (expected one of {list(label_names)})")
    if not rationale:
        return ParsedOutput(-1, "", False, "no explanation before or after the label", found_label_id=label_id)
    return ParsedOutput(label_id, rationale, True, None, found_label_id=label_id)


def _extract_rationale(lines: list[str], label_line: int | None, key_lines: set[int]) -> str:
    start = None
    for i, line in enumerate(lines):
        match = _EXPLANATION_LINE.match(line)
        if match:
            start = i
            first = match.group("value")
            break
    if start is not None:
        body = [first]
        for i in range(start + 1, len(lines)):
            if i in key_lines or i == label_line or _EXPLANATION_LINE.match(lines[i]):
                break
            body.append(lines[i])
    else:
        end = label_line if label_line is not None else len(lines)
        body = [line for i, line in enumerate(lines[:end]) if i not in key_lines]
    return " ".join(" ".join(body).split())


# ---------------------------------------------------------------------------------------------------------------------
# the default prompt
# ---------------------------------------------------------------------------------------------------------------------

# Three hand-written demonstrations, one per kind of post. Each lists the label names it may take, in order of
# preference, so that the same demonstrations serve Davidson (hate/offensive/neither), HASOC (HOF/NOT, HATE/OFFN/...)
# and TweetEval hate (hate/not-hate); a demonstration whose kind has no label in the label set is left out.
_DEFAULT_EXAMPLES = (
    (
        "Send them all back where they came from, those people are animals and ruin every neighborhood.",
        ("hate", "hateful", "hate speech", "hof"),
        "The post dehumanises a group of immigrants as animals and calls for their removal, which attacks people "
        "for their origin.",
    ),
    (
        "shut up you stupid idiot, nobody cares about your garbage opinions lmao",
        ("offensive", "offn", "offensive language", "abusive", "hof", "prfn"),
        "The post insults one person with vulgar name-calling but does not target a group for their identity.",
    ),
    (
        "Just finished my morning run, the sunrise over the lake was beautiful today!",
        ("neither", "not", "none", "not hate", "non hate", "normal", "neutral", "not offensive"),
        "The post describes a pleasant personal activity and contains no insult or attack on anyone.",
    ),
)

_DEFAULT_SYNONYMS = {
    "hate": ("hate speech", "hateful", "hatespeech"),
    "offensive": ("offensive language", "offense", "offence", "abusive", "offn"),
    "neither": ("none", "neither hate nor offensive", "normal", "not offensive", "non offensive", "no"),
    "hof": ("hate or offensive", "hateful or offensive"),
    "not": ("not hate or offensive", "not offensive", "non offensive", "none", "normal"),
    "not hate": ("non hate", "nothate", "no hate", "none", "normal"),
}


def default_prompt(label_names: Sequence[str], task_description: str | None = None, **kwargs: Any) -> RationalePrompt:
    """A three-shot prompt for hate / offensive / neither style label sets.

    The three demonstrations (a hateful post, an insulting one, a harmless one) are kept for each label set that has
    a matching label (``hate``/``HOF``, ``offensive``/``OFFN``/``HOF``, ``neither``/``NOT``/``not-hate``...);
    synonyms such as ``hate speech`` or ``offensive language`` are accepted by the parser.

    Args:
        label_names: class names in label-id order.
        task_description: what the task is; defaults to :data:`DEFAULT_TASK_DESCRIPTION` (hate/offensive/neither).
        **kwargs: other :class:`RationalePrompt` fields (``use_system_role``, ``post_prefix``...).
    """
    names = [str(n) for n in label_names]
    by_norm = {normalize_label_text(n): n for n in names}
    few_shot = []
    for text, candidates, explanation in _DEFAULT_EXAMPLES:
        for cand in candidates:
            if normalize_label_text(cand) in by_norm:
                few_shot.append(FewShotExample(text, by_norm[normalize_label_text(cand)], explanation))
                break
    synonyms: dict[str, list[str]] = {}
    taken = {normalize_label_text(n) for n in names}
    for norm, name in by_norm.items():
        extra = [s for s in _DEFAULT_SYNONYMS.get(norm, ()) if normalize_label_text(s) not in taken]
        taken.update(normalize_label_text(s) for s in extra)
        if extra:
            synonyms[name] = extra
    synonyms.update(kwargs.pop("label_synonyms", {}) or {})
    return RationalePrompt(
        label_names=names,
        task_description=task_description or DEFAULT_TASK_DESCRIPTION,
        few_shot=kwargs.pop("few_shot", few_shot),
        label_synonyms=synonyms,
        **kwargs,
    )
