"""Token-level distillation from a cache of the teacher's top-k next-token log-probabilities (decoder-only students
sharing the teacher's tokenizer): the cache is checked against the arguments, the student and the tokenised views
before training, every view row finds its entry by id (a ``cache_row`` column), and the KD term is
``T^2 * KL(teacher || student)`` summed over each view's completion tokens
(:func:`distil_trainers.losses.topk_kl_per_item`)."""

from __future__ import annotations

import logging
from typing import Any

import datasets
import torch
from torch import nn

from ...losses import topk_kl_per_item
from ...teachers.cache import CACHE_ROW_COLUMN, TeacherOutputs, resolve_teacher_outputs
from .config import RationaleArguments
from .loss import LABEL_VIEW, RATIONALE_VIEW
from .views import _view_row_ids

logger = logging.getLogger(__name__)


def _resolve_topk_cache(teacher_outputs, args: RationaleArguments) -> TeacherOutputs | None:
    """The top-k cache, checked against the arguments (kind, temperature) before anything is built."""
    if teacher_outputs is None:
        if args.teacher_kd_weight > 0:
            raise ValueError(
                f"teacher_kd_weight = {args.teacher_kd_weight} needs `teacher_outputs`: a top-k teacher cache built "
                "with precompute_topk_logprobs over training_views(posts, args, tokenizer)."
            )
        return None
    cache = resolve_teacher_outputs(teacher_outputs, kind="topk")
    cached = cache.meta.get("temperature")
    if cached is None or float(cached) != float(args.teacher_kd_temperature):
        raise ValueError(
            f"teacher_kd_temperature = {args.teacher_kd_temperature} but the teacher cache was built with temperature "
            f"{cached}: set teacher_kd_temperature={cached} or rebuild the cache with "
            f"precompute_topk_logprobs(..., temperature={args.teacher_kd_temperature})."
        )
    return cache


def _output_vocab_size(model: nn.Module) -> int:
    """Width of the student's logits."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if getattr(head, "out_features", None) is not None:
        return int(head.out_features)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.vocab_size)


class _TopKCacheMixin:
    """The top-k teacher cache of a trainer (``self.teacher_cache``): attached to its view datasets, and read by
    ``_teacher_kd_sums``."""

    def _attach_teacher_cache(self, cache: TeacherOutputs) -> None:
        """Check the cache against the student and the prepared views, and give every view dataset the cache-row
        column (each view row's entry, looked up by its id)."""
        vocab = _output_vocab_size(self.accelerator.unwrap_model(self.model))
        cached_vocab = cache.meta.get("vocab_size")
        top_index = int(cache.tensors["topk_indices"].max()) if cache.tensors["topk_indices"].numel() else -1
        if (cached_vocab is not None and int(cached_vocab) != vocab) or top_index >= vocab:
            found = f"a vocabulary of {cached_vocab}" if cached_vocab is not None else f"token id {top_index}"
            raise ValueError(
                f"The teacher cache was built by a teacher with {found} but the student's vocabulary has {vocab} "
                "tokens. Token-level distillation needs a teacher that shares the student's tokenizer (e.g. a 70B "
                "and an 8B model of the same family)."
            )
        self.teacher_cache = cache
        self._signature_columns = None  # recomputed with the cache-row column
        self.train_dataset = self._with_cache_rows(self.train_dataset, "train views")
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {
                k: self._with_cache_rows(v, f"eval views {k!r}") for k, v in self.eval_dataset.items()
            }
        elif self.eval_dataset is not None:
            self.eval_dataset = self._with_cache_rows(self.eval_dataset, "eval views")
        if self.args.teacher_kd_weight == 0:
            logger.warning("teacher_outputs is given but teacher_kd_weight = 0: the teacher cache is not used.")

    def _with_cache_rows(self, dataset: Any, what: str) -> Any:
        if not isinstance(dataset, datasets.Dataset):
            raise ValueError(
                f"With teacher_outputs the {what} must be a datasets.Dataset, got {type(dataset).__name__}."
            )
        cache = self.teacher_cache
        ids = _view_row_ids(dataset, what)
        known = set(cache.ids)
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(
                f"The teacher cache has no entry for {len(missing)} of the {len(ids)} {what} rows (ids "
                f"{missing[:5]}{'…' if len(missing) > 5 else ''}). Build the views with training_views(posts, args, "
                "tokenizer), for the train and the eval posts, with the student's arguments, and precompute the cache "
                "over them: precompute_topk_logprobs(teacher, {'train': ..., 'eval': ...}, ...)."
            )
        rows = cache.rows(ids, what)
        cache.check_contents(dataset, what, rows=rows)  # a cache of other views under the same ids is refused
        offsets = cache.tensors["offsets"]
        cached = (offsets[1:] - offsets[:-1])[torch.as_tensor(rows, dtype=torch.long)].tolist()
        tokens = [sum(1 for t in row[1:] if t != -100) for row in dataset["labels"][:]]
        wrong = [(i, n, c) for i, n, c in zip(ids, tokens, cached) if n != c]
        if wrong:
            detail = ", ".join(f"{i!r}: {n} vs {c}" for i, n, c in wrong[:3])
            raise ValueError(
                f"{len(wrong)} {what} rows have a different number of completion tokens than their teacher-cache entry "
                f"({detail}; student vs cache). The cache must be built over the views tokenised with the student's "
                "tokenizer and these very arguments (training_views(posts, args, tokenizer))."
            )
        if CACHE_ROW_COLUMN in dataset.column_names:
            dataset = dataset.remove_columns(CACHE_ROW_COLUMN)
        return dataset.add_column(CACHE_ROW_COLUMN, rows)

    def get_eval_dataloader(self, eval_dataset=None):
        # a dataset given to evaluate() (tokenised there) gets its cache rows here
        if (
            self.teacher_cache is not None
            and isinstance(eval_dataset, datasets.Dataset)
            and CACHE_ROW_COLUMN not in eval_dataset.column_names
        ):
            eval_dataset = self._with_cache_rows(eval_dataset, "eval views")
        return super().get_eval_dataloader(eval_dataset)

    def _teacher_kd_sums(self, logits, labels, view, cache_rows) -> tuple[torch.Tensor, torch.Tensor]:
        """``T^2 * KL(teacher || student)`` from the top-k cache, summed over the completion tokens of the label views
        and of the rationale views of the batch."""
        if self.teacher_cache is None or cache_rows is None:
            raise ValueError(
                "teacher_kd_weight > 0 needs the teacher's top-k cache: pass `teacher_outputs` to the trainer (and "
                f"keep the `{CACHE_ROW_COLUMN}` column the trainer adds to its datasets)."
            )
        if self._shift_labels:  # the entry of token t is predicted by the logits at t - 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        valid = labels.ne(-100)
        entries = self.teacher_cache.topk_at(cache_rows.tolist())
        for b, (entry, n) in enumerate(zip(entries, valid.sum(1).tolist())):
            if entry["rest_logprob"].shape[0] != n:
                raise ValueError(
                    f"Row {b} of the batch has {n} completion tokens but its teacher-cache entry holds "
                    f"{entry['rest_logprob'].shape[0]}: the cache was built over differently tokenised views."
                )
        device = logits.device
        stacked = {k: torch.cat([e[k] for e in entries]).to(device) for k in entries[0]}
        per_token = topk_kl_per_item(
            logits[valid],  # row by row, positions in order: the order of the cached entries
            stacked["topk_logprobs"],
            stacked["topk_indices"],
            stacked["rest_logprob"],
            temperature=self.args.teacher_kd_temperature,
        )
        token_view = view.to(device).unsqueeze(1).expand_as(valid)[valid]
        zero = per_token.new_zeros(())
        kd_label = torch.where(token_view == LABEL_VIEW, per_token, zero).sum()
        kd_rationale = torch.where(token_view == RATIONALE_VIEW, per_token, zero).sum()
        return kd_label, kd_rationale
