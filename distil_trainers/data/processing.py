"""Tokenising one text column for several models, and padding each model's columns with its own tokenizer.

When teacher and student (or several students) use different tokenizers, every model gets its own input columns,
distinguished by a prefix: the student's are the usual ``input_ids`` / ``attention_mask`` (prefix ``""``), the
teacher's ``teacher_input_ids`` / ``teacher_attention_mask`` (prefix ``"teacher_"``), and so on. Text is tokenised
once, in :func:`tokenize_for_models`; :class:`MultiTokenizerCollator` pads each group with the tokenizer it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

TEACHER_PREFIX = "teacher_"
TOKENIZER_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def tokenize_for_models(
    dataset: Dataset | DatasetDict,
    tokenizers: Mapping[str, PreTrainedTokenizerBase],
    text_column: str = "text",
    max_length: int | None = 128,
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    num_proc: int | None = None,
    desc: str = "Tokenizing",
) -> Dataset | DatasetDict:
    """Tokenise ``text_column`` once per tokenizer, writing ``{prefix}input_ids`` etc. for each ``prefix`` key of
    ``tokenizers`` (``""`` for the student). Padding is left to the collator (dynamic padding). ``label_column`` is
    renamed to ``labels`` (the name Trainer and our losses expect). Other columns (``id``, ``task_ids``) are kept;
    the text column is dropped. With ``text_pair_column`` the two texts are tokenised as a pair (both dropped)."""
    if not tokenizers:
        raise ValueError("tokenize_for_models needs at least one tokenizer, e.g. {'': student_tokenizer}.")
    for prefix, tok in tokenizers.items():
        if tok is None:
            raise ValueError(f"No tokenizer given for the model with input prefix {prefix!r}.")
    first = next(iter(dataset.values())) if isinstance(dataset, DatasetDict) else dataset
    column_names = first.column_names
    if text_column not in column_names:
        raise ValueError(f"Text column {text_column!r} not found; the dataset has columns {column_names}.")
    if text_pair_column is not None and text_pair_column not in column_names:
        raise ValueError(f"Text pair column {text_pair_column!r} not found; the dataset has columns {column_names}.")

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for prefix, tok in tokenizers.items():
            pair = batch[text_pair_column] if text_pair_column is not None else None
            enc = tok(batch[text_column], pair, truncation=max_length is not None, max_length=max_length)
            for key in TOKENIZER_COLUMNS:
                if key in enc:
                    out[f"{prefix}{key}"] = enc[key]
        return out

    dropped = [text_column] + ([text_pair_column] if text_pair_column is not None else [])
    dataset = dataset.map(encode, batched=True, remove_columns=dropped, num_proc=num_proc, desc=desc)
    if label_column and label_column != "labels":
        if isinstance(dataset, DatasetDict):
            dataset = DatasetDict(
                {k: v.rename_column(label_column, "labels") if label_column in v.column_names else v for k, v in dataset.items()}
            )
        elif label_column in dataset.column_names:
            dataset = dataset.rename_column(label_column, "labels")
    return dataset


class MultiTokenizerCollator:
    """Pad each model's input columns with its own tokenizer; stack every other numeric column.

    Args:
        tokenizers: ``{prefix: tokenizer}``, the same mapping given to :func:`tokenize_for_models` (``""`` for a
            single student's plain ``input_ids``; ``"teacher_"``, ``"<student name>_"`` for prefixed columns).
        pad_to_multiple_of: passed to each tokenizer's ``pad``.
        drop_columns: columns to leave out of the batch (strings such as ``id`` are always dropped).
    """

    def __init__(
        self,
        tokenizers: Mapping[str, PreTrainedTokenizerBase],
        pad_to_multiple_of: int | None = None,
        drop_columns: tuple[str, ...] = ("id",),
    ):
        if not tokenizers:
            raise ValueError("MultiTokenizerCollator needs at least one tokenizer, e.g. {'': student_tokenizer}.")
        for prefix, tok in tokenizers.items():
            if tok is None:
                raise ValueError(f"No tokenizer given for the input columns with prefix {prefix!r}.")
        # Longest prefixes first so "teacher_" wins over "" when matching a column name.
        self.tokenizers = dict(sorted(tokenizers.items(), key=lambda kv: -len(kv[0])))
        self.pad_to_multiple_of = pad_to_multiple_of
        self.drop_columns = set(drop_columns)

    def _owner(self, key: str) -> tuple[str, str] | None:
        for prefix in self.tokenizers:
            if key.startswith(prefix) and key[len(prefix) :] in TOKENIZER_COLUMNS:
                return prefix, key[len(prefix) :]
        return None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        groups: dict[str, list[dict[str, Any]]] = {prefix: [{} for _ in features] for prefix in self.tokenizers}
        batch: dict[str, torch.Tensor] = {}
        for key in features[0]:
            if key in self.drop_columns:
                continue
            owner = self._owner(key)
            if owner is not None:
                prefix, base = owner
                for row, feature in zip(groups[prefix], features):
                    row[base] = feature[key]
                continue
            values = [f[key] for f in features]
            if isinstance(values[0], str):
                continue
            batch[key] = torch.as_tensor(values)
        for prefix, rows in groups.items():
            if not rows[0]:
                continue
            padded = self.tokenizers[prefix].pad(rows, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
            for base, tensor in padded.items():
                batch[f"{prefix}{base}"] = tensor
        return batch
