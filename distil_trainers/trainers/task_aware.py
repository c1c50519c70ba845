"""TaskAwareTrainer: a plain Trainer that understands this library's datasets (task ids, per-model input columns)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import partial
from typing import Any

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import seed_worker

from .. import losses
from ..data.multitask import TASK_COLUMN, MultiTaskBatchSampler
from ..data.processing import TEACHER_PREFIX, TOKENIZER_COLUMNS
from ..teachers.cache import CACHE_ROW_COLUMN
from .class_weights import class_weight_table
from .inputs import ROW_COLUMN
from .labels import label_space
from .objective import LABELLED, Objective, count_kinds
from .wrapper import DistillationModel


class TaskAwareTrainer(Trainer):
    """A plain [`~transformers.Trainer`] that also understands this library's datasets: it keeps the ``task_ids``
    column and prefixed per-model input columns (``teacher_input_ids``…) through ``remove_unused_columns``, and trains
    on single-task batches (:class:`~distil_trainers.data.multitask.MultiTaskBatchSampler`) when the training set mixes
    tasks. Use it to fine-tune or evaluate a :class:`~distil_trainers.models.MultiTaskModel` without distillation."""

    _tag_names = ["distil-trainers", "multi-task"]
    _name = "Multi-task fine-tuning"
    _paper = None  # fine-tuning without distillation implements no paper of its own

    # Whether ``class_weights`` are read against the model's own heads here (the distillation trainers read them
    # against the label space they check across teacher, students and data).
    class_weights_from_model = True

    # Columns (besides the model's forward arguments) that must survive Trainer's `remove_unused_columns`.
    extra_input_prefixes: tuple[str, ...] = (TEACHER_PREFIX,)

    def __init__(self, *args, class_weights: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_multitask_processes()
        self._step_counts: dict[str, torch.Tensor] | None = None  # items of each kind in the current optimizer step
        # the distillation trainers build it from the label space they checked; here, from the model's own heads
        spec = class_weights if class_weights is not None else getattr(self.args, "class_weights", None)
        self.class_weight_table = None
        if spec is not None and self.class_weights_from_model:
            space = label_space(self.accelerator.unwrap_model(self.model))
            multitask = isinstance(self.train_dataset, datasets.Dataset) and (
                TASK_COLUMN in self.train_dataset.column_names
            )
            self.class_weight_table = class_weight_table(spec, space, self.train_dataset, list(space) if multitask else None)
            self.model_accepts_loss_kwargs = True  # compute_loss divides by the step's weighted count itself

    def check_multitask_processes(self) -> None:
        """Multi-task training in several processes: each step trains one task, so the other tasks' heads take no
        part in it. DDP must then look for unused parameters — Trainer turns that off with activation checkpointing,
        which would stop the second step — so it is turned on here; it is compatible with the non-reentrant
        checkpointing transformers uses by default, and reentrant checkpointing is refused before training."""
        args, dataset = self.args, self.train_dataset
        if args.world_size <= 1 or not isinstance(dataset, datasets.Dataset) or TASK_COLUMN not in dataset.column_names:
            return
        if len(set(dataset[TASK_COLUMN][:])) < 2:
            return
        if args.ddp_find_unused_parameters is False:
            raise ValueError(
                "Multi-task training in several processes needs ddp_find_unused_parameters (each step leaves the other "
                "tasks' heads unused): leave it unset or set it to True."
            )
        checkpointing = args.activation_checkpointing or args.gradient_checkpointing
        kwargs = args.activation_checkpointing_kwargs or args.gradient_checkpointing_kwargs or {}
        if checkpointing and kwargs.get("use_reentrant", False):
            raise ValueError(
                "Multi-task training in several processes with reentrant activation checkpointing: DDP cannot find "
                "the heads a step does not use. Drop use_reentrant=True (non-reentrant checkpointing is the default)."
            )
        args.ddp_find_unused_parameters = True
        if self.accelerator.ddp_handler is not None:  # the handler Trainer built before this check
            self.accelerator.ddp_handler.find_unused_parameters = True

    # ---- loss accounting (see distil_trainers.trainers.objective) ------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Trainer's pre-fetch of one optimizer step's micro-batches, plus the count of every kind of item in them
        (see :mod:`~distil_trainers.trainers.objective`), added over the processes in one collective."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._step_counts = self.step_counts(batch_samples, device) if batch_samples else None
        return batch_samples, num_items_in_batch

    def count_items(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The items of each kind in one batch (``rows`` and ``labelled``; subclasses add their own kinds)."""
        labels = batch.get("labels")
        return count_kinds(labels, self.label_weights(labels, batch.get(TASK_COLUMN)))

    def step_counts(self, batch_samples: list, device) -> dict[str, torch.Tensor]:
        per_batch = [self.count_items(batch) for batch in batch_samples]
        kinds = sorted(per_batch[0])
        totals = torch.stack([sum(counts[k].to(device) for counts in per_batch) for k in kinds])
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        return dict(zip(kinds, totals))

    def label_weights(self, labels: torch.Tensor | None, task_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """Each item's class weight (``class_weights``; for multi-task data, its task's), ``None`` without weights."""
        if self.class_weight_table is None or labels is None:
            return None
        table = self.class_weight_table.to(labels.device)
        task = task_ids.to(labels.device).long() if task_ids is not None else torch.zeros_like(labels)
        return table[task, labels.clamp(min=0, max=table.shape[1] - 1)]

    def batch_class_weights(self, logits: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """The ``(C,)`` class weights of a one-task batch for the label losses (``None`` without weights)."""
        if self.class_weight_table is None:
            return None
        table = self.class_weight_table.to(logits.device)
        row = table[task_ids.reshape(-1)[0].to(logits.device).long()] if task_ids is not None else table[0]
        return row[: logits.shape[-1]]

    def objective(self, model: nn.Module, labels: torch.Tensor, num_items_in_batch=None,
                  task_ids: torch.Tensor | None = None) -> Objective:
        """An empty :class:`~distil_trainers.trainers.objective.Objective` for this micro-batch: normalised by the
        optimizer step's counts in a training step Trainer prepared, by each term's own count otherwise."""
        batch = self.count_items({"labels": labels, TASK_COLUMN: task_ids})
        in_step = model.training and num_items_in_batch is not None
        if in_step and self._step_counts is None:  # a direct call with Trainer's count: every kind counts it
            count = torch.as_tensor(num_items_in_batch, device=labels.device).double().reshape(())
            step = {kind: count for kind in batch}
        else:
            step = self._step_counts if in_step else None
        return Objective(step, batch)


    def scale_for_devices(self, loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """Under data parallelism with ``average_tokens_across_devices`` the count is global while DDP averages the
        per-rank gradients, so the per-rank loss is multiplied by the number of processes (as Trainer does)."""
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            return loss * self.accelerator.num_processes
        return loss


    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's own loss; with ``class_weights``, the class-weighted cross-entropy, divided by the sum of the
        weights of the optimizer step's gold labels (over every micro-batch and process)."""
        if self.class_weight_table is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        task_ids = inputs.get(TASK_COLUMN)
        term = losses.cross_entropy_loss(outputs.logits, labels, reduction="sum",
                                         class_weights=self.batch_class_weights(outputs.logits, task_ids))
        objective = self.objective(model, labels, num_items_in_batch, task_ids)
        objective.add("loss_ce", term, LABELLED)
        loss = self.scale_for_devices(objective.loss(), num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    # ---- data ----------------------------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            model = self.accelerator.unwrap_model(self.model)
            if isinstance(model, DistillationModel):  # the columns the student's forward reads
                self._signature_columns = [*inspect.signature(model.student.forward).parameters, "label", "label_ids",
                                           *self.label_names]
            else:
                super()._set_signature_columns_if_needed()
            keep = [TASK_COLUMN, CACHE_ROW_COLUMN, ROW_COLUMN]
            keep += [p + c for p in self.extra_input_prefixes for c in TOKENIZER_COLUMNS]
            self._signature_columns += [c for c in keep if c not in self._signature_columns]

    def _get_train_sampler(self, train_dataset=None):
        """``Trainer``'s sampler. With ``train_sampling_strategy="group_by_length"`` on data whose token ids are only in
        prefixed columns (``<student>_input_ids``, ``teacher_input_ids``: models with their own tokenizers), where
        ``Trainer`` finds no ``input_ids`` to measure, an example's length is its longest tokenisation."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if (self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, datasets.Dataset)
                and not {"input_ids", self.args.length_column_name} & set(dataset.column_names)):
            columns = [c for c in dataset.column_names if c.endswith("_input_ids")]
            if columns:
                lengths = [max(map(len, ids)) for ids in zip(*(dataset[c][:] for c in columns))]
                size = self.args.train_batch_size * self.args.gradient_accumulation_steps
                return LengthGroupedSampler(size, lengths=lengths)
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self) -> DataLoader:
        """Single-task batches when the training set mixes tasks (a ``task_ids`` column); with several processes every
        optimizer step has one task on every process and each example is served once per epoch (the sampler shards
        itself, see :class:`~distil_trainers.data.multitask.MultiTaskBatchSampler`)."""
        dataset = self.train_dataset
        if not isinstance(dataset, datasets.Dataset) or TASK_COLUMN not in dataset.column_names:
            return super().get_train_dataloader()
        dataset = self._remove_unused_columns(dataset, description="training")
        batch_sampler = MultiTaskBatchSampler(
            dataset[TASK_COLUMN][:],
            batch_size=self._train_batch_size,
            sampling=getattr(self.args, "task_sampling", "proportional"),
            temperature=getattr(self.args, "task_sampling_temperature", 1.0),
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            drop_last=self.args.dataloader_drop_last,
            num_replicas=self.args.world_size,
            rank=self.args.process_index,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            worker_init_fn=partial(
                seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
            ),
        )
        if self.args.world_size == 1:
            return self.accelerator.prepare(loader)
        # The sampler shards itself (one task per step on every process): accelerate must place the batches on the
        # device but not shard them again (its BatchSamplerShard would skip a task's short last batch and fill the
        # epoch's last step with batches of other tasks).
        from accelerate.data_loader import prepare_data_loader

        loader = prepare_data_loader(
            loader, device=self.accelerator.device, num_processes=1, process_index=0,
            put_on_device=self.accelerator.device_placement, non_blocking=getattr(self.accelerator, "non_blocking", False),
        )
        self.accelerator._dataloaders.append(loader)
        return loader
