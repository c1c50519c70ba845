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

The recipes name their data with :class:`~distil_trainers.data.arguments.DatasetArguments`, which calls
:func:`load_text_classification` once per task.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from .labels import align_labels, encode_labels, label_names_of, model_label_names
from .registry import (
    DATA_DIR_ENV,
    DatasetNotAvailableError,
    _one_line,
    _split_indices,
    get_data_dir,
    get_dataset_spec,
    list_datasets,
    load_dataset_by_name,
    subsample_splits,
)

logger = logging.getLogger(__name__)

__all__ = ["DATA_FILE_SUFFIXES", "hub_offline", "load_text_classification"]

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
