"""Top-k teacher log-probabilities: the KL of a causal-LM student to a cache of an LLM teacher's top-k tokens plus
the rest of its probability mass."""

from __future__ import annotations

import torch
from torch import Tensor

from .reduction import LossSum, reduce_per_item


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
