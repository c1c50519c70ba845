"""Evaluation by label scoring: every evaluation post is classified by the log-likelihood of each label word as the
completion of its label-view prompt (one batched forward per post over its candidate labels, no free generation), and
reported as ``eval_accuracy``, ``eval_f1_macro``, ``eval_f1_<class>`` ... Also the parsing of the student's own
rationale-view generations (:func:`parse_student_output`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...metrics import classification_metrics
from .views import _is_view_dataset

__all__ = ["parse_student_output"]


def parse_student_output(output: str, class_names: Sequence[str], answer_prefix: str = "Label: ") -> tuple[str, int]:
    """Split a rationale-view generation into (rationale, label id); the label id is -1 when no class name is found
    on the last ``answer_prefix`` line (or, failing that, anywhere in the last line)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    prefix = answer_prefix.strip().lower()
    answer_index = next(
        (k for k in range(len(lines) - 1, -1, -1) if lines[k].strip().lower().startswith(prefix)), None
    )
    if answer_index is None:
        answer, rationale = (lines[-1] if lines else ""), "\n".join(lines[:-1])
    else:
        answer, rationale = lines[answer_index].strip()[len(prefix) :], "\n".join(lines[:answer_index])
    answer = answer.strip().lower()
    # longest names first so that "not-hate" is not read as "hate"
    for cid in sorted(range(len(class_names)), key=lambda c: -len(class_names[c])):
        if re.search(rf"(?<![\w-]){re.escape(class_names[cid].lower())}(?![\w-])", answer):
            return rationale.strip(), cid
    return rationale.strip(), -1


class _LabelScoringMixin:
    """``evaluate`` with label-scoring metrics, ``predict_labels`` and the loop of ``explain``. A trainer provides
    ``_views_for`` (the views of posts), ``_candidate_batches`` (per text, the collated batch of its label-view
    prompt completed with each class name), ``_candidate_logits`` and ``_shift_labels``."""

    _shift_labels = True  # causal LM

    def _views_for(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """The views of posts, ready for the trainer's collator (a view dataset is passed through or tokenised)."""
        raise NotImplementedError

    def _candidate_batches(self, texts: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
        raise NotImplementedError

    def _candidate_logits(self, model, batch, labels) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        raw = self._raw_eval_dataset
        if isinstance(eval_dataset, datasets.Dataset):
            if not _is_view_dataset(eval_dataset):  # posts: scored, and turned into views
                raw = eval_dataset
            eval_dataset = self._views_for(eval_dataset)
        metrics = super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        # `metric_key_prefix`'s per-view losses were logged (log() adds them to the same dict)
        if self.args.label_scoring and raw is not None and "label" in raw.column_names:
            if self.args.max_scoring_samples is not None:
                raw = raw.select(range(min(len(raw), self.args.max_scoring_samples)))
            predictions = self.predict_labels(raw["text"][:])
            references = [int(x) for x in raw["label"][:]]
            scores = classification_metrics(references, predictions, label_names=self.class_names)
            extra = {f"{metric_key_prefix}_{k}": float(v) for k, v in scores.items()}
            metrics.update(extra)
            self.log(dict(extra))
        return metrics

    def _explain_each(self, texts: Sequence[str], generate: Callable[[nn.Module, str], str]) -> list[dict[str, Any]]:
        """``generate(model, text) -> output`` for every text with the model in eval mode, parsed into
        ``{"text", "rationale", "label", "label_name", "output"}``."""
        model = self.model
        was_training = model.training
        model.eval()
        results = []
        try:
            for text in texts:
                output = generate(model, text)
                rationale, label = parse_student_output(output, self.class_names, self.args.answer_prefix)
                label_name = self.class_names[label] if label >= 0 else None
                results.append(
                    {"text": text, "rationale": rationale, "label": label, "label_name": label_name, "output": output}
                )
        finally:
            model.train(was_training)
        return results

    @torch.no_grad()
    def predict_labels(self, texts: Sequence[str], return_scores: bool = False, show_progress: bool = True):
        """Class ids of ``texts``: for each text, the class whose word has the highest log-likelihood (summed over its
        completion tokens) as the completion of the label-view prompt. One forward per text over all candidates.
        With ``return_scores``, also the ``(len(texts), num_classes)`` log-likelihoods."""
        model = self.model
        was_training = model.training
        model.eval()
        scores = np.full((len(texts), len(self.class_names)), -np.inf)
        try:
            batches = self._candidate_batches(texts)
            for i, batch in enumerate(
                tqdm(
                    batches,
                    total=len(texts),
                    desc="Scoring labels",
                    disable=not show_progress or not self.is_world_process_zero(),
                )
            ):
                batch = {k: v.to(self.args.device) for k, v in batch.items()}
                labels = batch.pop("labels")
                logits = self._candidate_logits(model, batch, labels)
                if self._shift_labels:
                    logits, labels = logits[:, :-1], labels[:, 1:]
                logp = torch.log_softmax(logits.float(), dim=-1)
                valid = labels.ne(-100)
                token_logp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
                scores[i] = token_logp.sum(-1).cpu().numpy()
        finally:
            model.train(was_training)
        predictions = scores.argmax(-1)
        return (predictions, scores) if return_scores else predictions
