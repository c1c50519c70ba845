"""Class labels: string labels encoded to a :class:`datasets.ClassLabel`, and datasets mapped to the class order of a
model that already names its classes (``config.id2label``).

A label id means nothing without the list of names it indexes. Two lists with the same names in another order are
the classic silent failure of distillation: the student learns the teacher's "hate" under the data's "neither". So a
dataset whose classes are named is always brought to the model's order by name, and names that do not match are one
error listing both sides::

    dd = encode_labels(dd)                              # "hate"/"none" strings -> ClassLabel(names=["hate", "none"])
    dd = align_labels(dd, teacher.config.id2label)      # ids now index the teacher's classes
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import datasets

logger = logging.getLogger(__name__)

__all__ = ["align_labels", "encode_labels", "label_names_of", "model_label_names", "normalise_label_name"]


def normalise_label_name(name: Any) -> str:
    """The form two class names are compared in: case, accents, surrounding blanks, ``-``/``_``/space ignored."""
    decomposed = unicodedata.normalize("NFKD", str(name))
    text = "".join(c for c in decomposed if not unicodedata.combining(c)).strip().casefold()
    return "".join(c for c in text if c not in "-_ ")


def model_label_names(id2label: Mapping[Any, str] | None) -> list[str] | None:
    """The class names of a model's ``config.id2label`` in id order; ``None`` when the model does not name its classes
    (no mapping, or transformers' placeholders ``LABEL_0``, ``LABEL_1``…)."""
    if not id2label:
        return None
    by_id = {int(k): str(v) for k, v in id2label.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"id2label must map the ids 0..{len(by_id) - 1}, got ids {sorted(by_id)}.")
    names = [by_id[i] for i in range(len(by_id))]
    if all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


def _splits(data: datasets.Dataset | datasets.DatasetDict) -> dict[str, datasets.Dataset]:
    return dict(data) if isinstance(data, datasets.DatasetDict) else {"dataset": data}


def _rebuild(data, splits: dict[str, datasets.Dataset]):
    return datasets.DatasetDict(splits) if isinstance(data, datasets.DatasetDict) else splits["dataset"]


def label_names_of(data: datasets.Dataset | datasets.DatasetDict, column: str = "label") -> list[str] | None:
    """The class names of ``column`` when it is a ``ClassLabel`` (the same in every split), else ``None``."""
    names = None
    for split, ds in _splits(data).items():
        feature = ds.features.get(column)
        if not isinstance(feature, datasets.ClassLabel):
            return None
        if names is not None and list(feature.names) != names:
            raise ValueError(
                f"The splits name their classes differently: {names} vs {list(feature.names)} in {split!r}."
            )
        names = list(feature.names)
    return names


def encode_labels(
    data: datasets.Dataset | datasets.DatasetDict,
    column: str = "label",
    names: Sequence[str] | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Give ``column`` a ``ClassLabel`` feature.

    * String labels are encoded: to ``names`` when given (a label not among them is an error naming it), else to the
      sorted distinct labels of all splits together, so every split gets the same ids. Blank strings are an error.
    * Integer labels without class names get names ``"0"``, ``"1"``… (``names`` when given); ``-100`` (the ignore
      index) stays as is.
    * A ``ClassLabel`` column is returned unchanged.
    """
    splits = _splits(data)
    for split, ds in splits.items():
        if column not in ds.column_names:
            raise ValueError(f"Label column {column!r} not found in {split!r}; its columns are {ds.column_names}.")
    if label_names_of(data, column) is not None:
        return data
    for split, ds in splits.items():
        missing = [i for i, v in enumerate(ds[column][:]) if v is None]
        if missing:
            raise ValueError(
                f"Label column {column!r} has {len(missing)} missing labels in {split!r} (rows {missing[:5]}); drop "
                "those rows or label them."
            )
    dtypes = {ds.features[column].dtype for ds in splits.values() if hasattr(ds.features[column], "dtype")}
    if dtypes and all(d in ("string", "large_string") for d in dtypes):
        values = sorted({str(v) for ds in splits.values() for v in ds[column][:]})
        blank = [v for v in values if not v.strip()]
        if blank:
            raise ValueError(f"Label column {column!r} has empty labels; drop those rows or label them.")
        if names is None:
            names = values
        index = {name: i for i, name in enumerate(names)}
        unknown = [v for v in values if v not in index]
        if unknown:
            raise ValueError(f"Labels {unknown} of column {column!r} are not among the class names {list(names)}.")

        def encode(batch):
            return {column: [index[str(v)] for v in batch[column]]}

    elif dtypes and all(d.startswith("int") for d in dtypes):
        present = sorted({int(v) for ds in splits.values() for v in ds[column][:] if int(v) != -100})
        encode = None
        if names is None and present and present[0] != 0:
            # codes such as ratings 1..5 or {2, 10}: classes are the codes present, not every integer below the largest
            names = [str(v) for v in present]
            index = {v: i for i, v in enumerate(present)}
            logger.warning("Label column %r holds the codes %s (no 0): classes %s, ids 0..%d.", column, present,
                           names, len(names) - 1)

            def encode(batch):
                return {column: [v if v == -100 else index[int(v)] for v in batch[column]]}

        if names is None:
            names = [str(i) for i in range((present[-1] + 1) if present else 0)]
        if encode is None:
            bad = [v for v in present if not 0 <= v < len(names)]
            if bad:
                raise ValueError(f"Label ids {bad} of column {column!r} are out of range for {len(names)} classes.")
    else:
        kinds = sorted(str(ds.features[column]) for ds in splits.values())
        raise ValueError(
            f"Label column {column!r} must hold class names (strings) or class ids (integers), got {kinds}; "
            "multi-label or float targets are not single-label classification."
        )
    feature = datasets.ClassLabel(names=list(names))
    out = {}
    for split, ds in splits.items():
        if encode is not None:
            features = ds.features.copy()
            features[column] = datasets.Value("int64")
            ds = ds.map(encode, batched=True, features=features, desc=f"Encoding labels ({split})")
        if -100 not in set(ds[column][:]):
            ds = ds.cast_column(column, feature)
        out[split] = ds
    return _rebuild(data, out)


def align_labels(
    data: datasets.Dataset | datasets.DatasetDict,
    id2label: Mapping[Any, str] | Sequence[str] | None,
    column: str = "label",
    role: str = "model",
) -> datasets.Dataset | datasets.DatasetDict:
    """Map ``column`` (a ``ClassLabel``) to the class order of a model whose classes are ``id2label`` (a mapping or
    the names in id order).

    The same names (compared by :func:`normalise_label_name`) in another order are re-indexed, and said in the log;
    names that do not match are one ``ValueError`` listing both sides. Nothing happens when the model does not name
    its classes (``LABEL_i`` placeholders) or the column has no class names; ``-100`` stays ``-100``.
    """
    if isinstance(id2label, Sequence) and not isinstance(id2label, str):
        id2label = dict(enumerate(id2label))  # names in id order; LABEL_i placeholders name nothing
    model_names = model_label_names(id2label)
    data_names = label_names_of(data, column)
    if model_names is None or data_names is None:
        return data
    if data_names == model_names:
        return data
    model_index = {normalise_label_name(n): i for i, n in enumerate(model_names)}
    data_keys = [normalise_label_name(n) for n in data_names]
    missing = [n for n, k in zip(data_names, data_keys) if k not in model_index]
    absent = [n for n in model_names if normalise_label_name(n) not in set(data_keys)]
    if missing or len(model_index) != len(model_names) or len(set(data_keys)) != len(data_keys):
        raise ValueError(
            f"The dataset's classes do not match the {role}'s by name.\n"
            f"  dataset ({column!r}): {data_names}\n"
            f"  {role} (config.id2label): {model_names}\n"
            + (f"  in the dataset only: {missing}\n" if missing else "")
            + (f"  in the {role} only: {absent}\n" if absent else "")
            + f"Rename the dataset's classes to the {role}'s, or give a {role} trained on these classes."
        )
    mapping = [model_index[k] for k in data_keys]
    if data_keys == [normalise_label_name(n) for n in model_names]:
        order_changed = False  # the same classes spelled differently, in the same order
    else:
        order_changed = True
        logger.info("Class ids mapped to the %s's order %s (the dataset had %s).", role, model_names, data_names)
    feature = datasets.ClassLabel(names=list(model_names))
    out = {}
    for split, ds in _splits(data).items():
        if order_changed:
            features = ds.features.copy()
            features[column] = datasets.Value("int64")

            def remap(batch):
                return {column: [v if v == -100 else mapping[v] for v in batch[column]]}

            ds = ds.map(remap, batched=True, features=features, desc=f"Mapping labels to the {role}'s order")
        if -100 not in set(ds[column][:]):
            ds = ds.cast_column(column, feature)
        else:
            logger.info("%r holds ignored (-100) labels: kept as integers, classes %s.", column, model_names)
        out[split] = ds
    return _rebuild(data, out)
