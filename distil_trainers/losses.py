"""Distillation losses as pure torch functions (no Trainer state).

Every function treats the LAST dimension of its logits as the class dimension, so the same code serves

* sequence classification: logits ``(B, C)``, labels ``(B,)``;
* token-level LM distillation: logits ``(B, L, C)``, labels ``(B, L)``;

and in general logits ``(..., C)`` with labels / masks of shape ``(...)``. An "item" is one position of that
leading ``(...)`` shape (a sequence in classification, a token in LM distillation).

Reduction convention
--------------------
Each loss first computes a per-item value of shape ``(...)`` and then calls :func:`reduce_per_item`, which returns

    sum over valid items of per_item / N

where "valid" means ``mask`` is True (labels != ``ignore_index`` for the label-based losses) and ``N`` is

* ``num_items_in_batch`` when given: the number of valid items over ALL gradient-accumulation micro-batches, as
  ``transformers.Trainer`` passes it to ``compute_loss``. Summing the micro-batch losses then gives exactly the
  loss (and gradient) of one big batch, however unevenly the valid items are spread over the micro-batches;
* otherwise the number of valid items in this batch (clamped to >= 1, so an all-masked batch gives 0).

With ``reduction="sum"`` every loss returns the :class:`LossSum` ``(sum over valid items, number of valid items)``
instead, and the caller divides: the trainers add their terms this way and divide each by the count of its own kind of
item (gold labels, teacher-scored rows, rows with a language id) over the whole optimizer step, once.

Masked items never contribute NaN/inf to the value or the gradient: they are zero-filled with ``torch.where``
and label gathers use a safe index.

Half-precision logits (float16 / bfloat16) are upcast to float32 for the computation, so the returned loss is
float32 for them; float32 / float64 inputs are computed in their own dtype. Teacher logits and soft targets are
always detached.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IGNORE_INDEX",
    "UNLABELLED",
    "gold_labels",
    "label_mask",
    "LossSum",
    "sum_per_item",
    "reduce_per_item",
    "cross_entropy_loss",
    "soft_target_cross_entropy",
    "kd_kl_loss",
    "annealing_targets",
    "teacher_annealing_loss",
    "logits_mse_loss",
    "reduce_tokens",
    "hidden_kl_loss",
    "similarity_kl_loss",
    "hidden_mse_loss",
    "hidden_cosine_loss",
    "cls_vector_loss",
    "attention_mse_loss",
    "topk_kl_loss",
    "topk_kl_per_item",
]

IGNORE_INDEX = -100
UNLABELLED = -1
"""Label of an item without a gold label (a raw corpus soft-labelled by the teacher): counted by every teacher term,
never by a label term. Trainers give it only to losses without a label term (KD with ``alpha = 0``, DDML with
``a = 0``, logit MSE)."""

_HALF_DTYPES = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------------------------
def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in _HALF_DTYPES else x


def _check_temperature(temperature: float | Tensor) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}") from e
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


def _check_scalar(value: float | Tensor, name: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a python number or a single-element tensor, got shape {tuple(value.shape)}"
            )
        value = value.detach().reshape(()).item()
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number, got {value!r}") from e
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _check_lam(lam: float | Tensor) -> float:
    v = _check_scalar(lam, "lam")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {v}")
    return v


def _check_logits(logits: Tensor, name: str) -> None:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() < 1:
        raise ValueError(f"{name} must have a class dimension (at least 1-D), got a 0-d tensor")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")


def _check_same_shape(student_logits: Tensor, teacher_logits: Tensor, teacher_name: str = "teacher_logits") -> None:
    _check_logits(student_logits, "student_logits")
    _check_logits(teacher_logits, teacher_name)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"shape mismatch: student_logits has shape {tuple(student_logits.shape)} but {teacher_name} has shape "
            f"{tuple(teacher_logits.shape)}"
        )


def _check_labels(labels: Tensor, logits: Tensor, logits_name: str = "logits") -> None:
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"shape mismatch: labels has shape {tuple(labels.shape)} but {logits_name} has shape "
            f"{tuple(logits.shape)}; labels must have shape {logits_name}.shape[:-1] = {tuple(logits.shape[:-1])}"
        )


def _check_label_range(labels: Tensor, mask: Tensor, num_classes: int) -> None:
    """A clear error for labels outside ``[0, C)``. On an accelerator the check is asynchronous (no host-device
    synchronisation per call): a bad label fails the next synchronisation with a device-side assertion. The trainers
    check every label of their datasets before training, so there it cannot fire."""
    bad = mask & ((labels < 0) | (labels >= num_classes))
    if labels.device.type != "cpu":
        torch._assert_async(~bad.any(), f"labels must be in [0, {num_classes}) or equal to ignore_index")
        return
    if bool(bad.any()):
        offending = labels[bad].unique()[:10].tolist()
        raise ValueError(
            f"labels must be in [0, {num_classes}) or equal to ignore_index; got out-of-range values {offending}"
        )


def _check_mask(mask: Tensor | None, logits: Tensor, logits_name: str = "logits") -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.shape != logits.shape[:-1]:
        raise ValueError(
            f"shape mismatch: mask has shape {tuple(mask.shape)} but {logits_name} has shape {tuple(logits.shape)}; "
            f"mask must have shape {logits_name}.shape[:-1] = {tuple(logits.shape[:-1])}"
        )
    return mask.to(device=logits.device, dtype=torch.bool)


# ----------------------------------------------------------------------------------------------------------------
# masking and reduction
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------------------------
def cross_entropy_loss(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
    class_weights: Tensor | None = None,
) -> Tensor | LossSum:
    """Hard-label cross-entropy.

    Per item: ``-log_softmax(logits)[y] = logsumexp_c(z_c) - z_y``, times ``class_weights[y]`` when given.

    Args:
        logits: ``(..., C)`` floating tensor.
        labels: ``(...)`` integer tensor with values in ``[0, C)`` or ``ignore_index``.
        ignore_index: label value whose items are masked out.
        num_items_in_batch: see :func:`reduce_per_item`. With ``class_weights`` it must be the weighted count
            ``sum_i class_weights[y_i]`` over the whole batch, as ``F.cross_entropy(weight=...)`` divides by it.
        reduction: ``"mean"`` or ``"sum"`` (a :class:`LossSum`), see :func:`reduce_per_item`.
        class_weights: optional ``(C,)`` non-negative weights; the count is then the sum of the items' weights.

    Returns:
        0-d tensor ``sum_{labels != ignore_index} w_y CE_i / N`` (see :func:`reduce_per_item`). Without
        ``num_items_in_batch`` this equals ``F.cross_entropy(..., weight=class_weights, ignore_index=ignore_index)``
        (the weighted mean over valid items), except that an all-ignored batch gives 0 instead of NaN.

    Raises:
        ValueError: labels shape != ``logits.shape[:-1]``, non-integer labels, a valid label outside ``[0, C)``,
            or class weights not of shape ``(C,)``.
    """
    _check_logits(logits, "logits")
    _check_labels(labels, logits, "logits")
    mask = label_mask(labels, ignore_index)
    _check_label_range(labels, mask, logits.shape[-1])
    log_probs = F.log_softmax(_upcast(logits), dim=-1)
    safe_labels = torch.where(mask, labels, torch.zeros_like(labels)).long()
    per_item = -log_probs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    weights = item_weights(class_weights, safe_labels, logits.shape[-1]) if class_weights is not None else None
    return _finish(sum_per_item(per_item, mask, weights), num_items_in_batch, reduction)


def item_weights(class_weights: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``class_weights[labels]``: each item's weight from its class (``labels`` already in ``[0, C)``)."""
    if not isinstance(class_weights, Tensor) or class_weights.shape != (num_classes,):
        got = tuple(class_weights.shape) if isinstance(class_weights, Tensor) else type(class_weights).__name__
        raise ValueError(f"class_weights must be a tensor of shape ({num_classes},), got {got}")
    return class_weights.to(labels.device)[labels]


def soft_target_cross_entropy(
    logits: Tensor,
    target_probs: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
    weights: Tensor | None = None,
) -> Tensor | LossSum:
    """Cross-entropy against soft targets.

    Per item: ``-sum_c target_c * log_softmax(logits / T)_c`` (no ``T^2`` factor; terms with ``target_c == 0``
    contribute exactly 0 even where the log-probability is ``-inf``). Its gradient w.r.t. the logits is
    ``(softmax(logits / T) - target) / T`` per item (for targets summing to 1), divided by ``N``.

    Args:
        logits: ``(..., C)`` floating tensor (the student).
        target_probs: ``(..., C)`` target distribution, used as given (not renormalised) and detached.
        temperature: ``T > 0`` applied to ``logits`` only.
        mask: optional ``(...)`` bool tensor of valid items (None = all valid).
        num_items_in_batch, reduction: see :func:`reduce_per_item`.
        weights: optional ``(...)`` per-item weights (see :func:`sum_per_item`).

    Returns:
        0-d tensor, reduced with :func:`reduce_per_item`.

    Raises:
        ValueError: bad temperature, or a shape mismatch between logits / target_probs / mask.
    """
    t = _check_temperature(temperature)
    _check_same_shape(logits, target_probs, "target_probs")
    mask = _check_mask(mask, logits)
    log_probs = F.log_softmax(_upcast(logits) / t, dim=-1)
    target = target_probs.detach().to(log_probs.dtype)
    terms = torch.where(
        target == 0, torch.zeros((), dtype=log_probs.dtype, device=log_probs.device), target * log_probs
    )
    per_item = -terms.sum(-1)
    return _finish(sum_per_item(per_item, mask, weights), num_items_in_batch, reduction)


def kd_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """Soft distillation loss of Hinton et al. (2015).

    Per item: ``T^2 * KL(p_t || p_s) = T^2 * sum_c p_t,c (log p_t,c - log p_s,c)`` with
    ``p_t = softmax(teacher / T)`` and ``p_s = softmax(student / T)``. The ``T^2`` factor keeps the gradient
    magnitude comparable across temperatures. Computed from log_softmax; classes with ``p_t == 0`` (e.g. teacher
    logit ``-inf`` or underflow) contribute exactly 0. Teacher logits are detached.

    Args:
        student_logits: ``(..., C)`` floating tensor.
        teacher_logits: ``(..., C)`` floating tensor, same shape.
        temperature: ``T > 0`` applied to both.
        mask: optional ``(...)`` bool tensor of valid items (None = all valid); for LM distillation pass
            ``label_mask(labels)``.
        num_items_in_batch: see :func:`reduce_per_item`.

    Returns:
        0-d tensor (>= 0), reduced with :func:`reduce_per_item`.

    Raises:
        ValueError: bad temperature, or a shape mismatch between student / teacher logits / mask.
    """
    t = _check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logits)
    mask = _check_mask(mask, student_logits, "student_logits")
    log_p_s = F.log_softmax(_upcast(student_logits) / t, dim=-1)
    log_p_t = F.log_softmax(_upcast(teacher_logits.detach()).to(log_p_s.dtype) / t, dim=-1)
    p_t = log_p_t.exp()
    zero = torch.zeros((), dtype=log_p_s.dtype, device=log_p_s.device)
    terms = torch.where(p_t > 0, p_t * (log_p_t - log_p_s), zero)
    per_item = terms.sum(-1) * (t * t)
    return reduce_per_item(per_item, mask, num_items_in_batch, reduction)


def annealing_targets(
    labels: Tensor,
    teacher_logits: Tensor,
    lam: float | Tensor,
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Teacher-annealing targets of BAM (Clark et al., 2019).

    ``target = lam * onehot(y) + (1 - lam) * softmax(teacher_logits / T)`` per item. Items whose label is
    ``ignore_index`` get ``softmax(teacher_logits / T)`` (callers mask them out anyway); ``one_hot`` is never
    indexed with ``ignore_index``.

    Args:
        labels: ``(...)`` integer tensor with values in ``[0, C)`` or ``ignore_index``.
        teacher_logits: ``(..., C)`` floating tensor (detached).
        lam: weight of the gold label in ``[0, 1]``: python number or single-element tensor.
        temperature: ``T > 0`` applied to the teacher logits.
        ignore_index: label value of ignored items.

    Returns:
        ``(..., C)`` detached tensor whose rows sum to 1, in the teacher's (upcast) dtype.

    Raises:
        ValueError: lam outside [0, 1], bad temperature, labels shape mismatch or out-of-range labels.
    """
    lam_f = _check_lam(lam)
    t = _check_temperature(temperature)
    _check_logits(teacher_logits, "teacher_logits")
    _check_labels(labels, teacher_logits, "teacher_logits")
    mask = label_mask(labels, ignore_index)
    num_classes = teacher_logits.shape[-1]
    _check_label_range(labels, mask, num_classes)
    with torch.no_grad():
        p_t = F.softmax(_upcast(teacher_logits.detach()) / t, dim=-1)
        safe_labels = torch.where(mask, labels, torch.zeros_like(labels)).long()
        onehot = F.one_hot(safe_labels, num_classes).to(p_t.dtype)
        lam_t = torch.where(
            mask,
            torch.tensor(lam_f, dtype=p_t.dtype, device=p_t.device),
            torch.zeros((), dtype=p_t.dtype, device=p_t.device),
        ).unsqueeze(-1)
        target = lam_t * onehot + (1 - lam_t) * p_t
    return target.detach()


def teacher_annealing_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    lam: float | Tensor,
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
    class_weights: Tensor | None = None,
) -> Tensor | LossSum:
    """Teacher-annealing loss of BAM (Clark et al., 2019).

    Per item: ``-sum_c target_c * log_softmax(student)_c`` (student at ``T = 1``) with
    ``target = annealing_targets(labels, teacher_logits, lam, temperature, ignore_index)``. Items whose label is
    ``ignore_index`` are masked out. ``lam = 1`` equals :func:`cross_entropy_loss` exactly; ``lam = 0`` is the
    soft-target cross-entropy against ``softmax(teacher / T)``. BAM raises ``lam`` linearly from 0 to 1 over training
    (see :func:`distil_trainers.schedules.linear`).

    Args:
        student_logits: ``(..., C)`` floating tensor.
        teacher_logits: ``(..., C)`` floating tensor, same shape (detached).
        labels: ``(...)`` integer tensor.
        lam: gold-label weight in ``[0, 1]``.
        temperature: ``T > 0`` applied to the teacher only.
        ignore_index: label value of ignored items.
        num_items_in_batch, reduction: see :func:`reduce_per_item`.
        class_weights: optional ``(C,)`` weights: each item's loss is weighted by its gold class's weight (the
            label and the teacher part alike) and the count is the sum of those weights, as in
            :func:`cross_entropy_loss`.

    Returns:
        0-d tensor, reduced with :func:`reduce_per_item` over items with ``labels != ignore_index``.

    Raises:
        ValueError: lam outside [0, 1], bad temperature, shape mismatches, out-of-range labels.
    """
    _check_same_shape(student_logits, teacher_logits)
    targets = annealing_targets(labels, teacher_logits, lam, temperature, ignore_index)
    mask = label_mask(labels, ignore_index)
    weights = None
    if class_weights is not None:
        safe_labels = torch.where(mask, labels, torch.zeros_like(labels)).long()
        weights = item_weights(class_weights, safe_labels, student_logits.shape[-1])
    return soft_target_cross_entropy(
        student_logits, targets, temperature=1.0, mask=mask, num_items_in_batch=num_items_in_batch,
        reduction=reduction, weights=weights,
    )


def logits_mse_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    scale: float | Tensor = 1.0,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """Logit-matching MSE of Annealing-KD phase 1 (Jafari et al., 2021).

    Per item: ``mean_c (s_c - scale * t_c)^2`` with the teacher detached; ``scale`` is the annealing factor
    ``Phi(T)`` (see :func:`distil_trainers.schedules.annealing_kd_factor`).

    Args:
        student_logits: ``(..., C)`` floating tensor.
        teacher_logits: ``(..., C)`` floating tensor, same shape.
        scale: finite python number or single-element tensor multiplying the teacher logits.
        mask: optional ``(...)`` bool tensor of valid items (None = all valid).
        num_items_in_batch: see :func:`reduce_per_item`.

    Returns:
        0-d tensor, reduced with :func:`reduce_per_item`.

    Raises:
        ValueError: non-finite / multi-element scale, or a shape mismatch between student / teacher logits / mask.
    """
    scale_f = _check_scalar(scale, "scale")
    _check_same_shape(student_logits, teacher_logits)
    mask = _check_mask(mask, student_logits, "student_logits")
    s = _upcast(student_logits)
    t = _upcast(teacher_logits.detach()).to(s.dtype)
    per_item = (s - scale_f * t).pow(2).mean(-1)
    return reduce_per_item(per_item, mask, num_items_in_batch, reduction)


# ----------------------------------------------------------------------------------------------------------------------
# Deep distill-mutual learning (DDML, Entropy 2025, 27(4), 417: equations 6-11)
# ----------------------------------------------------------------------------------------------------------------------

KL_DIRECTIONS = ("student_peer", "peer_student")


def mutual_kl_loss(
    student_logits: Tensor,
    peer_logits: Tensor,
    temperature: float = 1.0,
    direction: str = "student_peer",
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """KL divergence between a student's and a peer's temperature-softened distributions, the peer held fixed.

    With ``P_i = softmax(student / T)`` and ``P_k = softmax(peer / T)`` (peer detached), per item:

    - ``direction="student_peer"``: ``KL(P_i || P_k) = sum_c P_i,c (log P_i,c - log P_k,c)``, as written in the DDML
      paper (equation 8: ``D_KL(P_i^soft || P_k^soft)``);
    - ``direction="peer_student"``: ``KL(P_k || P_i)``, the direction of deep mutual learning (Zhang et al. 2018),
      i.e. the cross-entropy to the peer's distribution minus the peer's entropy.

    No ``T^2`` factor (the paper has none). Reduced with :func:`reduce_per_item`.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"direction must be one of {KL_DIRECTIONS}, got {direction!r}.")
    t = _check_temperature(temperature)
    _check_same_shape(student_logits, peer_logits, "peer_logits")
    mask = _check_mask(mask, student_logits, "student_logits")
    log_p_i = F.log_softmax(_upcast(student_logits) / t, dim=-1)
    log_p_k = F.log_softmax(_upcast(peer_logits.detach()).to(log_p_i.dtype) / t, dim=-1)
    zero = torch.zeros((), dtype=log_p_i.dtype, device=log_p_i.device)
    if direction == "student_peer":
        p_i = log_p_i.exp()
        terms = torch.where(p_i > 0, p_i * (log_p_i - log_p_k), zero)
    else:
        p_k = log_p_k.exp()
        terms = torch.where(p_k > 0, p_k * (log_p_k - log_p_i), zero)
    return reduce_per_item(terms.sum(-1), mask, num_items_in_batch, reduction)


def ddml_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    peer_logits: list[Tensor] | tuple[Tensor, ...],
    labels: Tensor,
    hard_weight: float = 1.0,
    soft_weight: float = 1.0,
    mutual_weight: float = 1.0,
    temperature: float = 1.0,
    direction: str = "student_peer",
    ignore_index: int = IGNORE_INDEX,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
    class_weights: Tensor | None = None,
) -> dict[str, Tensor] | dict[str, LossSum]:
    """The loss of one student in DDML (equation 11):

    ``L_i = a * L_hard + b * L_soft + c / (K - 1) * sum_{k != i} D_KL(P_i^soft || P_k^soft)``

    with ``L_hard`` the cross-entropy on the labels (T = 1), ``L_soft`` the cross-entropy of the student's
    ``softmax(z_i / T)`` against the teacher's ``softmax(z_t / T)``, and the K - 1 peers' distributions fixed targets
    (detached: each student's loss only moves that student). Items whose label is ``ignore_index`` count in no term;
:data:`UNLABELLED` items count in the soft and mutual terms only (the hard term sums over gold labels, divided by the
same ``N``).

    Returns ``{"loss", "loss_hard", "loss_soft", "loss_mutual"}`` (``loss_mutual`` already averaged over the peers,
    before the weight ``c``). With ``reduction="sum"``: ``{"loss_hard", "loss_soft", "loss_mutual"}`` as
    :class:`LossSum` (the hard term counts gold labels, weighted by ``class_weights`` if given; the other two count
    every item), to be weighted and normalised by the caller.
    """
    if not peer_logits:
        raise ValueError("DDML needs at least one peer student (K >= 2).")
    for name, w in (("hard_weight", hard_weight), ("soft_weight", soft_weight), ("mutual_weight", mutual_weight)):
        _check_scalar(w, name)
    _check_same_shape(student_logits, teacher_logits)
    mask = label_mask(labels, ignore_index)
    hard = cross_entropy_loss(
        student_logits, gold_labels(labels, ignore_index), ignore_index=ignore_index,
        num_items_in_batch=num_items_in_batch, reduction=reduction, class_weights=class_weights,
    )
    teacher_probs = F.softmax(_upcast(teacher_logits.detach()) / _check_temperature(temperature), dim=-1)
    soft = soft_target_cross_entropy(
        student_logits, teacher_probs, temperature=temperature, mask=mask, num_items_in_batch=num_items_in_batch,
        reduction=reduction,
    )
    mutuals = [
        mutual_kl_loss(student_logits, peer, temperature, direction, mask, num_items_in_batch, reduction)
        for peer in peer_logits
    ]
    if reduction == "sum":
        mutual = LossSum(sum(m.total for m in mutuals) / len(mutuals), mutuals[0].count)
        return {"loss_hard": hard, "loss_soft": soft, "loss_mutual": mutual}
    mutual = sum(mutuals) / len(peer_logits)
    loss = hard_weight * hard + soft_weight * soft + mutual_weight * mutual
    return {"loss": loss, "loss_hard": hard, "loss_soft": soft, "loss_mutual": mutual}


# ----------------------------------------------------------------------------------------------------------------------
# Feature-level distillation (MKD-BERT as used in Breazu and Virlan (2025); TinyBERT's attention loss)
# ----------------------------------------------------------------------------------------------------------------------
#
# These losses compare intermediate representations instead of logits. Shapes:
#
# * token features ``(B, L, H)`` (hidden states, embedding-layer outputs) with ``mask`` of valid tokens ``(B, L)``
#   (the attention mask);
# * one vector per sequence ``(B, H)`` (a [CLS] vector) with ``mask`` ``(B,)``;
# * attention maps ``(B, heads, L, L)`` with ``mask`` ``(B, L)``.
#
# An ITEM is a sequence. A per-token value is first averaged over the sequence's valid tokens (the "average over the
# input sequence length" of MKD-BERT), then the per-sequence values are reduced with :func:`reduce_per_item`, so
# ``num_items_in_batch`` counts sequences exactly as it does for classification losses. A sequence whose mask is
# entirely False is not an item (trainers drop unlabelled sequences this way). The teacher is always detached.

def _check_features(student: Tensor, teacher: Tensor, name: str, same_width: bool = True) -> None:
    for label, x in (("student", student), ("teacher", teacher)):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(f"{name}: the {label} features must be a floating-point torch.Tensor.")
        if x.dim() not in (2, 3):
            raise ValueError(
                f"{name}: the {label} features must be (batch, length, hidden) or (batch, hidden), got shape "
                f"{tuple(x.shape)}"
            )
    expected = teacher.shape if same_width else teacher.shape[:-1]
    got = student.shape if same_width else student.shape[:-1]
    if student.dim() != teacher.dim() or got != expected:
        what = "shapes" if same_width else "batch and length"
        hint = " (project the student to the teacher's width first, see distil_trainers.features)" if (
            same_width and student.shape[:-1] == teacher.shape[:-1]
        ) else ""
        raise ValueError(
            f"{name}: student and teacher {what} differ: student {tuple(student.shape)}, teacher "
            f"{tuple(teacher.shape)}{hint}"
        )


def _feature_mask(mask: Tensor | None, shape: torch.Size, device, name: str) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(shape):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name}: mask must have shape {tuple(shape)} (valid tokens), got {got}")
    return mask.to(device=device, dtype=torch.bool)


def _zero_masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the feature vectors at masked positions, so NaN/inf there cannot reach the gradient."""
    if mask is None:
        return x
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def reduce_tokens(
    per_token: Tensor, mask: Tensor | None = None, num_items_in_batch: int | Tensor | None = None, reduction: str = "mean"
) -> Tensor | LossSum:
    """Reduce per-token values ``(B, L)`` (or per-sequence values ``(B,)``) to a scalar.

    ``(B, L)``: each sequence's value is the mean over its valid tokens (``mask`` True), then sequences with at least
    one valid token are reduced with :func:`reduce_per_item`. ``(B,)``: reduced with :func:`reduce_per_item` directly.
    Masked positions are zero-filled, so NaN/inf there leak neither into the value nor into the gradient.
    """
    if per_token.dim() == 1:
        return reduce_per_item(per_token, mask, num_items_in_batch, reduction)
    if mask is None:
        return reduce_per_item(per_token.mean(-1), None, num_items_in_batch, reduction)
    zero = torch.zeros((), dtype=per_token.dtype, device=per_token.device)
    counts = mask.sum(-1)
    per_seq = torch.where(mask, per_token, zero).sum(-1) / counts.clamp(min=1).to(per_token.dtype)
    return reduce_per_item(per_seq, counts > 0, num_items_in_batch, reduction)


def _kl_rows(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``KL(softmax(teacher) || softmax(student))`` over the last dimension (teacher entries with p = 0 give 0)."""
    log_p_s = F.log_softmax(student_logits, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.to(log_p_s.dtype), dim=-1)
    p_t = log_p_t.exp()
    zero = torch.zeros((), dtype=log_p_s.dtype, device=log_p_s.device)
    return torch.where(p_t > 0, p_t * (log_p_t - log_p_s), zero).sum(-1)


def hidden_kl_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """KL divergence between softmax-normalised feature vectors (MKD-BERT's embedding-layer loss, Breazu and Virlan's (2025) loss
    on the hidden layers).

    Per token: ``KL(softmax(t / T) || softmax(s / T))`` with the softmax over the hidden dimension of the token's
    vector (``s`` student, ``t`` teacher, same width: project the student first if the widths differ). Averaged over
    each sequence's valid tokens, then over sequences (see :func:`reduce_tokens`). No ``T^2`` factor.

    Args:
        student_hidden: ``(B, L, H)`` token features, or ``(B, H)`` one vector per sequence.
        teacher_hidden: the same shape (detached).
        mask: ``(B, L)`` (resp. ``(B,)``) valid tokens; None = all valid.
        temperature: ``T > 0``.
        num_items_in_batch: number of sequences over all accumulation micro-batches (see :func:`reduce_per_item`).
    """
    t = _check_temperature(temperature)
    _check_features(student_hidden, teacher_hidden, "hidden_kl_loss")
    mask = _feature_mask(mask, student_hidden.shape[:-1], student_hidden.device, "hidden_kl_loss")
    s = _zero_masked(_upcast(student_hidden), mask) / t
    per_token = _kl_rows(s, _zero_masked(_upcast(teacher_hidden.detach()), mask) / t)
    return reduce_tokens(per_token, mask, num_items_in_batch, reduction)


def similarity_kl_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """KL divergence between token-similarity matrices (MKD-BERT's prediction-layer loss).

    For each model, ``S = H Hᵀ / sqrt(d)`` (``(B, L, L)``, ``d`` that model's own hidden size, so the widths may
    differ) and ``P = softmax(S / T)`` over each row, restricted to the valid (key) tokens. Per valid query token:
    ``KL(P_t[i] || P_s[i])``; averaged over the sequence's valid tokens, then over sequences. No ``T^2`` factor.

    Args:
        student_hidden: ``(B, L, H_s)``.
        teacher_hidden: ``(B, L, H_t)`` (detached); ``H_t`` may differ from ``H_s``.
        mask: ``(B, L)`` valid tokens (padding is excluded both as query and as key); None = all valid.
        temperature: ``T > 0``.
        num_items_in_batch: see :func:`reduce_per_item` (counts sequences).
    """
    t = _check_temperature(temperature)
    _check_features(student_hidden, teacher_hidden, "similarity_kl_loss", same_width=False)
    if student_hidden.dim() != 3:
        raise ValueError("similarity_kl_loss needs token features of shape (batch, length, hidden).")
    mask = _feature_mask(mask, student_hidden.shape[:-1], student_hidden.device, "similarity_kl_loss")

    def row_logits(h: Tensor) -> Tensor:
        sim = torch.matmul(h, h.transpose(-1, -2)) / (math.sqrt(h.shape[-1]) * t)
        if mask is not None:
            # the most negative finite value (not -inf): a row without valid keys stays finite, and is dropped anyway
            sim = sim.masked_fill(~mask[:, None, :], torch.finfo(sim.dtype).min)
        return sim

    s = _zero_masked(_upcast(student_hidden), mask)
    per_token = _kl_rows(row_logits(s), row_logits(_zero_masked(_upcast(teacher_hidden.detach()).to(s.dtype), mask)))
    return reduce_tokens(per_token, mask, num_items_in_batch, reduction)


def hidden_mse_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """Mean squared error between feature vectors: per token ``mean_h (s_h - t_h)^2``, averaged over each sequence's
    valid tokens, then over sequences. Shapes as in :func:`hidden_kl_loss` (same width)."""
    _check_features(student_hidden, teacher_hidden, "hidden_mse_loss")
    mask = _feature_mask(mask, student_hidden.shape[:-1], student_hidden.device, "hidden_mse_loss")
    s = _zero_masked(_upcast(student_hidden), mask)
    per_token = (s - _zero_masked(_upcast(teacher_hidden.detach()).to(s.dtype), mask)).pow(2).mean(-1)
    return reduce_tokens(per_token, mask, num_items_in_batch, reduction)


def hidden_cosine_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
    eps: float = 1e-8,
) -> Tensor | LossSum:
    """Cosine distance between feature vectors: per token ``1 - s·t / max(|s| |t|, eps)``, averaged over each
    sequence's valid tokens, then over sequences. Shapes as in :func:`hidden_kl_loss` (same width)."""
    _check_features(student_hidden, teacher_hidden, "hidden_cosine_loss")
    mask = _feature_mask(mask, student_hidden.shape[:-1], student_hidden.device, "hidden_cosine_loss")
    s = _zero_masked(_upcast(student_hidden), mask)
    t = _zero_masked(_upcast(teacher_hidden.detach()).to(s.dtype), mask)
    norms = (s.norm(dim=-1) * t.norm(dim=-1)).clamp(min=eps)
    per_token = 1.0 - (s * t).sum(-1) / norms
    return reduce_tokens(per_token, mask, num_items_in_batch, reduction)


CLS_LOSSES = ("mse", "cosine", "kl")


def cls_vector_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    kind: str = "mse",
    temperature: float = 1.0,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """A loss on the first-token ([CLS]) vectors only: ``kind`` = ``"mse"`` (:func:`hidden_mse_loss`), ``"cosine"``
    (:func:`hidden_cosine_loss`) or ``"kl"`` (:func:`hidden_kl_loss`) on ``h[:, 0]``.

    Args:
        student_hidden: ``(B, L, H)`` token features (position 0 is used) or ``(B, H)`` [CLS] vectors.
        teacher_hidden: the same shape (detached).
        mask: ``(B,)`` sequences to count (or a ``(B, L)`` token mask, of which the first column is used).
    """
    if kind not in CLS_LOSSES:
        raise ValueError(f"cls_vector_loss: kind must be one of {CLS_LOSSES}, got {kind!r}.")
    if isinstance(student_hidden, Tensor) and student_hidden.dim() == 3:
        student_hidden = student_hidden[:, 0]
    if isinstance(teacher_hidden, Tensor) and teacher_hidden.dim() == 3:
        teacher_hidden = teacher_hidden[:, 0]
    if isinstance(mask, Tensor) and mask.dim() == 2:
        mask = mask[:, 0]
    if kind == "mse":
        return hidden_mse_loss(student_hidden, teacher_hidden, mask, num_items_in_batch, reduction)
    if kind == "cosine":
        return hidden_cosine_loss(student_hidden, teacher_hidden, mask, num_items_in_batch, reduction)
    return hidden_kl_loss(student_hidden, teacher_hidden, mask, temperature, num_items_in_batch, reduction)


def attention_mse_loss(
    student_attentions: Tensor,
    teacher_attentions: Tensor,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
    average_heads: bool = False,
) -> Tensor | LossSum:
    """TinyBERT's attention loss: mean squared error between attention maps (Jiao et al. 2020).

    Per sequence: the mean over heads and over valid (query, key) pairs of ``(A_s - A_t)^2``; then reduced over
    sequences with :func:`reduce_per_item`. Transformers returns attention probabilities (after softmax), so this
    compares probabilities (TinyBERT compares the scores before softmax, which Transformers does not expose).

    Args:
        student_attentions: ``(B, heads_s, L, L)``.
        teacher_attentions: ``(B, heads_t, L, L)`` (detached).
        mask: ``(B, L)`` valid tokens; a pair counts when both its query and its key are valid. None = all valid.
        average_heads: compare the head-averaged maps ``(B, L, L)`` (needed when the head counts differ);
            otherwise the head counts must be equal.
        num_items_in_batch: see :func:`reduce_per_item` (counts sequences).
    """
    for label, x in (("student", student_attentions), ("teacher", teacher_attentions)):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
            raise ValueError(
                f"attention_mse_loss: the {label} attentions must be a floating tensor (batch, heads, length, length)."
            )
    s = _upcast(student_attentions)
    t = _upcast(teacher_attentions.detach()).to(s.dtype)
    if average_heads:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    if s.shape != t.shape:
        raise ValueError(
            f"attention_mse_loss: student attentions {tuple(student_attentions.shape)} and teacher attentions "
            f"{tuple(teacher_attentions.shape)} differ"
            + ("; with different head counts pass average_heads=True" if s.shape[2:] == t.shape[2:] else "")
        )
    batch, heads, length = s.shape[0], s.shape[1], s.shape[-1]
    mask = _feature_mask(mask, (batch, length), s.device, "attention_mse_loss")
    if mask is None:
        return reduce_per_item((s - t).pow(2).mean(dim=(1, 2, 3)), None, num_items_in_batch, reduction)
    pairs = (mask[:, :, None] & mask[:, None, :])[:, None]  # (B, 1, L, L)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    sq = (torch.where(pairs, s, zero) - torch.where(pairs, t, zero)).pow(2)  # NaN/inf at padding cannot leak
    total = sq.sum(dim=(1, 2, 3))
    count = pairs.sum(dim=(1, 2, 3)).to(sq.dtype) * heads
    return reduce_per_item(total / count.clamp(min=1), count > 0, num_items_in_batch, reduction)


# ---- top-k teacher log-probabilities (a cache of an LLM teacher's top-k tokens) -------------------------------


def topk_kl_loss(
    student_logits: Tensor,
    topk_logprobs: Tensor,
    topk_indices: Tensor,
    rest_logprob: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor | LossSum:
    """``T^2 * KL(p_t || p_s)`` over the ``k + 1`` outcomes "one of the teacher's top-k tokens" and "any other token".

    ``p_t`` is the cached teacher distribution (top-k log-probabilities and the log of the remaining mass);
    ``p_s`` is ``softmax(student_logits / T)`` gathered at the same token ids, with the student's mass on all other
    tokens as the last outcome. When the top-k set covers the vocabulary this equals the full KL; otherwise it is the
    KL of the coarse-grained distributions, a lower bound of the full KL whose gap shrinks with ``k`` (the tail's
    shape is not stored). Per item (token), reduced with ``reduce_per_item``.

    Args:
        student_logits: ``(..., V)``.
        topk_logprobs: ``(..., k)`` teacher log-probabilities; ``topk_indices``: ``(..., k)`` token ids;
            ``rest_logprob``: ``(...)`` log of the teacher's remaining mass.
        temperature: the temperature the cache was built with (the student is softened by the same).
        mask, num_items_in_batch, reduction: as in :func:`kd_kl_loss`.
    """
    per_item = topk_kl_per_item(student_logits, topk_logprobs, topk_indices, rest_logprob, temperature)
    return reduce_per_item(per_item, mask, num_items_in_batch, reduction)


def topk_kl_per_item(
    student_logits: Tensor,
    topk_logprobs: Tensor,
    topk_indices: Tensor,
    rest_logprob: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """The unreduced :func:`topk_kl_loss`: ``T^2 * KL(p_t || p_s)`` per item, shape ``student_logits.shape[:-1]``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if topk_logprobs.shape != topk_indices.shape or topk_logprobs.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"shape mismatch: student_logits {tuple(student_logits.shape)}, topk_logprobs "
            f"{tuple(topk_logprobs.shape)}, topk_indices {tuple(topk_indices.shape)}."
        )
    if rest_logprob.shape != student_logits.shape[:-1]:
        raise ValueError(f"rest_logprob must have shape {tuple(student_logits.shape[:-1])}, got {tuple(rest_logprob.shape)}.")
    z = student_logits.float() / temperature
    log_norm = z.logsumexp(-1)
    idx = topk_indices.long().to(z.device)
    s_top = z.gather(-1, idx) - log_norm[..., None]
    # a finite fill keeps the gradient finite when the top-k set covers the whole vocabulary
    s_rest = z.scatter(-1, idx, torch.finfo(z.dtype).min).logsumexp(-1) - log_norm
    t_top = topk_logprobs.to(z.device, z.dtype)
    t_rest = rest_logprob.to(z.device, z.dtype)
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    top_terms = torch.where(t_top > float("-inf"), t_top.exp() * (t_top - s_top), zero).sum(-1)
    rest_terms = torch.where(t_rest > float("-inf"), t_rest.exp() * (t_rest - s_rest), zero)
    return (top_terms + rest_terms) * (temperature * temperature)
