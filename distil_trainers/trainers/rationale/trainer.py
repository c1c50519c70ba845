"""Rationale distillation for decoder-only students: :class:`RationaleSFTTrainer`, a ``trl.SFTTrainer`` trained on
the label and rationale views of teacher-annotated posts (QLoRA via ``quantization_config`` + ``peft_config``),
optionally with token-level distillation from a top-k teacher cache."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import datasets
import torch
from torch import nn
from trl import SFTTrainer

from ...hub import HubMixin
from ...teachers.cache import CACHE_ROW_COLUMN, TeacherOutputs
from ..citations import PIOT_CITATION, STEP_BY_STEP_CITATION
from .common import _RationaleTrainerMixin
from .config import RationaleSFTConfig
from .loss import LABEL_VIEW, RATIONALE_VIEW
from .teacher_kd import _resolve_topk_cache, _TopKCacheMixin
from .views import (
    VIEW_COLUMN,
    _class_names,
    _is_view_dataset,
    build_rationale_views,
    label_view_classifier_prompt,
    tokenize_views,
    view_prompt,
)

logger = logging.getLogger(__name__)

__all__ = ["RationaleSFTTrainer", "disable_avx512_bf16_repacking"]


# --------------------------------------------------------------------------------------------------------------------
# QLoRA on CPU
# --------------------------------------------------------------------------------------------------------------------


def disable_avx512_bf16_repacking(model: nn.Module) -> int:
    """Set ``support_avx512bf16_for_cpu = False`` on every ``bitsandbytes.nn.Linear4bit`` of ``model``.

    With bitsandbytes 0.50 on CPUs with avx512_bf16, the first eval-mode / no-grad forward repacks the 4-bit weights,
    after which LoRA gradients are missing or wrong. Returns the number of modules changed (0 without bitsandbytes)."""
    try:
        import bitsandbytes as bnb
    except Exception:  # noqa: BLE001 - not installed or not loadable: no 4-bit layers either
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def _is_4bit(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False)) or any(
        type(m).__name__ == "Linear4bit" for m in model.modules()
    )


class _ViewCollator:
    """Wraps TRL's language-modeling collator and adds the ``view`` column (and the teacher-cache rows, when the
    dataset has them) as tensors."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        extra = [c for c in (VIEW_COLUMN, CACHE_ROW_COLUMN) if c in examples[0]]
        batch = self.inner([{k: v for k, v in ex.items() if k not in extra} for ex in examples])
        for column in extra:
            batch[column] = torch.tensor([int(ex[column]) for ex in examples], dtype=torch.long)
        return batch


class RationaleSFTTrainer(_TopKCacheMixin, _RationaleTrainerMixin, HubMixin, SFTTrainer):
    """Multi-task rationale distillation for decoder-only students (a [`~trl.SFTTrainer`]).

    ``train_dataset`` / ``eval_dataset`` are teacher-annotated datasets (the output of
    ``distil_trainers.teachers.rationales.generate_rationales``: ``text``, ``label``, ``teacher_label``, ``rationale``,
    ``parsed``, ...); they are turned into label and rationale views (:func:`build_rationale_views`) and tokenised as
    TRL tokenises prompt-completion data (:func:`tokenize_views`; chat template when the tokenizer has one), before
    ``SFTTrainer`` sees them. Everything else is ``SFTTrainer``'s: ``model`` may be a path with
    ``args.model_init_kwargs``, ``quantization_config`` (a ``transformers.BitsAndBytesConfig``, e.g. nf4 + double
    quantization) and ``peft_config`` (a ``peft.LoraConfig``) give QLoRA. On CPU the 4-bit layers get the avx512_bf16 work-around and LoRA weights stay in float32.

    ``teacher_outputs`` (a top-k :class:`~distil_trainers.teachers.cache.TeacherOutputs` or its directory, built with
    ``precompute_topk_logprobs`` over :func:`training_views` by a teacher with the student's tokenizer) adds the
    token-level distillation term weighted by ``args.teacher_kd_weight``. Its rows are found by view-row id, never by
    position; every train and eval view row needs one, with as many completion tokens as the student's row, token ids
    inside the student's vocabulary and the temperature ``args.teacher_kd_temperature`` (all checked here, before
    training).

    Logged: ``loss``, ``loss_label``, ``loss_rationale`` (per-token means of each view), ``loss_teacher_kd`` (with a
    teacher cache: ``alpha * KD_label + (1 - alpha) * KD_rationale``, per-token means), and at evaluation
    ``eval_loss*`` plus label-scoring metrics ``eval_accuracy``, ``eval_f1_macro``, ``eval_f1_<class>``...

    Example::

        args = RationaleSFTConfig(output_dir="out", alpha=0.5, class_names=["hate", "offensive", "neither"])
        trainer = RationaleSFTTrainer(model=student, args=args, train_dataset=rationales["train"],
                                      eval_dataset=rationales["validation"], processing_class=tokenizer,
                                      peft_config=LoraConfig(r=16, target_modules="all-linear"))
        trainer.train()
        trainer.evaluate()          # eval_loss_label, eval_loss_rationale, eval_f1_macro, ...
        trainer.explain(["some post"])
    """

    _tag_names = ["distil-trainers", "rationale-distillation", "trl", "sft"]
    _name = "Rationale distillation"
    _paper = {
        "title": "Towards Efficient and Explainable Hate Speech Detection via Model Distillation",
        "id": "2412.13698",
        "citation": f"{PIOT_CITATION}\n\n{STEP_BY_STEP_CITATION}",
    }
    _shift_labels = True

    def __init__(
        self,
        model,
        args: RationaleSFTConfig | None = None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | None = None,
        processing_class=None,
        class_names: Sequence[str] | None = None,
        teacher_outputs: TeacherOutputs | str | os.PathLike | None = None,
        **kwargs,
    ):
        self._check_inputs(args, RationaleSFTConfig, processing_class, train_dataset, kwargs.get("data_collator"))
        cache = _resolve_topk_cache(teacher_outputs, args)
        self.class_names = _class_names(args, train_dataset, class_names)
        self._conversational = getattr(processing_class, "chat_template", None) is not None
        train_views, eval_views = self._training_views(
            train_dataset, eval_dataset, lambda ds: self._views_for(ds, args, processing_class)
        )
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_views,
            eval_dataset=eval_views,
            processing_class=processing_class,
            **kwargs,
        )
        self.data_collator = _ViewCollator(self.data_collator)
        self._init_rationale_state()
        if cache is not None:
            self._attach_teacher_cache(cache)
        if _is_4bit(self.model):
            n = disable_avx512_bf16_repacking(self.model)
            logger.info("4-bit student: avx512_bf16 repacking disabled on %d Linear4bit layers", n)
            if not torch.cuda.is_available():
                # TRL casts the adapter weights of quantized models to bfloat16; on CPU train them in float32
                for param in self.model.parameters():
                    if param.requires_grad and param.dtype != torch.float32:
                        param.data = param.data.float()

    def _views_for(self, dataset: datasets.Dataset, args=None, processing_class=None) -> datasets.Dataset:
        """The tokenised views of posts (a view dataset is only tokenised), unless preparation is skipped."""
        args = args or self.args
        views = dataset
        if not _is_view_dataset(dataset):
            views = build_rationale_views(dataset, args, self.class_names, conversational=self._conversational)
        if args.dataset_kwargs and args.dataset_kwargs.get("skip_prepare_dataset", False):
            return views
        tokenized = tokenize_views(views, args, processing_class or self.processing_class)
        if len(views) and not len(tokenized):
            raise ValueError(
                f"No view keeps a completion token within max_length={args.max_length} "
                f"(truncation_mode={args.truncation_mode!r}): raise max_length."
            )
        return tokenized

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        view = inputs.pop(VIEW_COLUMN)
        labels = inputs.pop("labels")
        cache_rows = inputs.pop(CACHE_ROW_COLUMN, None)
        outputs = model(**inputs, use_cache=False)
        loss = self._view_loss(outputs.logits, labels, view, num_items_in_batch, cache_rows)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, dict(inputs))
        return loss.detach(), None, None

    # ---- saving: the model, and the question its label view asks -------------------------------------------------

    def classifier_prompt(self):
        """The label view as a :class:`~distil_trainers.teachers.SavedClassifierPrompt`
        (:func:`~distil_trainers.trainers.rationale.views.label_view_classifier_prompt`)."""
        return label_view_classifier_prompt(self.args, self.class_names, self._conversational)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save as ``SFTTrainer`` does, plus ``classifier_prompt.json``: the saved student (or checkpoint) can then be
        read as a classifier teacher by :class:`~distil_trainers.teachers.LLMClassifier` with its own label prompt."""
        super()._save(output_dir, state_dict=state_dict)
        self.classifier_prompt().save(output_dir if output_dir is not None else self.args.output_dir)

    # ---- label scoring and generation ----------------------------------------------------------------------------

    def _candidate_batches(self, texts: Sequence[str]):
        """For every text, the collated batch of its label-view prompt completed with each class name, tokenised as
        the training views are (:func:`tokenize_views`, done once for all texts)."""
        num_classes = len(self.class_names)
        rows: dict[str, list] = {"prompt": [], "completion": [], "example": [], "candidate": []}
        for i, text in enumerate(texts):
            prompt = view_prompt(self.args, text, LABEL_VIEW, self.class_names)
            for c, name in enumerate(self.class_names):
                if self._conversational:
                    rows["prompt"].append([{"role": "user", "content": prompt}])
                    rows["completion"].append([{"role": "assistant", "content": name}])
                else:
                    rows["prompt"].append(prompt + "\n")
                    rows["completion"].append(name)
                rows["example"].append(i)
                rows["candidate"].append(c)
        prepared = tokenize_views(datasets.Dataset.from_dict(rows), self.args, self.processing_class, "scoring")
        prepared = prepared.select_columns(["example", "candidate", "input_ids", "labels"])
        if len(prepared) != len(rows["prompt"]):
            raise ValueError(
                f"Some label-view prompts do not fit max_length={self.args.max_length}; raise max_length to score labels."
            )
        prepared = prepared.sort(["example", "candidate"])
        for i in range(len(texts)):
            chunk = prepared[i * num_classes : (i + 1) * num_classes]
            examples = [{"input_ids": chunk["input_ids"][c], "labels": chunk["labels"][c]} for c in range(num_classes)]
            yield self.data_collator.inner(examples)

    def _candidate_logits(self, model, batch, labels):
        return model(**batch, use_cache=False).logits

    def _generation_prompt_ids(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self.processing_class
        out = []
        for text in texts:
            prompt = view_prompt(self.args, text, RATIONALE_VIEW, self.class_names)
            if self._conversational:
                ids = tok.apply_chat_template(
                    [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
                )["input_ids"]
            else:
                ids = tok(prompt + "\n", add_special_tokens=True)["input_ids"]
            out.append(list(ids))
        return out

    def _stop_ids(self, model) -> set[int]:
        config = getattr(model, "generation_config", None)
        ids = getattr(config, "eos_token_id", None)
        ids = ids if isinstance(ids, (list, tuple)) else [ids]
        ids = [*ids, getattr(self.processing_class, "eos_token_id", None)]
        return {int(i) for i in ids if i is not None}

    @torch.no_grad()
    def _generate_batch(self, model, texts: Sequence[str], max_new_tokens: int, **generate_kwargs) -> list[str]:
        """Greedy answers to the rationale-view prompts of ``texts``, one left-padded batch (the prompts end at the
        same column, where generation continues)."""
        tok = self.processing_class
        prompts = self._generation_prompt_ids(texts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        width = max(len(ids) for ids in prompts)
        device = model.get_input_embeddings().weight.device
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
        kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad, **generate_kwargs}
        generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        stop = self._stop_ids(model)
        outputs = []
        for row in generated[:, width:].tolist():
            end = next((j for j, token in enumerate(row) if token in stop), len(row))
            outputs.append(tok.decode(row[:end], skip_special_tokens=True))
        return outputs
