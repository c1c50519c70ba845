"""Feature-level distillation (MKD-BERT as used in Breazu and Virlan (2025); TinyBERT's attention loss).

These losses compare intermediate representations instead of logits. Shapes:

* token features ``(B, L, H)`` (hidden states, embedding-layer outputs) with ``mask`` of valid tokens ``(B, L)``
  (the attention mask);
* one vector per sequence ``(B, H)`` (a [CLS] vector) with ``mask`` ``(B,)``;
* attention maps ``(B, heads, L, L)`` with ``mask`` ``(B, L)``.

An ITEM is a sequence. A per-token value is first averaged over the sequence's valid tokens (the "average over the
input sequence length" of MKD-BERT), then the per-sequence values are reduced with :func:`reduce_per_item`, so
``num_items_in_batch`` counts sequences exactly as it does for classification losses. A sequence whose mask is
entirely False is not an item (trainers drop unlabelled sequences this way). The teacher is always detached.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import _check_temperature, _upcast
from .reduction import LossSum, reduce_per_item


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
