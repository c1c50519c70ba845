"""A causal LLM as a classifier teacher: soft labels for a small encoder, read from next-token probabilities.

For a text ``x``, a prompt ``P(x)`` (zero- or few-shot; rendered with the model's chat template when it has one)
ends with an answer prefix such as ``"Label:"``. Each class ``c`` has one or more label words (verbalisers) ``W_c``,
e.g. ``{"hate": ["hate", "hateful"], "offensive": ["offensive"], "neither": ["neither"]}``. A word ``w`` is scored as
the continuation ``s = separator + w`` (``" hate"``) of the prompt, token by token::

    log p(w | x) = sum_{j=1..|s|} log p(s_j | P(x), s_<j)        normalization="sum"
    log p(w | x) = (1 / |s|) * sum_j log p(s_j | P(x), s_<j)      normalization="mean" (default: long words are not
                                                                 penalised for their length)

where ``s_1..s_|s|`` are the tokens of ``s`` *as tokenised after the prompt*: ``P(x) + s`` is tokenised whole and the
tokens after the prompt's own are scored (see :mod:`~distil_trainers.teachers.llm_backends` for the boundary rule;
with BPE tokenizers ``" hate"`` is one token while ``"hate"`` may be two, which is why the separator belongs to the
word). The class score sums its words' probabilities, and the teacher's output is renormalised over the classes::

    l_c(x) = log sum_{w in W_c} exp(log p(w | x))
    teacher logits z(x) = log_softmax(l(x))                        (log-probabilities over the C classes)

so ``softmax(z)`` is the LLM's class distribution restricted to the label words. Optional calibration
(:mod:`~distil_trainers.teachers.calibration`): contextual calibration with content-free inputs, then a temperature
fitted on a labelled dev set.

Class order and label words. Column ``c`` of the logits is class ``c`` of the dataset's ``ClassLabel`` (its
``features["label"].names``), the order the students predict in. ``label_words`` maps each class *name* to its
word(s) (a mapping whose keys must be exactly the class names, or a list in class order); by default the words come
from the task (:func:`default_label_words`: ``HOF`` -> ``"offensive"``, ``not-hate`` -> ``"not hate"``...) or from the
class names themselves, lower-cased.

:func:`precompute_llm_teacher_outputs` writes the result as a :class:`~distil_trainers.teachers.cache.TeacherOutputs` cache
keyed by the ``id`` column, with a content hash of every ``text`` (so :meth:`TeacherOutputs.attach` refuses a text
changed under the same id) and a record of which LLM labelled the data and how (``meta["llm"]``,
``meta["calibration"]``). ``AnnealingTrainer`` and ``MutualLearningTrainer`` distil from it unchanged.

Example::

    from distil_trainers import AnnealingTrainer
    from distil_trainers.data import load_dataset_by_name
    from distil_trainers.teachers.rationales import packaged_smollm2_gguf
    from distil_trainers.teachers import LlamaCppLogprobBackend, precompute_llm_teacher_outputs

    dd = load_dataset_by_name("davidson", max_samples_per_split={"train": 500, "validation": 100})
    backend = LlamaCppLogprobBackend(packaged_smollm2_gguf(), n_ctx=2048)
    cache = precompute_llm_teacher_outputs(
        backend, {"train": dd["train"], "validation": dd["validation"]}, "runs/llm_teacher/davidson",
        task="davidson", calibration="contextual",
    )
    trainer = AnnealingTrainer(model=student, teacher_outputs=cache, train_dataset=tokenized["train"], ...)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from .cache import (
    ID_COLUMN,
    TeacherOutputs,
    check_finite_logits,
    content_groups,
    dataset_fingerprint,
    example_hashes,
)
from .calibration import (
    DEFAULT_CONTENT_FREE_INPUTS,
    apply_temperature,
    content_free_distribution,
    contextual_calibration,
    fit_temperature,
    temperature_nll,
)
from .llm_backends import LogprobBackend, as_logprob_backend
from .llm_prompts import (
    NORMALIZATIONS,
    TASK_PROMPTS,
    ClassifierPrompt,
    Demonstration,
    default_classifier_prompt,
    default_label_words,
    resolve_label_words,
)
from .locks import one_writer

logger = logging.getLogger(__name__)

__all__ = [
    "ClassifierPrompt",
    "Demonstration",
    "LLMCalibration",
    "LLMClassifier",
    "TASK_PROMPTS",
    "default_classifier_prompt",
    "default_label_words",
    "first_token_class_scores",
    "llm_cache_fingerprint",
    "precompute_llm_teacher_outputs",
    "resolve_label_words",
]

TEXT_COLUMN = "text"
LABEL_COLUMNS = ("label", "labels")


# ---------------------------------------------------------------------------------------------------------------------
# first-token approximation (chat completions with top_logprobs)
# ---------------------------------------------------------------------------------------------------------------------


def first_token_class_scores(
    top: Sequence[tuple[str, float]], label_words: Sequence[Sequence[str]], *, case_sensitive: bool = False
) -> tuple[list[float], list[int], float]:
    """Class log-scores from the top-``k`` first answer tokens ``[(token text, log-prob), ...]``.

    A token belongs to class ``c`` when its text, stripped of white space, is a non-empty prefix of one of ``c``'s
    label words (case-insensitive by default: ``"Hate"`` and ``" hate"`` both count for ``hate``); the class's
    probability is the sum over its tokens. A token that begins words of several classes is ambiguous and counted for
    none. A class without any token in the top-``k`` gets the floor ``min(p_k, 1 - sum(top-k))``, an upper bound of
    its first-token probability (``p_k`` the smallest listed probability).

    Returns:
        ``(log-scores per class (not renormalised), classes that got the floor, probability mass of ambiguous
        tokens)``.
    """
    n = len(label_words)
    words = [[w if case_sensitive else w.casefold() for w in ws] for ws in label_words]
    probs = [0.0] * n
    seen = [False] * n
    ambiguous = 0.0
    listed = [math.exp(lp) for _, lp in top]
    for (token, _), p in zip(top, listed):
        key = token.strip()
        if not case_sensitive:
            key = key.casefold()
        if not key:
            continue
        owners = [c for c in range(n) if any(w.startswith(key) for w in words[c])]
        if len(owners) == 1:
            probs[owners[0]] += p
            seen[owners[0]] = True
        elif owners:
            ambiguous += p
    floor = min(min(listed), max(1.0 - sum(listed), 1e-12)) if listed else 1e-12
    floored = [c for c in range(n) if not seen[c]]
    for c in floored:
        probs[c] = floor
    return [math.log(p) for p in probs], floored, ambiguous


# ---------------------------------------------------------------------------------------------------------------------
# the classifier
# ---------------------------------------------------------------------------------------------------------------------


class LLMClassifier:
    """Class log-probabilities of texts from a causal LM's next-token probabilities of the label words.

    Args:
        backend: a :class:`~distil_trainers.teachers.LogprobBackend`, a generation backend of
            :mod:`distil_trainers.teachers.rationales`, or a model name/path (see :func:`as_logprob_backend`).
        class_names: the classes in label-id order (the dataset's ``ClassLabel`` names).
        label_words: ``{class name: word or [words]}`` or a list in class order (:func:`resolve_label_words`);
            default :func:`default_label_words`.
        prompt: a :class:`ClassifierPrompt`; default :func:`default_classifier_prompt` of ``task``.
        task: a registered dataset name, for the default prompt and label words.
        normalization: ``"mean"`` (log-probability per token, default) or ``"sum"`` (of the word's tokens).
        batch_size: texts per backend call.
        top_logprobs: ``k`` of a first-token backend (default: the backend's).

    With a first-token backend (:class:`~distil_trainers.teachers.OpenAILogprobBackend` in ``mode="chat"``), only the
    first answer token is seen: classes are scored by :func:`first_token_class_scores`, the answer prefix is not used
    (the demonstrations answer with the bare word), ``normalization`` does not apply, and :attr:`stats` counts the
    floored classes. The numbers are then an approximation (see :class:`OpenAILogprobBackend`).
    """

    def __init__(
        self,
        backend: Any,
        class_names: Sequence[str],
        label_words: Mapping[str, str | Sequence[str]] | Sequence[str | Sequence[str]] | None = None,
        prompt: ClassifierPrompt | None = None,
        *,
        task: str | None = None,
        normalization: str = "mean",
        batch_size: int = 8,
        top_logprobs: int | None = None,
    ) -> None:
        self.backend: LogprobBackend = as_logprob_backend(backend)
        self.class_names = [str(n) for n in class_names]
        if label_words is None:
            label_words = default_label_words(self.class_names, task)
        self.label_words = resolve_label_words(label_words, self.class_names)
        self.prompt = prompt if prompt is not None else default_classifier_prompt(task)
        if not isinstance(self.prompt, ClassifierPrompt):
            raise TypeError(f"prompt must be a ClassifierPrompt, got {type(self.prompt).__name__}")
        for d in self.prompt.demonstrations:
            if d.label not in self.class_names:
                raise ValueError(f"demonstration label {d.label!r} is not a class name {self.class_names}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.normalization = normalization
        self.batch_size = batch_size
        self.scoring = getattr(self.backend, "scoring", "tokens")
        self.top_logprobs = top_logprobs or getattr(self.backend, "top_logprobs", 20)
        self.stats: Counter = Counter()
        self.floored = Counter()
        self._word_class = [c for c, ws in enumerate(self.label_words) for _ in ws]
        self._continuations = [self.prompt.continuation(w) for ws in self.label_words for w in ws]
        self.use_chat_template = self._decide_template()

    def _decide_template(self) -> bool:
        if self.scoring == "first_token":
            return True  # the server applies its own template
        if self.prompt.use_chat_template is False:
            return False
        has = self.backend.render_chat([{"role": "user", "content": "x"}]) is not None
        if self.prompt.use_chat_template and not has:
            raise ValueError(f"the prompt requires a chat template but {self.backend.model_id} has none")
        return has

    # -- prompts ------------------------------------------------------------------------------------------------------

    def messages(self, text: str) -> list[dict[str, str]]:
        """The chat conversation for ``text``."""
        return self.prompt.messages(
            text, self.class_names, self.label_words, with_prefix=self.scoring != "first_token"
        )

    def prompt_text(self, text: str) -> str:
        """The exact prompt string the label words are scored after."""
        if self.use_chat_template:
            rendered = self.backend.render_chat(self.messages(text))
            if rendered is None:
                raise ValueError(f"{self.backend.model_id} has no chat template")
            return rendered + self.prompt.answer_prefix
        return self.prompt.plain_text(text, self.class_names, self.label_words)

    # -- scoring ------------------------------------------------------------------------------------------------------

    def word_log_probs(self, texts: Sequence[str]) -> Tensor:
        """``(N, W)`` float64: ``log p(word | text)`` of every label word (words in class order, then in the order
        given), summed or averaged over the word's tokens per ``normalization``. Token backends only."""
        if self.scoring != "tokens":
            raise ValueError("word_log_probs needs a backend that scores tokens (not a first-token backend)")
        prompts = [self.prompt_text(t) for t in texts]
        scored = self.backend.continuation_logprobs(prompts, self._continuations)
        out = torch.empty(len(texts), len(self._continuations), dtype=torch.float64)
        for i, per_word in enumerate(scored):
            for j, lps in enumerate(per_word):
                if not lps:
                    raise ValueError(f"no token scored for the label word continuation {self._continuations[j]!r}")
                total = math.fsum(lps)
                out[i, j] = total / len(lps) if self.normalization == "mean" else total
        return out

    def _class_scores(self, texts: Sequence[str]) -> Tensor:
        """Un-normalised class log-scores ``(N, C)`` of one batch."""
        if self.scoring == "first_token":
            tops = self.backend.first_token_top_logprobs([self.messages(t) for t in texts], self.top_logprobs)
            rows = []
            for top in tops:
                scores, floored, ambiguous = first_token_class_scores(top, self.label_words)
                for c in floored:
                    self.floored[self.class_names[c]] += 1
                self.stats["texts"] += 1
                self.stats["ambiguous_mass"] += ambiguous
                rows.append(scores)
            return torch.tensor(rows, dtype=torch.float64)
        words = self.word_log_probs(texts)
        index = torch.tensor(self._word_class)
        out = torch.full((len(texts), len(self.class_names)), float("-inf"), dtype=torch.float64)
        for c in range(len(self.class_names)):
            out[:, c] = words[:, index == c].logsumexp(-1)
        self.stats["texts"] += len(texts)
        return out

    def class_log_probs(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress: bool = False
    ) -> Tensor:
        """``(N, C)`` float64 class log-probabilities (``log_softmax`` over the classes of the class scores), rows in
        the order of ``texts``. Texts are batched by length (less padding) and the order restored."""
        texts = [str(t) for t in texts]
        size = batch_size or self.batch_size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), len(self.class_names), dtype=torch.float64)
        before = self.floored.copy()
        with tqdm(total=len(texts), desc="LLM teacher", unit="text", disable=not show_progress) as bar:
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                scores = self._class_scores([texts[i] for i in idx])
                out[torch.tensor(idx)] = torch.log_softmax(scores, dim=-1)
                bar.update(len(idx))
        new = self.floored - before
        if new:
            logger.warning(
                "First-token scoring: no label-word token among the top-%d answer tokens, so the floor probability "
                "(an upper bound) was used, %d time(s) over %d text(s), per class: %s. These probabilities are "
                "over-estimated; a server with echo log-probabilities (mode='echo') gives exact scores.",
                self.top_logprobs, sum(new.values()), len(texts), dict(new),
            )
        return out

    def __call__(self, texts: Sequence[str], **kwargs: Any) -> Tensor:
        """:meth:`class_log_probs`."""
        return self.class_log_probs(texts, **kwargs)

    def describe(self) -> dict[str, Any]:
        """Which LLM scores and how: backend identity, prompt (fields and the rendered template with ``{text}``),
        label words per class, normalisation and scoring mode. JSON-serialisable; recorded in caches."""
        info: dict[str, Any] = {
            "model": self.backend.model_id,
            "backend": self.backend.identity(),
            "scoring": self.scoring,
            "class_names": list(self.class_names),
            "label_words": {n: list(ws) for n, ws in zip(self.class_names, self.label_words)},
            "prompt": self.prompt.to_dict(),
            "chat_template": self.use_chat_template,
        }
        if self.scoring == "first_token":
            info["top_logprobs"] = self.top_logprobs
            info["messages"] = self.messages("{text}")
        else:
            info["normalization"] = self.normalization
            info["continuations"] = list(self._continuations)
            info["prompt_text"] = self.prompt_text("{text}")
        return info


# ---------------------------------------------------------------------------------------------------------------------
# calibration settings
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LLMCalibration:
    """How :func:`precompute_llm_teacher_outputs` calibrates the LLM's class distribution.

    Args:
        content_free_inputs: texts for contextual calibration (default ``("N/A", "", "[MASK]")``); ``None`` skips it.
        dev_dataset: a labelled dev set (``text`` and ``label`` columns) to fit a temperature on, after contextual
            calibration; its examples should not be ones the student is evaluated on.
        temperature: a fixed temperature instead of fitting one.
        temperature_bounds: the range a fitted temperature is clipped to.

    ``calibration="contextual"`` means ``LLMCalibration()``; a dict gives these fields.
    """

    content_free_inputs: Sequence[str] | None = DEFAULT_CONTENT_FREE_INPUTS
    dev_dataset: datasets.Dataset | None = None
    temperature: float | None = None
    temperature_bounds: tuple[float, float] = (0.05, 20.0)

    def __post_init__(self) -> None:
        if self.content_free_inputs is not None:
            self.content_free_inputs = [str(t) for t in self.content_free_inputs]
            if not self.content_free_inputs:
                raise ValueError("content_free_inputs is empty; use None to skip contextual calibration")
        if self.dev_dataset is not None and self.temperature is not None:
            raise ValueError("give either a dev_dataset to fit the temperature on or a fixed temperature, not both")
        if self.temperature is not None and not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if self.dev_dataset is not None:
            if not isinstance(self.dev_dataset, datasets.Dataset):
                raise TypeError("dev_dataset must be a datasets.Dataset with `text` and `label` columns")
            _text_column_check(self.dev_dataset, "calibration dev set")
            if _label_column(self.dev_dataset) is None:
                raise ValueError("the calibration dev set needs a `label` column")

    def settings(self) -> dict[str, Any]:
        """What changes the calibrated outputs (part of the cache fingerprint)."""
        dev = None
        if self.dev_dataset is not None:
            cols = [TEXT_COLUMN, _label_column(self.dev_dataset)]
            dev = {"examples": len(self.dev_dataset), "sha256": dataset_fingerprint(self.dev_dataset, cols)[:32]}
        return {
            "content_free_inputs": list(self.content_free_inputs) if self.content_free_inputs is not None else None,
            "dev_dataset": dev,
            "temperature": self.temperature,
            "temperature_bounds": list(self.temperature_bounds),
        }


def _calibration_spec(calibration: Any) -> LLMCalibration | None:
    if calibration is None or calibration is False:
        return None
    if isinstance(calibration, LLMCalibration):
        return calibration
    if isinstance(calibration, str):
        if calibration != "contextual":
            raise ValueError(f"calibration must be None, 'contextual', a dict or an LLMCalibration; got {calibration!r}")
        return LLMCalibration()
    if isinstance(calibration, Mapping):
        return LLMCalibration(**calibration)
    raise TypeError(f"calibration must be None, 'contextual', a dict or an LLMCalibration; got {type(calibration)}")


def _check_dev_classes(dev: datasets.Dataset, class_names: Sequence[str]) -> None:
    feature = dev.features[_label_column(dev)]
    if isinstance(feature, datasets.ClassLabel) and list(feature.names) != list(class_names):
        raise ValueError(
            f"The calibration dev set's classes {list(feature.names)} differ from the teacher's {list(class_names)} "
            "(the same names in the same order are needed)."
        )


def _calibrate(
    scorer: LLMClassifier, spec: LLMCalibration, batch_size: int
) -> tuple[Tensor | None, float | None, dict[str, Any]]:
    """Compute ``p_cf`` and the temperature; returns them and the record for ``meta["calibration"]``."""
    record: dict[str, Any] = {"methods": []}
    p_cf = None
    if spec.content_free_inputs is not None:
        cf = scorer.class_log_probs(spec.content_free_inputs, batch_size=batch_size)
        p_cf = content_free_distribution(cf)
        record["methods"].append("contextual")
        record["content_free_inputs"] = list(spec.content_free_inputs)
        record["content_free_distribution"] = {n: float(p) for n, p in zip(scorer.class_names, p_cf)}
    temperature = spec.temperature
    if spec.dev_dataset is not None:
        dev = spec.dev_dataset
        column = _label_column(dev)
        _check_dev_classes(dev, scorer.class_names)
        labels = torch.tensor([int(y) for y in dev[column][:]])
        keep = labels != -100
        texts = [t for t, k in zip(dev[TEXT_COLUMN][:], keep.tolist()) if k]
        if not texts:
            raise ValueError("the calibration dev set has no labelled example")
        dev_scores = scorer.class_log_probs(texts, batch_size=batch_size)
        if p_cf is not None:
            dev_scores = contextual_calibration(dev_scores, p_cf)
        temperature = fit_temperature(dev_scores, labels[keep], bounds=spec.temperature_bounds)
        record.update(
            dev_examples=len(texts),
            dev_nll_before=temperature_nll(dev_scores, labels[keep], 1.0),
            dev_nll_after=temperature_nll(dev_scores, labels[keep], temperature),
            temperature_fitted=True,
        )
    if temperature is not None:
        record["methods"].append("temperature")
        record["temperature"] = float(temperature)
    return p_cf, temperature, record


# ---------------------------------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------------------------------

LLM_BUILD_ADVICE = (
    "The LLM gave them: its weights or activations hold NaN/inf (a float16 model overflowing: load it in float32 or "
    "bfloat16), or a class got probability 0 (-inf after the log). Distilling from them would turn every student "
    "weight into NaN, so no cache was written."
)


def _label_column(ds: datasets.Dataset) -> str | None:
    return next((c for c in LABEL_COLUMNS if c in ds.column_names), None)


def _text_column_check(ds: datasets.Dataset, what: str) -> None:
    if TEXT_COLUMN not in ds.column_names:
        raise ValueError(f"The {what} has no `{TEXT_COLUMN}` column (the raw texts the LLM reads); columns: "
                         f"{ds.column_names}.")
    if "text_pair" in ds.column_names:
        raise ValueError(f"The {what} has a `text_pair` column: the LLM classifier teacher scores single texts.")
    if any(t is None for t in ds[TEXT_COLUMN][:]):
        raise ValueError(f"The {what} has missing (None) texts.")


def _as_parts(dataset: Any) -> list[tuple[str, datasets.Dataset]]:
    if isinstance(dataset, datasets.Dataset):
        return [("dataset", dataset)]
    if isinstance(dataset, Mapping) and dataset and all(isinstance(d, datasets.Dataset) for d in dataset.values()):
        return [(str(k), v) for k, v in dataset.items()]
    raise TypeError("dataset must be a datasets.Dataset or a non-empty {name: Dataset} mapping")


def _dataset_class_names(parts: list[tuple[str, datasets.Dataset]]) -> list[str] | None:
    found: list[str] | None = None
    for name, ds in parts:
        column = _label_column(ds)
        feature = ds.features.get(column) if column else None
        if isinstance(feature, datasets.ClassLabel):
            if found is not None and list(feature.names) != found:
                raise ValueError(f"The datasets' ClassLabel names differ: {found} vs {list(feature.names)} ({name}).")
            found = list(feature.names)
    return found


def _ids(parts: list[tuple[str, datasets.Dataset]]) -> list[str]:
    ids: list[str] = []
    for name, ds in parts:
        if ID_COLUMN not in ds.column_names:
            raise ValueError(
                f"The {name} has no `{ID_COLUMN}` column. The teacher-output cache is keyed by example id: add one "
                "(e.g. `dataset.add_column('id', [str(i) for i in range(len(dataset))])` before any shuffling)."
            )
        ids += [str(i) for i in ds[ID_COLUMN][:]]
    if len(set(ids)) != len(ids):
        raise ValueError("The datasets have duplicate example ids; a cache needs ids unique across all of them.")
    return ids


def _text_hashes(parts: list[tuple[str, datasets.Dataset]]) -> dict[str, list[str | None]]:
    """Per-example content hashes of the ``text`` column, under the group name ``TeacherOutputs.attach`` uses."""
    group = next(g for g in content_groups([TEXT_COLUMN]) if g[0] == TEXT_COLUMN)
    hashes: list[str | None] = []
    for _, ds in parts:
        hashes += example_hashes(ds, group)
    return {"+".join(group): hashes}


def llm_cache_fingerprint(
    scorer: LLMClassifier, parts: list[tuple[str, datasets.Dataset]], calibration: LLMCalibration | None
) -> str:
    """sha256 over the scorer's description (model identity, prompt, label words, normalisation), the calibration
    settings and the ``(id, text)`` pairs of all the datasets, sorted by id (so neither the datasets' order nor their
    rows' order matters: the cache is keyed by id)."""
    h = hashlib.sha256()
    h.update(json.dumps(scorer.describe(), sort_keys=True, default=str).encode())
    h.update(json.dumps(calibration.settings() if calibration else None, sort_keys=True).encode())
    pairs = sorted((str(i), str(t)) for _, ds in parts for i, t in zip(ds[ID_COLUMN][:], ds[TEXT_COLUMN][:]))
    h.update(json.dumps(pairs).encode())
    return h.hexdigest()[:32]


def precompute_llm_teacher_outputs(
    backend_or_scorer: Any,
    dataset: datasets.Dataset | Mapping[str, datasets.Dataset],
    cache_dir: str | os.PathLike | None = None,
    *,
    label_words: Mapping[str, str | Sequence[str]] | Sequence[str | Sequence[str]] | None = None,
    prompt: ClassifierPrompt | None = None,
    task: str | None = None,
    class_names: Sequence[str] | None = None,
    normalization: str = "mean",
    calibration: LLMCalibration | Mapping[str, Any] | str | None = None,
    batch_size: int = 8,
    rebuild: bool = False,
    show_progress: bool = True,
    checkpoint_every: int = 1024,
) -> TeacherOutputs:
    """Score every ``text`` of ``dataset`` (or of several, e.g. ``{"train": ..., "validation": ...}``) with an LLM
    classifier and return the class log-probabilities as a ``"logits"`` :class:`~distil_trainers.teachers.cache.TeacherOutputs`
    keyed by the ``id`` column.

    Args:
        backend_or_scorer: an :class:`LLMClassifier` (then ``label_words``, ``prompt``, ``task`` and
            ``normalization`` must be left unset), or anything :class:`LLMClassifier` accepts as backend.
        dataset: ``id`` and ``text`` columns (other columns are ignored); with a ``label`` ``ClassLabel`` its names
            fix the class order.
        cache_dir: where to save the cache; an up-to-date cache there (same fingerprint: model identity, prompt, label
            words, normalisation, calibration settings, ids and texts) is loaded instead of scoring again.
        label_words, prompt, task, normalization: see :class:`LLMClassifier`.
        class_names: the classes when the dataset has no ``ClassLabel`` (must match it when it has one).
        calibration: ``None``; ``"contextual"``; an :class:`LLMCalibration` or a dict of its fields (contextual
            calibration and/or a temperature fitted on a labelled dev set).
        batch_size: texts per backend call.
        rebuild: score again even when the cache is up to date.
        show_progress: a tqdm progress bar over the texts.
        checkpoint_every: with ``cache_dir``, the scores are saved every this many texts (in ``<cache_dir>/partial``)
            so that an interrupted scoring resumes where it stopped; the parts are removed once the cache is saved.

    Returns:
        The cache: ``tensors["logits"]`` ``(N, C)`` float32, calibrated when asked; ``meta["llm"]`` (which model, the
        prompt text, label words, scoring), ``meta["calibration"]`` (``p_cf``, temperature, dev NLL before/after),
        ``meta["class_names"]``, ``meta["texts_per_second"]``; ``content_hashes["text"]``.

    Raises:
        ValueError: before any scoring, for a missing ``id``/``text`` column, duplicate ids, class names that disagree
            with the dataset's ``ClassLabel``, bad label words or calibration settings; after scoring, for NaN or inf
            outputs (nothing is written then).
    """
    parts = _as_parts(dataset)
    ids = _ids(parts)
    for name, ds in parts:
        _text_column_check(ds, name)
    dataset_names = _dataset_class_names(parts)
    if isinstance(backend_or_scorer, LLMClassifier):
        scorer = backend_or_scorer
        given = {"label_words": label_words, "prompt": prompt, "task": task}
        if any(v is not None for v in given.values()) or normalization != "mean":
            raise ValueError("pass label_words, prompt, task and normalization to the LLMClassifier, not here")
        names = scorer.class_names
    else:
        names = [str(n) for n in class_names] if class_names is not None else dataset_names
        if names is None and isinstance(label_words, Mapping):
            names = [str(k) for k in label_words]
        if names is None:
            raise ValueError(
                "Cannot tell the classes: the dataset has no `label` ClassLabel; pass class_names=[...] in label-id "
                "order (or label_words as a {class name: words} mapping in that order)."
            )
        scorer = LLMClassifier(
            backend_or_scorer, names, label_words, prompt, task=task, normalization=normalization,
            batch_size=batch_size,
        )
    if class_names is not None and list(map(str, class_names)) != list(scorer.class_names):
        raise ValueError(f"class_names {list(class_names)} differ from the scorer's {scorer.class_names}")
    if dataset_names is not None and list(dataset_names) != list(scorer.class_names):
        raise ValueError(
            f"The dataset's ClassLabel names {dataset_names} differ from the LLM classifier's classes "
            f"{scorer.class_names}: the teacher's logit columns must follow the ClassLabel order."
        )
    spec = _calibration_spec(calibration)
    if spec is not None and spec.dev_dataset is not None:
        _check_dev_classes(spec.dev_dataset, scorer.class_names)
    fingerprint = llm_cache_fingerprint(scorer, parts, spec)
    hashes = _text_hashes(parts)

    if cache_dir is None:
        return _score_texts(scorer, spec, parts, ids, fingerprint, hashes, batch_size, show_progress)
    with one_writer(cache_dir):  # several processes: one scores and saves, the others then load its cache
        if not rebuild and TeacherOutputs.stored_fingerprint(cache_dir) == fingerprint:
            logger.info("LLM teacher-output cache in %s is up to date; reusing it.", cache_dir)
            return TeacherOutputs.load(cache_dir)
        if TeacherOutputs.stored_fingerprint(cache_dir) is not None:
            logger.info("The LLM, its prompt or the data changed since the cache in %s was built: rebuilding it.",
                        cache_dir)
        partial = Path(cache_dir) / PARTIAL_DIR
        try:
            cache = _score_texts(scorer, spec, parts, ids, fingerprint, hashes, batch_size, show_progress, partial,
                                 checkpoint_every)
        except (ValueError, FloatingPointError):  # refused scores (NaN / inf): nothing of them is kept
            _remove_parts(partial)
            raise
        cache.save(Path(cache_dir))
        _remove_parts(partial)  # the finished cache replaces the scored parts
        return cache


PARTIAL_DIR = "partial"


def _remove_parts(partial: Path) -> None:
    """Delete the saved parts and their folder (file by file: the folder holds nothing else)."""
    if not partial.is_dir():
        return
    for path in partial.iterdir():
        path.unlink(missing_ok=True)
    partial.rmdir()


def _score_texts(scorer, spec, parts, ids, fingerprint, hashes, batch_size, show_progress, partial=None,
                 checkpoint_every: int = 1024) -> TeacherOutputs:
    """The LLM's (calibrated) class log-probabilities of every text, as a cache not yet saved. With ``partial`` (a
    folder), the raw scores are saved there every ``checkpoint_every`` texts, and a rerun with the same fingerprint
    scores only the texts not saved yet."""
    start = time.perf_counter()
    p_cf, temperature, record = _calibrate(scorer, spec, batch_size) if spec else (None, None, None)
    texts = [str(t) for _, ds in parts for t in ds[TEXT_COLUMN][:]]
    floored_before = scorer.floored.copy()
    scoring_start = time.perf_counter()
    if partial is None:
        log_probs = scorer.class_log_probs(texts, batch_size=batch_size, show_progress=show_progress)
        scored = len(texts)
    else:
        log_probs, scored = _score_in_parts(scorer, texts, fingerprint, partial, checkpoint_every, batch_size,
                                            show_progress)
    scoring_seconds = time.perf_counter() - scoring_start
    raw = log_probs
    check_finite_logits(raw, ids, "LLM teacher's class log-probabilities", advice=LLM_BUILD_ADVICE)
    if p_cf is not None:
        log_probs = contextual_calibration(log_probs, p_cf)
    if temperature is not None:
        log_probs = apply_temperature(log_probs, temperature)
    logits = log_probs.to(torch.float32)
    check_finite_logits(logits, ids, "LLM teacher's class log-probabilities", advice=LLM_BUILD_ADVICE)

    llm = scorer.describe()
    meta: dict[str, Any] = {
        "num_labels": len(scorer.class_names),
        "class_names": list(scorer.class_names),
        "teacher": f"LLM classifier: {scorer.backend.model_id}",
        "teacher_kind": "llm_classifier",
        "llm": llm,
        "calibration": record,
        "texts_per_second": round(scored / scoring_seconds, 3) if scoring_seconds > 0 and scored else None,
        "boundary_merges": int(getattr(scorer.backend, "boundary_merges", 0)),
        "build_seconds": round(time.perf_counter() - start, 3),
    }
    floored = scorer.floored - floored_before
    if scorer.scoring == "first_token":
        meta["first_token"] = {"floored": dict(floored), "top_logprobs": scorer.top_logprobs}
    return TeacherOutputs(
        ids=ids, kind="logits", tensors={"logits": logits}, fingerprint=fingerprint, meta=meta, content_hashes=hashes
    )



def _score_in_parts(scorer, texts: list[str], fingerprint: str, partial: Path, every: int, batch_size: int,
                    show_progress: bool) -> tuple[Tensor, int]:
    """Score ``texts`` part by part, saving each part's raw log-probabilities in ``partial`` as it completes
    (``part-<start>.safetensors``, written under a temporary name and renamed) and reusing the parts a previous run of
    the same fingerprint left there. Returns the scores and how many texts this call scored."""
    if every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {every}.")
    stamp = partial / "fingerprint.txt"
    if partial.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        _remove_parts(partial)  # parts of another LLM, prompt or data
    partial.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    out = torch.empty(len(texts), len(scorer.class_names), dtype=torch.float64)
    todo = []
    for begin in range(0, len(texts), every):
        path = partial / f"part-{begin:09d}.safetensors"
        if path.exists():
            out[begin : begin + every] = load_file(str(path))["log_probs"]
        else:
            todo.append(begin)
    done = len(texts) - sum(min(every, len(texts) - b) for b in todo)
    if done:
        logger.info("Resuming LLM scoring: %d of %d texts were scored by an earlier run (%s).", done, len(texts),
                    partial)
    scored = 0
    with tqdm(total=len(texts), initial=done, desc="LLM teacher", unit="text", disable=not show_progress) as bar:
        for begin in todo:
            chunk = texts[begin : begin + every]
            scores = scorer.class_log_probs(chunk, batch_size=batch_size)
            tmp = partial / f"part-{begin:09d}.{os.getpid()}.tmp"
            save_file({"log_probs": scores.contiguous()}, str(tmp))
            tmp.replace(partial / f"part-{begin:09d}.safetensors")
            out[begin : begin + len(chunk)] = scores
            scored += len(chunk)
            bar.update(len(chunk))
    return out, scored
