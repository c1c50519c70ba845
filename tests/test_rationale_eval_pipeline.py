"""The evaluate stage of the rationale pipeline never loses finished work: results.json is written part by part and
reused on a rerun (also an interrupted generation of the students' answers), an unreachable teacher is a row that
says so, the teacher is timed only once the students are released; the students' own answers are scored beside
label scoring, in the results, results.md and the cards. Tiny Llama students saved as finished trainings."""

from __future__ import annotations

import gc
import json
import weakref

import datasets
import numpy as np
import pytest
from huggingface_hub import metadata_load
from rationale_fixtures import CLASS_NAMES, rationale_dataset, tiny_llama, tiny_tokenizer
from trl import ModelConfig

from distil_trainers.metrics import classification_metrics
from distil_trainers.papers import rationale_evaluation, rationale_parts, rationale_pipeline
from distil_trainers.papers.efficiency import EfficiencyRow
from distil_trainers.trainers.rationale import RationaleSFTConfig, RationaleSFTTrainer

TEXTS = rationale_dataset()["text"][:]
GOLD = rationale_dataset()["label"][:]  # [1, 2, 0, 2, 2, 2, 1, 2]
ANSWERS = [
    "it insults .\nLabel: offensive",
    "friendly .\nLabel: neither",
    "**Label:** Hate",
    "no idea",
    "mild .\nLabel: offensive",
    "friendly .\nLabel: neither",
    "rude .\nLabel: offensive",
    "greeting .\nLabel: hate",
]
GENERATED = [1, 2, 0, -1, 1, 2, 1, 0]
SCORED = [1, 2, 0, 2, 1, 2, 1, 2]


def _finished_run(tmp_path, **script_kwargs):
    """Two finished students (tiny Llamas saved as full models), rationales made elsewhere, and the arguments."""
    tok = tiny_tokenizer()
    out = tmp_path / "run"
    for seed, name in enumerate(("student", "student_label_only")):
        directory = out / name
        tiny_llama(tok, seed=seed).save_pretrained(directory)
        tok.save_pretrained(directory)
        (directory / "stage.json").write_text(json.dumps({"fingerprint": name}))
        (directory / "training_complete.json").write_text(json.dumps({"alpha": 0.5 if seed == 0 else 1.0}))
    datasets.DatasetDict({"train": rationale_dataset(), "eval": rationale_dataset()}).save_to_disk(
        str(tmp_path / "rationales")
    )
    settings = dict(
        stage="evaluate", rationale_dir=str(tmp_path / "rationales"), efficiency_samples=0, explain_samples=2,
        time_teacher=False, teacher_max_new_tokens=6, eval_generation_batch_size=4,
    )  # fmt: skip
    settings.update(script_kwargs)
    script = rationale_pipeline.RationaleScriptArguments(**settings)
    args = RationaleSFTConfig(
        output_dir=str(out), report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, max_length=256, alpha=0.5
    )
    return script, args, ModelConfig(model_name_or_path=str(out / "student")), out


def _fixed_answers(monkeypatch, calls: list):
    """The students answer ANSWERS and label scoring predicts SCORED (by post); generate calls are recorded."""

    def generate(self, model, texts, max_new_tokens, **kwargs):
        calls.append((self.args.alpha, list(texts)))
        return [ANSWERS[TEXTS.index(t)] for t in texts]

    def predict_labels(self, texts, return_scores=False, show_progress=True):
        return np.array([SCORED[TEXTS.index(t)] for t in texts])

    monkeypatch.setattr(RationaleSFTTrainer, "_generate_batch", generate)
    monkeypatch.setattr(RationaleSFTTrainer, "predict_labels", predict_labels)


def test_the_students_own_answers_are_scored_beside_label_scoring(tmp_path, monkeypatch):
    script, args, model_args, out = _finished_run(tmp_path)
    calls = []
    _fixed_answers(monkeypatch, calls)
    results = rationale_pipeline.stage_evaluate(script, args, model_args, out)
    # in batches of eval_generation_batch_size, every post once
    assert [(alpha, len(texts)) for alpha, texts in calls] == [(0.5, 4), (0.5, 4), (1.0, 4), (1.0, 4)]
    expected = classification_metrics(GOLD, GENERATED, label_names=CLASS_NAMES)
    for name in ("student", "student_label_only"):
        scores = results[name]
        assert scores["f1_macro"] == pytest.approx(classification_metrics(GOLD, SCORED, label_names=CLASS_NAMES)[
            "f1_macro"])  # fmt: skip
        assert scores["generated_f1_macro"] == pytest.approx(expected["f1_macro"])
        assert scores["generated_accuracy"] == pytest.approx(expected["accuracy"])
        assert scores["generated_scoring_f1_macro"] == pytest.approx(scores["f1_macro"])
        assert scores["agreement"] == pytest.approx(6 / 8)
        assert scores["generated_posts"] == 8 and scores["generated_unparsed"] == 1
    assert [e["output"] for e in results["explanations"]] == ANSWERS[:2]
    assert results["explanations"][0]["label_name"] == "offensive"
    saved = json.loads((out / "results.json").read_text())
    assert saved["student"] == results["student"]
    lines = (out / "evaluation" / "student_answers.jsonl").read_text().splitlines()
    assert [json.loads(line)["output"] for line in lines[1:]] == ANSWERS
    table = (out / "results.md").read_text()
    assert "generated answers: macro-F1" in table and "| 1 / 8 |" in table and "| 75.00 |" in table
    card = out / "student" / "README.md"
    assert "generated answers" in card.read_text() and "75.0% of them" in card.read_text()
    assert "rationale-distillation" in metadata_load(card)["tags"]

    # a cap for long evaluation sets: the first posts only (at least the explanations)
    capped, args, model_args, out = _finished_run(tmp_path / "capped", max_eval_generations=3)
    calls.clear()
    results = rationale_pipeline.stage_evaluate(capped, args, model_args, out)
    assert results["student"]["generated_posts"] == 3 and [len(t) for _, t in calls] == [3, 3]
    assert results["student"]["agreement"] == pytest.approx(1.0)


def test_finished_parts_survive_a_crash_and_are_reused(tmp_path, monkeypatch):
    script, args, model_args, out = _finished_run(tmp_path)
    calls = []
    real = RationaleSFTTrainer._generate_batch

    def generate(self, model, texts, max_new_tokens, **kwargs):
        calls.append((self.args.alpha, list(texts)))
        if crash["at"] == len(calls):
            raise RuntimeError("killed")
        return real(self, model, texts, max_new_tokens, **kwargs)

    monkeypatch.setattr(RationaleSFTTrainer, "_generate_batch", generate)
    crash = {"at": 2}  # the second batch of the first student's answers
    with pytest.raises(RuntimeError, match="killed"):
        rationale_pipeline.stage_evaluate(script, args, model_args, out)
    saved = json.loads((out / "results.json").read_text())
    assert "teacher" in saved and "student" not in saved  # the teacher's report is kept
    assert "not evaluated yet" in (out / "results.md").read_text()
    kept = (out / "evaluation" / "student_answers.jsonl").read_text().splitlines()
    assert len(kept) == 1 + 4  # the header and the first batch

    # the rerun generates only the missing answers; then the label-only student fails
    calls.clear()
    crash["at"] = None
    evaluate = RationaleSFTTrainer.evaluate

    def failing(self, *a, **k):
        if self.args.alpha == 1.0:
            raise RuntimeError("out of memory")
        return evaluate(self, *a, **k)

    monkeypatch.setattr(RationaleSFTTrainer, "evaluate", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        rationale_pipeline.stage_evaluate(script, args, model_args, out)
    assert [(alpha, texts) for alpha, texts in calls] == [(0.5, TEXTS[4:])]
    saved = json.loads((out / "results.json").read_text())
    assert saved["student"]["generated_posts"] == 8 and "student_label_only" not in saved
    assert len(saved["explanations"]) == 2
    first = saved["student"]

    # the next rerun scores only the label-only student
    calls.clear()
    monkeypatch.setattr(RationaleSFTTrainer, "evaluate", evaluate)
    results = rationale_pipeline.stage_evaluate(script, args, model_args, out)
    assert {alpha for alpha, _ in calls} == {1.0} and results["student"] == first
    assert (out / "student_label_only" / "README.md").is_file() and (out / "student" / "README.md").is_file()

    # everything finished: nothing is computed again; a retrained student is scored again
    calls.clear()
    again = rationale_pipeline.stage_evaluate(script, args, model_args, out)
    assert calls == [] and again == results
    (out / "student" / "training_complete.json").write_text(json.dumps({"alpha": 0.5, "run": 2}))
    rationale_pipeline.stage_evaluate(script, args, model_args, out)
    assert {alpha for alpha, _ in calls} == {0.5}


def test_an_unreachable_teacher_is_a_row_that_says_so(tmp_path, monkeypatch):
    """The default time_teacher with a served teacher whose server is gone (its GPUs taken by the students): the
    students' scores and efficiency rows are written, the teacher's row carries the error."""
    script, args, model_args, out = _finished_run(
        tmp_path, time_teacher=True, teacher_backend="openai", teacher_base_url="http://127.0.0.1:9/v1",
        teacher_model="llama-70b", efficiency_samples=2, efficiency_fresh_process=False,
    )  # fmt: skip
    _fixed_answers(monkeypatch, [])
    results = rationale_pipeline.stage_evaluate(script, args, model_args, out)
    assert 0 <= results["student"]["f1_macro"] <= 1 and "student_label_only" in results
    rows = {row["name"]: row for row in results["efficiency"]}
    teacher = rows["teacher (openai): label + explanation"]
    assert teacher["error"] and teacher["latency_ms_per_example"] is None and teacher["peak_memory_bytes"] is None
    assert "127.0.0.1:9" in teacher["note"]
    assert rows["student: label scoring"]["error"] is None and rows["student: label scoring"]["peak_memory_bytes"]
    table = (out / "results.md").read_text()
    assert "| teacher (openai): label + explanation (not measured) |" in table and "not measured:" in table
    assert json.loads((out / "results.json").read_text())["efficiency"][0]["error"] == teacher["error"]


def test_the_teacher_is_timed_after_the_students_are_released(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    script, args, model_args, out = _finished_run(
        tmp_path, time_teacher=True, teacher_backend="transformers", teacher_model=str(tmp_path / "teacher"),
        efficiency_samples=2,
    )  # fmt: skip
    _fixed_answers(monkeypatch, [])
    loaded = []
    load = rationale_parts.load_trained_student

    def recording(*a, **k):
        model, tokenizer = load(*a, **k)
        loaded.append(weakref.ref(model))
        return model, tokenizer

    monkeypatch.setattr(rationale_parts, "load_trained_student", recording)
    measured = []

    def fake_measure(name, load, texts, *, load_args=(), load_kwargs=None, batch_size=1, **kwargs):
        gc.collect()
        measured.append((name, load.__name__, sum(ref() is not None for ref in loaded)))
        return EfficiencyRow(name, 1, 1, 1, "fresh_process_peak_rss", 1.0, 1.0, len(texts), batch_size)

    monkeypatch.setattr(rationale_evaluation, "measure_in_fresh_process", fake_measure)
    rationale_pipeline.stage_evaluate(script, args, model_args, out)
    assert len(loaded) == 2
    assert measured == [
        ("student: label scoring", "load_student_for_timing", 0),
        ("student: explanation (generate)", "load_student_for_timing", 0),
        ("teacher (transformers): label + explanation", "load_teacher_for_timing", 0),
    ]  # every model measured in a process of its own, none of the students held here meanwhile
    names = [row["name"] for row in json.loads((out / "results.json").read_text())["efficiency"]]
    assert names[0].startswith("teacher")  # the table's order: the teacher first
