"""The recipes' data arguments: :class:`DatasetArguments` (``--dataset_name``, one value per task, and the options
that say how to read each source: one value for every task or one per task) and :class:`TaskDataSpec` (one task's
source and options; :meth:`TaskDataSpec.load` calls :func:`~distil_trainers.data.loading.load_text_classification`);
and the names the recipes give to their tasks (:func:`task_name_of`, :func:`unique_task_names`)."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import datasets

from .loading import DATA_FILE_SUFFIXES, _check_validation_size, _find_local, load_text_classification
from .registry import DATA_DIR_ENV, list_datasets

__all__ = ["DatasetArguments", "TaskDataSpec", "task_name_of", "unique_task_names"]

_NONE_STRINGS = {"", "none", "null"}


def task_name_of(name_or_path: str, config: str | None = None, data_dir=None) -> str:
    """A task's name for a data source: a registered name stays itself; a local file gives its stem, a folder its
    name, a Hub id its last part (``_<config>`` appended); characters other than letters, digits, ``_`` and ``-``
    become ``_``."""
    name = os.fspath(name_or_path)
    if name in list_datasets():
        return name
    local = _find_local(name, data_dir)
    if local is not None:
        local = local.resolve()
        base = local.stem if local.is_file() else local.name
    else:
        base = Path(name).stem if Path(name).suffix.lower() in DATA_FILE_SUFFIXES else name.rstrip("/").split("/")[-1]
        if config:
            base = f"{base}_{config}"
    return re.sub(r"[^\w-]+", "_", base).strip("_") or "task"


def unique_task_names(names: Sequence[str]) -> list[str]:
    """``names`` with repeats made unique: the second ``my`` becomes ``my_2``, the third ``my_3``."""
    out: list[str] = []
    for name in names:
        candidate, k = name, 2
        while candidate in out:
            candidate, k = f"{name}_{k}", k + 1
        out.append(candidate)
    return out


@dataclass(frozen=True)
class TaskDataSpec:
    """Where one task's data comes from and how to read it (the per-task options of
    :func:`load_text_classification`); ``task_name`` is the task's name in the recipes (default:
    :func:`task_name_of`)."""

    name_or_path: str
    config: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    train_split: str = "train"
    eval_split: str | None = "validation"
    test_split: str | None = "test"
    task_name: str | None = None

    @property
    def is_registered(self) -> bool:
        return self.name_or_path in list_datasets()

    def name(self, data_dir=None) -> str:
        return self.task_name or task_name_of(self.name_or_path, self.config, data_dir)

    def load(self, **kwargs: Any) -> datasets.DatasetDict:
        """:func:`load_text_classification` of this source; ``kwargs``: its other options (``seed``, ``data_dir``,
        ``validation_size``, ``label_names``, ``max_samples_per_split``, ``cache_dir``)."""
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name_or_path", "task_name")}
        return load_text_classification(self.name_or_path, **options, **kwargs)


_PER_TASK = ("dataset_config", "text_column", "text_pair_column", "label_column", "train_split", "eval_split",
             "test_split")  # fmt: skip
_OPTIONAL = ("dataset_config", "text_pair_column", "eval_split", "test_split")  # "none" -> None


@dataclass
class DatasetArguments:
    """Where the data of a recipe comes from: one ``dataset_name`` per task (a single one for single-task recipes) and
    how to read it. Every per-task option takes one value (for every task) or one value per task, in the order of
    ``dataset_name``; for the optional ones ``none`` stands for "not set" (e.g. ``--text_pair_column premise none``).
    See :mod:`distil_trainers.data.loading` for how a name or path is resolved."""

    dataset_name: list[str] = field(
        default_factory=list,
        metadata={"help": "One data source per task (several = multi-task): a registered name "
                          "(distil_trainers.data.list_datasets()), a csv / tsv / json / jsonl / parquet file, a "
                          "folder of split files (train.csv, validation.csv or dev.csv, test.csv), a save_to_disk "
                          "folder, or a Hub dataset id."},
    )
    dataset_config: list[str] | None = field(
        default=None, metadata={"help": "Configuration of a Hub dataset (one for every task, or one per task)."}
    )
    text_column: list[str] = field(
        default_factory=lambda: ["text"], metadata={"help": "Column holding the text (one, or one per task)."}
    )
    text_pair_column: list[str] | None = field(
        default=None,
        metadata={"help": "Column holding the second text of sentence-pair tasks (one, or one per task; none = no "
                          "pair)."},
    )
    label_column: list[str] = field(
        default_factory=lambda: ["label"],
        metadata={"help": "Column holding the class: names (strings, encoded) or ids (one, or one per task)."},
    )
    train_split: list[str] = field(
        default_factory=lambda: ["train"], metadata={"help": "Train split (split or file name; one, or one per task)."}
    )
    eval_split: list[str] = field(
        default_factory=lambda: ["validation"],
        metadata={"help": "Validation split (also found as dev / valid / val); carved from train when the data has "
                          "none, or when none (one, or one per task)."},
    )
    test_split: list[str] = field(
        default_factory=lambda: ["test"],
        metadata={"help": "Test split the report uses; without one the report uses the validation split and says so "
                          "(one, or one per task; none = ignore it)."},
    )
    validation_size: float = field(
        default=0.1,
        metadata={"help": "Share of train carved into a validation split when a dataset has none (stratified, seeded; "
                          "a count when >= 1)."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": f"Data directory of the registered datasets and of relative paths (default: {DATA_DIR_ENV} "
                          "or ../shared/data); the Hub is tried otherwise."},
    )

    def __post_init__(self):
        self.dataset_name = _as_list(self.dataset_name, "dataset_name")
        if not self.dataset_name or any(not _given(n) for n in self.dataset_name):
            raise ValueError(
                f"dataset_name must name at least one dataset (a registered name, a file, a folder or a Hub id), got "
                f"{self.dataset_name!r}."
            )
        n = len(self.dataset_name)
        for option in _PER_TASK:
            value = getattr(self, option)
            if value is None:
                if option not in _OPTIONAL:
                    raise ValueError(f"{option} is required (a column or split name), got None.")
                continue
            values = _as_list(value, option)
            if option in _OPTIONAL:
                values = [v if _given(v) else None for v in values]
            elif any(not _given(v) for v in values):
                raise ValueError(f"{option} must name a column or split, got {values!r}.")
            if len(values) not in (1, n):
                raise ValueError(
                    f"{option} has {len(values)} values {values} for {n} datasets (dataset_name {self.dataset_name}): "
                    "give one value for every dataset, or one per dataset in the order of dataset_name."
                )
            setattr(self, option, values)
        _check_validation_size(self.validation_size)

    deprecated_flags: ClassVar[tuple[str, ...]] = ()
    """Fields of a recipe's arguments that are deprecated ways to name its datasets (left out of :meth:`settings`)."""

    def take_deprecated(self, old: str | Sequence[str], names: str | Sequence[str], default: Sequence[str]) -> None:
        """Use the value of the deprecated flag(s) ``--<old>`` (a recipe's former way to name its datasets), given as
        ``names``, as ``dataset_name``, with a ``FutureWarning`` naming the new flag. The old flag wins over a
        ``dataset_name`` other than the recipe's ``default`` (a config's ``dataset_name`` overridden on the command
        line the old way), and the warning says so. The old fields keep their values (code reading them still
        works); list them in ``deprecated_flags`` so that :meth:`settings` (the recipe's stage fingerprints) is the
        same as with ``--dataset_name``. Call it in ``__post_init__`` before ``super().__post_init__()``."""
        flags = [old] if isinstance(old, str) else list(old)
        names = _as_list(names, flags[0])
        current = _as_list(self.dataset_name, "dataset_name")
        replaced = f" It replaces dataset_name {current}." if current not in (list(default), names) else ""
        warnings.warn(
            f"{' and '.join(f'--{f}' for f in flags)} {'is' if len(flags) == 1 else 'are'} deprecated and will be "
            f"removed in the next release: use --dataset_name instead (--dataset_name {' '.join(map(str, names))}; in "
            f"a YAML config `dataset_name: [{', '.join(map(str, names))}]`).{replaced}",
            FutureWarning,
            stacklevel=4,
        )
        self.dataset_name = names

    def settings(self) -> dict[str, Any]:
        """``dataclasses.asdict`` of the arguments without the deprecated data flags (``deprecated_flags``): what a
        recipe's results depend on, the same whether the datasets were named the old way or with ``--dataset_name``."""
        return {k: v for k, v in asdict(self).items() if k not in self.deprecated_flags}

    def _value(self, option: str, index: int):
        values = getattr(self, option)
        if values is None:
            return None
        return values[0] if len(values) == 1 else values[index]

    def load_datasets(self, seed: int = 42, **kwargs: Any) -> list[datasets.DatasetDict]:
        """Every ``dataset_name`` read with these arguments (:func:`load_text_classification`), one
        ``DatasetDict`` each. A subclass with ``max_train_samples`` / ``max_eval_samples`` fields gets its train /
        validation and test splits subsampled (seeded). ``kwargs``: the loader's other options, e.g. ``label_names``
        (a model's classes, for the data's to be mapped to them by name) or ``cache_dir``."""
        limits = {"train": getattr(self, "max_train_samples", None)}
        limits["validation"] = limits["test"] = getattr(self, "max_eval_samples", None)
        limits = {split: n for split, n in limits.items() if n}
        kwargs = {"validation_size": self.validation_size, "data_dir": self.data_dir,
                  "max_samples_per_split": limits or None, **kwargs}
        return [spec.load(seed=seed, **kwargs) for spec in self.task_specs()]

    def load_dataset(self, seed: int = 42, **kwargs: Any) -> datasets.DatasetDict:
        """The one dataset of a single-task script (:meth:`load_datasets`; an error names the extra ones)."""
        if len(self.dataset_name) != 1:
            raise ValueError(f"This script trains on one dataset; dataset_name names {len(self.dataset_name)}: "
                             f"{self.dataset_name}.")
        return self.load_datasets(seed, **kwargs)[0]

    def task_specs(self) -> list[TaskDataSpec]:
        """One :class:`TaskDataSpec` per ``dataset_name``, with unique task names (:func:`unique_task_names`)."""
        specs = [
            TaskDataSpec(
                name_or_path=name,
                config=self._value("dataset_config", i),
                text_column=self._value("text_column", i),
                text_pair_column=self._value("text_pair_column", i),
                label_column=self._value("label_column", i),
                train_split=self._value("train_split", i),
                eval_split=self._value("eval_split", i),
                test_split=self._value("test_split", i),
            )
            for i, name in enumerate(self.dataset_name)
        ]
        names = unique_task_names([spec.name(self.data_dir) for spec in specs])
        return [replace(spec, task_name=name) for spec, name in zip(specs, names)]


def _given(value) -> bool:
    return value is not None and str(value).strip().lower() not in _NONE_STRINGS


def _as_list(value, option: str) -> list:
    if value is None:
        return [None]
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, Sequence):
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    raise ValueError(f"{option} must be a string or a list of strings, got {value!r}.")
