"""Cross-lingual transfer pieces of Matei's study (Romanian emotion classification helped by English data).

* **Gradual (multi-stage) fine-tuning** (Xu et al. 2021): :class:`GradualMixSchedule` says, stage by stage, what share
  of the training mix is source-language data; :func:`build_gradual_stages` turns a source and a target dataset into
  one training set per stage (every target example plus a seeded sample of source examples, with a ``language_ids``
  column). It is data only: train any trainer on the stages one after the other, each stage starting from the
  weights of the previous one.
* **Adversarial language discriminator** (ADAN, Chen et al. 2018): :class:`LanguageDiscriminator` predicts the
  language of a post from the shared encoder's pooled output through a :class:`GradientReversal` layer, so the
  discriminator learns to tell the languages apart while the encoder is pushed to make them indistinguishable.
  :class:`~distil_trainers.trainers.adversarial.AdversarialTrainer` adds it to training.
* **Label mapping** between source and target label sets (:func:`map_label_names`), e.g. TweetEval emotion's
  ``optimism`` folded into RED v1's ``joy``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn

__all__ = [
    "LANGUAGE_COLUMN",
    "GradientReversal",
    "GradualMixSchedule",
    "LanguageDiscriminator",
    "build_gradual_stages",
    "grad_reverse",
    "map_label_names",
    "with_language",
]

LANGUAGE_COLUMN = "language_ids"
"""Column holding the language id of every example (0 = source, 1 = target by the conventions of this module)."""

SOURCE, TARGET = 0, 1


# --------------------------------------------------------------------------------------------------------------------
# Gradual fine-tuning
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradualMixSchedule:
    """Share of source-language examples in the training mix of each stage, e.g. ``(0.5, 0.25, 0.0)``: stage 1 is
    half source, stage 2 a quarter, the last stage target only. Every stage holds all target examples; a share p needs
    ``round(p / (1 - p) · n_target)`` source examples. Shares lie in [0, 1), do not increase, and the last is 0."""

    source_shares: tuple[float, ...]

    def __post_init__(self):
        shares = tuple(float(s) for s in self.source_shares)
        object.__setattr__(self, "source_shares", shares)
        if not shares:
            raise ValueError("A gradual schedule needs at least one stage.")
        bad = [s for s in shares if not 0.0 <= s < 1.0]
        if bad:
            raise ValueError(f"Source shares must lie in [0, 1) (every stage keeps all target data), got {bad}.")
        if any(b > a for a, b in zip(shares, shares[1:])):
            raise ValueError(f"Source shares must not increase from stage to stage, got {list(shares)}.")
        if shares[-1] != 0.0:
            raise ValueError(f"The last stage must be target-only (share 0), got {list(shares)}.")

    @property
    def num_stages(self) -> int:
        return len(self.source_shares)

    def source_counts(self, num_source: int, num_target: int) -> list[int]:
        """Number of source examples in each stage; raises (before any training) when the source set is too small."""
        counts = [int(round(p / (1.0 - p) * num_target)) for p in self.source_shares]
        if max(counts) > num_source:
            stage = counts.index(max(counts)) + 1
            raise ValueError(
                f"Stage {stage} (source share {self.source_shares[stage - 1]}) needs {max(counts)} source examples "
                f"for {num_target} target examples, but the source set has {num_source}. Lower the share, or use "
                "more source / less target data."
            )
        return counts


def with_language(dataset: datasets.Dataset, language_id: int) -> datasets.Dataset:
    """``dataset`` with a constant ``language_ids`` column (replacing an existing one)."""
    if LANGUAGE_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(LANGUAGE_COLUMN)
    return dataset.add_column(LANGUAGE_COLUMN, [int(language_id)] * len(dataset))


def build_gradual_stages(
    source: datasets.Dataset,
    target: datasets.Dataset,
    schedule: GradualMixSchedule | Sequence[float],
    seed: int = 42,
) -> list[datasets.Dataset]:
    """One training set per stage: all of ``target`` (language 1) plus the stage's number of ``source`` examples
    (language 0), sampled with a seed. The source samples are nested (stage k+1's are a subset of stage k's), so the
    model never meets new source data late in training. Both datasets need the same columns (tokenise them alike);
    the label column is cast to plain int64 because the two ``ClassLabel`` features usually differ."""
    if not isinstance(schedule, GradualMixSchedule):
        schedule = GradualMixSchedule(tuple(schedule))
    missing = set(target.column_names) ^ set(source.column_names)
    missing.discard(LANGUAGE_COLUMN)
    if missing:
        raise ValueError(f"Source and target datasets must have the same columns; they differ in {sorted(missing)}.")
    counts = schedule.source_counts(len(source), len(target))
    order = np.random.default_rng(seed).permutation(len(source))
    target = _plain_labels(with_language(target, TARGET))
    source = _plain_labels(with_language(source, SOURCE)).select_columns(target.column_names)
    stages = []
    for count in counts:
        parts = [target] if count == 0 else [source.select(np.sort(order[:count]).tolist()), target]
        stages.append(datasets.concatenate_datasets(parts))
    return stages


def _plain_labels(dataset: datasets.Dataset) -> datasets.Dataset:
    for column in ("label", "labels"):
        if column in dataset.column_names and isinstance(dataset.features[column], datasets.ClassLabel):
            dataset = dataset.cast_column(column, datasets.Value("int64"))
    return dataset


def map_label_names(
    dataset: datasets.Dataset | datasets.DatasetDict,
    mapping: Mapping[str, str | None],
    target_names: Sequence[str],
    label_column: str = "label",
) -> datasets.Dataset | datasets.DatasetDict:
    """Relabel a dataset whose ``label`` is a ``ClassLabel`` into ``target_names`` by class name: ``mapping`` sends
    each source class to a target class, or to ``None`` to drop its examples. Every source class must be listed (no
    silent drops)."""
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict(
            {k: map_label_names(v, mapping, target_names, label_column) for k, v in dataset.items()}
        )
    feature = dataset.features[label_column]
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(f"Column {label_column!r} must be a ClassLabel to map labels by name, got {feature}.")
    unlisted = [n for n in feature.names if n not in mapping]
    if unlisted:
        raise ValueError(
            f"The label mapping does not say where source classes {unlisted} go (map them to None to drop)."
        )
    unknown = sorted({v for v in mapping.values() if v is not None and v not in target_names})
    if unknown:
        raise ValueError(
            f"The label mapping sends classes to {unknown}, which are not target classes {list(target_names)}."
        )
    lookup = [None if mapping[n] is None else list(target_names).index(mapping[n]) for n in feature.names]
    keep = [i for i, y in enumerate(dataset[label_column][:]) if lookup[y] is not None]
    dataset = dataset.select(keep) if len(keep) < len(dataset) else dataset
    new_feature = datasets.ClassLabel(names=list(target_names))
    features = dataset.features.copy()
    features[label_column] = new_feature
    return dataset.map(
        lambda batch: {label_column: [lookup[y] for y in batch[label_column]]},
        batched=True,
        features=features,
        desc="Mapping labels",
    )


# --------------------------------------------------------------------------------------------------------------------
# Gradient reversal and the language discriminator
# --------------------------------------------------------------------------------------------------------------------


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``-scale`` in the backward pass (Ganin and
    Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = float(scale)
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad_output, None


def grad_reverse(inputs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(inputs, scale)


@dataclass
class DiscriminatorOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None
    count: torch.Tensor | None = None


class LanguageDiscriminator(nn.Module):
    """A small MLP predicting the language from pooled encoder features, behind a gradient-reversal layer.

    ``forward(features, languages)`` returns the logits and, with ``languages`` (ids, ``-100`` = unknown), the summed
    cross-entropy divided by ``num_items_in_batch`` (or the mean without it) and the accuracy. Minimising that loss
    trains the discriminator to separate the languages and, through the reversed gradient scaled by
    ``reversal_scale``, trains the encoder to confuse it."""

    def __init__(
        self,
        hidden_size: int,
        num_languages: int = 2,
        intermediate_size: int = 256,
        dropout: float = 0.1,
        reversal_scale: float = 1.0,
    ):
        super().__init__()
        if num_languages < 2:
            raise ValueError(f"A language discriminator needs at least 2 languages, got {num_languages}.")
        if reversal_scale < 0:
            raise ValueError(f"reversal_scale must be >= 0, got {reversal_scale}.")
        self.reversal_scale = reversal_scale
        self.num_languages = num_languages
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden_size, intermediate_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(intermediate_size, num_languages),
        )

    def forward(
        self, features: torch.Tensor, languages: torch.Tensor | None = None, num_items_in_batch: Any = None
    ) -> DiscriminatorOutput:
        logits = self.net(grad_reverse(features, self.reversal_scale))
        if languages is None:
            return DiscriminatorOutput(logits=logits)
        languages = languages.to(logits.device).long()
        valid = languages != -100
        count = valid.sum()
        if languages[valid].numel() and (languages[valid].max() >= self.num_languages or languages[valid].min() < 0):
            raise ValueError(
                f"Language ids must be in 0..{self.num_languages - 1} (or -100), got {languages.tolist()}."
            )
        summed = nn.functional.cross_entropy(logits.float(), languages, ignore_index=-100, reduction="sum")
        denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
        if torch.is_tensor(denominator):
            denominator = denominator.to(summed.device)
        loss = summed / denominator
        correct = ((logits.argmax(-1) == languages) & valid).sum()
        accuracy = correct.float() / count.clamp(min=1).float()
        return DiscriminatorOutput(logits=logits, loss=loss, accuracy=accuracy, count=count)


def pooled_features(outputs: Any) -> torch.Tensor:
    """The shared encoder's pooled output: the first-token vector of the last hidden layer (what the heads of
    :class:`~distil_trainers.models.MultiTaskModel` read). The model must have been called with
    ``output_hidden_states=True``."""
    hidden = getattr(outputs, "hidden_states", None)
    if not hidden:
        raise ValueError("The model returned no hidden states; call it with output_hidden_states=True.")
    return hidden[-1][:, 0]


def stage_sizes_note(stages: Sequence[datasets.Dataset]) -> list[dict[str, Any]]:
    """Per stage: number of source and target examples and the realised source share (for logs and reports)."""
    out = []
    for ds in stages:
        languages = np.asarray(ds[LANGUAGE_COLUMN][:])
        n_source, n_target = int((languages == SOURCE).sum()), int((languages == TARGET).sum())
        total = n_source + n_target
        out.append({"source": n_source, "target": n_target, "source_share": n_source / total if total else math.nan})
    return out
