"""distil_trainers.data.loading: every kind of data source into the common schema (id, text, [text_pair], label), the
validation split carved when missing, datasets without a test split, labels mapped to a model's classes, clear errors,
the recipes' DatasetArguments (YAML and command line) and the deprecated data flags of the recipes."""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from collections import Counter

import datasets
import pandas as pd
import pytest
from conftest import RECIPES

from distil_trainers.data import (
    DatasetArguments,
    DatasetNotAvailableError,
    TaskDataSpec,
    get_data_dir,
    load_dataset_by_name,
    load_text_classification,
    unique_task_names,
)
from distil_trainers.data import loading as loading_module
from distil_trainers.papers.workflow import data_fingerprint, describe_report_splits, load_tasks

needs_data = pytest.mark.skipif(get_data_dir() is None, reason="no data directory (set DISTIL_TRAINERS_DATA_DIR)")


def posts_frame(n: int = 40, offset: int = 0) -> pd.DataFrame:
    """``n`` posts, half "hate" and half "none" (alternating), and a column the loader must drop."""
    labels = ["hate" if i % 2 == 0 else "none" for i in range(n)]
    return pd.DataFrame(
        {
            "text": [f"post number {offset + i} about {label}" for i, label in enumerate(labels)],
            "label": labels,
            "annotator": [f"a{i % 3}" for i in range(n)],
        }
    )


@pytest.fixture
def posts_csv(tmp_path):
    path = tmp_path / "my_posts.csv"
    posts_frame().to_csv(path, index=False)
    return path


def as_pairs(dd: datasets.DatasetDict) -> dict[str, list[tuple[str, str]]]:
    """``{split: [(text, class name), ...]}``: what a dataset says, whatever its label ids."""
    out = {}
    for split, ds in dd.items():
        names = ds.features["label"].names
        out[split] = [(row["text"], names[row["label"]]) for row in ds]
    return out


# ---- every source kind ----------------------------------------------------------------------------------------------


def test_csv_with_string_labels(posts_csv):
    dd = load_text_classification(str(posts_csv))
    assert list(dd) == ["train", "validation"]  # no test split in a single file
    for ds in dd.values():
        assert ds.column_names == ["id", "text", "label"]  # the extra column is dropped
        assert ds.features["label"] == datasets.ClassLabel(names=["hate", "none"])
        assert ds.features["text"] == datasets.Value("string")
    ids = [i for ds in dd.values() for i in ds["id"][:]]
    assert len(set(ids)) == len(ids) == 40 and all(i.startswith("train-") for i in ids)
    original = dict(zip(posts_frame()["text"], posts_frame()["label"]))
    assert all(original[text] == name for pairs in as_pairs(dd).values() for text, name in pairs)


@pytest.mark.parametrize("kind", ["tsv", "jsonl", "json", "parquet"])
def test_tsv_json_jsonl_parquet_give_the_same_data_as_csv(tmp_path, posts_csv, kind):
    frame = posts_frame()
    path = tmp_path / f"my_posts.{kind}"
    if kind == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif kind == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif kind == "json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))  # a JSON list of records
    else:
        frame.to_parquet(path, index=False)
    assert as_pairs(load_text_classification(str(path))) == as_pairs(load_text_classification(str(posts_csv)))


def test_csv_keeps_na_like_texts_and_labels(tmp_path):
    path = tmp_path / "na.csv"
    pd.DataFrame({"text": ["NA", "null", "ok", "fine"] * 5, "label": ["None", "hate"] * 10}).to_csv(path, index=False)
    dd = load_text_classification(str(path), validation_size=4)
    assert dd["train"].features["label"].names == ["None", "hate"]  # "None" is a class name, not a missing value
    assert "NA" in dd["train"]["text"][:] + dd["validation"]["text"][:]


def test_folder_of_split_files_with_dev_csv(tmp_path):
    folder = tmp_path / "my_data"
    folder.mkdir()
    posts_frame(30).to_csv(folder / "train.csv", index=False)
    posts_frame(10, offset=100).to_csv(folder / "dev.csv", index=False)
    posts_frame(12, offset=200).to_csv(folder / "test.csv", index=False)
    (folder / "README.md").write_text("not data")
    dd = load_text_classification(str(folder))
    assert {split: len(ds) for split, ds in dd.items()} == {"train": 30, "validation": 10, "test": 12}
    assert dd["validation"]["id"][:2] == ["validation-0", "validation-1"]
    assert dd["test"]["text"][0] == "post number 200 about hate"


def test_folder_files_with_their_own_unique_ids(tmp_path):
    folder = tmp_path / "with_ids"
    folder.mkdir()
    for split, n, offset in (("train", 20, 0), ("validation", 6, 50), ("test", 6, 80)):
        frame = posts_frame(n, offset)
        frame.insert(0, "id", [f"post{offset + i}" for i in range(n)])
        frame.to_csv(folder / f"{split}.csv", index=False)
    dd = load_text_classification(str(folder))
    assert dd["train"]["id"][0] == "post0" and dd["test"]["id"][0] == "post80"


def test_folder_split_options_and_none(tmp_path):
    folder = tmp_path / "named"
    folder.mkdir()
    posts_frame(30).to_csv(folder / "fit.csv", index=False)
    posts_frame(10, offset=100).to_csv(folder / "heldout.csv", index=False)
    posts_frame(10, offset=200).to_csv(folder / "test.csv", index=False)
    dd = load_text_classification(str(folder), train_split="fit", eval_split="heldout")
    assert {s: len(d) for s, d in dd.items()} == {"train": 30, "validation": 10, "test": 10}
    # none: the source's test split is left out, its validation split carved from train instead
    dd = load_text_classification(str(folder), train_split="fit", eval_split=None, test_split=None)
    assert {s: len(d) for s, d in dd.items()} == {"train": 27, "validation": 3}
    with pytest.raises(ValueError, match=r"no validation split named 'dev2' \(eval_split\).*fit.*heldout.*test"):
        load_text_classification(str(folder), train_split="fit", eval_split="dev2")
    with pytest.raises(ValueError, match=r"no train split named 'train', 'training'.*Name the files train.csv"):
        load_text_classification(str(folder))


def test_save_to_disk_folders(tmp_path):
    feature = datasets.ClassLabel(names=["neg", "pos"])
    features = datasets.Features({"sentence": datasets.Value("string"), "label": feature})

    def split(n, offset):
        return datasets.Dataset.from_dict(
            {"sentence": [f"s{offset + i}" for i in range(n)], "label": [i % 2 for i in range(n)]}, features=features
        )

    datasets.DatasetDict({"train": split(20, 0), "valid": split(6, 100), "unsupervised": split(4, 200)}).save_to_disk(
        str(tmp_path / "saved_dict")
    )
    dd = load_text_classification(str(tmp_path / "saved_dict"), text_column="sentence")
    assert {s: len(d) for s, d in dd.items()} == {"train": 20, "validation": 6}
    assert dd["train"].features["label"].names == ["neg", "pos"] and dd["validation"]["text"][0] == "s100"

    split(20, 0).save_to_disk(str(tmp_path / "saved_one"))  # a single Dataset: the train split
    dd = load_text_classification(str(tmp_path / "saved_one"), text_column="sentence")
    assert {s: len(d) for s, d in dd.items()} == {"train": 18, "validation": 2}


@needs_data
def test_registered_name_keeps_the_registry_data_and_ids():
    dd = load_text_classification("davidson", max_samples_per_split={"train": 60, "validation": 30, "test": 30})
    reference = load_dataset_by_name("davidson", max_samples_per_split={"train": 60, "validation": 30, "test": 30})
    assert list(dd) == list(reference) == ["train", "validation", "test"]
    for split in dd:
        assert dd[split]["id"][:] == reference[split]["id"][:]
        assert dd[split]["label"][:] == reference[split]["label"][:]
    assert dd["train"]["id"][0].startswith("davidson-")
    with pytest.raises(ValueError, match="registered dataset.*text_column"):
        load_text_classification("davidson", text_column="tweet")


def test_missing_path_offline_says_not_found_locally_and_hub_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetNotAvailableError) as info:
        load_text_classification(str(tmp_path / "nowhere" / "my.csv"))
    message = str(info.value)
    assert "not found locally" in message and str(tmp_path / "nowhere" / "my.csv") in message
    assert "Hub cannot be reached" in message and "Repo id must" not in message
    # a name that could be a Hub id: tried (offline: only a cached copy could load), then the same kind of message
    with pytest.raises(DatasetNotAvailableError, match=r"(?s)not found locally.*Hub cannot be reached"):
        load_text_classification("someone-unknown/no-such-dataset-xyz")


def test_hub_id_is_loaded_with_its_config(monkeypatch):
    calls = []
    feature = datasets.ClassLabel(names=["no", "yes"])

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        rows = {"tweet": [f"t{i}" for i in range(20)], "label": [i % 2 for i in range(20)], "idx": list(range(20))}
        ds = datasets.Dataset.from_dict(rows, features=datasets.Features(
            {"tweet": datasets.Value("string"), "label": feature, "idx": datasets.Value("int64")}))
        return datasets.DatasetDict({"train": ds, "validation": ds.select(range(6)), "test": ds.select(range(8))})

    monkeypatch.setattr(loading_module.datasets, "load_dataset", fake_load_dataset)
    dd = load_text_classification("owner/some_dataset", config="cfg", text_column="tweet")
    assert calls[0][0] == ("owner/some_dataset", "cfg")
    assert {s: len(d) for s, d in dd.items()} == {"train": 20, "validation": 6, "test": 8}
    assert dd["test"].column_names == ["id", "text", "label"] and dd["test"]["id"][0] == "test-0"
    assert TaskDataSpec("owner/some_dataset", config="cfg").name() == "some_dataset_cfg"


# ---- the validation split, the test split --------------------------------------------------------------------------


def test_validation_is_carved_stratified_seeded_and_logged(tmp_path, caplog):
    path = tmp_path / "skewed.csv"
    labels = ["hate"] * 30 + ["none"] * 70
    pd.DataFrame({"text": [f"p{i}" for i in range(100)], "label": labels}).to_csv(path, index=False)
    with caplog.at_level(logging.INFO, logger="distil_trainers.data.loading"):
        dd = load_text_classification(str(path), validation_size=0.2, seed=3)
    assert "has no validation split: carved 20 of its 100 training examples" in caplog.text
    assert "validation_size=0.2" in caplog.text and "stratified" in caplog.text and "seed 3" in caplog.text
    names = dd["validation"].features["label"].names
    assert Counter(names[i] for i in dd["validation"]["label"][:]) == {"hate": 6, "none": 14}  # the 30/70 shares
    assert set(dd["train"]["id"][:]).isdisjoint(dd["validation"]["id"][:])
    again = load_text_classification(str(path), validation_size=0.2, seed=3)
    other = load_text_classification(str(path), validation_size=0.2, seed=4)
    assert again["validation"]["id"][:] == dd["validation"]["id"][:] != other["validation"]["id"][:]
    assert len(load_text_classification(str(path), validation_size=25)["validation"]) == 25  # a count
    with pytest.raises(ValueError, match="validation_size"):
        load_text_classification(str(path), validation_size=1.5)


def test_no_test_split_is_allowed_and_reported(tmp_path, posts_csv, caplog):
    with caplog.at_level(logging.INFO, logger="distil_trainers.data.loading"):
        suite = load_tasks([str(posts_csv)])
    assert "has no test split" in caplog.text
    task = suite.tasks[0]
    assert task.name == "my_posts" and not task.has_test and set(task.splits) == {"train", "validation"}
    assert suite.report_splits() == {"my_posts": "validation"}
    assert describe_report_splits(suite.report_splits()) == "validation split (no test split in my_posts)"
    assert describe_report_splits({"a": "test", "b": "validation"}) == (
        "test split (validation split for b, which has no test split)"
    )


# ---- labels ---------------------------------------------------------------------------------------------------------


def test_labels_are_mapped_to_a_models_order(posts_csv, caplog):
    with caplog.at_level(logging.INFO, logger="distil_trainers.data.labels"):
        dd = load_text_classification(str(posts_csv), label_names=["none", "hate"])
    assert "mapped to the model's order ['none', 'hate']" in caplog.text
    assert dd["train"].features["label"].names == ["none", "hate"]
    assert as_pairs(dd) == as_pairs(load_text_classification(str(posts_csv)))  # same classes per text, no flip
    first = dd["train"][0]
    assert first["label"] == (0 if first["text"].endswith("none") else 1)
    # an id2label mapping; names compared without case
    dd = load_text_classification(str(posts_csv), label_names={0: "HATE", 1: "None"})
    assert dd["train"].features["label"].names == ["HATE", "None"]


def test_labels_that_do_not_match_the_model_are_one_error_listing_both_sides(posts_csv):
    with pytest.raises(ValueError) as info:
        load_text_classification(str(posts_csv), label_names=["hate", "offensive", "neither"])
    message = str(info.value)
    assert "dataset ('label'): ['hate', 'none']" in message
    assert "model (config.id2label): ['hate', 'offensive', 'neither']" in message
    assert "in the dataset only: ['none']" in message


def test_integer_labels(tmp_path, caplog):
    path = tmp_path / "ints.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": [i % 3 for i in range(20)]}).to_csv(path, index=False)
    assert load_text_classification(str(path))["train"].features["label"].names == ["0", "1", "2"]
    with caplog.at_level(logging.WARNING, logger="distil_trainers.data.loading"):
        dd = load_text_classification(str(path), label_names=["a", "b", "c"])
    assert "taken to be the model's class ids" in caplog.text
    assert dd["train"].features["label"].names == ["a", "b", "c"]
    # placeholders LABEL_i name nothing: the data keeps its own names
    assert load_text_classification(str(path), label_names=["LABEL_0", "LABEL_1", "LABEL_2"])["train"].features[
        "label"
    ].names == ["0", "1", "2"]


def test_missing_and_blank_labels_are_errors(tmp_path):
    path = tmp_path / "holes.jsonl"
    rows = [{"text": f"t{i}", "label": None if i == 3 else "x"} for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"missing labels in 'train' \(rows \[3\]\)"):
        load_text_classification(str(path))
    path = tmp_path / "blank.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", "", "y"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="empty labels"):
        load_text_classification(str(path))


# ---- columns and errors -------------------------------------------------------------------------------------------


def test_text_pair_column(tmp_path):
    path = tmp_path / "nli.csv"
    pd.DataFrame(
        {"premise": [f"p{i}" for i in range(20)], "hypothesis": [f"h{i}" for i in range(20)],
         "gold": ["entail", "contra"] * 10}  # fmt: skip
    ).to_csv(path, index=False)
    dd = load_text_classification(str(path), text_column="premise", text_pair_column="hypothesis", label_column="gold")
    assert dd["train"].column_names == ["id", "text", "text_pair", "label"]
    row = dd["train"][0]
    assert (row["text"], row["text_pair"]) == ("p0", "h0")
    from transformers import BertTokenizerFast

    from distil_trainers.papers.workflow import tokenize_suite

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "p0", "h0"]))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    tokenized = tokenize_suite(load_tasks([TaskDataSpec(str(path), text_column="premise",
                                                        text_pair_column="hypothesis", label_column="gold")]),
                               {"": tokenizer}, 16)  # fmt: skip
    encoded = tokenized.tokenized["nli"]["train"][0]
    assert encoded["token_type_ids"].count(1) > 0  # the second text of the pair is there


def test_missing_columns_and_empty_splits_are_clear_errors(tmp_path, posts_csv):
    columns = r"\['text', 'label', 'annotator'\]"
    with pytest.raises(ValueError, match=r"Column 'class' \(label_column\) not found.*" + columns):
        load_text_classification(str(posts_csv), label_column="class")
    with pytest.raises(ValueError, match=r"Column 'tweet' \(text_column\) not found.*" + columns):
        load_text_classification(str(posts_csv), text_column="tweet")
    folder = tmp_path / "with_empty_test"
    folder.mkdir()
    posts_frame(20).to_csv(folder / "train.csv", index=False)
    posts_frame(0).to_csv(folder / "test.csv", index=False)
    with pytest.raises(ValueError, match=r"The test split is empty: .*test.csv has no rows"):
        load_text_classification(str(folder))
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        (tmp_path / "x.txt").write_text("a")
        load_text_classification(str(tmp_path / "x.txt"))


# ---- recipe arguments -----------------------------------------------------------------------------------------------


def test_dataset_arguments_from_the_command_line_and_yaml(tmp_path):
    from trl import TrlParser

    parser = TrlParser(DatasetArguments)
    (args,) = parser.parse_args_and_config(
        ["--dataset_name", "a.csv", "folder/b.csv", "sst2", "--text_column", "tweet", "text", "text",
         "--text_pair_column", "none", "--eval_split", "dev"]  # fmt: skip
    )
    specs = args.task_specs()
    assert [s.task_name for s in specs] == ["a", "b", "sst2"]
    assert [s.text_column for s in specs] == ["tweet", "text", "text"]
    assert [s.eval_split for s in specs] == ["dev"] * 3 and all(s.text_pair_column is None for s in specs)
    config = tmp_path / "data.yaml"
    config.write_text("dataset_name: my.csv\ntext_column: post\neval_split: null\nvalidation_size: 0.2\n")
    (args,) = parser.parse_args_and_config(["--config", str(config)])
    (spec,) = args.task_specs()
    assert (spec.name_or_path, spec.text_column, spec.eval_split) == ("my.csv", "post", None)
    assert args.validation_size == 0.2
    with pytest.raises(ValueError, match=r"label_column has 2 values \['a', 'b'\] for 3 datasets"):
        DatasetArguments(dataset_name=["x.csv", "y.csv", "z.csv"], label_column=["a", "b"])
    with pytest.raises(ValueError, match="dataset_name must name at least one dataset"):
        DatasetArguments()
    assert unique_task_names(["my", "my", "other", "my"]) == ["my", "my_2", "other", "my_3"]
    specs = DatasetArguments(dataset_name=["x/my.csv", "y/my.csv"]).task_specs()
    assert [s.task_name for s in specs] == ["my", "my_2"]


def _parse(recipe: str, argv: list[str]):
    """The arguments of a paper pipeline (``distil_trainers.papers.<recipe>_pipeline``, which keeps the deprecated
    data flags) as its own command line gives them (its TrlParser dataclasses)."""
    from trl import ModelConfig, TrlParser

    from distil_trainers import AnnealingArguments, MutualLearningArguments
    from distil_trainers.trainers.adversarial import AdversarialArguments
    from distil_trainers.trainers.rationale import RationaleSFTConfig

    module = importlib.import_module(f"distil_trainers.papers.{recipe}_pipeline")
    types = {
        "annealing": (module.__dict__.get("RecipeArguments"), AnnealingArguments),
        "feature_kd": (module.__dict__.get("RecipeArguments"), AnnealingArguments),
        "ddml": (module.__dict__.get("DDMLRecipeArguments"), MutualLearningArguments),
        "crosslingual": (module.__dict__.get("RecipeArguments"), AdversarialArguments),
        "rationale": (module.__dict__.get("RationaleScriptArguments"), RationaleSFTConfig, ModelConfig),
    }[recipe]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cpu = ["--use_cpu", "true"] if recipe == "rationale" else []  # SFTConfig: bf16 by default
        parsed = TrlParser(types).parse_args_and_config([*argv, "--output_dir", "unused", *cpu])
    deprecations = [w for w in caught if issubclass(w.category, FutureWarning) and "--dataset_name" in str(w.message)]
    return parsed[0], deprecations


@pytest.mark.parametrize(
    "recipe, old, new",
    [
        ("annealing", ["--tasks", "sst2", "davidson"], ["--dataset_name", "sst2", "davidson"]),
        ("feature_kd", ["--tasks", "davidson"], ["--dataset_name", "davidson"]),
        ("ddml", ["--dataset", "tweeteval_hate"], ["--dataset_name", "tweeteval_hate"]),
        ("rationale", ["--dataset", "sst2"], ["--dataset_name", "sst2"]),
        ("crosslingual", ["--target_task", "redv1", "--source_task", "tweeteval_emotion"],
         ["--dataset_name", "redv1", "tweeteval_emotion", "sst2"]),
    ],
)
def test_old_data_flags_warn_and_give_the_same_arguments(recipe, old, new):
    old_args, warned = _parse(recipe, old)
    assert len(warned) == 1 and "deprecated" in str(warned[0].message)
    assert f"--{old[0][2:]}" in str(warned[0].message) and "use --dataset_name instead" in str(warned[0].message)
    new_args, not_warned = _parse(recipe, new)
    assert not not_warned
    assert old_args.task_specs() == new_args.task_specs()
    assert old_args.settings() == new_args.settings()  # the same settings, so the same stage fingerprints
    for flag in old_args.deprecated_flags:  # the old fields keep what was given, for code that still reads them
        assert getattr(new_args, flag) is None
    assert getattr(old_args, old[0][2:]) is not None


def test_old_flag_with_a_config_giving_dataset_name(tmp_path):
    # the shipped config names dataset_name; an old command line overrides it the old way
    args, warned = _parse("ddml", ["--config", str(RECIPES / "configs" / "ddml_pipeline_quickstart.yaml"),
                                   "--dataset", "tweeteval_hate"])  # fmt: skip
    assert args.dataset_name == ["tweeteval_hate"] and warned
    config = tmp_path / "custom.yaml"
    config.write_text("dataset_name: [sst2]\n")
    args, warned = _parse("ddml", ["--config", str(config), "--dataset", "tweeteval_hate"])
    assert args.dataset_name == ["tweeteval_hate"] and "replaces dataset_name ['sst2']" in str(warned[0].message)


def test_rationale_former_eval_split_test_is_taken_as_the_test_split():
    args, _ = _parse("rationale", ["--eval_split", "test"])
    assert args.eval_split == ["validation"] and args.test_split == ["test"]


@needs_data
def test_old_flag_loads_the_same_data():
    old_args, _ = _parse("annealing", ["--tasks", "davidson"])
    new_args, _ = _parse("annealing", ["--dataset_name", "davidson"])
    old = load_tasks(old_args.task_specs(), max_train_samples=40, max_eval_samples=20)
    new = load_tasks(new_args.task_specs(), max_train_samples=40, max_eval_samples=20)
    assert data_fingerprint(old) == data_fingerprint(new)
    assert old.names == new.names == ["davidson"]


def test_data_fingerprint_follows_the_content_of_a_users_file(tmp_path, posts_csv):
    before = data_fingerprint(load_tasks([str(posts_csv)]))
    frame = posts_frame()
    frame.loc[0, "label"] = "none"  # same rows, same ids, one label changed
    frame.to_csv(posts_csv, index=False)
    assert data_fingerprint(load_tasks([str(posts_csv)])) != before


def test_arguments_load_their_datasets_with_their_flags_and_subsampling(tmp_path, posts_csv):
    from dataclasses import dataclass

    frame = posts_frame().rename(columns={"text": "post", "label": "class"})
    other = tmp_path / "other.csv"
    frame.to_csv(other, index=False)

    @dataclass
    class Script(DatasetArguments):
        max_train_samples: int | None = None
        max_eval_samples: int | None = None

    args = Script(dataset_name=[str(posts_csv), str(other)], text_column=["text", "post"],
                  label_column=["label", "class"], validation_size=0.25, max_train_samples=10, max_eval_samples=4)
    first, second = args.load_datasets(seed=3)
    assert as_pairs(first) == as_pairs(second)  # the same posts, read through each file's own columns
    assert (len(first["train"]), len(first["validation"])) == (10, 4)
    full = load_text_classification(str(posts_csv), validation_size=0.25, seed=3)
    assert set(as_pairs(first)["train"]) <= set(as_pairs(full)["train"])  # carved the same way, then subsampled
    names = ["none", "hate"]  # a model's class order: the data's classes follow it by name
    one = Script(dataset_name=[str(posts_csv)]).load_dataset(seed=3, label_names=names)
    assert one["train"].features["label"].names == names
    with pytest.raises(ValueError, match=r"trains on one dataset; dataset_name names 2"):
        args.load_dataset()
