"""A shared-encoder model with one classification head per task (a sentiment head and a hate-speech head, as in
joint multi-task hate-speech detection; or several emotion/sentiment tasks for cross-lingual transfer).

``MultiTaskModel`` is an ordinary :class:`~transformers.PreTrainedModel`: it has its own config class, saves and loads
with ``save_pretrained`` / ``from_pretrained`` (also through ``AutoModel`` / ``AutoModelForSequenceClassification``
once :mod:`distil_trainers` is imported) and can be pushed to the Hub like any other model.

A batch belongs to one task: it carries ``task_ids`` (a tensor of shape ``(batch,)`` holding the index of the task in
``config.tasks``, the same for every row), and the model returns the logits of that task's head. Homogeneous batches
are what :class:`~distil_trainers.data.multitask.MultiTaskBatchSampler` produces; evaluation runs one task at a time.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.modeling_outputs import SequenceClassifierOutput

from ..losses import cross_entropy_loss


class MultiTaskConfig(PreTrainedConfig):
    r"""
    Configuration of a [`MultiTaskModel`].

    Args:
        encoder (`PreTrainedConfig` or `dict`):
            Configuration of the shared encoder (any model loadable with `AutoModel`).
        tasks (`dict[str, int]`):
            Task name -> number of classes of its head, in a fixed order (the order defines the task ids).
        task_label_names (`dict[str, list[str]]`, *optional*):
            Class names per task, used in reports and model cards.
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            Dropout applied to the pooled representation before each head.
    """

    model_type = "distil_multitask"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: PreTrainedConfig | dict | None = None
    tasks: dict[str, int] | None = None
    task_label_names: dict[str, list[str]] | None = None
    classifier_dropout: float = 0.1
    # config.json is written with sorted keys, so the order of `tasks` (which defines the task ids) is kept here too.
    task_order: list[str] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not self.tasks:
            # An empty task set is only legitimate for the default constructor used by `from_pretrained` internals.
            self.tasks = {}
        self.tasks = {str(name): int(n) for name, n in self.tasks.items()}
        if self.task_order is not None:
            if sorted(self.task_order) != sorted(self.tasks):
                raise ValueError(f"task_order {self.task_order} does not match tasks {list(self.tasks)}.")
            self.tasks = {name: self.tasks[name] for name in self.task_order}
        self.task_order = list(self.tasks)
        for name, n in self.tasks.items():
            if n < 1:
                raise ValueError(f"Task {name!r} must have at least one class, got {n}.")
        if self.task_label_names is not None:
            for name, names in self.task_label_names.items():
                if name not in self.tasks:
                    raise ValueError(f"task_label_names has task {name!r}, which is not in tasks {list(self.tasks)}.")
                if len(names) != self.tasks[name]:
                    raise ValueError(
                        f"Task {name!r} has {self.tasks[name]} classes but {len(names)} label names were given."
                    )

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def task_id(self, name: str) -> int:
        if name not in self.tasks:
            raise KeyError(f"Unknown task {name!r}; this model has tasks {list(self.tasks)}.")
        return list(self.tasks).index(name)


class MultiTaskModel(PreTrainedModel):
    """Shared encoder + one linear head per task on the first-token ([CLS]) representation."""

    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: MultiTaskConfig):
        super().__init__(config)
        if not config.tasks:
            raise ValueError("MultiTaskConfig.tasks is empty: give at least one task, e.g. tasks={'hate': 3}.")
        self.encoder = AutoModel.from_config(config.encoder)
        hidden_size = config.encoder.hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden_size, n) for name, n in config.tasks.items()})
        self.post_init()

    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str,
        tasks: dict[str, int],
        task_label_names: dict[str, list[str]] | None = None,
        classifier_dropout: float = 0.1,
        **encoder_kwargs,
    ) -> MultiTaskModel:
        """Build a multi-task model around pretrained encoder weights (a Hub id or a local directory); the heads are
        freshly initialised."""
        encoder = AutoModel.from_pretrained(encoder_name_or_path, **encoder_kwargs)
        config = MultiTaskConfig(
            encoder=encoder.config.to_dict(),
            tasks=tasks,
            task_label_names=task_label_names,
            classifier_dropout=classifier_dropout,
        )
        model = cls(config)
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    def _resolve_task(self, task_ids: torch.Tensor | int | str | None) -> str:
        names = self.config.task_names
        if task_ids is None:
            if len(names) == 1:
                return names[0]
            raise ValueError(f"This model has several tasks {names}: pass `task_ids` (the task index per row).")
        if isinstance(task_ids, str):
            self.config.task_id(task_ids)
            return task_ids
        if torch.is_tensor(task_ids):
            unique = torch.unique(task_ids)
            if unique.numel() != 1:
                raise ValueError(
                    f"A batch must hold one task, got task ids {unique.tolist()}. Use MultiTaskBatchSampler "
                    "(or evaluate one task at a time)."
                )
            task_ids = int(unique.item())
        if not 0 <= task_ids < len(names):
            raise ValueError(f"task id {task_ids} out of range for tasks {names}.")
        return names[task_ids]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        task = self._resolve_task(task_ids)
        encoder_kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            encoder_kwargs["token_type_ids"] = token_type_ids
        outputs = self.encoder(
            **encoder_kwargs,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        pooled = self.dropout(outputs.last_hidden_state[:, 0])
        logits = self.heads[task](pooled)
        loss = cross_entropy_loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


def _register() -> None:
    from transformers import AutoModelForSequenceClassification

    AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig, exist_ok=True)
    AutoModel.register(MultiTaskConfig, MultiTaskModel, exist_ok=True)
    AutoModelForSequenceClassification.register(MultiTaskConfig, MultiTaskModel, exist_ok=True)


_register()
