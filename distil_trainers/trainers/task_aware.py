"""TaskAwareTrainer: a plain Trainer that understands this library's datasets (task ids, per-model input columns)."""

from __future__ import annotations

import inspect
from functools import partial

import datasets
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_utils import seed_worker

from ..data.multitask import TASK_COLUMN, MultiTaskBatchSampler
from ..data.processing import TEACHER_PREFIX, TOKENIZER_COLUMNS
from ..teachers.cache import CACHE_ROW_COLUMN
from .inputs import ROW_COLUMN
from .wrapper import DistillationModel


class TaskAwareTrainer(Trainer):
    """A plain [`~transformers.Trainer`] that also understands this library's datasets: it keeps the ``task_ids``
    column and prefixed per-model input columns (``teacher_input_ids``…) through ``remove_unused_columns``, and trains
    on single-task batches (:class:`~distil_trainers.data.multitask.MultiTaskBatchSampler`) when the training set mixes
    tasks. Use it to fine-tune or evaluate a :class:`~distil_trainers.models.MultiTaskModel` without distillation."""

    _tag_names = ["distil-trainers", "multi-task"]
    _name = "Multi-task fine-tuning"
    _paper = None  # fine-tuning without distillation implements no paper of its own

    # Columns (besides the model's forward arguments) that must survive Trainer's `remove_unused_columns`.
    extra_input_prefixes: tuple[str, ...] = (TEACHER_PREFIX,)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_multitask_processes()

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
