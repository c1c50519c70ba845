"""Deep distill-mutual learning (DDML, Entropy 2025, 27(4), 417: equations 6-11): the mutual KL between peers and
the full DDML objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import (
    _check_mask,
    _check_same_shape,
    _check_scalar,
    _check_temperature,
    _upcast,
)
from .logits import cross_entropy_loss, soft_target_cross_entropy
from .reduction import IGNORE_INDEX, LossSum, gold_labels, label_mask, reduce_per_item

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
