"""Label masks and the reduction every loss shares: a per-item value summed over valid items, divided by
``num_items_in_batch`` (exact under gradient accumulation) or returned as a :class:`LossSum`."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

IGNORE_INDEX = -100
UNLABELLED = -1
"""Label of an item without a gold label (a raw corpus soft-labelled by the teacher): counted by every teacher term,
never by a label term. Trainers give it only to losses without a label term (KD with ``alpha = 0``, DDML with
``a = 0``, logit MSE)."""


def label_mask(labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Boolean mask of the valid positions of ``labels``.

    Args:
        labels: integer tensor of any shape ``(...)``.
        ignore_index: label value marking positions to ignore (default ``-100``, as in transformers).

    Returns:
        bool tensor of shape ``(...)``, True where ``labels != ignore_index``.
    """
    return labels != ignore_index


def gold_labels(labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``labels`` with the :data:`UNLABELLED` items turned into ``ignore_index``: what a label term reads."""
    return labels.masked_fill(labels == UNLABELLED, ignore_index)


class LossSum(NamedTuple):
    """A loss before normalisation: ``total``, the (weighted) sum of the per-item values, and ``count``, the (weighted)
    number of items summed, both 0-d tensors on the loss's device (``total`` attached to the graph).

    Every loss below returns one with ``reduction="sum"``. The trainers add the terms of an objective this way and
    divide each ``total`` once, by the count of its own kind of item over the whole optimizer step (every
    gradient-accumulation micro-batch and every process), so no host-device synchronisation is needed per micro-batch.
    """

    total: Tensor
    count: Tensor

    def mean(self) -> Tensor:
        """``total / count`` (0 when nothing was counted)."""
        return self.total / self.count.clamp(min=1)

    def scaled(self, factor: float | Tensor) -> LossSum:
        """The same items, every value multiplied by ``factor``."""
        return LossSum(self.total * factor, self.count)


def sum_per_item(per_item: Tensor, mask: Tensor | None = None, weights: Tensor | None = None) -> LossSum:
    """Sum a per-item loss over the valid items: ``LossSum(sum_i w_i * per_item[i], sum_i w_i)`` over the items where
    ``mask`` is True (every item when ``mask`` is None), with ``w_i = 1`` without ``weights``.

    Masked items are zero-filled with ``torch.where`` before summing, so NaN/inf values at masked positions leak
    into neither the sum nor the gradient.
    """
    dtype, device = per_item.dtype, per_item.device
    if mask is not None:
        if mask.shape != per_item.shape:
            raise ValueError(
                f"shape mismatch: mask has shape {tuple(mask.shape)} but per_item has shape {tuple(per_item.shape)}"
            )
        mask = mask.to(device=device, dtype=torch.bool)
    if weights is not None:
        if weights.shape != per_item.shape:
            raise ValueError(
                f"shape mismatch: weights has shape {tuple(weights.shape)} but per_item has shape "
                f"{tuple(per_item.shape)}"
            )
        weights = weights.to(device=device, dtype=dtype)
        per_item = per_item * weights
    zero = torch.zeros((), device=device, dtype=dtype)
    if mask is None:
        total = per_item.sum()
        count = weights.sum() if weights is not None else torch.tensor(per_item.numel(), device=device, dtype=dtype)
    else:
        total = torch.where(mask, per_item, zero).sum()
        count = torch.where(mask, weights, zero).sum() if weights is not None else mask.sum().to(dtype)
    return LossSum(total, count)


def _denominator(num_items_in_batch: int | Tensor, like: Tensor) -> Tensor:
    if isinstance(num_items_in_batch, Tensor):
        if num_items_in_batch.numel() != 1:
            raise ValueError(
                "num_items_in_batch must be an int or a single-element tensor, got shape "
                f"{tuple(num_items_in_batch.shape)} (Trainer passes one count per GPU under nn.DataParallel, "
                "which is not supported: launch one process per GPU with `accelerate launch` or `torchrun`)"
            )
        return num_items_in_batch.detach().reshape(()).to(device=like.device, dtype=like.dtype)
    return torch.tensor(float(num_items_in_batch), device=like.device, dtype=like.dtype)


REDUCTIONS = ("mean", "sum")


def _finish(summed: LossSum, num_items_in_batch: int | Tensor | None, reduction: str) -> Tensor | LossSum:
    if reduction == "sum":
        return summed
    if reduction != "mean":
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    denom = summed.count if num_items_in_batch is None else _denominator(num_items_in_batch, summed.total)
    return summed.total / denom.clamp(min=1)


def reduce_per_item(
    per_item: Tensor,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """Reduce a per-item loss to a scalar: ``sum_{valid i} per_item[i] / N``.

    Args:
        per_item: floating tensor of any shape ``(...)``, one loss value per item.
        mask: bool tensor (or 0/1 tensor, converted with ``.bool()``) of the same shape as ``per_item``; True marks
            valid items. ``None`` means every item is valid.
        num_items_in_batch: the number of valid items over ALL gradient-accumulation micro-batches (as
            ``transformers.Trainer`` passes it to ``compute_loss``); a python int or a single-element tensor,
            moved to ``per_item``'s device/dtype. When given, ``N = max(num_items_in_batch, 1)``; otherwise ``N`` is
            the number of valid items in this batch, clamped to >= 1 (an all-masked batch gives 0, and the result is
            still attached to the graph so ``backward()`` works and yields zero gradients).
        reduction: ``"mean"`` (the above) or ``"sum"``: the :class:`LossSum` ``(sum, count)`` before any division
            (``num_items_in_batch`` is then not used).

    Returns:
        0-d tensor (``"mean"``) or :class:`LossSum` (``"sum"``).

    Masked items are zero-filled with ``torch.where`` before summing, so NaN/inf values at masked positions leak
    into neither the result nor the gradient.
    """
    return _finish(sum_per_item(per_item, mask), num_items_in_batch, reduction)
