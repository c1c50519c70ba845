"""The hierarchical HASOC classifier of Saseendran et al. (2021): subtask A decides HOF / NOT; posts judged NOT get the subtask-B label
NONE, and the HOF posts go on to a subtask-B classifier trained on HOF posts only (HATE / OFFN / PRFN), optionally
behind a profanity-lexicon step that labels a post PRFN when it contains a listed word.

The classifiers are plain callables ``texts -> class ids`` (:func:`sklearn_predictor` wraps a scikit-learn pipeline,
:func:`transformer_predictor` a sequence-classification model), so any pair of models can be composed. Labels are
matched by name, never by id: the output label set is HASOC's task-2 set (``NONE, HATE, OFFN, PRFN`` in the data
registry's order), the B classifier may predict any subset of its HOF classes (``HATE, OFFN`` when the lexicon decides
PRFN, as in the paper).

Example::

    from distil_trainers.papers.hierarchical import HierarchicalClassifier, LexiconProfanityDetector, sklearn_predictor

    model = HierarchicalClassifier(
        predict_a=sklearn_predictor(pipeline_a),              # ids in ("NOT", "HOF")
        predict_b=sklearn_predictor(pipeline_b_hof),          # ids in ("HATE", "OFFN", "PRFN")
        b_label_names=("HATE", "OFFN", "PRFN"),
        profanity=LexiconProfanityDetector.default(),         # optional
    )
    predicted = model.predict(test_texts)                     # ids in ("NONE", "HATE", "OFFN", "PRFN")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BetterProfanityDetector",
    "HierarchicalClassifier",
    "LexiconProfanityDetector",
    "ProfanityDetector",
    "compose_labels",
    "sklearn_predictor",
    "transformer_predictor",
]

Predictor = Callable[[Sequence[str]], Any]


@runtime_checkable
class ProfanityDetector(Protocol):
    """Anything that flags profane texts: ``detector(texts) -> sequence of bool``, one per text."""

    def __call__(self, texts: Sequence[str]) -> Sequence[bool]: ...


class LexiconProfanityDetector:
    """Flags a text when it contains a word of ``words`` as a whole token (case-insensitive; ``*`` in a lexicon entry
    matches any run of word characters, so ``fuck*`` covers ``fucking``)."""

    def __init__(self, words: Iterable[str]):
        words = sorted({w.strip().lower() for w in words if w and w.strip()})
        if not words:
            raise ValueError("LexiconProfanityDetector needs at least one word.")
        alternatives = "|".join(re.escape(w).replace(r"\*", r"\w*") for w in words)
        self.words = words
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    @classmethod
    def from_file(cls, path: str) -> LexiconProfanityDetector:
        """One word per line; empty lines and lines starting with ``#`` are skipped."""
        with open(path, encoding="utf-8") as handle:
            return cls(line for line in handle if not line.lstrip().startswith("#"))

    def __call__(self, texts: Sequence[str]) -> list[bool]:
        return [bool(self._pattern.search(text)) for text in texts]


class BetterProfanityDetector:
    """The ``better-profanity`` package's English word list and leetspeak variants (one of the two libraries of
    the profanity step of Saseendran et al.). Install with ``pip install "distil-trainers[profanity]"``."""

    def __init__(self, extra_words: Iterable[str] | None = None):
        try:
            from better_profanity import Profanity
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "BetterProfanityDetector needs the better-profanity package: pip install 'distil-trainers[profanity]'"
            ) from error
        self._profanity = Profanity()
        self._profanity.load_censor_words()
        if extra_words:
            self._profanity.add_censor_words(list(extra_words))

    def __call__(self, texts: Sequence[str]) -> list[bool]:
        return [self._profanity.contains_profanity(text) for text in texts]


def compose_labels(
    a_pred: Sequence[int],
    b_pred: Sequence[int] | None,
    a_label_names: Sequence[str],
    b_label_names: Sequence[str],
    output_label_names: Sequence[str],
    profane: Sequence[bool] | None = None,
    negative_a: str = "NOT",
    negative_output: str = "NONE",
    profane_output: str = "PRFN",
) -> np.ndarray:
    """Compose subtask-A and subtask-B predictions into output ids.

    Post i gets ``negative_output`` when A predicts ``negative_a``; otherwise ``profane_output`` when ``profane[i]``
    (the lexicon step), otherwise B's class (``b_label_names[b_pred[i]]``). ``b_pred`` needs entries only where they
    are used but must have one per post (use any value elsewhere). Raises if a name does not exist in the output set.
    """
    a_pred = np.asarray(a_pred, dtype=np.int64)
    n = a_pred.shape[0]
    out_index = {name: i for i, name in enumerate(output_label_names)}
    for name in (negative_output, *([profane_output] if profane is not None else []), *b_label_names):
        if name not in out_index:
            raise ValueError(f"Label {name!r} is not in the output label set {list(output_label_names)}.")
    if negative_a not in a_label_names:
        raise ValueError(f"{negative_a!r} is not a subtask-A class {list(a_label_names)}.")
    if a_pred.size and (a_pred.min() < 0 or a_pred.max() >= len(a_label_names)):
        raise ValueError(f"Subtask-A predictions must be ids in 0..{len(a_label_names) - 1}.")
    is_positive = a_pred != list(a_label_names).index(negative_a)
    profane_mask = np.zeros(n, dtype=bool) if profane is None else np.asarray(profane, dtype=bool)
    if profane_mask.shape[0] != n:
        raise ValueError(f"{n} subtask-A predictions but {profane_mask.shape[0]} profanity flags.")
    out = np.full(n, out_index[negative_output], dtype=np.int64)
    out[is_positive & profane_mask] = out_index[profane_output]
    needs_b = is_positive & ~profane_mask
    if needs_b.any():
        if b_pred is None:
            raise ValueError("Subtask-B predictions are needed for the posts judged positive by subtask A.")
        b_pred = np.asarray(b_pred, dtype=np.int64)
        if b_pred.shape[0] != n:
            raise ValueError(f"{n} subtask-A predictions but {b_pred.shape[0]} subtask-B predictions.")
        b_to_out = np.array([out_index[name] for name in b_label_names], dtype=np.int64)
        chosen = b_pred[needs_b]
        if chosen.min() < 0 or chosen.max() >= len(b_label_names):
            raise ValueError(f"Subtask-B predictions must be ids in 0..{len(b_label_names) - 1}.")
        out[needs_b] = b_to_out[chosen]
    return out


@dataclass
class HierarchicalClassifier:
    """A (HOF / NOT) -> optional profanity lexicon -> B (HOF classes); see the module docstring.

    ``predict_a`` and ``predict_b`` return class ids in ``a_label_names`` / ``b_label_names``. ``predict_b`` only sees
    the posts that reach it (A positive, not flagged by the lexicon)."""

    predict_a: Predictor
    predict_b: Predictor
    a_label_names: Sequence[str] = ("NOT", "HOF")
    b_label_names: Sequence[str] = ("HATE", "OFFN", "PRFN")
    output_label_names: Sequence[str] = ("NONE", "HATE", "OFFN", "PRFN")
    profanity: ProfanityDetector | None = None
    negative_a: str = "NOT"
    negative_output: str = "NONE"
    profane_output: str = "PRFN"

    def predict_stages(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"a": A ids, "profane": lexicon flags (all False without a lexicon), "b": B ids (-1 where B did not
        run), "output": composed ids}``."""
        texts = list(texts)
        a_pred = np.asarray(self.predict_a(texts), dtype=np.int64).reshape(-1)
        if a_pred.shape[0] != len(texts):
            raise ValueError(f"predict_a returned {a_pred.shape[0]} predictions for {len(texts)} texts.")
        positive = a_pred != list(self.a_label_names).index(self.negative_a)
        profane = np.zeros(len(texts), dtype=bool)
        if self.profanity is not None and positive.any():
            flagged = np.asarray(self.profanity([t for t, p in zip(texts, positive) if p]), dtype=bool)
            profane[positive] = flagged
        b_pred = np.full(len(texts), -1, dtype=np.int64)
        needs_b = positive & ~profane
        if needs_b.any():
            b_pred[needs_b] = np.asarray(self.predict_b([t for t, k in zip(texts, needs_b) if k]), dtype=np.int64)
        output = compose_labels(
            a_pred,
            np.where(needs_b, b_pred, 0),
            self.a_label_names,
            self.b_label_names,
            self.output_label_names,
            profane=profane if self.profanity is not None else None,
            negative_a=self.negative_a,
            negative_output=self.negative_output,
            profane_output=self.profane_output,
        )
        return {"a": a_pred, "profane": profane, "b": b_pred, "output": output}

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_stages(texts)["output"]


def sklearn_predictor(pipeline: Any) -> Predictor:
    """``texts -> ids`` of a fitted scikit-learn classifier (its ``predict``)."""
    return lambda texts: np.asarray(pipeline.predict(list(texts)))


def transformer_predictor(
    model: Any,
    tokenizer: Any,
    batch_size: int = 64,
    max_length: int = 128,
    task: str | None = None,
    show_progress: bool = True,
) -> Predictor:
    """``texts -> ids`` (argmax of the logits) of a sequence-classification model, in batches, without gradients. For
    a :class:`~distil_trainers.models.MultiTaskModel` give ``task`` (the head to use)."""
    import torch
    from tqdm.auto import tqdm

    def predict(texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = []
        starts = range(0, len(texts), batch_size)
        with torch.no_grad():
            for start in tqdm(starts, desc="Predicting", disable=not show_progress or len(starts) < 2):
                batch = tokenizer(
                    texts[start : start + batch_size],
                    truncation=True,
                    max_length=max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                extra = {} if task is None else {"task_ids": task}
                out.append(model(**batch, **extra).logits.argmax(-1).cpu().numpy())
        model.train(was_training)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    return predict
