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
    reference = next(source.parameters())
    return student.to(device=reference.device, dtype=reference.dtype)


# Architectures a student can be built from scratch with (spec key "architecture").
SCRATCH_ARCHITECTURES = ("bert", "distilbert", "roberta")


def _save_whole(tokenizer, directory: str | os.PathLike) -> None:
    """``save_pretrained`` into a temporary folder beside ``directory``, then each file moved in, with
    ``tokenizer_config.json`` (what marks a kept tokenizer) last: a crash while saving leaves no half-written tokenizer
    that a later run would load. Other files in ``directory`` are left alone."""
    import shutil
    import tempfile

    directory = os.path.abspath(directory)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".saving-", dir=os.path.dirname(directory))
    try:
        tokenizer.save_pretrained(tmp)
        os.makedirs(directory, exist_ok=True)
        for name in sorted(os.listdir(tmp), key=lambda n: n == "tokenizer_config.json"):
            os.replace(os.path.join(tmp, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_student(
    spec: dict,
    label_names: Sequence[str],
    train_texts: Sequence[str] | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
):
    """A classifier student and its tokenizer from a small spec (as written in recipe configs):

    - ``{"base": "<hub id or path>"}``: a pretrained model with a fresh classification head;
    - ``{"base": ..., "layers": [0, 2, 4]}``: the same, keeping only those encoder layers (:func:`make_student`);
    - ``{"architecture": "bert" | "distilbert" | "roberta", "tokenizer_from": "<hub id or path>", "vocab_size": 8000,
      "hidden_size": 128, "num_layers": 2, "num_heads": 2, "intermediate_size": 512}``: randomly initialised, with a
      vocabulary of ``vocab_size`` trained on ``train_texts`` with the pipeline of ``tokenizer_from``'s tokenizer
      (``train_new_from_iterator``: WordPiece for BERT tokenizers). The trained tokenizer is saved to / reused from
      ``tokenizer_dir``: keep it, since ``tokenizers`` does not learn the same vocabulary twice from the same texts
      (huggingface/tokenizers#1794), so a student built again without it tokenises differently.

    Returns ``(model, tokenizer)``.
    """
    from transformers import AutoConfig, AutoTokenizer

    from .paths import resolve_model_name_or_path

    label_kwargs = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }
    unknown = set(spec) - {"base", "layers", "architecture", "tokenizer_from", "vocab_size", "hidden_size",
                           "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"}
    if unknown:
        raise ValueError(f"Unknown keys {sorted(unknown)} in student spec {spec}.")
    if "base" in spec:
        base = resolve_model_name_or_path(spec["base"])
        tokenizer = AutoTokenizer.from_pretrained(base)
        if spec.get("layers") is not None:
            return make_student(base, spec["layers"], **label_kwargs), tokenizer
        return AutoModelForSequenceClassification.from_pretrained(base, **label_kwargs), tokenizer
    architecture = spec.get("architecture")
    if architecture not in SCRATCH_ARCHITECTURES:
        raise ValueError(f"A student spec needs 'base' or 'architecture' in {SCRATCH_ARCHITECTURES}, got {spec}.")
    if tokenizer_dir is not None and os.path.isfile(os.path.join(tokenizer_dir, "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        if not train_texts:
            raise ValueError("A student with its own vocabulary needs the training texts to learn it from.")
        template = AutoTokenizer.from_pretrained(resolve_model_name_or_path(spec.get("tokenizer_from", "google-bert/bert-base-uncased")))
        tokenizer = template.train_new_from_iterator(
            (train_texts[i : i + 1000] for i in range(0, len(train_texts), 1000)), vocab_size=int(spec.get("vocab_size", 8000))
        )
        if tokenizer_dir is not None:
            _save_whole(tokenizer, tokenizer_dir)
    hidden, layers, heads = int(spec.get("hidden_size", 128)), int(spec.get("num_layers", 2)), int(spec.get("num_heads", 2))
    inter = int(spec.get("intermediate_size", 4 * hidden))
    positions = int(spec.get("max_position_embeddings", 512))
    vocab = len(tokenizer)
    if architecture == "distilbert":
        config = AutoConfig.for_model("distilbert", vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads,
                                      hidden_dim=inter, max_position_embeddings=positions,
                                      pad_token_id=tokenizer.pad_token_id, **label_kwargs)
    else:
        extra = {"max_position_embeddings": positions + (2 if architecture == "roberta" else 0)}
        config = AutoConfig.for_model(architecture, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=heads, intermediate_size=inter,
                                      pad_token_id=tokenizer.pad_token_id, **extra, **label_kwargs)
    return AutoModelForSequenceClassification.from_config(config), tokenizer
