"""What both rationale trainers share: their input checks, view-aware token counting over the whole optimizer step,
the alpha-weighted per-view loss (plus the top-k teacher term when a cache is attached), per-view loss logging, and
the BibTeX of the papers their model cards cite."""

from __future__ import annotations

from collections.abc import Callable

import datasets
import torch

from ...teachers.cache import CACHE_ROW_COLUMN, TeacherOutputs
from ..arguments import refuse_data_parallel
from .evaluation import _LabelScoringMixin
from .loss import LABEL_VIEW, RATIONALE_VIEW, alpha_weighted_view_mean, rationale_multitask_loss
from .views import VIEW_COLUMN, _is_view_dataset


class _RationaleTrainerMixin(_LabelScoringMixin):
    """View-aware token counting, the alpha-weighted loss, per-view loss logging and label scoring at evaluation."""

    _shift_labels = True  # causal LM

    # ---- set-up --------------------------------------------------------------------------------------------------

    def _check_inputs(self, args, config_class: type, processing_class, train_dataset, data_collator=None) -> None:
        """The errors both trainers raise before anything is built (``data_collator``: one the trainer refuses)."""
        name = type(self).__name__
        if args is None or not isinstance(args, config_class):
            raise TypeError(f"{name} needs `args`, a {config_class.__name__}.")
        refuse_data_parallel(args, name)
        if data_collator is not None:
            raise ValueError(f"{name} builds its own collator (it must carry the `view` column).")
        if processing_class is None:
            raise ValueError(f"{name} needs the student's tokenizer as `processing_class`.")
        if train_dataset is None:
            raise ValueError(f"{name} needs a `train_dataset` (the teacher-annotated posts).")

    def _training_views(self, train_dataset, eval_dataset, views_of: Callable[[datasets.Dataset], datasets.Dataset]):
        """The views of the training and evaluation sets (``views_of`` builds them from posts, and passes view datasets
        through); a raw evaluation set is also kept for label scoring."""
        self._raw_eval_dataset = None
        train_views, eval_views = views_of(train_dataset), eval_dataset
        if isinstance(eval_dataset, datasets.Dataset) and not _is_view_dataset(eval_dataset):
            self._raw_eval_dataset = eval_dataset
            eval_views = views_of(eval_dataset)
        return train_views, eval_views

    def _init_rationale_state(self) -> None:
        self._view_token_counts: torch.Tensor | None = None
        # summed token losses and token counts of each view, then the summed KD terms of each view
        self._view_logs = {mode: torch.zeros(6, dtype=torch.float64) for mode in ("train", "eval")}
        self.teacher_cache: TeacherOutputs | None = None
        # compute_loss normalises by num_items_in_batch itself: Trainer must count the items and not divide again
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            extra = [VIEW_COLUMN] + ([CACHE_ROW_COLUMN] if getattr(self, "teacher_cache", None) is not None else [])
            extra = [c for c in extra if c not in self._signature_columns]
            self._signature_columns = [*self._signature_columns, *extra]

    # ---- token counts over the whole optimizer step ----------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(2, dtype=torch.long, device=device)  # counted where the batches are: no host copy
        for batch in batch_samples:
            labels = batch["labels"][..., 1:] if self._shift_labels else batch["labels"]
            valid = labels.ne(-100).to(device)
            view = batch[VIEW_COLUMN].to(device).reshape(-1, *([1] * (valid.dim() - 1)))
            counts[0] += (valid & (view == LABEL_VIEW)).sum()
            counts[1] += (valid & (view == RATIONALE_VIEW)).sum()
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        self._view_token_counts = counts
        return batch_samples, num_items_in_batch

    # ---- loss ------------------------------------------------------------------------------------------------------

    def _view_loss(self, logits, labels, view, num_items_in_batch, cache_rows=None) -> torch.Tensor:
        mode = "train" if self.model.training else "eval"
        counts = self._view_token_counts if (num_items_in_batch is not None and mode == "train") else None
        alpha = self.args.alpha
        out = rationale_multitask_loss(
            logits,
            labels,
            view,
            alpha=alpha,
            num_label_tokens=None if counts is None else counts[0],
            num_rationale_tokens=None if counts is None else counts[1],
            shift=self._shift_labels,
        )
        loss = out["loss"]
        zero = torch.zeros((), dtype=out["sum_label"].dtype, device=out["sum_label"].device)
        kd_label, kd_rationale = zero, zero
        weight = self.args.teacher_kd_weight
        if weight > 0:
            kd_label, kd_rationale = self._teacher_kd_sums(logits, labels, view, cache_rows)
            # the denominators of the cross-entropy: this optimizer step's completion tokens of each view
            n_label = out["count_label"] if counts is None else counts[0]
            n_rationale = out["count_rationale"] if counts is None else counts[1]
            kd = alpha_weighted_view_mean(kd_label, kd_rationale, n_label, n_rationale, alpha)
            loss = (1 - weight) * loss + weight * kd
        if counts is not None and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the counts cover every rank
        parts = torch.stack(
            [
                out["sum_label"],
                out["count_label"],
                out["sum_rationale"],
                out["count_rationale"],
                kd_label.detach(),
                kd_rationale.detach(),
            ]
        ).double()
        # kept on the device and added over the processes at the next log (every process logs)
        self._view_logs[mode] = self._view_logs[mode].to(parts.device) + parts
        return loss

    def _pop_view_logs(self, mode: str) -> dict[str, float]:
        totals = self._view_logs[mode].to(self.args.device)
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        sum_l, n_l, sum_r, n_r, kd_l, kd_r = totals.tolist()
        self._view_logs[mode] = torch.zeros(6, dtype=torch.float64)
        out = {}
        if n_l > 0:
            out["loss_label"] = sum_l / n_l
        if n_r > 0:
            out["loss_rationale"] = sum_r / n_r
        if self.args.teacher_kd_weight > 0 and n_l + n_r > 0:
            alpha = self.args.alpha
            out["loss_teacher_kd"] = alpha * (kd_l / n_l if n_l else 0.0) + (1 - alpha) * (kd_r / n_r if n_r else 0.0)
        return out

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        mode = "train" if self.model.training else "eval"
        extra = self._pop_view_logs(mode)
        if mode == "eval":
            extra = {f"eval_{k}": v for k, v in extra.items()}
        logs.update(extra)
        super().log(logs, *args, **kwargs)
