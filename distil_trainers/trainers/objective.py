"""How a trainer turns loss terms into the number ``backward`` sees, and into what it logs.

Every term of an objective is a :class:`~distil_trainers.losses.LossSum`: the sum of its per-item values over this
micro-batch and the number of items it summed. Each kind of term counts its own items:

* ``labelled``: the items with a gold label (weighted by ``class_weights`` when set) — the label terms;
* ``rows``: every item the teacher scores (gold-labelled or :data:`~distil_trainers.losses.UNLABELLED`) — the
  teacher, peer and feature terms;
* ``languages``: the rows with a language id — the adversarial discriminator.

The trainer counts each kind over the whole optimizer step once, before the first micro-batch's forward (Trainer
pre-fetches the step's micro-batches; the counts of every process are added in one collective when
``average_tokens_across_devices``), and :class:`Objective` divides each term's sum by its kind's count. The
micro-batch losses then add up, over gradient accumulation and processes, to the mean of every term over its own
items in the whole step, and nothing on this path reads a tensor back to the host. Outside a training step
(evaluation, a direct call) each term is divided by its own count in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..losses import IGNORE_INDEX, LossSum

LABELLED = "labelled"
ROWS = "rows"
LANGUAGES = "languages"


class Objective:
    """The weighted terms of one micro-batch's loss.

    Args:
        step_counts: the count of every kind of item over the optimizer step (``{kind: 0-d tensor}``), or ``None``
            outside a training step (each term is then averaged over its own items in this batch).
        batch_counts: the count of every kind of item in this micro-batch (used to weigh logged scalars).
    """

    def __init__(self, step_counts: Mapping[str, torch.Tensor] | None = None,
                 batch_counts: Mapping[str, torch.Tensor] | None = None):
        self.step_counts = step_counts
        self.batch_counts = batch_counts
        self.terms: list[tuple[str, float | torch.Tensor, LossSum, str]] = []

    def add(self, name: str, term: LossSum, kind: str, weight: float | torch.Tensor = 1.0) -> None:
        """Add ``weight * term``, ``term`` counted in items of ``kind`` (see the module's docstring)."""
        if self.step_counts is not None and kind not in self.step_counts:
            raise KeyError(f"No step count of kind {kind!r}: the trainer counts {sorted(self.step_counts)}.")
        self.terms.append((name, weight, term, kind))

    def denominator(self, term: LossSum, kind: str) -> torch.Tensor:
        count = term.count if self.step_counts is None else self.step_counts[kind]
        return count.to(term.total.dtype).clamp(min=1)

    def value(self, name: str) -> torch.Tensor:
        """One term's normalised value (before its weight), as it enters :meth:`loss`."""
        for term_name, _, term, kind in self.terms:
            if term_name == name:
                return term.total / self.denominator(term, kind)
        raise KeyError(name)

    def loss(self) -> torch.Tensor:
        """``sum_t weight_t * total_t / N_t``."""
        if not self.terms:
            raise ValueError("The objective has no term.")
        return sum(weight * (term.total / self.denominator(term, kind)) for _, weight, term, kind in self.terms)

    def record(self, trainer: Any, prefix: str = "") -> None:
        """Log every term (its own mean over its items) through ``trainer.record_sum``."""
        for name, _, term, kind in self.terms:
            trainer.record_sum(prefix + name, term, self.step_counts[kind] if self.step_counts is not None else None)


def count_kinds(labels: torch.Tensor | None, label_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The ``rows`` and ``labelled`` counts of one batch (tensors on the labels' device; no host synchronisation).
    ``label_weights``: each gold item's weight (``class_weights`` of its class), same shape as ``labels``."""
    if labels is None:
        zero = torch.zeros((), dtype=torch.float64)
        return {ROWS: zero, LABELLED: zero}
    rows = labels.ne(IGNORE_INDEX)
    gold = labels >= 0
    if label_weights is not None:
        labelled = torch.where(gold, label_weights.to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                                                   device=labels.device)).sum()
    else:
        labelled = gold.sum().to(torch.float64)
    return {ROWS: rows.sum().to(torch.float64), LABELLED: labelled}
