"""Rationale distillation for encoder-decoder students (T5 family): :class:`RationaleSeq2SeqTrainer`, a
``Seq2SeqTrainer`` on the task-prefixed views of Distilling step-by-step (``[label]`` / ``[rationale]``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import torch
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer

from ..._sequences import common_prefix_length
from ...hub import HubMixin
from ..citations import PIOT_CITATION, STEP_BY_STEP_CITATION
from .common import _RationaleTrainerMixin
from .config import RationaleSeq2SeqConfig
from .loss import LABEL_VIEW, RATIONALE_VIEW
from .views import (
    VIEW_COLUMN,
    _class_names,
    _is_view_dataset,
    build_rationale_views,
    view_prompt,
)

__all__ = ["RationaleSeq2SeqTrainer"]


class _Seq2SeqViewCollator:
    """Pads encoder inputs and labels (``DataCollatorForSeq2Seq``, labels padded with -100, decoder inputs built by
    the model) and adds the ``view`` column."""

    def __init__(self, tokenizer, model):
        self.inner = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        views = [int(ex.get(VIEW_COLUMN, LABEL_VIEW)) for ex in examples]
        keep = ("input_ids", "attention_mask", "labels")
        batch = self.inner([{k: ex[k] for k in keep if k in ex} for ex in examples])
        batch[VIEW_COLUMN] = torch.tensor(views, dtype=torch.long)
        return batch


class RationaleSeq2SeqTrainer(_RationaleTrainerMixin, HubMixin, Seq2SeqTrainer):
    """Rationale distillation for encoder-decoder students (T5 family), as in Distilling step-by-step: inputs
    ``"[label] <post>"`` -> label word and ``"[rationale] <post>"`` -> rationale + ``Label: <label>``; same views,
    same alpha-weighted per-view token loss, same label scoring as :class:`RationaleSFTTrainer`."""

    _tag_names = ["distil-trainers", "rationale-distillation", "seq2seq"]
    _name = "Rationale distillation"
    _paper = {
        "title": "Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data and Smaller "
        "Model Sizes",
        "id": "2305.02301",
        "citation": f"{STEP_BY_STEP_CITATION}\n\n{PIOT_CITATION}",
    }
    _shift_labels = False

    def __init__(
        self,
        model,
        args: RationaleSeq2SeqConfig | None = None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | None = None,
        processing_class=None,
        class_names: Sequence[str] | None = None,
        **kwargs,
    ):
        self._check_inputs(args, RationaleSeq2SeqConfig, processing_class, train_dataset)
        if args.teacher_kd_weight > 0 or kwargs.get("teacher_outputs") is not None:
            raise ValueError(
                "Token-level distillation from a top-k teacher cache (teacher_kd_weight, teacher_outputs) is available "
                "in RationaleSFTTrainer (decoder-only students) only."
            )
        kwargs.pop("teacher_outputs", None)
        if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
            raise ValueError("RationaleSeq2SeqTrainer needs an encoder-decoder student; use RationaleSFTTrainer.")
        self.class_names = _class_names(args, train_dataset, class_names)
        self._tok = processing_class
        self._seq2seq_args = args
        train_views, eval_views = self._training_views(train_dataset, eval_dataset, self._views_for)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_views,
            eval_dataset=eval_views,
            processing_class=processing_class,
            data_collator=kwargs.pop("data_collator", None) or _Seq2SeqViewCollator(processing_class, model),
            **kwargs,
        )
        self._init_rationale_state()

    def _tokenize_rows(
        self, prompts: Sequence[str], targets: Sequence[str], views: Sequence[int] | None = None
    ) -> dict[str, list]:
        """Encoder inputs and targets, cut to ``max_source_length`` / ``max_target_length``; a rationale-view target
        longer than ``max_target_length`` is cut inside its rationale so that its answer line and EOS survive."""
        args = self._seq2seq_args
        enc = self._tok(list(prompts), truncation=True, max_length=args.max_source_length)
        labels = self._tok(text_target=list(targets), truncation=True, max_length=args.max_target_length)["input_ids"]
        limit, marker = args.max_target_length, "\n" + args.answer_prefix
        for i, view in enumerate(views or []):
            cut = targets[i].rfind(marker) if args.answer_prefix else -1
            if view != RATIONALE_VIEW or cut < 0:
                continue
            ids = self._tok(text_target=targets[i])["input_ids"]
            if len(ids) <= limit:
                continue
            answer = common_prefix_length(self._tok(text_target=targets[i][:cut])["input_ids"], ids)
            room = limit - (len(ids) - answer)
            if room >= 0:
                labels[i] = ids[:room] + ids[answer:]
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    def _views_for(self, dataset: datasets.Dataset) -> datasets.Dataset:
        args = self._seq2seq_args
        if _is_view_dataset(dataset):
            return dataset
        views = build_rationale_views(dataset, args, self.class_names, conversational=False)
        prompts = [p.rstrip("\n") for p in views["prompt"][:]]
        tokens = self._tokenize_rows(prompts, views["completion"][:], views[VIEW_COLUMN][:])
        return datasets.Dataset.from_dict({**tokens, VIEW_COLUMN: views[VIEW_COLUMN][:], "id": views["id"][:]})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        view = inputs.pop(VIEW_COLUMN)
        labels = inputs.pop("labels")
        if "decoder_input_ids" not in inputs:
            inputs["decoder_input_ids"] = self.accelerator.unwrap_model(model).prepare_decoder_input_ids_from_labels(
                labels=labels
            )
        outputs = model(**inputs, use_cache=False)
        loss = self._view_loss(outputs.logits, labels, view, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, dict(inputs))
        return loss.detach(), None, None

    def _candidate_batches(self, texts: Sequence[str]):
        for text in texts:
            prompt = view_prompt(self.args, text, LABEL_VIEW, self.class_names)
            tokens = self._tokenize_rows([prompt] * len(self.class_names), list(self.class_names))
            rows = [{k: tokens[k][c] for k in tokens} for c in range(len(self.class_names))]
            yield self.data_collator.inner(rows)

    def _candidate_logits(self, model, batch, labels):
        batch = dict(batch)
        batch.pop("decoder_input_ids", None)
        decoder_input_ids = self.accelerator.unwrap_model(model).prepare_decoder_input_ids_from_labels(labels=labels)
        return model(**batch, decoder_input_ids=decoder_input_ids, use_cache=False).logits

    @torch.no_grad()
    def _generate_batch(self, model, texts: Sequence[str], max_new_tokens: int, **generate_kwargs) -> list[str]:
        """Greedy answers to ``"[rationale] <post>"`` for a batch of texts."""
        prompts = [view_prompt(self.args, text, RATIONALE_VIEW, self.class_names) for text in texts]
        enc = self._tok(
            prompts, return_tensors="pt", padding=True, truncation=True, max_length=self.args.max_source_length
        )
        device = model.get_input_embeddings().weight.device
        enc = {k: v.to(device) for k, v in enc.items()}
        generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
        return [self._tok.decode(row, skip_special_tokens=True) for row in generated]
