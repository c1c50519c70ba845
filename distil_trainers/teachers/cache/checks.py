"""Teacher outputs must be finite: one NaN or inf turns every student weight into NaN at the first optimizer step while
the logged loss looks normal, so building, loading, constructing and attaching a cache each refuse them with one error
naming the examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

SHOWN_IDS = 5  # ids named in an error; the rest are counted

TEACHER_FAULT_ADVICE = (
    "A teacher gives such values when its activations overflow (typically a float16 teacher: load it in float32 or "
    "bfloat16) or when its weights hold NaN. Distilling from them would turn every student weight into NaN while the "
    "logged loss looks normal: fix the teacher (or drop these examples) and build any teacher-output cache made with "
    "it again (precompute_teacher_outputs(..., rebuild=True), or delete its folder)."
)
BUILD_ADVICE = (
    "The teacher produced them: typically its activations overflow in float16 (load it in float32 or bfloat16), the "
    "cache's dtype=torch.float16 cannot hold its logits (beyond ±65504), or its weights hold NaN. Distilling from "
    "them would turn every student weight into NaN while the logged loss looks normal, so no cache was written: fix "
    "the teacher (or drop these examples) and build the cache again."
)
LOADED_ADVICE = (
    "The file was damaged, or written by a teacher that produced such values (e.g. a float16 teacher overflowing). "
    "Distilling from them would turn every student weight into NaN while the logged loss looks normal: delete the "
    "folder and build the cache again (precompute_teacher_outputs(..., rebuild=True))."
)


def _listed(rows: Sequence[int], ids: Sequence[Any] | None) -> str:
    """``"3 example(s) (ids ['a', 'b', 'c'])"``: a few ids and a count, so that the message stays one line."""
    shown = [str(ids[r]) for r in rows[:SHOWN_IDS]] if ids is not None else list(rows[:SHOWN_IDS])
    more = f" and {len(rows) - SHOWN_IDS} more" if len(rows) > SHOWN_IDS else ""
    return f"{len(rows)} example(s) ({'ids' if ids is not None else 'rows'} {shown}{more})"


def _nonfinite_rows(values: Tensor, valid: Tensor | None = None, allow_neg_inf: bool = False) -> list[int]:
    """Indices along the first dimension of ``values`` whose entries hold NaN or ±inf (only NaN and ``+inf`` with
    ``allow_neg_inf``, for log-probabilities, where ``-inf`` is a probability of 0). ``valid`` (a boolean mask
    broadcastable to ``values``) restricts the check to the entries that mean something, e.g. not the NaN padding
    beyond a multi-task row's head width."""
    values = values.detach()
    if values.dim() == 0:
        values = values.reshape(1)
    if not values.is_floating_point():
        return []
    bad = (torch.isnan(values) | (values == float("inf"))) if allow_neg_inf else ~torch.isfinite(values)
    if valid is not None:
        bad &= valid.to(bad.device)
    return bad.reshape(bad.shape[0], -1).any(-1).nonzero().flatten().tolist()


def check_finite_logits(
    logits: Tensor,
    ids: Sequence[Any] | None = None,
    what: str = "teacher logits",
    *,
    valid: Tensor | None = None,
    allow_neg_inf: bool = False,
    advice: str | None = None,
) -> None:
    """Raise one ``ValueError`` naming the examples whose ``logits`` hold NaN or inf.

    One such value is enough to ruin a distillation run: it flows through the KL term into every student weight at the
    first optimizer step, and nothing fails. The check runs wherever teacher outputs enter a run (building, loading,
    constructing and attaching a cache; a live teacher's batch), so that the error names the examples and the cause.

    Args:
        logits: ``(N, ...)``; row ``i`` (first dimension) belongs to example ``ids[i]``.
        ids: the examples' ids, named in the error (without them, row positions are).
        what: what ``logits`` are, for the message (``"The {what} hold NaN or inf for ..."``).
        valid: boolean mask broadcastable to ``logits``: only these entries are checked.
        allow_neg_inf: accept ``-inf`` (log-probabilities); NaN and ``+inf`` are still refused.
        advice: the cause and the fix, appended to the message (default: a teacher overflowing in float16 or holding
            NaN weights, and what to do).
    """
    _refuse_nonfinite(_nonfinite_rows(logits, valid, allow_neg_inf), ids, what, allow_neg_inf, advice)


def _refuse_nonfinite(
    bad: Sequence[int], ids: Sequence[Any] | None, what: str, allow_neg_inf: bool, advice: str | None
) -> None:
    if bad:
        kinds = "NaN or +inf" if allow_neg_inf else "NaN or inf"
        raise ValueError(f"The {what} hold {kinds} for {_listed(bad, ids)}. {advice or TEACHER_FAULT_ADVICE}")


def _check_finite_outputs(
    ids: Sequence[str],
    kind: str,
    tensors: Mapping[str, Tensor],
    tasks: Mapping[str, int] | None,
    what: str,
    advice: str,
) -> None:
    """:func:`check_finite_logits` over a cache's tensors, per example: a classifier cache's logits (of a multi-task
    cache, only the columns of each row's head: the rest is NaN padding), a top-k cache's log-probabilities and rest
    mass (NaN and ``+inf`` only), each bad token mapped to its example through ``offsets``."""
    if kind == "topk":
        bad_tokens = _nonfinite_rows(tensors["topk_logprobs"], allow_neg_inf=True)
        bad_tokens += _nonfinite_rows(tensors["rest_logprob"], allow_neg_inf=True)
        if bad_tokens:
            offsets = tensors["offsets"].long()
            rows = torch.searchsorted(offsets, torch.tensor(bad_tokens, dtype=torch.long), right=True) - 1
            _refuse_nonfinite(rows.clamp(0, len(ids) - 1).unique().tolist(), ids, what, True, advice)
        return
    logits, valid = tensors["logits"], None
    if "task_ids" in tensors and tasks:
        widths = torch.tensor(list(tasks.values()), dtype=torch.long)
        valid = torch.arange(logits.shape[-1]) < widths[tensors["task_ids"].long()].unsqueeze(-1)
    check_finite_logits(logits, ids, what, valid=valid, advice=advice)
