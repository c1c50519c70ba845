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

The functions live in one module per family: :mod:`.reduction` (masks, :class:`LossSum`, the shared reduction),
:mod:`.logits` (cross-entropy, Hinton KD, teacher annealing, logit MSE), :mod:`.mutual` (DDML), :mod:`.features`
(hidden states, attention maps, [CLS] vectors) and :mod:`.topk` (an LLM teacher's top-k log-probabilities), with the
input checks in :mod:`.checks`. Import them from here: ``from distil_trainers.losses import kd_kl_loss``.
"""

from .features import (
    CLS_LOSSES,
    attention_mse_loss,
    cls_vector_loss,
    hidden_cosine_loss,
    hidden_kl_loss,
    hidden_mse_loss,
    reduce_tokens,
    similarity_kl_loss,
)
from .logits import (
    annealing_targets,
    cross_entropy_loss,
    item_weights,
    kd_kl_loss,
    logits_mse_loss,
    soft_target_cross_entropy,
    teacher_annealing_loss,
)
from .mutual import KL_DIRECTIONS, ddml_loss, mutual_kl_loss
from .reduction import (
    IGNORE_INDEX,
    REDUCTIONS,
    UNLABELLED,
    LossSum,
    gold_labels,
    label_mask,
    reduce_per_item,
    sum_per_item,
)
from .topk import topk_kl_loss, topk_kl_per_item

__all__ = [
    "IGNORE_INDEX",
    "UNLABELLED",
    "gold_labels",
    "label_mask",
    "LossSum",
    "sum_per_item",
    "reduce_per_item",
    "cross_entropy_loss",
    "item_weights",
    "soft_target_cross_entropy",
    "kd_kl_loss",
    "annealing_targets",
    "teacher_annealing_loss",
    "logits_mse_loss",
    "mutual_kl_loss",
    "ddml_loss",
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
