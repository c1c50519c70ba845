"""Evaluation by label scoring: every evaluation post is classified by the log-likelihood of each label word as the
completion of its label-view prompt (one batched forward per post over its candidate labels, no free generation), and
reported as ``eval_accuracy``, ``eval_f1_macro``, ``eval_f1_<class>`` ... Also the student's own rationale-view
answers ("explanation + Label: X"), generated in batches (``generate_answers``), parsed with the parser of the
teacher's answers (:func:`parse_generated_answer`) and scored against the gold labels and the label-scoring
predictions (:func:`answer_metrics`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...metrics import classification_metrics
from .views import _is_view_dataset

__all__ = ["answer_metrics", "parse_generated_answer", "parse_student_output"]


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


def parse_generated_answer(
    output: str, class_names: Sequence[str], answer_prefix: str = "Label: "
) -> tuple[str, int]:
    """(rationale, label id) of a student's rationale-view generation; the label id is -1 when no class is named.

    The label is read by :func:`distil_trainers.teachers.rationales.parse_teacher_output`, the parser of the teacher's
    answers (the last ``Label:`` / ``Answer:`` line, case, markdown, quotes and punctuation ignored, longest class name
    first; a bare class name on the last line counts), so that the student's answers and the teacher's are read by
    the same rules. A custom ``answer_prefix`` line is read as a label line. The rationale is the text before the
    answer line (:func:`parse_student_output`)."""
    from ...teachers.rationales.prompts import parse_teacher_output

    names = [str(n) for n in class_names]
    label = parse_teacher_output(output, names).found_label_id
    key = answer_prefix.strip().lower()
    if label < 0 and key:
        lines = [
            f"Label: {line.strip()[len(key):]}" if line.strip().lower().startswith(key) else line
            for line in str(output or "").splitlines()
        ]
        label = parse_teacher_output("\n".join(lines), names).found_label_id
    rationale, _ = parse_student_output(str(output or ""), names, answer_prefix)
    return rationale, label


def answer_metrics(
    references: Sequence[int],
    generated: Sequence[int],
    scored: Sequence[int],
    class_names: Sequence[str],
) -> dict[str, float]:
    """Scores of the student's generated answers on the same posts as label scoring.

    Args:
        references: the gold label ids.
        generated: the label ids parsed from the generated answers (-1: no class named; counted as wrong).
        scored: the label-scoring predictions of the same posts.

    Returns:
        ``generated_posts``, ``generated_unparsed`` (answers naming no class), ``generated_accuracy``,
        ``generated_f1_macro`` (F1 of the generated label), ``generated_scoring_f1_macro`` (F1 of label scoring on the
        same posts) and ``agreement`` (the fraction of those posts where the generated label equals the scored one;
        an answer naming no class disagrees).
    """
    references, generated, scored = list(references), [int(g) for g in generated], [int(p) for p in scored]
    if not len(references) == len(generated) == len(scored):
        raise ValueError(
            f"answer_metrics needs as many references ({len(references)}), generated labels ({len(generated)}) and "
            f"scored labels ({len(scored)})."
        )
    if not references:
        raise ValueError("answer_metrics needs at least one post.")
    names = list(class_names)
    generated_scores = classification_metrics(references, generated, label_names=names)
    scoring_scores = classification_metrics(references, scored, label_names=names)
    return {
        "generated_posts": len(references),
        "generated_unparsed": sum(g < 0 for g in generated),
        "generated_accuracy": float(generated_scores["accuracy"]),
        "generated_f1_macro": float(generated_scores["f1_macro"]),
        "generated_scoring_f1_macro": float(scoring_scores["f1_macro"]),
        "agreement": sum(g == p for g, p in zip(generated, scored)) / len(references),
    }


class _LabelScoringMixin:
    """``evaluate`` with label-scoring metrics, ``predict_labels``, and ``generate_answers`` / ``explain``. A trainer
    provides ``_views_for`` (the views of posts), ``_candidate_batches`` (per text, the collated batch of its
    label-view prompt completed with each class name), ``_candidate_logits``, ``_generate_batch`` (greedy answers to
    the rationale-view prompts of a batch of texts) and ``_shift_labels``.

    After ``evaluate`` with label scoring, ``last_label_predictions`` holds the predicted class ids of the scored
    posts, in order (the first ``max_scoring_samples`` posts of the evaluation set)."""

    last_label_predictions: list[int] | None = None

    _shift_labels = True  # causal LM

    def _views_for(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """The views of posts, ready for the trainer's collator (a view dataset is passed through or tokenised)."""
        raise NotImplementedError

    def _candidate_batches(self, texts: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
        raise NotImplementedError

    def _candidate_logits(self, model, batch, labels) -> torch.Tensor:
        raise NotImplementedError

    def _generate_batch(self, model: nn.Module, texts: Sequence[str], max_new_tokens: int, **kwargs) -> list[str]:
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
            self.last_label_predictions = [int(p) for p in predictions]
            references = [int(x) for x in raw["label"][:]]
            scores = classification_metrics(references, predictions, label_names=self.class_names)
            extra = {f"{metric_key_prefix}_{k}": float(v) for k, v in scores.items()}
            metrics.update(extra)
            self.log(dict(extra))
        return metrics

    @torch.no_grad()
    def generate_answers(
        self,
        texts: Sequence[str],
        max_new_tokens: int = 128,
        batch_size: int = 8,
        show_progress: bool = True,
        **generate_kwargs,
    ) -> list[dict[str, Any]]:
        """The student's own answers to the rationale-view prompt ("explain, then give the label"): greedy generation
        in batches of ``batch_size`` (decoder-only students: left padding), each parsed with
        :func:`parse_generated_answer` into ``{"text", "rationale", "label", "label_name", "output"}`` (``label`` -1
        and ``label_name`` None when the answer names no class)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        texts = list(texts)
        model = self.model
        was_training = model.training
        model.eval()
        results = []
        try:
            starts = range(0, len(texts), batch_size)
            progress = tqdm(
                starts,
                desc="Generating answers",
                unit="batch",
                disable=not show_progress or not self.is_world_process_zero(),
            )
            for start in progress:
                chunk = texts[start : start + batch_size]
                outputs = self._generate_batch(model, chunk, max_new_tokens, **generate_kwargs)
                for text, output in zip(chunk, outputs):
                    rationale, label = parse_generated_answer(output, self.class_names, self.args.answer_prefix)
                    label_name = self.class_names[label] if label >= 0 else None
                    results.append(
                        {
                            "text": text,
                            "rationale": rationale,
                            "label": label,
                            "label_name": label_name,
                            "output": output,
                        }
                    )
        finally:
            model.train(was_training)
        return results

    def explain(
        self, texts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 8, **generate_kwargs
    ) -> list[dict[str, Any]]:
        """:meth:`generate_answers` for a few texts, without a progress bar: ``[{"text", "rationale", "label",
        "label_name", "output"}]`` (``label`` = -1 when the answer names no class)."""
        return self.generate_answers(
            texts, max_new_tokens=max_new_tokens, batch_size=batch_size, show_progress=False, **generate_kwargs
        )

    def generate_rationales_with_student(self, texts: Sequence[str], **kwargs) -> list[dict[str, Any]]:
        """Alias of :meth:`explain`."""
        return self.explain(texts, **kwargs)

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
