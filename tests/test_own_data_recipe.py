"""Slow: a new user's own data through the paper pipelines, as on the command line. A csv ``text,label`` with string
labels (``hate`` / ``none``: 120 real Davidson posts, class 0 -> hate, class 2 -> none) goes through
``distil_trainers.papers.annealing_pipeline`` and ``ddml_pipeline`` exactly as ``python -m
distil_trainers.papers.<module> --dataset_name my_posts.csv --text_column text --label_column label ...`` parses it (the
module's own ``TrlParser`` of its ``__main__`` block), and a folder of split files (train.csv / dev.csv / test.csv)
through ``feature_kd_pipeline``; tiny models (MiniLM's tokenizer, random
weights) and a few optimizer steps keep each run to seconds. An already fine-tuned teacher whose classes are in
another order gets the data mapped to its order; one with other classes is one clear error."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from conftest import load_script, real_data_marks, tiny_minilm_base
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from distil_trainers.data import get_data_dir
from distil_trainers.hub import student_folder

pytestmark = real_data_marks()

CLASSES = {0: "hate", 2: "none"}


def recipe_parser(module):
    """The ``TrlParser(...)`` of the recipe's ``if __name__ == "__main__"`` block, built in the recipe's namespace."""
    path = Path(module.__file__)
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call) and ast.unparse(c.func) == "TrlParser"]
            assert len(calls) == 1, f"{path.name}: expected one TrlParser(...) call in its __main__ block"
            return eval(compile(ast.Expression(calls[0]), str(path), "eval"), vars(module))  # noqa: S307
    raise AssertionError(f"{path.name} has no `if __name__ == '__main__':` block")


def run_recipe(name: str, argv: list[str]) -> dict:
    """Run the paper pipeline of ``name`` (``distil_trainers.papers.<name>_pipeline``) with a command line."""
    module = load_script(f"distil_trainers.papers.{name}_pipeline")
    return module.main(*recipe_parser(module).parse_args_and_config(argv))


def real_posts() -> pd.DataFrame:
    """120 real posts: the first 60 of Davidson's class 0 as "hate", the first 60 of class 2 as "none", shuffled."""
    source = pd.read_csv(get_data_dir() / "davidson" / "labeled_data.csv", index_col=0, keep_default_na=False)
    parts = [source[source["class"] == c].head(60) for c in CLASSES]
    posts = pd.concat(parts).sample(frac=1.0, random_state=0)
    return pd.DataFrame({"text": posts["tweet"].tolist(), "label": [CLASSES[c] for c in posts["class"]]})


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    return tiny_minilm_base(tmp_path_factory.mktemp("tiny_base"), layers=6, max_position_embeddings=128, seed=0)


@pytest.fixture(scope="module")
def my_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "my_posts.csv"
    real_posts().to_csv(path, index=False)
    return path


def training_flags(output_dir: Path) -> list[str]:
    return [
        "--output_dir", str(output_dir), "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "32", "--max_length", "32", "--use_cpu", "true", "--report_to", "none",
        "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true", "--seed", "0",
    ]  # fmt: skip


def data_flags(path: Path) -> list[str]:
    return ["--dataset_name", str(path), "--text_column", "text", "--label_column", "label"]


def test_annealing_on_a_users_csv_with_string_labels(my_csv, tiny_base, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="distil_trainers.data.loading"):
        result = run_recipe("annealing", [*data_flags(my_csv), "--teacher_base", tiny_base, "--teacher_epochs", "1",
                                          *training_flags(out)])  # fmt: skip
    assert "has no validation split: carved 12 of its 120 training examples" in caplog.text
    assert "[data] my_posts: {'train': 108, 'validation': 12}" in capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["model"], r["task"]) for r in rows] == [("teacher", "my_posts"), ("student", "my_posts")]
    assert all(0.0 <= r["f1_macro"] <= 1.0 for r in rows)
    assert "validation split (no test split in my_posts)" in (out / "results.md").read_text()
    for folder in ("teacher", "student"):
        assert AutoConfig.from_pretrained(out / folder).id2label == {0: "hate", 1: "none"}
    assert result["rows"] == rows


def save_teacher(base: str, directory: Path, names: list[str]) -> str:
    """A "fine-tuned" classifier (random head) that names its classes ``names`` in this order."""
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(base).save_pretrained(directory)
    return str(directory)


def test_annealing_maps_the_data_to_a_fine_tuned_teachers_classes(my_csv, tiny_base, tmp_path, caplog):
    teacher = save_teacher(tiny_base, tmp_path / "teacher_none_hate", ["none", "hate"])  # the other order
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="distil_trainers.data.labels"):
        run_recipe("annealing", [*data_flags(my_csv), "--teacher_model", teacher, "--teacher_base", tiny_base,
                                 *training_flags(out)])  # fmt: skip
    assert "Class ids mapped to the model's order ['none', 'hate'] (the dataset had ['hate', 'none'])" in caplog.text
    assert AutoConfig.from_pretrained(out / "student").id2label == {0: "none", 1: "hate"}  # the teacher's order
    assert not (out / "teacher").exists()  # an existing teacher is not fine-tuned again

    other = save_teacher(tiny_base, tmp_path / "teacher_3", ["hate", "offensive", "neither"])
    with pytest.raises(ValueError) as info:
        run_recipe("annealing", [*data_flags(my_csv), "--teacher_model", other, "--teacher_base", tiny_base,
                                 *training_flags(tmp_path / "run_3")])  # fmt: skip
    message = str(info.value)
    assert "dataset ('label'): ['hate', 'none']" in message
    assert "model (config.id2label): ['hate', 'offensive', 'neither']" in message
    assert not (tmp_path / "run_3" / "student").exists()  # refused before any training


def test_ddml_on_a_users_csv_with_string_labels(my_csv, tiny_base, tmp_path):
    students = {
        "small": {"base": tiny_base, "layers": [0]},
        "scratch": {"architecture": "distilbert", "tokenizer_from": tiny_base, "vocab_size": 400, "hidden_size": 32,
                    "num_layers": 1, "num_heads": 2},
    }
    out = tmp_path / "run"
    run_recipe("ddml", [*data_flags(my_csv), "--teacher_base", tiny_base, "--teacher_epochs", "1",
                        "--students", json.dumps(students), *training_flags(out)])  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert saved["split"] == "validation" and "no test split in my_posts" in saved["config"]
    assert [r["model"] for r in saved["rows"]] == ["teacher", "small (DDML)", "scratch (DDML)", "ensemble (DDML)",
                                                   "small (alone)", "scratch (alone)"]  # fmt: skip
    assert all(r["task"] == "my_posts" for r in saved["rows"])
    for name in students:
        config = AutoConfig.from_pretrained(student_folder(out / "ddml", name))
        assert config.id2label == {0: "hate", 1: "none"}


def test_feature_kd_on_a_folder_of_split_files(tiny_base, tmp_path):
    posts = real_posts()
    folder = tmp_path / "my_folder"
    folder.mkdir()
    posts.iloc[:80].to_csv(folder / "train.csv", index=False)
    posts.iloc[80:100].to_csv(folder / "dev.csv", index=False)
    posts.iloc[100:].to_csv(folder / "test.csv", index=False)
    out = tmp_path / "run"
    run_recipe("feature_kd", [*data_flags(folder), "--methods", "baseline", "ffn", "--teacher_base", tiny_base,
                              "--teacher_epochs", "1", *training_flags(out)])  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert saved["splits"] == {"my_folder": "test"}
    assert {(r["key"], r["task"]) for r in saved["rows"]} == {
        ("teacher", "my_folder"), ("baseline", "my_folder"), ("ffn", "my_folder")
    }
    assert "; test split" in (out / "results.md").read_text()
    for stage in ("teacher", "baseline", "ffn"):
        assert AutoConfig.from_pretrained(out / stage).id2label == {0: "hate", 1: "none"}
