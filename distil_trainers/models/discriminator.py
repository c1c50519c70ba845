"""The adversarial language discriminator of cross-lingual distillation (ADAN, Chen et al. 2018).

:class:`LanguageDiscriminator` predicts the language of a post from the shared encoder's pooled output through a
:class:`GradientReversal` layer, so the discriminator learns to tell the languages apart while the encoder is pushed
to make them indistinguishable. :class:`~distil_trainers.trainers.AdversarialTrainer` trains it beside the student;
the gradual multi-stage schedule that builds the language-mixed training sets is in
:mod:`distil_trainers.papers.crosslingual`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["DISCRIMINATOR_NAME", "LANGUAGE_COLUMN", "DiscriminatorOutput", "GradientReversal", "LanguageDiscriminator", "grad_reverse", "pooled_features"]

LANGUAGE_COLUMN = "language_ids"
"""Column holding the language id of every example (0 = source, 1 = target in the cross-lingual pipeline)."""
DISCRIMINATOR_NAME = "discriminator.safetensors"
"""The file the discriminator's weights go to, beside the classifier (training checkpoints, ``save_discriminator``)."""


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``-scale`` in the backward pass (Ganin and
    Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = float(scale)
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad_output, None


def grad_reverse(inputs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(inputs, scale)


@dataclass
class DiscriminatorOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None
    count: torch.Tensor | None = None
    total: torch.Tensor | None = None  # the cross-entropy summed over the rows with a language id
    correct: torch.Tensor | None = None  # rows whose language was predicted right


class LanguageDiscriminator(nn.Module):
    """A small MLP predicting the language from pooled encoder features, behind a gradient-reversal layer.

    ``forward(features, languages)`` returns the logits and, with ``languages`` (ids, ``-100`` = unknown), the
    cross-entropy summed over the rows with a language id divided by ``num_items_in_batch`` and the accuracy.
    ``num_items_in_batch`` is the number of rows WITH A LANGUAGE ID over the whole accumulated batch (labelled or not;
    not the labelled count the label losses use), so the micro-batch losses add up to the mean over those rows;
    without it the loss is the mean over this batch's rows with a language id. Minimising that loss
    trains the discriminator to separate the languages and, through the reversed gradient scaled by
    ``reversal_scale``, trains the encoder to confuse it."""

    def __init__(
        self,
        hidden_size: int,
        num_languages: int = 2,
        intermediate_size: int = 256,
        dropout: float = 0.1,
        reversal_scale: float = 1.0,
    ):
        super().__init__()
        if num_languages < 2:
            raise ValueError(f"A language discriminator needs at least 2 languages, got {num_languages}.")
        if reversal_scale < 0:
            raise ValueError(f"reversal_scale must be >= 0, got {reversal_scale}.")
        self.reversal_scale = reversal_scale
        self.num_languages = num_languages
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden_size, intermediate_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(intermediate_size, num_languages),
        )

    def forward(
        self, features: torch.Tensor | Any, languages: torch.Tensor | None = None, num_items_in_batch: Any = None
    ) -> DiscriminatorOutput:
        """``features``: the pooled encoder output ``(batch, hidden)``, or the model's outputs (with hidden states),
        whose :func:`pooled_features` are read. ``num_items_in_batch``: the rows with a language id over the whole
        accumulated batch (``None``: those of this batch)."""
        if not torch.is_tensor(features):
            features = pooled_features(features)
        logits = self.net(grad_reverse(features, self.reversal_scale))
        if languages is None:
            return DiscriminatorOutput(logits=logits)
        languages = languages.to(logits.device).long()
        valid = languages != -100
        count = valid.sum()
        bad = valid & ((languages < 0) | (languages >= self.num_languages))
        message = f"Language ids must be in 0..{self.num_languages - 1} (or -100)"
        if languages.device.type != "cpu":  # no host-device synchronisation per batch on an accelerator
            torch._assert_async(~bad.any(), message)
        elif bool(bad.any()):
            raise ValueError(f"{message}, got {languages.tolist()}.")
        summed = nn.functional.cross_entropy(logits.float(), languages, ignore_index=-100, reduction="sum")
        denominator = num_items_in_batch if num_items_in_batch is not None else count
        if torch.is_tensor(denominator):
            denominator = denominator.detach().reshape(()).to(summed.device, summed.dtype)
        else:
            denominator = torch.tensor(float(denominator), device=summed.device, dtype=summed.dtype)
        loss = summed / denominator.clamp(min=1)
        correct = ((logits.argmax(-1) == languages) & valid).sum()
        accuracy = correct.float() / count.clamp(min=1).float()
        return DiscriminatorOutput(
            logits=logits, loss=loss, accuracy=accuracy, count=count, total=summed, correct=correct
        )

    # ---- saving (beside the classifier, never inside it) --------------------------------------------------------

    def save_to(self, directory: str | os.PathLike, state_dict: Mapping[str, Any] | None = None) -> str:
        """Write the weights to ``<directory>/discriminator.safetensors`` (``state_dict``: default the current
        one). Returns the path written."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, DISCRIMINATOR_NAME)
        state = self.state_dict() if state_dict is None else state_dict
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, path)
        return path

    def load_from(self, directory: str | os.PathLike) -> bool:
        """Load ``<directory>/discriminator.safetensors`` if it exists; returns whether it did."""
        path = os.path.join(directory, DISCRIMINATOR_NAME)
        if not os.path.isfile(path):
            return False
        from safetensors.torch import load_file

        self.load_state_dict(load_file(path))
        return True


def pooled_features(outputs: Any) -> torch.Tensor:
    """The shared encoder's pooled output: the first-token vector of the last hidden layer (what the heads of
    :class:`~distil_trainers.models.MultiTaskModel` read). The model must have been called with
    ``output_hidden_states=True``."""
    hidden = getattr(outputs, "hidden_states", None)
    if not hidden:
        raise ValueError("The model returned no hidden states; call it with output_hidden_states=True.")
    return hidden[-1][:, 0]
