"""Cross-lingual transfer pieces of Matei's study (Romanian emotion classification helped by English data).

* **Gradual (multi-stage) fine-tuning** (Xu et al. 2021): :class:`GradualMixSchedule` says, stage by stage, what share
  of the training mix is source-language data; :func:`build_gradual_stages` turns a source and a target dataset into
  one training set per stage (every target example plus a seeded sample of source examples, with a ``language_ids``
  column). It is data only: train any trainer on the stages one after the other, each stage starting from the
  weights of the previous one.
* The adversarial language discriminator used beside these stages is a model part:
  :class:`~distil_trainers.models.discriminator.LanguageDiscriminator`, trained by
  :class:`~distil_trainers.trainers.adversarial.AdversarialTrainer`.
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

from ..models.discriminator import LANGUAGE_COLUMN

__all__ = ["GradualMixSchedule", "build_gradual_stages", "map_label_names", "with_language"]


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


def stage_sizes_note(stages: Sequence[datasets.Dataset]) -> list[dict[str, Any]]:
    """Per stage: number of source and target examples and the realised source share (for logs and reports)."""
    out = []
    for ds in stages:
        languages = np.asarray(ds[LANGUAGE_COLUMN][:])
        n_source, n_target = int((languages == SOURCE).sum()), int((languages == TARGET).sum())
        total = n_source + n_target
        out.append({"source": n_source, "target": n_target, "source_share": n_source / total if total else math.nan})
    return out
