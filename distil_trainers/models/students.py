"""Building a smaller student from a bigger model by keeping some of its transformer layers (the DistilBERT /
"layer dropping" initialisation: e.g. layers 0, 2, 4 of a 6-layer MiniLM)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence

from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

# "<prefix>.layer.<i>.<rest>" (BERT, RoBERTa, XLM-R, DistilBERT, MiniLM) or "<prefix>.layers.<i>." (Llama-style).
_LAYER_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layer|layers))\.(?P<index>\d+)\.(?P<rest>.*)$")


def _layer_config(config):
    """The (sub-)config that holds ``num_hidden_layers`` (the encoder's for a MultiTaskModel)."""
    encoder = getattr(config, "encoder", None)
    if encoder is not None and hasattr(encoder, "num_hidden_layers"):
        return encoder
    if getattr(config, "num_hidden_layers", None) is not None:
        return config
    if getattr(config, "n_layers", None) is not None:  # DistilBERT
        return config
    raise ValueError(f"Cannot find the number of layers in a {type(config).__name__}.")


def make_student(
    source: str | os.PathLike | PreTrainedModel,
    layers: Sequence[int],
    model_class=AutoModelForSequenceClassification,
    **from_pretrained_kwargs,
) -> PreTrainedModel:
    """A copy of ``source`` that keeps only the transformer ``layers`` (in that order) and everything else (embeddings,
    pooler, heads) as it is.

    Args:
        source: a model, or a Hub id / local path loaded with ``model_class.from_pretrained(source,
            **from_pretrained_kwargs)`` (pass ``num_labels=``/``id2label=`` here to get a fresh classification head on
            a base encoder checkpoint).
        layers: indices of the source's layers to keep, e.g. ``[0, 2, 4]``.
    """
    if isinstance(source, (str, os.PathLike)):
        source = model_class.from_pretrained(source, **from_pretrained_kwargs)
    elif not isinstance(source, nn.Module):
        raise TypeError(f"source must be a model or a path/Hub id, got {type(source).__name__}.")
    layers = [int(i) for i in layers]
    layer_config = _layer_config(source.config)
    attr = "num_hidden_layers" if hasattr(layer_config, "num_hidden_layers") else "n_layers"
    depth = getattr(layer_config, attr)
    if not layers or len(set(layers)) != len(layers) or any(not 0 <= i < depth for i in layers):
        raise ValueError(f"layers must be distinct indices in [0, {depth - 1}] (the source has {depth}), got {layers}.")

    config = copy.deepcopy(source.config)
    setattr(_layer_config(config), attr, len(layers))
    student = type(source)(config)

    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in source.state_dict().items():
        match = _LAYER_KEY.match(key)
        if match is None:
            state[key] = value
        elif int(match["index"]) in new_index:
            state[f"{match['prefix']}.{new_index[int(match['index'])]}.{match['rest']}"] = value
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise RuntimeError(f"Could not map the source's weights onto the student: missing {missing}, unexpected {unexpected}.")
    student.config.name_or_path = ""
    return student
