"""Load any text-classification data (a registered name, a local file or folder, a ``save_to_disk`` folder, a Hub id)
into the library's common schema, and the recipe arguments that name it.

:func:`load_text_classification` returns a :class:`datasets.DatasetDict` with the splits ``train``, ``validation``
and, when the source has one, ``test``; every split has the columns of the registry (see
:mod:`distil_trainers.data.registry`):

* ``id`` (string, unique across the splits): the data's own ``id`` column when it has one whose values are unique
  across all splits, else ``"<split>-<row>"`` (the row number in the source split, 0-based; rows carved into the
  validation split keep their ``train-<row>`` id). Registered datasets keep their registry ids (``davidson-123``).
* ``text`` (string), and ``text_pair`` (string) when ``text_pair_column`` is given (sentence-pair tasks);
* ``label``: a :class:`datasets.ClassLabel`. String labels are encoded (classes sorted by name, the same ids in every
  split); integer labels without names get the names ``"0"``, ``"1"``... Every other column is dropped.

Usage::

    from distil_trainers.data import load_text_classification

    dd = load_text_classification("my.csv", text_column="text", label_column="label")   # "hate"/"none" strings
    dd["train"].features["label"].names          # ['hate', 'none']; validation carved from train (10 %)
    dd = load_text_classification("my.csv", label_names=["none", "hate"])  # ids in a fine-tuned model's order

Resolution of ``name_or_path``, in this order:

1. a registered name (:func:`~distil_trainers.data.registry.list_datasets`): loaded by
   :func:`~distil_trainers.data.registry.load_dataset_by_name` (local copy below ``data_dir``, else its Hub copy),
   with its ids and classes; ``validation_size`` is passed to loaders that carve their own validation split (Davidson,
   HASOC). The column options must keep their defaults (the data is already in the common schema). A local folder
   that has a registered name is read as a folder when written as a path (``./sst2``).
2. an existing local path, as given (``~`` expanded), else relative to the data directory
   (:func:`~distil_trainers.data.registry.get_data_dir`):

   * a file ``.csv``, ``.tsv`` (tab-separated csv), ``.json`` / ``.jsonl`` (JSON lines or a JSON list of records) or
     ``.parquet``: read with :func:`datasets.load_dataset` (``"csv"`` / ``"json"`` / ``"parquet"``, ``data_files``;
     csv fields are read as written: ``NA``, ``None`` or ``null`` stay strings). Its rows are the train split.
   * a folder written by ``save_to_disk`` (it holds ``dataset_dict.json``, or ``state.json`` and
     ``dataset_info.json``): :func:`datasets.load_from_disk`; a single ``Dataset`` is the train split.
   * any other folder: its data files (same suffixes, not recursive), each the split named by its file name:
     ``train.csv``; ``validation.csv`` / ``valid`` / ``val`` / ``dev``; ``test.csv``; shards such as
     ``train-00000-of-00002.parquet`` or ``train_part2.csv`` join their split. Other files are ignored (logged).

3. else, when it looks like a Hub dataset id (``name`` or ``owner/name``, no data-file suffix): the Hub dataset (with
   ``config``), through :func:`datasets.load_dataset` (offline, only its cached copy can load).

Splits: ``train_split``, ``eval_split`` and ``test_split`` name the source's train, validation and test splits (split
names of a ``DatasetDict``, file names in a folder). A default name also finds the usual other names (``dev``,
``valid``, ``val`` for ``validation``; ``training``; ``testing``), an explicitly given one only itself; ``None``
(``"none"`` on the command line) ignores that split of the source. Splits of the source that none of them names are
dropped (logged). A missing validation split is carved from train: ``validation_size`` of it (a fraction, or a count
when >= 1), stratified by label where possible, seeded with ``seed``, and said in the log. A missing test split is
allowed (the result has no ``test`` key; the recipes then report on the validation split and say so).

Labels: with ``label_names`` (the classes of a model that already names them, e.g. a fine-tuned teacher's
``config.id2label`` in id order) the labels are mapped to the model's ids by class name
(:func:`~distil_trainers.data.labels.align_labels`; names compared ignoring case, accents, ``-``/``_``/blanks). The
same names in another order are re-indexed (and logged); classes that do not match are one error listing both sides.
Integer labels without class names are taken to be the model's ids already (logged as a warning).

``max_samples_per_split`` then subsamples (seeded, stratified by label; see
:func:`~distil_trainers.data.registry.subsample_splits`).

Errors (all raised before any training):

* :class:`~distil_trainers.data.registry.DatasetNotAvailableError` (a ``FileNotFoundError``): not registered, "not
  found locally" (the paths looked at are listed) and, for a Hub id, the Hub's answer; when offline
  (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set, or the Hub unreachable) it says that the Hub cannot be reached.
  A registered dataset whose files are missing raises it too, from the registry.
* ``ValueError``: an unsupported file type; a folder without a train file (its files and the expected names are
  listed); a split given explicitly that the source lacks, or one split used for two roles; an empty split; a text,
  text-pair or label column that a split lacks (its columns are listed); texts that are not strings or are missing;
  missing, blank or non-class labels (see :func:`~distil_trainers.data.labels.encode_labels`); classes that do not
  match ``label_names``; a ``validation_size`` that leaves train or validation empty; column options given for a
  registered dataset.

:class:`DatasetArguments` holds these options for the recipes (``--dataset_name`` one value per task, the per-task
options one value for every task or one per task); :meth:`DatasetArguments.task_specs` returns one
:class:`TaskDataSpec` per task, whose :meth:`TaskDataSpec.load` calls :func:`load_text_classification`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import datasets

from .labels import align_labels, encode_labels, label_names_of, model_label_names
from .registry import (
    DATA_DIR_ENV,
    DatasetNotAvailableError,
    _split_indices,
    get_data_dir,
    get_dataset_spec,
    list_datasets,
    load_dataset_by_name,
    subsample_splits,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DATA_FILE_SUFFIXES",
    "DatasetArguments",
    "TaskDataSpec",
    "hub_offline",
    "load_text_classification",
    "task_name_of",
    "unique_task_names",
]

DATA_FILE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""Data-file suffixes read by :func:`load_text_classification`, and the :func:`datasets.load_dataset` builder of
each."""

DEFAULT_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing"),
}
"""Names that a role's split also goes by when its option keeps the default name."""

_NONE_STRINGS = {"", "none", "null"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TRUE = {"1", "on", "yes", "true"}


# ---------------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------------


def load_text_classification(
    name_or_path: str | os.PathLike,
    *,
    config: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    train_split: str = "train",
    eval_split: str | None = "validation",
    test_split: str | None = "test",
    validation_size: float = 0.1,
    seed: int = 42,
    data_dir: str | os.PathLike | None = None,
    label_names: Sequence[str] | Mapping[Any, str] | None = None,
    max_samples_per_split: Mapping[str, int] | int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """Load ``name_or_path`` as a ``DatasetDict`` with splits ``train``, ``validation`` and (if the source has one)
    ``test``, columns ``id``, ``text`` (, ``text_pair``), ``label`` (ClassLabel). See the module docstring for the
    resolution order, the split and label rules and every error.

    Args:
        name_or_path: a registered name, a local file or folder, a ``save_to_disk`` folder, or a Hub dataset id.
        config: the Hub dataset's configuration (``datasets.load_dataset(name, config)``).
        text_column / text_pair_column / label_column: the source's columns holding the text, the optional second
            text of a sentence pair, and the class.
        train_split / eval_split / test_split: the source's split names (``None``: ignore that split).
        validation_size: share of train carved into a validation split when the source has none (count if >= 1).
        seed: seed of that carving, of the registry's own splits and of the subsampling.
        data_dir: the data directory (registered datasets, and relative paths not found as given).
        label_names: the classes of a model in id order (or its ``id2label``): the labels are mapped to its ids.
        max_samples_per_split: keep at most this many examples per split (int, or ``{"train": 1000}``).
        cache_dir: ``cache_dir`` of :func:`datasets.load_dataset`.
    """
    name = os.fspath(name_or_path)
    roles = {"train": train_split, "validation": eval_split, "test": test_split}
    if not train_split:
        raise ValueError("train_split is required: the split of the source that the models are trained on.")
    _check_validation_size(validation_size)
    columns = {"text_column": text_column, "text_pair_column": text_pair_column, "label_column": label_column}
    if len({c for c in columns.values() if c}) != sum(1 for c in columns.values() if c):
        raise ValueError(f"text_column, text_pair_column and label_column must be different columns, got {columns}.")

    if name in list_datasets():
        changed = {k: v for k, v in columns.items() if v != {"text_column": "text", "label_column": "label"}.get(k)}
        if changed or config is not None:
            given = {**changed, **({"config": config} if config is not None else {})}
            raise ValueError(
                f"{name!r} is a registered dataset, already in the common schema (id, text, label): the options "
                f"{given} apply to files, folders and Hub datasets only (with several datasets, give one value per "
                f"dataset, e.g. --text_column tweet text). Give the path of the data files instead (e.g. "
                f"./{name}/...) to read their own columns."
            )
        raw = _load_registered(
            name, data_dir=data_dir, seed=seed, validation_size=validation_size, cache_dir=cache_dir
        )
        splits, origin = _pick_splits(raw, roles, name), name
        registered = True
    else:
        path = _find_local(name, data_dir)
        if path is not None:
            splits, origin = _load_local(path, roles, cache_dir)
        else:
            splits, origin = _load_hub(name, config, roles, data_dir, cache_dir)
        registered = False

    for role, ds in splits.items():
        if len(ds) == 0:
            raise ValueError(f"The {role} split of {origin} is empty.")
    if not registered:
        splits = _to_schema(splits, origin, text_column, text_pair_column, label_column)
    names = _model_names(label_names)
    dd = _encode(datasets.DatasetDict(splits), origin, names)
    # the examples are chosen (carving, subsampling) on the data's own class ids, so that mapping them to a model's
    # order below changes no example: the same data whichever model it is prepared for
    if "validation" not in dd:
        dd = _carve_validation(dd, origin, validation_size, seed, eval_split)
    if "test" not in dd:
        logger.info("%s has no test split%s.", origin, "" if test_split else " (test_split is none)")
    if max_samples_per_split is not None:
        dd = subsample_splits(dd, max_samples_per_split, seed=seed)
    if names is not None:
        try:
            dd = align_labels(dd, names, "label")
        except ValueError as exc:
            raise ValueError(f"{origin}: {exc}") from None
    return datasets.DatasetDict({split: dd[split] for split in ("train", "validation", "test") if split in dd})


def _check_validation_size(size: float) -> None:
    if not (0 < size < 1 or (size >= 1 and float(size).is_integer())):
        raise ValueError(
            f"validation_size must be a fraction in (0, 1) or a whole number of examples >= 1, got {size!r}."
        )


def _load_registered(name: str, *, data_dir, seed: int, validation_size: float, cache_dir) -> datasets.DatasetDict:
    kwargs = {}
    if 0 < validation_size < 1 and "validation_size" in inspect.signature(get_dataset_spec(name).loader).parameters:
        kwargs["validation_size"] = validation_size
    return load_dataset_by_name(name, data_dir=data_dir, seed=seed, cache_dir=cache_dir, **kwargs)


# ---- where the data is ----------------------------------------------------------------------------------------------


def _candidate_paths(name: str, data_dir) -> list[Path]:
    given = Path(name).expanduser()
    paths = [given]
    root = get_data_dir(data_dir)
    if not given.is_absolute() and root is not None:
        paths.append(root / given)
    return paths


def _find_local(name: str, data_dir) -> Path | None:
    return next((p for p in _candidate_paths(name, data_dir) if p.exists()), None)


def _looks_like_hub_id(name: str) -> bool:
    return (
        bool(_HUB_ID.match(name))
        and Path(name).suffix.lower() not in DATA_FILE_SUFFIXES
        and ".." not in name
        and not name.endswith(".")
    )


def hub_offline(variables: Sequence[str] = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")) -> bool:
    """Whether the Hub is switched off: one of the environment ``variables`` (by default those of datasets) set to a
    true value."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in variables)


def _is_connection_error(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names = " ".join(c.__name__ for c in type(exc).__mro__)
        if isinstance(exc, ConnectionError) or any(
            k in names for k in ("Connect", "Timeout", "Offline", "LocalEntry")
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_found(name: str, data_dir, hub_error: BaseException | None = None, tried_hub: bool = False) -> str:
    looked = ", ".join(str(p.absolute()) for p in _candidate_paths(name, data_dir))
    lines = [
        f"Dataset {name!r} is not a registered dataset and was not found locally (looked for: {looked}).",
        f"Registered datasets: {', '.join(list_datasets())}.",
    ]
    offline = hub_offline()
    if tried_hub:
        if offline or (hub_error is not None and _is_connection_error(hub_error)):
            why = "offline mode: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set" if offline else _one_line(hub_error)
            lines.append(
                f"As a Hub dataset id it could not be loaded: the Hugging Face Hub cannot be reached ({why}) and no "
                "cached copy was found."
            )
        elif hub_error is not None:
            lines.append(f"As a Hub dataset id it could not be loaded: {_one_line(hub_error)}")
    else:
        hub = "it was not tried on the Hub"
        if offline:
            hub += " (and the Hugging Face Hub cannot be reached: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
        lines.append(f"It looks like a file path, so {hub}.")
    lines.append(
        "Give an existing csv/tsv/json/jsonl/parquet file, a folder of split files (train.csv, dev.csv, test.csv), a "
        f"save_to_disk folder or a Hub id; relative paths are also looked for in the data directory ({DATA_DIR_ENV} "
        "or --data_dir)."
    )
    return "\n".join(lines)


# ---- reading --------------------------------------------------------------------------------------------------------


def _builder(path: Path) -> tuple[str, dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in DATA_FILE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; supported: {', '.join(DATA_FILE_SUFFIXES)}."
        )
    kind = DATA_FILE_SUFFIXES[suffix]
    kwargs: dict[str, Any] = {}
    if kind == "csv":
        kwargs["keep_default_na"] = False  # "NA", "None", "null" are texts and labels, not missing values
        if suffix == ".tsv":
            kwargs["delimiter"] = "\t"
    return kind, kwargs


def _read_files(files: Mapping[str, Sequence[Path]], cache_dir) -> dict[str, datasets.Dataset]:
    kinds = [_builder(p) for paths in files.values() for p in paths]
    if any(k != kinds[0] for k in kinds):
        listing = sorted(p.name for paths in files.values() for p in paths)
        raise ValueError(f"The data files {listing} mix file types; give files of one type.")
    kind, kwargs = kinds[0]
    data_files = {split: [str(p) for p in paths] for split, paths in files.items()}
    try:
        loaded = datasets.load_dataset(
            kind, data_files=data_files, cache_dir=None if cache_dir is None else str(cache_dir), **kwargs
        )
    except ValueError as exc:  # datasets: 'Instruction "test" corresponds to no data!' for a file without rows
        empty = re.search(r'Instruction "([^"]+)" corresponds to no data', str(exc))
        if empty and empty.group(1) in data_files:
            raise ValueError(
                f"The {empty.group(1)} split is empty: {', '.join(data_files[empty.group(1)])} has no rows."
            ) from None
        raise
    return {split: loaded[split] for split in files}


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def _load_local(path: Path, roles: Mapping[str, str | None], cache_dir) -> tuple[dict[str, datasets.Dataset], str]:
    origin = repr(str(path))
    if path.is_file():
        splits = _read_files({"train": [path]}, cache_dir)
        for role in ("validation", "test"):
            if roles[role] and roles[role] != DEFAULT_SPLITS[role]:
                raise ValueError(
                    f"{role} split {roles[role]!r} asked for, but {origin} is a single file (its rows are the train "
                    "split); give a folder of split files, or the default split names."
                )
        return splits, origin
    if _is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({roles["train"]: loaded})
        return _pick_splits(loaded, roles, origin), origin
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_FILE_SUFFIXES)
    chosen = _resolve_roles([p.stem for p in files], roles, origin, _stem_matches, "files")
    by_role = {role: [p for p in files if p.stem in stems] for role, stems in chosen.items()}
    ignored = sorted(p.name for p in files if not any(p in group for group in by_role.values()))
    if ignored:
        logger.info("%s: files not named like a train / validation / test split are ignored: %s", origin, ignored)
    return _read_files(by_role, cache_dir), origin


def _load_hub(name: str, config: str | None, roles, data_dir, cache_dir) -> tuple[dict[str, datasets.Dataset], str]:
    if not _looks_like_hub_id(name):
        raise DatasetNotAvailableError(_not_found(name, data_dir))
    try:
        args = (name,) if config is None else (name, config)
        loaded = datasets.load_dataset(*args, cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as exc:  # offline, unknown id, no access: one message saying where we looked
        raise DatasetNotAvailableError(_not_found(name, data_dir, exc, tried_hub=True)) from exc
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({roles["train"]: loaded})
    origin = f"Hub dataset {name!r}" + (f" (config {config!r})" if config else "")
    return _pick_splits(loaded, roles, origin), origin


# ---- splits ---------------------------------------------------------------------------------------------------------


def _stem_matches(stem: str, name: str) -> bool:
    return re.fullmatch(rf"{re.escape(name.lower())}([-_.].*)?", stem.lower()) is not None


def _key_matches(key: str, name: str) -> bool:
    return key.lower() == name.lower()


def _resolve_roles(items: Sequence[str], roles: Mapping[str, str | None], origin: str, matches, what: str):
    """``{role: [items]}`` for the roles the source has (``items``: split names or file stems)."""
    chosen: dict[str, list[str]] = {}
    for role, requested in roles.items():
        if not requested:
            continue
        default = DEFAULT_SPLITS[role]
        candidates = [requested] + ([a for a in SPLIT_ALIASES[role] if a != requested] if requested == default else [])
        for candidate in candidates:
            found = [item for item in items if matches(item, candidate)]
            if found:
                chosen[role] = found
                break
        else:
            option = {"train": "train_split", "validation": "eval_split", "test": "test_split"}[role]
            if role == "train" or requested != default:
                expected = ", ".join(repr(c) for c in candidates)
                raise ValueError(
                    f"{origin} has no {role} split named {expected} ({option}); its {what}: {sorted(items)}."
                    + (" Name the files train.csv, validation.csv (or dev.csv), test.csv." if what == "files" else "")
                )
    used: dict[str, str] = {}
    for role, found in chosen.items():
        for item in found:
            if item in used:
                raise ValueError(f"{origin}: {item!r} is both the {used[item]} and the {role} split; name them apart.")
            used[item] = role
    return chosen


def _pick_splits(loaded: datasets.DatasetDict, roles, origin: str) -> dict[str, datasets.Dataset]:
    chosen = _resolve_roles(list(loaded), roles, origin, _key_matches, "splits")
    dropped = sorted(set(loaded) - {key for keys in chosen.values() for key in keys})
    if dropped:
        logger.info("%s: splits %s are not used (not named by train / eval / test_split).", origin, dropped)
    return {role: loaded[keys[0]] for role, keys in chosen.items()}


# ---- schema and labels ----------------------------------------------------------------------------------------------


def _ids(splits: Mapping[str, datasets.Dataset], origin: str) -> dict[str, list[str]]:
    if all("id" in ds.column_names for ds in splits.values()):
        own = {role: ds["id"][:] for role, ds in splits.items()}
        values = [v for ids in own.values() for v in ids]
        strings = [str(v) for v in values]
        if None not in values and len(set(strings)) == len(strings):
            return {role: [str(v) for v in ids] for role, ids in own.items()}
        logger.info("%s: its 'id' column is not unique across the splits; ids '<split>-<row>' are used.", origin)
    return {role: [f"{role}-{i}" for i in range(len(ds))] for role, ds in splits.items()}


def _to_schema(splits: Mapping[str, datasets.Dataset], origin: str, text_column, text_pair_column, label_column):
    for role, ds in splits.items():
        for option, column in (("text_column", text_column), ("text_pair_column", text_pair_column),
                               ("label_column", label_column)):  # fmt: skip
            if column and column not in ds.column_names:
                raise ValueError(
                    f"Column {column!r} ({option}) not found in the {role} split of {origin}; its columns are "
                    f"{ds.column_names}. Pass --{option} <column>."
                )
    ids = _ids(splits, origin)
    wanted = {text_column: "text", label_column: "label"}
    if text_pair_column:
        wanted[text_pair_column] = "text_pair"
    order = ["id", "text", *(["text_pair"] if text_pair_column else []), "label"]
    out = {}
    for role, ds in splits.items():
        ds = ds.select_columns(list(wanted)).rename_columns({k: v for k, v in wanted.items() if k != v})
        for column in ("text", "text_pair"):
            if column not in ds.column_names:
                continue
            feature = ds.features[column]
            if not (isinstance(feature, datasets.Value) and feature.dtype == "string"):
                if not isinstance(feature, datasets.Value):
                    raise ValueError(
                        f"Column {column!r} of the {role} split of {origin} must hold texts, got {feature}."
                    )
                ds = ds.cast_column(column, datasets.Value("string"))  # also numbers read as numbers, large_string
            texts = ds[column][:]
            missing = [i for i, t in enumerate(texts) if t is None]
            if missing:
                raise ValueError(
                    f"{len(missing)} rows of the {role} split of {origin} have no {column} (rows {missing[:5]}...); "
                    "drop or fill them."
                )
            empty = sum(1 for t in texts if not t.strip())
            if empty:
                logger.warning("%s: %d rows of the %s split have an empty %s.", origin, empty, role, column)
        ds = ds.add_column("id", ids[role])
        out[role] = ds.select_columns(order)
    return out


def _model_names(label_names) -> list[str] | None:
    """A model's class names in id order, or ``None`` when it names none (``LABEL_i`` placeholders)."""
    if label_names is None:
        return None
    if not isinstance(label_names, Mapping):
        label_names = dict(enumerate(label_names))
    return model_label_names(label_names)


def _encode(dd: datasets.DatasetDict, origin: str, names: list[str] | None) -> datasets.DatasetDict:
    """``label`` as a ClassLabel: string labels encoded, integer labels named (by the model's names when given)."""
    features = {split: ds.features["label"] for split, ds in dd.items()}
    is_int = all(isinstance(f, datasets.Value) and f.dtype.startswith("int") for f in features.values())
    try:
        if names is not None and is_int:
            logger.warning(
                "%s has integer labels without class names: they are taken to be the model's class ids %s.",
                origin, dict(enumerate(names)),
            )  # fmt: skip
            dd = encode_labels(dd, "label", names=names)
        else:
            dd = encode_labels(dd, "label")
    except ValueError as exc:
        raise ValueError(f"{origin}: {exc}") from None
    if label_names_of(dd, "label") is None:
        raise ValueError(f"{origin}: the labels could not be given class names (ignored -100 labels only?).")
    return dd


def _carve_validation(
    dd: datasets.DatasetDict, origin: str, size: float, seed: int, eval_split: str | None
) -> datasets.DatasetDict:
    train = dd["train"]
    n = len(train)
    count = int(size) if size >= 1 else int(round(size * n))
    if not 0 < count < n:
        raise ValueError(
            f"{origin} has no validation split and validation_size={size} carves {count} of its {n} training "
            "examples; give a validation split or a validation_size that leaves both splits non-empty."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rest, held = _split_indices(train["label"][:], count, seed)
    how = "stratified by label" if not caught else "at random: too few examples per class to stratify"
    logger.info(
        "%s has no validation split%s: carved %d of its %d training examples into one (validation_size=%s, %s, seed "
        "%d).", origin, "" if eval_split else " (eval_split is none)", count, n, size, how, seed,
    )  # fmt: skip
    out = dict(dd)
    out["train"], out["validation"] = train.select(rest.tolist()), train.select(held.tolist())
    return datasets.DatasetDict(out)


# ---------------------------------------------------------------------------------------------------------------------
# task names and recipe arguments
# ---------------------------------------------------------------------------------------------------------------------


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
