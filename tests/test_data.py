"""Tests of the dataset registry against the real data files in ``shared/data`` beside the checkout.

The whole module is skipped when that directory cannot be found (set DISTIL_TRAINERS_DATA_DIR to run it elsewhere),
except on CI (CI set), where a missing data directory is a failure.
Loaded DatasetDicts are cached for the session, so every file is parsed once per configuration.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from pathlib import Path

import datasets
import pytest

from distil_trainers.data import (
    DATA_DIR_ENV,
    DatasetNotAvailableError,
    get_data_dir,
    get_dataset_spec,
    list_datasets,
    load_dataset_by_name,
    register_dataset,
    registry,
    subsample_splits,
)

REPO_DIR = Path(__file__).resolve().parents[1]

ALL_NAMES = [
    "davidson",
    "hasoc_de_a",
    "hasoc_de_b",
    "hasoc_en_a",
    "hasoc_en_b",
    "hasoc_hi_a",
    "hasoc_hi_b",
    "redv1",
    "sst2",
    "tweeteval_emotion",
    "tweeteval_hate",
    "tweeteval_sentiment",
]

HASOC_A = ["NOT", "HOF"]
HASOC_B = ["NONE", "HATE", "OFFN", "PRFN"]

# name -> (class names, rows per split, rows per class over all splits), numbers from the data README / SOURCE.md
EXPECTED = {
    "davidson": (
        ["hate", "offensive", "neither"],
        {"train": 19827, "validation": 2478, "test": 2478},  # 24,783 split 80/10/10
        {"hate": 1430, "offensive": 19190, "neither": 4163},
    ),
    "tweeteval_hate": (
        ["not-hate", "hate"],
        {"train": 9000, "validation": 1000, "test": 2970},
        {"not-hate": 5217 + 573 + 1718, "hate": 3783 + 427 + 1252},
    ),
    "tweeteval_emotion": (
        ["anger", "joy", "optimism", "sadness"],
        {"train": 3257, "validation": 374, "test": 1421},
        {"anger": 1400 + 160 + 558, "joy": 708 + 97 + 358, "optimism": 294 + 28 + 123, "sadness": 855 + 89 + 382},
    ),
    "tweeteval_sentiment": (  # no train_text.txt: validation and test only
        ["negative", "neutral", "positive"],
        {"validation": 2000, "test": 12284},
        {"negative": 312 + 3972, "neutral": 869 + 5937, "positive": 819 + 2375},
    ),
    "sst2": (
        ["negative", "positive"],
        {"train": 6920, "validation": 872, "test": 1821},
        {"negative": 3310 + 428 + 912, "positive": 3610 + 444 + 909},
    ),
    "redv1": (
        ["anger", "fear", "joy", "sadness", "neutral"],
        {"train": 3237, "validation": 405, "test": 405},
        {"anger": 807, "fear": 778, "joy": 876, "sadness": 781, "neutral": 805},
    ),
    "hasoc_en_a": (HASOC_A, {"train": 5267, "validation": 585, "test": 1153}, {"NOT": 3591 + 865, "HOF": 2261 + 288}),
    "hasoc_en_b": (
        HASOC_B,
        {"train": 5267, "validation": 585, "test": 1153},
        {"NONE": 3591 + 865, "HATE": 1143 + 124, "OFFN": 451 + 71, "PRFN": 667 + 93},
    ),
    "hasoc_de_a": (HASOC_A, {"train": 3437, "validation": 382, "test": 850}, {"NOT": 3412 + 714, "HOF": 407 + 136}),
    "hasoc_de_b": (
        HASOC_B,
        {"train": 3437, "validation": 382, "test": 850},
        {"NONE": 3412 + 714, "HATE": 111 + 41, "OFFN": 210 + 77, "PRFN": 86 + 18},
    ),
    "hasoc_hi_a": (HASOC_A, {"train": 4199, "validation": 466, "test": 1318}, {"NOT": 2196 + 713, "HOF": 2469 + 605}),
    "hasoc_hi_b": (
        HASOC_B,
        {"train": 4199, "validation": 466, "test": 1318},
        {"NONE": 2196 + 713, "HATE": 556 + 190, "OFFN": 676 + 197, "PRFN": 1237 + 218},
    ),
}

# official HASOC train/test file sizes (train + validation together come from the train file)
HASOC_FILE_ROWS = {"en": (5852, 1153), "de": (3819, 850), "hi": (4665, 1318)}


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data directory found by the default resolution (no env variable, cwd = the repository)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(DATA_DIR_ENV, raising=False)
        mp.chdir(REPO_DIR)
        root = get_data_dir()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail(f"no shared/data directory beside {REPO_DIR} on CI; the data tests must run there")
        pytest.skip(f"no shared/data directory beside {REPO_DIR}; set {DATA_DIR_ENV} to run the data tests")
    return root


@pytest.fixture(scope="session")
def load(data_root):
    """``load(name, **kwargs)``: load_dataset_by_name with the default data-dir resolution, cached per session."""
    cache: dict = {}

    def _load(name: str, **kwargs) -> datasets.DatasetDict:
        key = (name, repr(sorted(kwargs.items())))
        if key not in cache:
            with pytest.MonkeyPatch.context() as mp:
                mp.delenv(DATA_DIR_ENV, raising=False)
                mp.chdir(REPO_DIR)
                mp.setenv("HF_HUB_OFFLINE", "1")
                with warnings.catch_warnings():  # tested in test_tweeteval_sentiment_warns_about_missing_train
                    warnings.filterwarnings("ignore", message="tweeteval_sentiment: loaded only", category=UserWarning)
                    cache[key] = load_dataset_by_name(name, **kwargs)
        return cache[key]

    return _load


@pytest.fixture(autouse=True)
def _hf_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _ids(dd: datasets.DatasetDict) -> dict[str, list[str]]:
    return {split: ds["id"][:] for split, ds in dd.items()}


# ----------------------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------------------


def test_list_datasets():
    assert list_datasets() == sorted(ALL_NAMES)


def test_unknown_name_lists_registered_names():
    with pytest.raises(ValueError, match="Unknown dataset 'nope'") as info:
        load_dataset_by_name("nope")
    for name in ALL_NAMES:
        assert name in str(info.value)


def test_specs_have_descriptions_and_hub_ids():
    for name in ALL_NAMES:
        assert get_dataset_spec(name).description
    assert get_dataset_spec("davidson").hub_id == "tdavidson/hate_speech_offensive"
    assert get_dataset_spec("sst2").hub_id == "stanfordnlp/sst2"
    spec = get_dataset_spec("tweeteval_emotion")
    assert (spec.hub_id, spec.hub_config) == ("cardiffnlp/tweet_eval", "emotion")
    assert get_dataset_spec("redv1").hub_id is None
    assert get_dataset_spec("hasoc_en_a").hub_id is None


def test_register_duplicate_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("sst2")(lambda root, *, seed: None)


# ----------------------------------------------------------------------------------------------------------------------
# every registered dataset, from the real files
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_schema_sizes_and_labels(load, name):
    names, sizes, label_totals = EXPECTED[name]
    dd = load(name)
    assert list(dd) == list(sizes)
    assert {split: len(ds) for split, ds in dd.items()} == sizes
    totals: Counter = Counter()
    all_ids: list[str] = []
    for ds in dd.values():
        assert ds.column_names == ["id", "text", "label"]
        assert ds.features["id"] == datasets.Value("string")
        assert ds.features["text"] == datasets.Value("string")
        assert isinstance(ds.features["label"], datasets.ClassLabel)
        assert ds.features["label"].names == names
        texts = ds["text"][:]
        assert all(isinstance(t, str) for t in texts)
        blank = sum(1 for t in texts if not t.strip())  # tweeteval_hate train has 7 blank tweets
        assert blank <= max(1, len(texts) // 1000)
        totals.update(names[label] for label in ds["label"][:])
        all_ids += ds["id"][:]
    assert dict(totals) == label_totals
    assert len(set(all_ids)) == len(all_ids), "ids must be unique across splits"


@pytest.mark.parametrize("name", ["davidson", "hasoc_en_a", "hasoc_de_b", "hasoc_hi_a"])
def test_same_seed_same_split_other_seed_different(load, name):
    default = _ids(load(name))  # seed 42
    again = _ids(load_dataset_by_name(name, seed=42))
    assert again == default
    other = _ids(load(name, seed=7))
    assert other != default
    if name.startswith("hasoc"):  # the official test split does not depend on the seed
        assert other["test"] == default["test"]
    else:
        assert other["test"] != default["test"]
    assert sorted(sum(other.values(), [])) == sorted(sum(default.values(), []))


def test_davidson_split_is_stratified(load):
    dd = load("davidson")
    counts = {split: Counter(ds["label"][:]) for split, ds in dd.items()}
    total = sum((c for c in counts.values()), Counter())
    n_total = sum(total.values())
    assert n_total == 24783
    for split, c in counts.items():
        n = sum(c.values())
        for label in range(3):
            assert abs(c[label] / n - total[label] / n_total) < 0.01, (split, label)


def test_davidson_ids_and_multiline_tweets(load, data_root):
    dd = load("davidson")
    ids = sorted(int(i.removeprefix("davidson-")) for ds in dd.values() for i in ds["id"][:])
    with open(data_root / "davidson" / "labeled_data.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert ids == sorted(int(row[""]) for row in rows)
    by_id = {row[""]: row for row in rows}
    for ds in dd.values():
        for example in ds.select(range(0, len(ds), 97)):
            row = by_id[example["id"].removeprefix("davidson-")]
            assert example["text"] == row["tweet"]
            assert example["label"] == int(row["class"])
    assert any("\n" in t for ds in dd.values() for t in ds["text"][:]), "tweets with newlines inside quotes"


@pytest.mark.parametrize("lang", ["en", "de", "hi"])
def test_hasoc_validation_carved_from_train_stratified(load, lang):
    train_rows, test_rows = HASOC_FILE_ROWS[lang]
    dd = load(f"hasoc_{lang}_b")
    assert len(dd["train"]) + len(dd["validation"]) == train_rows
    assert len(dd["test"]) == test_rows
    assert len(dd["validation"]) == round(0.1 * train_rows)
    train, val = Counter(dd["train"]["label"][:]), Counter(dd["validation"]["label"][:])
    for label in range(4):
        assert abs(val[label] / len(dd["validation"]) - train[label] / len(dd["train"])) < 0.01
    # ids are HASOC's text_id verbatim (one Hindi training id is "Shasoc_hi_...", as in the source file)
    assert all(f"hasoc_{lang}_" in i and not i.endswith("-test") for i in dd["train"]["id"][:])
    assert all(i.endswith("-test") for i in dd["test"]["id"][:])


@pytest.mark.parametrize("lang", ["en", "de", "hi"])
def test_hasoc_tasks_share_the_partition(load, lang):
    a, b = load(f"hasoc_{lang}_a"), load(f"hasoc_{lang}_b")
    assert _ids(a) == _ids(b)
    for split in a:  # task a is task b collapsed: NONE <-> NOT, anything else <-> HOF
        assert [int(x != 0) for x in b[split]["label"][:]] == a[split]["label"][:]


def test_hasoc_validation_size_option(load):
    dd = load("hasoc_de_a", validation_size=0.2)
    assert len(dd["validation"]) == round(0.2 * 3819)
    assert len(dd["train"]) + len(dd["validation"]) == 3819


def test_hasoc_hof_only(load):
    full, hof = load("hasoc_en_b"), load("hasoc_en_b", hof_only=True)
    assert hof["train"].features["label"].names == ["HATE", "OFFN", "PRFN"]
    assert len(hof["train"]) + len(hof["validation"]) == 2261
    assert len(hof["test"]) == 288
    for split in full:
        expected = [(i, t, label - 1) for i, t, label in zip(*(full[split][c][:] for c in ("id", "text", "label")))]
        assert [e for e in expected if e[2] >= 0] == list(zip(*(hof[split][c][:] for c in ("id", "text", "label"))))
    with pytest.raises(TypeError, match="hof_only"):
        load_dataset_by_name("hasoc_en_a", hof_only=True)


def test_hasoc_texts_with_double_quotes_are_intact(load, data_root):
    folder = data_root / "hasoc" / "hindi_dataset"
    raw = {}
    for path in folder.glob("*test*.tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().splitlines()[1:]
        for line in lines:
            fields = line.split("\t")
            raw[fields[0] + "-test"] = fields[1]
    dd = load("hasoc_hi_a")
    quoted = {i: t for i, t in zip(dd["test"]["id"][:], dd["test"]["text"][:]) if '"' in t}
    assert len(quoted) == 71  # SOURCE.md: only the Hindi test file has double quotes, on 71 lines
    assert any('""' in t for t in quoted.values())
    for i, text in quoted.items():
        assert text == raw[i]
    assert len(raw) == len(dd["test"])


def test_tweeteval_lines_match_files(load, data_root):
    dd = load("tweeteval_hate")
    folder = data_root / "tweeteval_hate"
    for split, stem in (("train", "train"), ("validation", "val"), ("test", "test")):
        texts = (folder / f"{stem}_text.txt").read_text(encoding="utf-8").split("\n")
        labels = (folder / f"{stem}_labels.txt").read_text(encoding="utf-8").split()
        for i in (0, 1, len(dd[split]) - 1):
            assert dd[split][i]["id"] == f"tweeteval_hate-{split}-{i}"
            assert dd[split][i]["text"] == texts[i]
            assert dd[split][i]["label"] == int(labels[i])


def test_tweeteval_sentiment_warns_about_missing_train(data_root):
    with pytest.warns(UserWarning, match="train_text.txt"):
        dd = load_dataset_by_name("tweeteval_sentiment", data_dir=data_root)
    assert list(dd) == ["validation", "test"]


def test_sst2_lines_match_files(load, data_root):
    dd = load("sst2")
    lines = (data_root / "sst2" / "stsa.binary.dev").read_text(encoding="utf-8").splitlines()
    assert dd["validation"][5]["id"] == "sst2-validation-5"
    assert dd["validation"][5]["text"] == lines[5][2:]
    assert dd["validation"][5]["label"] == int(lines[5][0])
    assert dd["train"][17]["id"] == "sst2-train-17"


def test_redv1_labels_follow_the_romanian_names(load, data_root):
    dd = load("redv1")
    with open(data_root / "redv1" / "val.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    english = {"Furie": "anger", "Frica": "fear", "Bucurie": "joy", "Tristete": "sadness", "Neutru": "neutral"}
    names = dd["validation"].features["label"].names
    assert [english[r["Emotion"]] for r in rows] == [names[x] for x in dd["validation"]["label"][:]]
    assert [r["Tweet"] for r in rows] == dd["validation"]["text"][:]


# ----------------------------------------------------------------------------------------------------------------------
# subsampling
# ----------------------------------------------------------------------------------------------------------------------


def test_max_samples_per_split(load):
    full = load("davidson")
    small = load_dataset_by_name("davidson", max_samples_per_split=300)
    assert {s: len(ds) for s, ds in small.items()} == {"train": 300, "validation": 300, "test": 300}
    again = load_dataset_by_name("davidson", max_samples_per_split=300)
    assert _ids(again) == _ids(small)
    for split in small:
        assert set(small[split]["id"][:]) <= set(full[split]["id"][:])
        counts = Counter(small[split]["label"][:])  # stratified: class shares kept (1,430 / 24,783 hate)
        assert abs(counts[0] - 300 * 1430 / 24783) <= 2
    partial = subsample_splits(full, {"train": 50, "test": 10**9}, seed=1)
    assert {s: len(ds) for s, ds in partial.items()} == {"train": 50, "validation": 2478, "test": 2478}
    assert _ids(subsample_splits(full, {"train": 50}, seed=2))["train"] != _ids(partial)["train"]
    assert len(subsample_splits(full, {"train": 0})["train"]) == 0
    with pytest.raises(ValueError, match="unknown split names"):
        subsample_splits(full, {"val": 10})


def test_max_samples_ignores_absent_splits(load):
    dd = load("tweeteval_sentiment", max_samples_per_split={"train": 10, "validation": 20})
    assert {s: len(ds) for s, ds in dd.items()} == {"validation": 20, "test": 12284}


# ----------------------------------------------------------------------------------------------------------------------
# data directory resolution and errors
# ----------------------------------------------------------------------------------------------------------------------


def test_default_resolution_finds_shared_data_beside_the_checkout(data_root, monkeypatch, tmp_path):
    assert data_root.resolve() == (REPO_DIR.parent / "shared" / "data").resolve()
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # <cwd>/../shared/data does not exist: the package location still finds it
    assert get_data_dir().resolve() == data_root.resolve()


def _write_fake_sst2(root: Path) -> None:
    (root / "sst2").mkdir(parents=True)
    for suffix in ("train", "dev", "test"):
        (root / "sst2" / f"stsa.binary.{suffix}").write_text(
            f"1 a good {suffix} film\n0 a bad one\n", encoding="utf-8"
        )


def test_env_variable(monkeypatch, tmp_path, data_root):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_root))
    assert get_data_dir() == data_root
    dd = load_dataset_by_name("redv1")
    assert {s: len(ds) for s, ds in dd.items()} == {"train": 3237, "validation": 405, "test": 405}

    _write_fake_sst2(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    dd = load_dataset_by_name("sst2")
    assert dd["validation"]["text"][:] == ["a good dev film", "a bad one"]
    assert dd["validation"]["label"][:] == [1, 0]
    # an explicit data_dir wins over the environment
    assert len(load_dataset_by_name("sst2", data_dir=data_root)["train"]) == 6920
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "missing"))
    assert get_data_dir() is None
    assert get_data_dir(data_root) == data_root


def _raise_offline(*args, **kwargs):
    raise ConnectionError("Couldn't reach the Hugging Face Hub\n(offline mode is enabled)")


def test_missing_dir_error_message(monkeypatch, tmp_path):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append(args)
        _raise_offline()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    missing = tmp_path / "no_data_here"
    monkeypatch.setenv(DATA_DIR_ENV, str(missing))
    with pytest.raises(DatasetNotAvailableError) as info:
        load_dataset_by_name("davidson")
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert str(missing / "davidson" / "labeled_data.csv") in message
    assert "tdavidson/hate_speech_offensive" in message
    assert "ConnectionError: Couldn't reach the Hugging Face Hub (offline mode is enabled)" in message
    assert DATA_DIR_ENV in message
    assert calls == [("tdavidson/hate_speech_offensive",)]

    with pytest.raises(DatasetNotAvailableError) as info:
        load_dataset_by_name("tweeteval_hate", data_dir=missing)
    assert str(missing / "tweeteval_hate" / "mapping.txt") in str(info.value)
    assert "cardiffnlp/tweet_eval (config 'hate')" in str(info.value)
    assert calls[-1] == ("cardiffnlp/tweet_eval", "hate")

    n_calls = len(calls)
    with pytest.raises(DatasetNotAvailableError) as info:
        load_dataset_by_name("hasoc_en_b", data_dir=missing, hof_only=True)
    assert str(missing / "hasoc" / "english_dataset") in str(info.value)
    assert "no public Hub copy" in str(info.value)
    assert len(calls) == n_calls, "datasets without a Hub id must not touch the Hub"

    with pytest.raises(TypeError, match="davidson: .*hof_only"):  # a wrong option is not hidden behind the Hub
        load_dataset_by_name("davidson", data_dir=missing, hof_only=True)
    assert len(calls) == n_calls


def test_missing_default_dirs_are_all_listed(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "load_dataset", _raise_offline)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    work = tmp_path / "work"
    (work / "main").mkdir(parents=True)
    monkeypatch.chdir(work / "main")
    fake_package_file = tmp_path / "elsewhere" / "checkout" / "distil_trainers" / "data" / "registry.py"
    monkeypatch.setattr(registry, "__file__", str(fake_package_file))
    assert get_data_dir() is None
    with pytest.raises(DatasetNotAvailableError) as info:
        load_dataset_by_name("sst2")
    message = str(info.value)
    assert str(work / "shared" / "data" / "sst2" / "stsa.binary.train") in message
    assert str(tmp_path / "elsewhere" / "shared" / "data" / "sst2" / "stsa.binary.train") in message
    assert "stanfordnlp/sst2" in message


def test_sentiment_without_any_text_file_is_not_available(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "load_dataset", _raise_offline)
    folder = tmp_path / "tweeteval_sentiment"
    folder.mkdir()
    (folder / "mapping.txt").write_text("0\tnegative\n1\tneutral\n2\tpositive", encoding="utf-8")
    with pytest.raises(DatasetNotAvailableError, match="train_text.txt"):
        load_dataset_by_name("tweeteval_sentiment", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# Hub fallback (mapped offline with a fake datasets.load_dataset returning the Hub schema)
# ----------------------------------------------------------------------------------------------------------------------


def test_hub_fallback_davidson(monkeypatch, tmp_path):
    names = ["hate speech", "offensive language", "neither"]
    n = 60
    hub = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"count": [3] * n, "class": [i % 3 for i in range(n)], "tweet": [f"tweet {i}" for i in range(n)]},
                features=datasets.Features(
                    {
                        "count": datasets.Value("int64"),
                        "class": datasets.ClassLabel(names=names),
                        "tweet": datasets.Value("string"),
                    }
                ),
            )
        }
    )
    seen = {}

    def fake_load_dataset(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        return hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dd = load_dataset_by_name("davidson", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert seen == {"args": ("tdavidson/hate_speech_offensive",), "kwargs": {"cache_dir": str(tmp_path / "cache")}}
    assert {s: len(ds) for s, ds in dd.items()} == {"train": 48, "validation": 6, "test": 6}
    assert dd["train"].features["label"].names == ["hate", "offensive", "neither"]
    example = dd["test"][0]
    assert example["text"] == f"tweet {example['id'].removeprefix('davidson-')}"
    assert example["label"] == int(example["id"].removeprefix("davidson-")) % 3


def test_hub_fallback_tweeteval_and_sst2(monkeypatch, tmp_path):
    def split(texts, labels, names, extra=None):
        data = {"text": texts, "label": labels, **(extra or {})}
        features = {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
        features.update({k: datasets.Value("int32") for k in extra or {}})
        return datasets.Dataset.from_dict(data, features=datasets.Features(features))

    def fake_load_dataset(path, name=None, **kwargs):
        if path == "cardiffnlp/tweet_eval":
            assert name == "hate"
            names = ["non-hate", "hate"]
            return datasets.DatasetDict(
                {s: split([f"{s} a", f"{s} b"], [0, 1], names) for s in ("train", "validation", "test")}
            )
        assert path == "stanfordnlp/sst2" and name is None
        out = {}
        for s, labels in (("train", [0, 1, 1]), ("validation", [1, 0]), ("test", [-1, -1])):
            ds = split(
                [f"{s} {i}" for i in range(len(labels))],
                labels,
                ["negative", "positive"],
                extra={"idx": [10 + i for i in range(len(labels))]},
            )
            out[s] = ds.rename_column("text", "sentence")
        return datasets.DatasetDict(out)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dd = load_dataset_by_name("tweeteval_hate", data_dir=tmp_path)
    assert list(dd) == ["train", "validation", "test"]
    assert dd["train"].features["label"].names == ["not-hate", "hate"]  # the mapping.txt names
    assert dd["validation"]["id"][:] == ["tweeteval_hate-validation-0", "tweeteval_hate-validation-1"]

    with pytest.warns(UserWarning, match="no labels"):
        dd = load_dataset_by_name("sst2", data_dir=tmp_path)
    assert list(dd) == ["train", "validation"]  # GLUE test labels are hidden (-1)
    assert dd["train"]["id"][:] == ["sst2-train-10", "sst2-train-11", "sst2-train-12"]
    assert dd["train"]["text"][:] == ["train 0", "train 1", "train 2"]
    assert dd["train"]["label"][:] == [0, 1, 1]


# ----------------------------------------------------------------------------------------------------------------------
# custom registrations
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_custom_dataset_and_schema_check(scratch_registry, tmp_path):
    @register_dataset("toy", description="toy")
    def _toy(root, *, seed):
        ds = registry._make_split(["t-0", "t-1"], ["x", "y"], [0, 1], ["no", "yes"])
        return datasets.DatasetDict({"train": ds, "test": ds})

    assert "toy" in list_datasets()
    with pytest.raises(ValueError, match="duplicate ids"):
        load_dataset_by_name("toy", data_dir=tmp_path)

    @register_dataset("toy_bad_columns")
    def _bad(root, *, seed):
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x"], "label": [0]})})

    with pytest.raises(ValueError, match="columns"):
        load_dataset_by_name("toy_bad_columns", data_dir=tmp_path)


def test_custom_dataset_generic_hub_loader(scratch_registry, monkeypatch, tmp_path):
    @register_dataset("toy_hub", hub_id="someone/toy")
    def _toy(root, *, seed):
        raise FileNotFoundError(2, "No such file", str(root / "toy.csv"))

    hub = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"sentence": ["a", "b"], "label": [1, 0]},
                features=datasets.Features(
                    {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["n", "p"])}
                ),
            )
        }
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: hub)
    dd = load_dataset_by_name("toy_hub", data_dir=tmp_path)
    assert dd["train"].to_list() == [
        {"id": "toy_hub-train-0", "text": "a", "label": 1},
        {"id": "toy_hub-train-1", "text": "b", "label": 0},
    ]
    assert dd["train"].features["label"].names == ["n", "p"]
