"""The rationale-distillation loss: ``alpha * L_label + (1 - alpha) * L_rationale`` over the completion tokens of each
view, as pure tensor functions (no Trainer state). The token-level KL against a top-k teacher cache is
:func:`distil_trainers.losses.topk_kl_per_item`; :func:`alpha_weighted_view_mean` weighs its per-view sums the same
way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LABEL_VIEW", "RATIONALE_VIEW", "VIEW_NAMES", "alpha_weighted_view_mean", "rationale_multitask_loss"]

# The two views of a post, as the `view` column holds them
LABEL_VIEW, RATIONALE_VIEW = 0, 1
VIEW_NAMES = {LABEL_VIEW: "label", RATIONALE_VIEW: "rationale"}


def alpha_weighted_view_mean(
    sum_label: torch.Tensor,
    sum_rationale: torch.Tensor,
    num_label: torch.Tensor,
    num_rationale: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """``alpha * sum_label / num_label + (1 - alpha) * sum_rationale / num_rationale``, the counts clamped to >= 1 and
    the rationale term left out when ``alpha == 1``."""
    device = sum_label.device
    loss = alpha * sum_label / num_label.to(device).clamp(min=1)
    if alpha < 1:
        loss = loss + (1 - alpha) * sum_rationale / num_rationale.to(device).clamp(min=1)
    return loss


def rationale_multitask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    view: torch.Tensor,
    alpha: float,
    num_label_tokens: torch.Tensor | int | None = None,
    num_rationale_tokens: torch.Tensor | int | None = None,
    shift: bool = True,
) -> dict[str, torch.Tensor]:
    """``alpha * L_label + (1 - alpha) * L_rationale`` over the completion tokens of each view.

    Args:
        logits: ``(batch, length, vocab)``.
        labels: ``(batch, length)`` token ids, ``-100`` where there is no loss (prompt, padding).
        view: ``(batch,)``, ``LABEL_VIEW`` (0) or ``RATIONALE_VIEW`` (1) per row.
        alpha: weight of the label view, in [0, 1].
        num_label_tokens / num_rationale_tokens: the denominators, i.e. the number of loss tokens of each view in the
            whole optimizer step (gradient accumulation and processes included). ``None``: this batch's own counts.
        shift: causal LM (token t predicts t + 1): compare ``logits[:, :-1]`` with ``labels[:, 1:]``. ``False`` for
            encoder-decoder models whose logits are aligned with their labels.

    Returns:
        ``loss`` and, for logging, ``sum_label`` / ``sum_rationale`` (summed token losses, detached) and
        ``count_label`` / ``count_rationale`` (this batch's loss tokens).
    """
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    per_token = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    valid = labels.ne(-100)
    is_label = (view == LABEL_VIEW).unsqueeze(1)
    is_rationale = (view == RATIONALE_VIEW).unsqueeze(1)
    sum_label = (per_token * is_label).sum()
    sum_rationale = (per_token * is_rationale).sum()
    count_label = (valid & is_label).sum()
    count_rationale = (valid & is_rationale).sum()
    n_label = count_label if num_label_tokens is None else torch.as_tensor(num_label_tokens)
    n_rationale = count_rationale if num_rationale_tokens is None else torch.as_tensor(num_rationale_tokens)
    loss = alpha_weighted_view_mean(sum_label, sum_rationale, n_label, n_rationale, alpha)
    return {
        "loss": loss,
        "sum_label": sum_label.detach(),
        "sum_rationale": sum_rationale.detach(),
        "count_label": count_label,
        "count_rationale": count_rationale,
    }
