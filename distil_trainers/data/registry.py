"""A registry of named text-classification datasets with one common schema.

Every registered dataset loads as a :class:`datasets.DatasetDict` whose splits (``train``, ``validation``, ``test``,
as far as the source has them) have exactly three columns:

* ``id`` (string): stable and unique across all splits of the dataset: ``"davidson-123"`` (row index of the csv),
  ``"hasoc_en_17"`` (HASOC's ``text_id``; rows of the official test file get ``"-test"`` appended, because the
  English test file reuses 857 training ``text_id`` values for different posts), ``"sst2-train-17"``,
  ``"tweeteval_hate-validation-3"``, ``"redv1-test-5"`` (split and 0-based line/row number);
* ``text`` (string): the raw text, unchanged;
* ``label``: a :class:`datasets.ClassLabel` carrying the class names in label-id order.

Local files are read first (see :func:`get_data_dir` for where they are looked for); when they are missing and the
dataset has a public Hugging Face Hub copy, that copy is loaded and mapped to the same schema; otherwise
:class:`DatasetNotAvailableError` says which paths were tried and how to point the package at the data.

Registered datasets and their class names (label id order):

============================= ====================================================================
name                          classes
============================= ====================================================================
``davidson``                  hate, offensive, neither (stratified seeded 80/10/10 split)
``tweeteval_hate``            not-hate, hate (from ``mapping.txt``)
``tweeteval_emotion``         anger, joy, optimism, sadness (from ``mapping.txt``)
``tweeteval_sentiment``       negative, neutral, positive (from ``mapping.txt``)
``sst2``                      negative, positive
``redv1``                     anger, fear, joy, sadness, neutral (English names of the Romanian labels)
``hasoc_{en,de,hi}_a``        NOT, HOF (task 1; HOF is the positive class 1)
``hasoc_{en,de,hi}_b``        NONE, HATE, OFFN, PRFN (task 2); HATE, OFFN, PRFN with ``hof_only=True``
============================= ====================================================================

Usage::

    from distil_trainers.data import load_dataset_by_name

    dd = load_dataset_by_name("hasoc_en_b", seed=13, hof_only=True, max_samples_per_split={"train": 500})
    names = dd["train"].features["label"].names
"""

from __future__ import annotations

import csv
import inspect
import os
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

__all__ = [
    "DATA_DIR_ENV",
    "SPLITS",
    "DatasetNotAvailableError",
    "DatasetSpec",
    "get_data_dir",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset_by_name",
    "register_dataset",
    "subsample_splits",
]

DATA_DIR_ENV = "DISTIL_TRAINERS_DATA_DIR"
"""Environment variable naming the directory that holds the dataset folders (``davidson/``, ``hasoc/``, ...)."""

SPLITS = ("train", "validation", "test")
"""Canonical split names, in order."""

COLUMNS = ("id", "text", "label")


class DatasetNotAvailableError(FileNotFoundError):
    """Raised when a dataset is neither found locally nor loadable from the Hugging Face Hub."""


@dataclass(frozen=True)
class DatasetSpec:
    """What the registry knows about one dataset.

    ``loader(root, *, seed, **kwargs)`` reads the local files below the data root ``root`` and raises
    :class:`FileNotFoundError` (with ``filename`` set) when they are not there. ``hub_loader(hub_id, *, hub_config,
    seed, cache_dir, **kwargs)`` loads and maps the Hub copy (only used when ``hub_id`` is set).
    """

    name: str
    loader: Callable[..., datasets.DatasetDict]
    hub_id: str | None = None
    hub_config: str | None = None
    hub_loader: Callable[..., datasets.DatasetDict] | None = None
    description: str = ""
    language: str = "en"  # ISO 639-1 code of the texts (model cards list it)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    *,
    hub_id: str | None = None,
    description: str = "",
    hub_config: str | None = None,
    hub_loader: Callable[..., datasets.DatasetDict] | None = None,
    language: str = "en",
) -> Callable[[Callable[..., datasets.DatasetDict]], Callable[..., datasets.DatasetDict]]:
    """Decorator registering ``fn(root: Path, *, seed: int, **kwargs) -> DatasetDict`` under ``name``.

    ``fn`` reads the dataset's local files below the data root ``root`` and must raise :class:`FileNotFoundError`
    when they are missing (the registry then tries the Hub). ``hub_id`` (and ``hub_config``) name the public Hub
    copy; ``hub_loader`` maps it to the common schema. Without ``hub_loader`` a generic mapping is used: columns
    ``text``/``sentence``/``tweet`` -> ``text``, ``label`` (a ClassLabel) -> ``label``, splits with only ``-1``
    labels dropped.
    """

    def decorator(fn: Callable[..., datasets.DatasetDict]) -> Callable[..., datasets.DatasetDict]:
        if name in _REGISTRY:
            raise ValueError(f"A dataset named {name!r} is already registered.")
        _REGISTRY[name] = DatasetSpec(
            name=name,
            loader=fn,
            hub_id=hub_id,
            hub_config=hub_config,
            hub_loader=hub_loader if hub_loader is not None or hub_id is None else _generic_hub_loader(name),
            description=description,
            language=language,
        )
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_REGISTRY)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a registered dataset (``ValueError`` listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown dataset {name!r}. Registered datasets: {', '.join(list_datasets())}.") from None


# ----------------------------------------------------------------------------------------------------------------------
# data directory resolution
# ----------------------------------------------------------------------------------------------------------------------


def _default_data_dirs() -> list[Path]:
    repo_dir = Path(__file__).resolve().parents[2]  # <repo>/distil_trainers/data/registry.py -> <repo>
    candidates = [Path.cwd() / ".." / "shared" / "data", repo_dir.parent / "shared" / "data"]
    unique: list[Path] = []
    for path in candidates:
        path = Path(os.path.normpath(path.absolute()))
        if path not in unique:
            unique.append(path)
    return unique


def _candidate_data_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return [Path(env).expanduser()]
    return _default_data_dirs()


def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The directory holding the dataset folders, or ``None`` if there is none.

    Resolution order: the explicit ``data_dir``; else the environment variable ``DISTIL_TRAINERS_DATA_DIR``; else
    the first existing of ``<cwd>/../shared/data`` and ``<repo checkout>/../shared/data`` (a ``shared/`` folder
    beside the checkout that contains the ``distil_trainers`` package). An explicit or environment path that is not
    an existing directory gives ``None`` (no fallback to the defaults).
    """
    for path in _candidate_data_dirs(data_dir):
        if path.is_dir():
            return path
    return None


# ----------------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------------


def load_dataset_by_name(
    name: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 42,
    *,
    max_samples_per_split: Mapping[str, int] | int | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> datasets.DatasetDict:
    """Load a registered dataset as a ``DatasetDict`` with columns ``id``, ``text``, ``label`` (ClassLabel).

    Args:
        name: a name from :func:`list_datasets`.
        data_dir: directory holding the dataset folders (see :func:`get_data_dir` for the default).
        seed: seed of the splits made by the loader (Davidson, HASOC validation) and of the subsampling.
        max_samples_per_split: keep at most this many examples per split (an int for every split, or a dict
            ``{"train": 1000}`` for some splits); seeded, stratified by label where possible, original order kept.
        cache_dir: ``cache_dir`` for :func:`datasets.load_dataset` when the Hub copy is used.
        **kwargs: loader options, e.g. ``validation_size`` (HASOC, Davidson, ``test_size`` for Davidson) and
            ``hof_only`` (HASOC task b).

    Raises:
        ValueError: unknown name.
        DatasetNotAvailableError: no local files and no (reachable) Hub copy.
    """
    spec = get_dataset_spec(name)
    try:  # unknown options are a caller error, not a reason to try the Hub
        inspect.signature(spec.loader).bind(Path("."), seed=seed, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from None
    tried: list[str] = []
    dataset_dict: datasets.DatasetDict | None = None
    for root in _candidate_data_dirs(data_dir):
        try:
            dataset_dict = spec.loader(root, seed=seed, **kwargs)
            break
        except FileNotFoundError as exc:
            tried.append(str(exc.filename) if exc.filename else str(exc))
    if dataset_dict is None:
        hub_error = None
        if spec.hub_id is not None and spec.hub_loader is not None:
            try:
                dataset_dict = spec.hub_loader(
                    spec.hub_id, hub_config=spec.hub_config, seed=seed, cache_dir=cache_dir, **kwargs
                )
            except Exception as exc:  # any Hub failure (offline, unknown id, schema) goes into the message below
                hub_error = _one_line(exc)
        if dataset_dict is None:
            raise DatasetNotAvailableError(_not_available_message(spec, tried, hub_error))
    _check_schema(name, dataset_dict)
    if max_samples_per_split is not None:
        dataset_dict = subsample_splits(dataset_dict, max_samples_per_split, seed=seed)
    return dataset_dict


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_available_message(spec: DatasetSpec, tried: Sequence[str], hub_error: str | None) -> str:
    lines = [f"Dataset {spec.name!r} is not available.", "Local paths tried (not found):"]
    lines += [f"  - {path}" for path in tried] or ["  (none)"]
    if spec.hub_id is None:
        lines.append("Hugging Face Hub: this dataset has no public Hub copy, so it must be available locally.")
    else:
        hub = spec.hub_id + (f" (config {spec.hub_config!r})" if spec.hub_config else "")
        lines.append(f"Hugging Face Hub: tried {hub}: {hub_error}")
    lines.append(
        f"Set the environment variable {DATA_DIR_ENV} (or pass data_dir=...) to the directory that holds the "
        "dataset folders (davidson/, hasoc/, sst2/, ...)."
    )
    return "\n".join(lines)


def _check_schema(name: str, dataset_dict: datasets.DatasetDict) -> None:
    if not isinstance(dataset_dict, datasets.DatasetDict) or not dataset_dict:
        raise ValueError(
            f"Loader of {name!r} returned {type(dataset_dict).__name__}, expected a non-empty DatasetDict"
        )
    seen: set[str] = set()
    total = 0
    for split, ds in dataset_dict.items():
        if split not in SPLITS:
            raise ValueError(f"Loader of {name!r} returned split {split!r}; allowed: {SPLITS}")
        if tuple(ds.column_names) != COLUMNS:
            raise ValueError(f"Loader of {name!r}: split {split!r} has columns {ds.column_names}, expected {COLUMNS}")
        if not isinstance(ds.features["label"], datasets.ClassLabel):
            raise ValueError(f"Loader of {name!r}: column 'label' of split {split!r} is not a ClassLabel")
        seen.update(ds["id"][:])
        total += len(ds)
    if len(seen) != total:
        raise ValueError(f"Loader of {name!r} returned duplicate ids")


# ----------------------------------------------------------------------------------------------------------------------
# helpers shared by the loaders
# ----------------------------------------------------------------------------------------------------------------------


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    return path


def _features(names: Sequence[str]) -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(names)),
        }
    )


def _make_split(
    ids: Sequence[str], texts: Sequence[str], labels: Sequence[int], names: Sequence[str]
) -> datasets.Dataset:
    if not len(ids) == len(texts) == len(labels):
        raise ValueError(f"ids/texts/labels differ in length: {len(ids)}, {len(texts)}, {len(labels)}")
    labels = [int(x) for x in labels]
    bad = sorted({x for x in labels if not 0 <= x < len(names)})
    if bad:
        raise ValueError(f"label ids {bad} out of range for class names {list(names)}")
    return datasets.Dataset.from_dict(
        {"id": [str(x) for x in ids], "text": [str(x) for x in texts], "label": labels}, features=_features(names)
    )


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file split on ``\\n`` only (tweets may contain other line-breaking characters)."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _split_indices(labels: Sequence[int], size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(len(labels))`` into (rest, held-out), stratified by ``labels`` if possible.

    ``size`` is a fraction in (0, 1) or an absolute count. Both index arrays are returned sorted.
    """
    n = len(labels)
    count = int(round(size * n)) if isinstance(size, float) else int(size)
    if not 0 <= count <= n:
        raise ValueError(f"split size {size!r} is out of range for {n} examples")
    indices = np.arange(n)
    if count == 0:
        return indices, indices[:0]
    if count == n:
        return indices[:0], indices
    from sklearn.model_selection import train_test_split

    try:
        rest, held = train_test_split(indices, test_size=count, random_state=seed, stratify=np.asarray(labels))
    except ValueError:  # a class with a single member, or fewer held-out examples than classes
        warnings.warn("stratified split impossible for these labels; using a random split", stacklevel=3)
        rest, held = train_test_split(indices, test_size=count, random_state=seed)
    return np.sort(rest), np.sort(held)


def subsample_splits(
    dataset_dict: datasets.DatasetDict, max_samples_per_split: Mapping[str, int] | int, seed: int = 42
) -> datasets.DatasetDict:
    """Keep at most ``max_samples_per_split`` examples per split (seeded, stratified by label where possible).

    An int applies to every split; a dict maps split names (``train``/``validation``/``test``) to limits, splits not
    in it are kept whole and names of splits the dataset lacks are ignored. The original order is kept.
    """
    if isinstance(max_samples_per_split, Mapping):
        unknown = sorted(set(max_samples_per_split) - set(SPLITS))
        if unknown:
            raise ValueError(f"max_samples_per_split has unknown split names {unknown}; allowed: {list(SPLITS)}")
        limits = dict(max_samples_per_split)
    else:
        limits = dict.fromkeys(dataset_dict, int(max_samples_per_split))
    out = {}
    for split, ds in dataset_dict.items():
        limit = limits.get(split)
        if limit is None or limit >= len(ds):
            out[split] = ds
            continue
        if limit < 0:
            raise ValueError(f"max_samples_per_split[{split!r}] must be >= 0, got {limit}")
        labels = ds["label"][:]
        _, keep = _split_indices(labels, limit, seed)
        out[split] = ds.select(keep.tolist())
    return datasets.DatasetDict(out)


def _normalise_name(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip().casefold()


# ----------------------------------------------------------------------------------------------------------------------
# Hub mapping
# ----------------------------------------------------------------------------------------------------------------------

_HUB_SPLITS = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}


def _load_hub(hub_id: str, hub_config: str | None, cache_dir: str | os.PathLike | None) -> datasets.DatasetDict:
    args = (hub_id,) if hub_config is None else (hub_id, hub_config)
    loaded = datasets.load_dataset(*args, cache_dir=None if cache_dir is None else str(cache_dir))
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _hub_to_schema(
    name: str,
    loaded: datasets.DatasetDict,
    text_column: str,
    label_column: str,
    names: Sequence[str],
    id_column: str | None = None,
) -> datasets.DatasetDict:
    out = {}
    for hub_split, ds in loaded.items():
        split = _HUB_SPLITS.get(hub_split)
        if split is None:
            continue
        labels = ds[label_column][:]
        if labels and all(x < 0 for x in labels):
            warnings.warn(
                f"{name}: Hub split {hub_split!r} has no labels (all -1, hidden test set); it is left out.",
                stacklevel=3,
            )
            continue
        keys = ds[id_column][:] if id_column else range(len(ds))
        ids = [f"{name}-{split}-{key}" for key in keys]
        out[split] = _make_split(ids, ds[text_column][:], labels, names)
    if not out:
        raise ValueError(f"{name}: the Hub copy has no labelled train/validation/test split")
    return datasets.DatasetDict({split: out[split] for split in SPLITS if split in out})


def _generic_hub_loader(name: str) -> Callable[..., datasets.DatasetDict]:
    def load(hub_id: str, *, hub_config: str | None, seed: int, cache_dir=None) -> datasets.DatasetDict:
        loaded = _load_hub(hub_id, hub_config, cache_dir)
        first = next(iter(loaded.values()))
        text_column = next((c for c in ("text", "sentence", "tweet") if c in first.column_names), None)
        label_feature = first.features.get("label")
        if text_column is None or not isinstance(label_feature, datasets.ClassLabel):
            raise ValueError(f"{hub_id}: expected a text column and a ClassLabel column 'label', got {first.features}")
        return _hub_to_schema(name, loaded, text_column, "label", label_feature.names)

    return load


# ----------------------------------------------------------------------------------------------------------------------
# Davidson et al. 2017
# ----------------------------------------------------------------------------------------------------------------------

DAVIDSON_NAMES = ("hate", "offensive", "neither")


def _three_way_split(
    name: str,
    ids: Sequence[str],
    texts: Sequence[str],
    labels: Sequence[int],
    names: Sequence[str],
    seed: int,
    validation_size: float,
    test_size: float,
) -> datasets.DatasetDict:
    ids, texts, labels = np.asarray(ids, dtype=object), np.asarray(texts, dtype=object), np.asarray(labels)
    n = len(labels)
    n_test, n_val = int(round(test_size * n)), int(round(validation_size * n))
    rest, test = _split_indices(labels, n_test, seed)
    train_rel, val_rel = _split_indices(labels[rest], n_val, seed)
    parts = {"train": rest[train_rel], "validation": rest[val_rel], "test": test}
    return datasets.DatasetDict(
        {
            split: _make_split(ids[idx].tolist(), texts[idx].tolist(), labels[idx].tolist(), names)
            for split, idx in parts.items()
            if len(idx)
        }
    )


def _davidson_hub(
    hub_id: str,
    *,
    hub_config: str | None,
    seed: int,
    cache_dir=None,
    validation_size: float = 0.1,
    test_size: float = 0.1,
) -> datasets.DatasetDict:
    ds = _load_hub(hub_id, hub_config, cache_dir)["train"]
    ids = [f"davidson-{i}" for i in range(len(ds))]  # row order of the Hub copy = row index of labeled_data.csv
    return _three_way_split(
        "davidson", ids, ds["tweet"][:], ds["class"][:], DAVIDSON_NAMES, seed, validation_size, test_size
    )


@register_dataset(
    "davidson",
    hub_id="tdavidson/hate_speech_offensive",
    hub_loader=_davidson_hub,
    description="Davidson et al. 2017 tweets: hate / offensive / neither (3-class, en). No official split: "
    "stratified seeded 80/10/10 train/validation/test. ids 'davidson-<csv row index>'.",
)
def _davidson_local(
    root: Path, *, seed: int = 42, validation_size: float = 0.1, test_size: float = 0.1
) -> datasets.DatasetDict:
    path = _require(root / "davidson" / "labeled_data.csv")
    df = pd.read_csv(path, index_col=0, dtype={"tweet": str}, keep_default_na=False, encoding="utf-8")
    ids = [f"davidson-{i}" for i in df.index]
    return _three_way_split(
        "davidson",
        ids,
        df["tweet"].tolist(),
        df["class"].astype(int).tolist(),
        DAVIDSON_NAMES,
        seed,
        validation_size,
        test_size,
    )


# ----------------------------------------------------------------------------------------------------------------------
# TweetEval
# ----------------------------------------------------------------------------------------------------------------------

# the upstream mapping.txt files (used for the Hub copy, whose names differ slightly, e.g. "non-hate")
TWEETEVAL_NAMES = {
    "hate": ("not-hate", "hate"),
    "emotion": ("anger", "joy", "optimism", "sadness"),
    "sentiment": ("negative", "neutral", "positive"),
}
_TWEETEVAL_FILES = (("train", "train"), ("validation", "val"), ("test", "test"))


def _read_mapping(path: Path) -> list[str]:
    entries = {}
    for line in _read_lines(path):
        if not line.strip():
            continue
        label_id, _, label_name = line.partition("\t")
        entries[int(label_id)] = label_name.strip()
    if sorted(entries) != list(range(len(entries))):
        raise ValueError(f"{path}: label ids are not 0..{len(entries) - 1}: {sorted(entries)}")
    return [entries[i] for i in range(len(entries))]


def _tweeteval_local(config: str) -> Callable[..., datasets.DatasetDict]:
    name = f"tweeteval_{config}"

    def load(root: Path, *, seed: int = 42) -> datasets.DatasetDict:
        folder = root / name
        names = _read_mapping(_require(folder / "mapping.txt"))
        out, missing = {}, {}
        for split, stem in _TWEETEVAL_FILES:
            text_path, label_path = folder / f"{stem}_text.txt", folder / f"{stem}_labels.txt"
            absent = [p for p in (text_path, label_path) if not p.is_file()]
            if absent:
                missing[split] = absent
                continue
            texts, labels = _read_lines(text_path), [int(x) for x in _read_lines(label_path)]
            if len(texts) != len(labels):
                raise ValueError(
                    f"{name}: {text_path.name} has {len(texts)} lines but {label_path.name} {len(labels)}"
                )
            out[split] = _make_split([f"{name}-{split}-{i}" for i in range(len(texts))], texts, labels, names)
        if not out:
            raise FileNotFoundError(2, "No such file", str(next(iter(missing.values()))[0]))
        if missing:
            detail = "; ".join(
                f"{split}: {', '.join(str(p) for p in paths)} missing" for split, paths in missing.items()
            )
            warnings.warn(f"{name}: loaded only the splits {list(out)} ({detail}).", UserWarning, stacklevel=3)
        return datasets.DatasetDict(out)

    return load


def _tweeteval_hub(config: str) -> Callable[..., datasets.DatasetDict]:
    def load(hub_id: str, *, hub_config: str | None, seed: int, cache_dir=None) -> datasets.DatasetDict:
        loaded = _load_hub(hub_id, hub_config, cache_dir)
        return _hub_to_schema(f"tweeteval_{config}", loaded, "text", "label", TWEETEVAL_NAMES[config])

    return load


for _config, _what in (
    ("hate", "hate speech against immigrants and women (binary, SemEval-2019 HatEval)"),
    ("emotion", "emotion (anger/joy/optimism/sadness, SemEval-2018 Affect in Tweets)"),
    ("sentiment", "sentiment (negative/neutral/positive, SemEval-2017 4A); the local copy lacks train_text.txt"),
):
    register_dataset(
        f"tweeteval_{_config}",
        hub_id="cardiffnlp/tweet_eval",
        hub_config=_config,
        hub_loader=_tweeteval_hub(_config),
        description=f"TweetEval {_what}. Official train/validation/test splits; class names from mapping.txt.",
    )(_tweeteval_local(_config))


# ----------------------------------------------------------------------------------------------------------------------
# SST-2 (sentence level)
# ----------------------------------------------------------------------------------------------------------------------

SST2_NAMES = ("negative", "positive")


def _sst2_hub(hub_id: str, *, hub_config: str | None, seed: int, cache_dir=None) -> datasets.DatasetDict:
    loaded = _load_hub(hub_id, hub_config, cache_dir)
    return _hub_to_schema("sst2", loaded, "sentence", "label", SST2_NAMES, id_column="idx")


@register_dataset(
    "sst2",
    hub_id="stanfordnlp/sst2",
    hub_loader=_sst2_hub,
    description="SST-2 binary sentiment (en movie reviews), sentence-level split of Kim (2014): train 6,920 / "
    "validation 872 / test 1,821. The Hub fallback is GLUE SST-2: phrase-level train (67,349), no test labels.",
)
def _sst2_local(root: Path, *, seed: int = 42) -> datasets.DatasetDict:
    folder = root / "sst2"
    paths = {
        split: _require(folder / f"stsa.binary.{suffix}") for split, suffix in zip(SPLITS, ("train", "dev", "test"))
    }
    out = {}
    for split, path in paths.items():
        texts, labels = [], []
        for lineno, line in enumerate(_read_lines(path), 1):
            label, sep, sentence = line.partition(" ")
            if not sep or label not in ("0", "1"):
                raise ValueError(f"{path}:{lineno}: expected '<0|1> <sentence>', got {line[:60]!r}")
            texts.append(sentence)
            labels.append(int(label))
        out[split] = _make_split([f"sst2-{split}-{i}" for i in range(len(texts))], texts, labels, SST2_NAMES)
    return datasets.DatasetDict(out)


# ----------------------------------------------------------------------------------------------------------------------
# RED v1 (Romanian emotions)
# ----------------------------------------------------------------------------------------------------------------------

REDV1_NAMES = ("anger", "fear", "joy", "sadness", "neutral")
# Romanian label (as in the files, compared without diacritics and case) -> English class name
REDV1_LABELS = {"furie": "anger", "frica": "fear", "bucurie": "joy", "tristete": "sadness", "neutru": "neutral"}


@register_dataset(
    "redv1",
    language="ro",
    description="RED v1 Romanian emotion tweets (single-label, 5 classes): official train 3,237 / validation 405 / "
    "test 405. Classes in English: anger (Furie), fear (Frica), joy (Bucurie), sadness (Tristete), neutral (Neutru).",
)
def _redv1_local(root: Path, *, seed: int = 42) -> datasets.DatasetDict:
    folder = root / "redv1"
    paths = {split: _require(folder / f"{stem}.csv") for split, stem in zip(SPLITS, ("train", "val", "test"))}
    out = {}
    for split, path in paths.items():
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        labels = []
        for value in df["Emotion"]:
            english = REDV1_LABELS.get(_normalise_name(value))
            if english is None:
                raise ValueError(f"{path}: unknown emotion {value!r}; expected one of {sorted(REDV1_LABELS)}")
            labels.append(REDV1_NAMES.index(english))
        ids = [f"redv1-{split}-{i}" for i in range(len(df))]
        out[split] = _make_split(ids, df["Tweet"].tolist(), labels, REDV1_NAMES)
    return datasets.DatasetDict(out)


# ----------------------------------------------------------------------------------------------------------------------
# HASOC 2019
# ----------------------------------------------------------------------------------------------------------------------

HASOC_LANGUAGES = {"en": "english", "de": "german", "hi": "hindi"}
HASOC_TASK_A_NAMES = ("NOT", "HOF")
HASOC_TASK_B_NAMES = ("NONE", "HATE", "OFFN", "PRFN")
HASOC_TASK_B_HOF_NAMES = ("HATE", "OFFN", "PRFN")


def _hasoc_files(folder: Path) -> tuple[Path, Path]:
    """(train file, test file) of one language folder: the ``.tsv`` with ``test`` in its name is the test file."""
    if not folder.is_dir():
        raise FileNotFoundError(2, "No such directory", str(folder))
    tsvs = sorted(folder.glob("*.tsv"))
    test = [p for p in tsvs if "test" in p.name.lower()]
    train = [p for p in tsvs if "test" not in p.name.lower()]
    if len(train) != 1 or len(test) != 1:
        missing = folder / ("<train>.tsv" if len(train) != 1 else "<test>.tsv")
        raise FileNotFoundError(
            2, f"expected one train and one test .tsv, found {[p.name for p in tsvs]}", str(missing)
        )
    return train[0], test[0]


def _read_hasoc(path: Path) -> pd.DataFrame:
    # quoting disabled: texts contain literal double quotes that a CSV parser would eat
    df = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, encoding="utf-8")
    missing = {"text_id", "text", "task_1", "task_2"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    for column in ("text_id", "task_1", "task_2"):
        df[column] = df[column].str.strip()
    return df


def _hasoc_labels(df: pd.DataFrame, path: Path, task: str, names: Sequence[str]) -> list[int]:
    column = "task_1" if task == "a" else "task_2"
    unknown = sorted(set(df[column]) - set(names))
    if unknown:
        raise ValueError(f"{path}: unexpected {column} values {unknown}; expected {list(names)}")
    return [names.index(x) for x in df[column]]


def _load_hasoc(root: Path, lang: str, task: str, seed: int, validation_size: float, hof_only: bool):
    train_path, test_path = _hasoc_files(root / "hasoc" / f"{HASOC_LANGUAGES[lang]}_dataset")
    train_df, test_df = _read_hasoc(train_path), _read_hasoc(test_path)
    # The validation split is stratified on task_2 for both tasks (task_2 refines task_1: NONE <=> NOT), so
    # hasoc_xx_a and hasoc_xx_b share the same train/validation partition for a given seed.
    _hasoc_labels(train_df, train_path, "b", HASOC_TASK_B_NAMES)
    train_idx, val_idx = _split_indices(train_df["task_2"].tolist(), validation_size, seed)
    frames = {"train": train_df.iloc[train_idx], "validation": train_df.iloc[val_idx], "test": test_df}
    names = HASOC_TASK_A_NAMES if task == "a" else HASOC_TASK_B_NAMES
    out = {}
    for split, df in frames.items():
        if not len(df):
            continue
        labels = _hasoc_labels(df, test_path if split == "test" else train_path, task, names)
        if hof_only:
            keep = (df["task_2"] != "NONE").tolist()
            df = df[keep]
            labels = [label - 1 for label, k in zip(labels, keep) if k]  # drop NONE (id 0) from the label set
        # test ids get a suffix: the English test file reuses text_ids of (different) training posts
        ids = df["text_id"] if split != "test" else df["text_id"] + "-test"
        out[split] = _make_split(
            ids.tolist(), df["text"].tolist(), labels, HASOC_TASK_B_HOF_NAMES if hof_only else names
        )
    return datasets.DatasetDict(out)


def _hasoc_task_a(lang: str) -> Callable[..., datasets.DatasetDict]:
    def load(root: Path, *, seed: int = 42, validation_size: float = 0.1) -> datasets.DatasetDict:
        return _load_hasoc(root, lang, "a", seed, validation_size, hof_only=False)

    return load


def _hasoc_task_b(lang: str) -> Callable[..., datasets.DatasetDict]:
    def load(
        root: Path, *, seed: int = 42, validation_size: float = 0.1, hof_only: bool = False
    ) -> datasets.DatasetDict:
        return _load_hasoc(root, lang, "b", seed, validation_size, hof_only=hof_only)

    return load


for _lang, _language in HASOC_LANGUAGES.items():
    register_dataset(
        f"hasoc_{_lang}_a",
        language=_lang,
        description=f"HASOC 2019 {_language} task 1: NOT / HOF (HOF = class 1). Official test; validation "
        "(validation_size=0.1) carved from the official train, stratified by task_2, seeded.",
    )(_hasoc_task_a(_lang))
    register_dataset(
        f"hasoc_{_lang}_b",
        language=_lang,
        description=f"HASOC 2019 {_language} task 2: NONE / HATE / OFFN / PRFN; hof_only=True keeps HOF posts "
        "only (classes HATE / OFFN / PRFN). Validation carved as for task 1 (same partition for the same seed).",
    )(_hasoc_task_b(_lang))

del _config, _what, _lang, _language
