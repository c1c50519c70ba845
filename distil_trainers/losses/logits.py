"""Losses on classifier logits: cross-entropy (class-weighted), soft-target cross-entropy, Hinton KD, teacher
annealing (BAM) and Annealing-KD's logit MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import (
    _check_label_range,
    _check_labels,
    _check_lam,
    _check_logits,
    _check_mask,
    _check_same_shape,
    _check_scalar,
    _check_temperature,
    _upcast,
)
from .reduction import IGNORE_INDEX, LossSum, _finish, label_mask, reduce_per_item, sum_per_item


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
